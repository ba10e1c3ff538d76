/**
 * Storage a site can rely on (README, "Storage"): a Deno KV store asked for
 * in site.json, kept in the site's own writable folder across restarts; and
 * SQLite from a site with two workers, with the documented WAL and busy
 * timeout, taking concurrent writes without a single 500.
 */

import assert from "node:assert/strict";
import { cliCommand, startServer, writeSites } from "./helpers/server.ts";

/** A site asking for a KV store in its writable data/ folder. */
const KV_SITE_JSON = JSON.stringify({
  hosts: ["*"],
  permissions: { write: ["data"] },
  kv: "data/site.kv",
});

const KV_SITE = {
  "site.json": KV_SITE_JSON,
  "data/.keep": "",
  "autorun/ar_kv.ts": `
import { hosts } from "sandflare";
const kv = await Deno.openKv("data/site.kv");
hosts.any.add("/count", async () => {
  await kv.atomic().sum(["visits"], 1n).commit();
  const visits = await kv.get<Deno.KvU64>(["visits"]);
  return String(visits.value?.value);
});
`,
};

/** A site that did not ask: Deno.openKv is not there. */
const NO_KV_SITE = {
  "site.json": JSON.stringify({
    hosts: ["*"],
    permissions: { write: ["data"] },
  }),
  "autorun/ar_nokv.ts": `
import { hosts } from "sandflare";
hosts.any.add("/nokv", () => typeof Deno.openKv);
`,
};

const SQLITE_SITE = {
  "site.json": JSON.stringify({
    hosts: ["*"],
    workers: 2,
    permissions: { write: ["data"] },
  }),
  "data/.keep": "",
  "autorun/ar_sql.ts": `
import { DatabaseSync } from "node:sqlite";
import { hosts } from "sandflare";
// Each worker opens its own connection: the settings the README gives, the
// busy timeout first (the workers load at once, and switching to WAL waits
// for the other's lock).
const db = new DatabaseSync("data/app.db");
db.exec("PRAGMA busy_timeout = 5000");
db.exec("PRAGMA journal_mode = WAL");
db.exec("CREATE TABLE IF NOT EXISTS notes (text TEXT NOT NULL)");
const insert = db.prepare("INSERT INTO notes (text) VALUES (?)");
const count = db.prepare("SELECT COUNT(*) AS n FROM notes");
hosts.any.add("/note", (req) => {
  insert.run(req.params.text ?? "");
  return String(count.get()!.n);
}, "POST");
hosts.any.add("/notes", () => String(count.get()!.n));
`,
};

async function get(origin: string, path: string, init = {}) {
  const res = await fetch(`${origin}${path}`, init);
  return { status: res.status, text: await res.text() };
}

Deno.test("a site's KV store, asked for in site.json, survives a restart; others have no Deno.openKv", async () => {
  const sitesDir = await writeSites({ kv: KV_SITE, nokv: NO_KV_SITE });
  try {
    let server = await startServer({ sitesDir });
    try {
      assert.equal((await get(server.origin, "/count")).text, "1");
      assert.equal((await get(server.origin, "/count")).text, "2");
      assert.equal(
        (await get(server.origin, "/nokv")).text,
        "undefined",
      );
    } finally {
      await server.stop();
    }
    server = await startServer({ sitesDir });
    try {
      assert.equal((await get(server.origin, "/count")).text, "3");
    } finally {
      await server.stop();
    }
    // In the site's own folder, where its disk quota counts it; the
    // operator sees it in `cli sites`.
    assert.ok((await Deno.stat(`${sitesDir}/kv/data/site.kv`)).isFile);
    const sites = await cliCommand([
      "sites",
      `--sites-dir=${sitesDir}`,
      "--grant-requests",
    ]).output();
    const listed = new TextDecoder().decode(sites.stdout);
    assert.match(
      listed,
      new RegExp(
        `^  kv: +${await Deno.realPath(
          sitesDir,
        )}/kv/data/site\\.kv \\(Deno KV\\)$`,
        "m",
      ),
    );
  } finally {
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("SQLite with WAL and a busy timeout takes concurrent writes from two workers, no 500", async () => {
  const sitesDir = await writeSites({ sql: SQLITE_SITE });
  const server = await startServer({ sitesDir });
  try {
    const answers = await Promise.all(
      Array.from(
        { length: 60 },
        (_, i) =>
          get(server.origin, `/note?text=n${i}`, {
            method: "POST",
          }),
      ),
    );
    const failed = answers.filter((a) => a.status !== 200);
    assert.deepEqual(failed, [], server.logs());
    assert.equal((await get(server.origin, "/notes")).text, "60");
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

/** Tries what the attack review did with "kv": other files, memory stores, many handles. */
const KV_CONFINED_SITE = {
  "site.json": KV_SITE_JSON,
  "data/.keep": "",
  "autorun/ar_kvc.ts": `
import { hosts } from "sandflare";
const attempt = async (path?: string) => {
  try {
    const kv = await (path === undefined ? Deno.openKv() : Deno.openKv(path));
    kv.close();
    return "opened";
  } catch (err) {
    return (err as Error).message;
  }
};
hosts.any.add("/paths", async () => JSON.stringify({
  none: await attempt(),
  own: await attempt("data/site.kv"),
  ownAbsolute: await attempt(Deno.cwd() + "/data/site.kv"),
  other: await attempt("data/other.kv"),
  dotted: await attempt("data/../data/x.kv"),
  memory: await attempt(":memory:"),
}));
hosts.any.add("/shared", async () => {
  const a = await Deno.openKv();
  const b = await Deno.openKv("data/site.kv");
  await a.set(["k"], "v");
  const seen = (await b.get(["k"])).value;
  a.close();
  b.close();
  return String(seen);
});
hosts.any.add("/handles", async () => {
  const open: Deno.Kv[] = [];
  const results: string[] = [];
  for (let i = 0; i < 5; i++) {
    try {
      open.push(await Deno.openKv());
      results.push("opened");
    } catch (err) {
      results.push((err as Error).message);
    }
  }
  open.pop()!.close();
  try {
    open.push(await Deno.openKv());
    results.push("reopened");
  } catch (err) {
    results.push((err as Error).message);
  }
  for (const kv of open) kv.close();
  return JSON.stringify(results);
});
hosts.any.add("/noop-close", async () => {
  // The review's way past the count: a close that closes nothing.
  const first = await Deno.openKv();
  first.close();
  Object.getPrototypeOf(first).close = function () {};
  for (let i = 0; i < 40; i++) {
    try {
      const kv = await Deno.openKv();
      kv.close();
    } catch (err) {
      return (err as Error).message;
    }
  }
  return "opened 40";
});
hosts.any.add("/pid", () => String(Deno.pid));
const NESTED = URL.createObjectURL(new Blob(
  ["postMessage(typeof Deno.openKv)"],
  { type: "text/javascript" },
));
hosts.any.add("/nested", () => new Promise((resolve) => {
  const w = new Worker(NESTED, { type: "module" });
  w.onmessage = (e) => { w.terminate(); resolve(String(e.data)); };
}));
`,
};

Deno.test("a site's Deno.openKv opens its own file only, a few at a time, and not from its own Workers", async () => {
  const sitesDir = await writeSites({ kvc: KV_CONFINED_SITE });
  const server = await startServer({ sitesDir });
  try {
    const paths = JSON.parse((await get(server.origin, "/paths")).text);
    assert.equal(paths.none, "opened");
    assert.equal(paths.own, "opened");
    assert.equal(paths.ownAbsolute, "opened");
    for (const key of ["other", "dotted", "memory"]) {
      assert.match(
        paths[key],
        /^Deno\.openKv\(.*\): this site's store is .*\/kvc\/data\/site\.kv \(site\.json "kv"\)/,
        key,
      );
    }
    assert.equal((await get(server.origin, "/shared")).text, "v");
    assert.deepEqual(JSON.parse((await get(server.origin, "/handles")).text), [
      "opened",
      "opened",
      "opened",
      "opened",
      "Deno.openKv(): 4 stores are open in this worker already; open one and reuse it",
      "reopened",
    ]);
    assert.equal((await get(server.origin, "/nested")).text, "undefined");
    // Each store is a thread; closed for real by the close taken before the
    // site ran, 40 opened and "closed" leave none behind (before: 40 more).
    const pid = Number((await get(server.origin, "/pid")).text);
    const threads = () =>
      Number(
        /Threads:\s+(\d+)/.exec(
          Deno.readTextFileSync(`/proc/${pid}/status`),
        )![1],
      );
    const before = threads();
    assert.equal((await get(server.origin, "/noop-close")).text, "opened 40");
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(threads() - before < 8, `${before} -> ${threads()} threads`);
    // Nothing but the site's own store was written.
    const files = [...Deno.readDirSync(`${sitesDir}/kvc/data`)].map((e) =>
      e.name
    );
    assert.deepEqual(files.filter((f) => !f.startsWith("site.kv")), [".keep"]);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
