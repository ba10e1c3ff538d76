/**
 * Scale to zero (issue 20, point 1): with --idle-stop a site without
 * requests has its sandbox stopped, and its next request starts it again,
 * once however many arrive together; its sessions live in the gateway and
 * survive. A site with scheduler tasks or open websockets never sleeps.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  cliCommand,
  delay,
  startServer,
  type TestServer,
  writeSites,
} from "./helpers/server.ts";

const SITES = {
  app: {
    "site.json": JSON.stringify({ hosts: ["app.test"] }),
    "autorun/ar_app.ts": `
import { hook, hosts, session } from "sandflare";
hosts.get("app.test").add("/count", async (req, res) => {
  const s = await session.get(req, res);
  s.data.n = (Number(s.data.n) || 0) + 1;
  await s.save();
  return String(s.data.n);
});
hosts.get("app.test").add("/pid", () => String(Deno.pid));
hook.add("Error", "own", (err, _req, res) => {
  res.append("app's own " + err.code);
  return true;
});
`,
  },
  tasky: {
    "site.json": JSON.stringify({ hosts: ["tasky.test"] }),
    "autorun/ar_tasky.ts": `
import { hosts, scheduler } from "sandflare";
hosts.get("tasky.test").add("/", () => "tasky");
scheduler.newTask("tick", async () => {
  while (true) await scheduler.sleep(0.2);
});
`,
  },
  wsy: {
    "site.json": JSON.stringify({ hosts: ["*"] }),
    "autorun/ar_wsy.ts": `
import { websocket } from "sandflare";
websocket.register("/ws").onMessage = (client, m) => client.send(m);
`,
  },
};

async function get(
  server: TestServer,
  host: string,
  path: string,
  cookie = "",
): Promise<{ status: number; body: string; cookie: string }> {
  const res = await server.raw(
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${
      cookie === "" ? "" : `Cookie: ${cookie}\r\n`
    }Connection: close\r\n\r\n`,
    { timeoutMs: 30_000 },
  );
  const set = (res.headers["set-cookie"] ?? "").split(";")[0]!;
  return { status: res.status, body: res.body, cookie: set || cookie };
}

function count(server: TestServer, pattern: RegExp): number {
  return server.logs().split("\n").filter((l) => pattern.test(l)).length;
}

function alive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

async function stateOf(server: TestServer, site: string): Promise<string> {
  const stats = await (await fetch(`${server.origin}/stats?format=json`))
    .json() as { sites: { name: string; state: string }[] };
  return stats.sites.find((s) => s.name === site)!.state;
}

/** What `cli sites` says, beside a server on `dataDir`. */
async function cliSites(sitesDir: string, dataDir: string): Promise<string> {
  const out = await cliCommand([
    "sites",
    `--sites-dir=${sitesDir}`,
    `--data-dir=${dataDir}`,
    "--grant-requests",
  ]).output();
  return new TextDecoder().decode(out.stdout);
}

Deno.test("--idle-stop: a site sleeps, and wakes for its requests with its sessions intact", async (t) => {
  const sitesDir = await writeSites(SITES);
  const dataDir = join(sitesDir, ".data");
  const server = await startServer({
    sitesDir,
    args: ["--idle-stop=1", `--data-dir=${dataDir}`],
  });
  try {
    let cookie = "";
    let pid = 0;
    await t.step(
      "it serves, then sleeps: its sandbox process is gone",
      async () => {
        const first = await get(server, "app.test", "/count");
        assert.equal(first.body, "1");
        cookie = first.cookie;
        assert.equal(
          (await get(server, "app.test", "/count", cookie)).body,
          "2",
        );
        pid = Number((await get(server, "app.test", "/pid")).body);
        assert.ok(alive(pid));
        await server.waitForLog(/\[app\] Asleep after 1 s without requests/);
        for (let i = 0; i < 100 && alive(pid); i++) await delay(50);
        assert.ok(!alive(pid), "the sleeping site's sandbox still runs");
        assert.equal(await stateOf(server, "app"), "asleep");
        // The operator sees it in `cli sites` too (the server writes its
        // sites' states within a second of a change).
        const running =
          /^app {2}.*\n(?: {2}.*\n)*? {2}running: +asleep since \S+ \(server pid \d+\)$/m;
        let listed = "";
        for (let i = 0; i < 20 && !running.test(listed); i++) {
          if (i > 0) await delay(250);
          listed = await cliSites(sitesDir, dataDir);
        }
        assert.match(listed, running);
        assert.match(
          listed,
          /^tasky {2}.*\n(?: {2}.*\n)*? {2}running: +serving since /m,
        );
      },
    );

    await t.step(
      "its next request wakes it; the session is intact",
      async () => {
        const third = await get(server, "app.test", "/count", cookie);
        assert.equal(third.status, 200, third.body);
        assert.equal(third.body, "3");
        await server.waitForLog(/\[app\] Awake in \d+ ms/);
        assert.equal(await stateOf(server, "app"), "serving");
        assert.notEqual(
          Number((await get(server, "app.test", "/pid")).body),
          pid,
        );
      },
    );

    await t.step(
      "50 requests at once to a sleeping site start one sandbox and are all answered",
      async () => {
        const asleep = count(server, /\[app\] Asleep/);
        await server.waitForLog(/\[app\] Asleep/);
        for (
          let i = 0;
          i < 100 && count(server, /\[app\] Asleep/) === asleep;
          i++
        ) {
          await delay(50);
        }
        const woken = count(server, /\[app\] Awake in/);
        const started = count(server, /\[app\] .*sandbox pid/);
        const answers = await Promise.all(
          Array.from({ length: 50 }, () => get(server, "app.test", "/pid")),
        );
        assert.deepEqual(answers.filter((a) => a.status !== 200), []);
        // All answered by the one sandbox started.
        assert.equal(new Set(answers.map((a) => a.body)).size, 1);
        assert.equal(count(server, /\[app\] Awake in/), woken + 1);
        assert.equal(count(server, /\[app\] .*sandbox pid/), started + 1);
      },
    );

    await t.step(
      "a sleeping site's own Error hook still renders its 404",
      async () => {
        const asleep = count(server, /\[app\] Asleep/);
        for (
          let i = 0;
          i < 100 && count(server, /\[app\] Asleep/) === asleep;
          i++
        ) {
          await delay(50);
        }
        assert.ok(count(server, /\[app\] Asleep/) > asleep, "not asleep");
        const missing = await get(server, "app.test", "/missing");
        assert.equal(missing.status, 404);
        assert.equal(missing.body, "app's own 404");
      },
    );

    await t.step("a site with a scheduler task never sleeps", () => {
      assert.equal(count(server, /\[tasky\] Asleep/), 0);
    });
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("--idle-stop: an open websocket keeps a site awake; a client wakes a sleeping one", async () => {
  const sitesDir = await writeSites({ wsy: SITES.wsy });
  const server = await startServer({ sitesDir, args: ["--idle-stop=1"] });
  const connect = async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
    const messages: string[] = [];
    ws.onmessage = (e) => messages.push(String(e.data));
    const closed = new Promise((r) => ws.onclose = r);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("the websocket did not open"));
    });
    return { ws, messages, closed };
  };
  try {
    // Asleep from the start (nobody asked for it yet): the client wakes it.
    await server.waitForLog(/\[wsy\] Asleep until its first request/);
    const client = await connect();
    await delay(3000);
    assert.equal(count(server, /\[wsy\] Asleep after/), 0, server.logs());
    client.ws.close();
    await client.closed;
    await server.waitForLog(/\[wsy\] Asleep after/);
    const again = await connect();
    again.ws.send("hello");
    for (let i = 0; i < 200 && again.messages.length === 0; i++) {
      await delay(25);
    }
    assert.deepEqual(again.messages, ["hello"]);
    assert.equal(count(server, /\[wsy\] Awake in/), 2, server.logs());
    again.ws.close();
    await again.closed;
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

/** A site whose pages come from a file in its data folder, in its order. */
const LISTED = {
  listed: {
    "site.json": JSON.stringify({
      hosts: ["listed.test"],
      permissions: { write: ["data"] },
    }),
    "data/pages.txt": "a\n",
    "autorun/ar_listed.ts": `
import { hosts } from "sandflare";
const names = Deno.readTextFileSync("data/pages.txt").split("\\n").filter(Boolean);
for (const name of names) hosts.get("listed.test").add("/" + name, () => "page " + name);
hosts.get("listed.test").add("/pid", () => String(Deno.pid));
`,
  },
};

Deno.test("--idle-stop: a site unchanged since its last load starts asleep, with its pages as they were", async (t) => {
  const sitesDir = await writeSites({ ...SITES, ...LISTED });
  const dataDir = await Deno.makeTempDir();
  const args = ["--idle-stop=60", `--data-dir=${dataDir}`];
  try {
    await t.step(
      "the first start loads every site once; those without tasks sleep at once",
      async () => {
        const server = await startServer({ sitesDir, args });
        try {
          assert.match(server.logs(), /\[app\] Loaded 1 script/);
          await server.waitForLog(/\[app\] Asleep until its first request/);
          await server.waitForLog(/\[listed\] Asleep until its first request/);
          assert.equal(count(server, /\[tasky\] Asleep/), 0);
          assert.equal(await stateOf(server, "tasky"), "serving");
        } finally {
          await server.stop();
        }
      },
    );

    await t.step(
      "the next start loads only the site with tasks; the others wake for their first request",
      async () => {
        const server = await startServer({ sitesDir, args });
        try {
          assert.match(
            server.logs(),
            /\[app\] Asleep until its first request \(2 page\(s\), hosts: app\.test, as at its last load/,
          );
          assert.equal(count(server, /\[app\] Loaded/), 0);
          assert.match(server.logs(), /\[tasky\] Loaded 1 script/);
          assert.equal(await stateOf(server, "app"), "asleep");
          const first = await get(server, "app.test", "/count");
          assert.equal(first.status, 200);
          assert.equal(first.body, "1");
          assert.equal(
            (await get(server, "app.test", "/count", first.cookie)).body,
            "2",
          );
          assert.equal(count(server, /\[app\] Awake in/), 1);
        } finally {
          await server.stop();
        }
      },
    );

    await t.step(
      "a request routed by the kept pages reaches the same page when the site registers others as it wakes",
      async () => {
        // Not in the key: its data folder is its own to write.
        await Deno.writeTextFile(
          join(sitesDir, "listed/data/pages.txt"),
          "b\na\n",
        );
        const server = await startServer({ sitesDir, args });
        try {
          assert.match(
            server.logs(),
            /\[listed\] Asleep until its first request \(2 page/,
          );
          const a = await get(server, "listed.test", "/a");
          assert.equal(a.status, 200);
          // Before, the id of /a in the kept pages was that of /b now.
          assert.equal(a.body, "page a");
          // The router has the pages it registered now.
          assert.equal((await get(server, "listed.test", "/b")).body, "page b");
        } finally {
          await server.stop();
        }
      },
    );

    await t.step("a removed site's kept pages are forgotten", async () => {
      const kept = join(dataDir, "site-routes", "listed.json");
      await Deno.stat(kept);
      const server = await startServer({ sitesDir, args });
      try {
        await Deno.remove(join(sitesDir, "listed"), { recursive: true });
        await server.waitForLog(/\[listed\] Site folder removed/);
        for (let i = 0; i < 100; i++) {
          if (!await Deno.stat(kept).then(() => true, () => false)) break;
          await delay(25);
        }
        await assert.rejects(() => Deno.stat(kept), Deno.errors.NotFound);
      } finally {
        await server.stop();
      }
    });

    await t.step("a changed script is loaded at the next start", async () => {
      const script = join(sitesDir, "app/autorun/ar_app.ts");
      await Deno.writeTextFile(
        script,
        (await Deno.readTextFile(script)) +
          `hosts.get("app.test").add("/new", () => "new");\n`,
      );
      const server = await startServer({ sitesDir, args });
      try {
        assert.match(server.logs(), /\[app\] Loaded 1 script\(s\), 3 page/);
        assert.equal((await get(server, "app.test", "/new")).body, "new");
      } finally {
        await server.stop();
      }
    });
  } finally {
    await Deno.remove(sitesDir, { recursive: true });
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("--idle-stop: a site that cannot wake is not tried again for every request", async () => {
  // It loads once, then fails every load after (its flag is in data/,
  // which is not in the key of its kept pages).
  const sitesDir = await writeSites({
    flaky: {
      "site.json": JSON.stringify({
        hosts: ["flaky.test"],
        permissions: { write: ["data"] },
      }),
      "data/.keep": "",
      "autorun/ar_flaky.ts": `
import { hosts } from "sandflare";
let seen = false;
try { Deno.statSync("data/loaded"); seen = true; } catch { /* first load */ }
Deno.writeTextFileSync("data/loaded", "1");
if (seen) throw new Error("fails on every load after the first");
hosts.get("flaky.test").add("/", () => "flaky");
`,
    },
  });
  const dataDir = await Deno.makeTempDir();
  const args = ["--idle-stop=60", `--data-dir=${dataDir}`];
  try {
    await (await startServer({ sitesDir, args })).stop();
    const server = await startServer({ sitesDir, args });
    try {
      assert.match(server.logs(), /\[flaky\] Asleep until its first request/);
      const statuses: number[] = [];
      for (const end = Date.now() + 2000; Date.now() < end;) {
        statuses.push((await get(server, "flaky.test", "/")).status);
      }
      assert.ok(statuses.length >= 5, `${statuses.length} requests`);
      assert.deepEqual([...new Set(statuses)], [503]);
      // Before: a sandbox started (and failed) for every request.
      const tries = count(server, /\[flaky\] .*Could not wake the site/);
      assert.ok(tries >= 1 && tries <= 3, `${tries} wakes tried`);
      assert.match(
        server.logs(),
        /requests get 503 for \d+ s before it is tried again/,
      );
    } finally {
      await server.stop();
    }
  } finally {
    await Deno.remove(sitesDir, { recursive: true });
    await Deno.remove(dataDir, { recursive: true });
  }
});
