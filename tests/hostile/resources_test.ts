/**
 * A site's resources are its own and bounded (issue 15): no storage shared
 * with other sites, no way into the runtime's internals, a few Workers of
 * its own at most, and code stuck anywhere — a page, a scheduler task, a
 * websocket handler, a Worker it started — gets its sandbox replaced.
 * Each case is one found working on the code before.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  cacheGrower,
  delay,
  startServer,
  type TestServer,
  writeSites,
} from "../helpers/server.ts";

/** GET `path` on `host`; the status and body. */
async function get(
  server: TestServer,
  host: string,
  path: string,
): Promise<{ status: number; body: string }> {
  const res = await server.raw(
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
  );
  return { status: res.status, body: res.body };
}

/** Files under `dir` (recursively), 0 when it does not exist. */
function countFiles(dir: string): number {
  let n = 0;
  try {
    for (const entry of Deno.readDirSync(dir)) {
      n += entry.isDirectory ? countFiles(join(dir, entry.name)) : 1;
    }
  } catch {
    // Missing.
  }
  return n;
}

function denoDir(): string {
  return Deno.env.get("DENO_DIR") ??
    join(Deno.env.get("HOME") ?? "/root", ".cache/deno");
}

Deno.test("sites share no Cache API or web storage, and cannot reach the runtime's internals", async () => {
  const storage = (name: string) => ({
    "site.json": JSON.stringify({ hosts: [`${name}.test`] }),
    "autorun/ar_store.ts": `
import { hosts } from "sandflare";
const site = hosts.get("${name}.test");
const attempt = async (what: () => Promise<unknown> | unknown) => {
  try { return String(await what()); } catch (err) { return "refused: " + (err as Error).message; }
};
site.add("/put", () => attempt(async () => {
  const cache = await caches.open("shared");
  await cache.put("http://x.test/secret", new Response("${name}'s secret"));
  return "stored";
}));
site.add("/get", () => attempt(async () => {
  const cache = await caches.open("shared");
  const hit = await cache.match("http://x.test/secret");
  return hit === undefined ? "nothing" : await hit.text();
}));
site.add("/local", () => attempt(() => {
  (globalThis as any).localStorage.setItem("k", "${name}");
  return (globalThis as any).localStorage.getItem("k");
}));
site.add("/internal", () => attempt(() => {
  const internal = (Deno as any)[(Deno as any).internal];
  return internal === undefined ? "none" : Object.keys(internal).join(",");
}));
`,
  });
  const sitesDir = await writeSites({ a: storage("a"), b: storage("b") });
  const before = countFiles(join(denoDir(), "location_data"));
  const server = await startServer({ sitesDir });
  try {
    const put = await get(server, "a.test", "/put");
    assert.match(put.body, /^refused: caches is not defined/);
    const read = await get(server, "b.test", "/get");
    assert.match(read.body, /^refused: /);
    assert.doesNotMatch(read.body, /secret/);
    assert.match(
      (await get(server, "b.test", "/local")).body,
      /^refused: /,
    );
    assert.equal((await get(server, "a.test", "/internal")).body, "none");
    assert.equal(
      countFiles(join(denoDir(), "location_data")),
      before,
      "nothing was written to the server's DENO_DIR",
    );
  } finally {
    await server.stop();
  }
});

const NESTED = {
  "site.json": JSON.stringify({ hosts: ["nest.test"], workers: 2 }),
  "autorun/ar_nest.ts": `
import { hosts } from "sandflare";
const site = hosts.get("nest.test");
const CHILD = URL.createObjectURL(new Blob([
  "console.log('child output goes to the log');" +
  "self.onmessage = (e) => self.postMessage('echo ' + e.data);",
], { type: "text/javascript" }));
const started: Worker[] = [];
site.add("/echo", () => new Promise((resolve) => {
  const w = new Worker(CHILD, { type: "module" });
  w.onmessage = (e) => { resolve(String(e.data)); w.terminate(); };
  // Sent at once: it must wait for the child's module to load.
  w.postMessage("hello");
}));
site.add("/start", () => {
  try {
    started.push(new Worker(CHILD, { type: "module" }));
    return "started " + started.length;
  } catch (err) {
    return "refused: " + (err as Error).message;
  }
});
site.add("/stop", () => {
  const worker = started.pop();
  worker?.terminate();
  return worker === undefined ? "none here" : "stopped";
});
site.add("/bypass", () => {
  try {
    // What a Worker's prototype says its constructor is (in any worker).
    const ctor = (Worker.prototype as any).constructor;
    new ctor(CHILD, { type: "module" });
    return "started past the limit";
  } catch (err) {
    return "refused: " + (err as Error).message;
  }
});
site.add("/escalate", () => {
  try {
    new Worker(CHILD, { type: "module", deno: { permissions: { net: true } } } as any);
    return "escalated";
  } catch (err) {
    return "refused: " + (err as Error).message;
  }
});
`,
};

Deno.test("a site runs a few Workers of its own, no more, with no more permissions", async () => {
  const sitesDir = await writeSites({ nest: NESTED });
  const server = await startServer({ sitesDir });
  try {
    assert.equal((await get(server, "nest.test", "/echo")).body, "echo hello");
    await server.waitForLog(/\[nest\] .*child output goes to the log/);
    // The two workers share one count: ask until one of them refuses.
    const answers: string[] = [];
    for (let i = 0; i < 6; i++) {
      answers.push((await get(server, "nest.test", "/start")).body);
    }
    const refusals = answers.filter((a) => a.startsWith("refused"));
    assert.equal(refusals.length, 2, answers.join("\n"));
    assert.match(refusals[0]!, /at most 4 Workers of its own/);
    assert.match(
      (await get(server, "nest.test", "/bypass")).body,
      /^refused: .*at most 4/,
    );
    assert.match(
      (await get(server, "nest.test", "/escalate")).body,
      /^refused: /,
    );
    // A terminated one gives its place back, once its thread has ended
    // (which takes a while on a busy machine).
    // (Either of the site's two workers may answer: ask until one that
    // started some stops one.)
    let stopped = false;
    for (let i = 0; i < 20 && !stopped; i++) {
      stopped = (await get(server, "nest.test", "/stop")).body === "stopped";
    }
    assert.ok(stopped, "no worker had a Worker to stop");
    let freed = false;
    for (const started = Date.now(); !freed && Date.now() - started < 15_000;) {
      freed = !(await get(server, "nest.test", "/start")).body.startsWith(
        "refused",
      );
      if (!freed) await delay(100);
    }
    assert.ok(freed, "a place was freed by terminate()");
  } finally {
    await server.stop();
  }
});

/** A site with code stuck somewhere, and a page that still answers before. */
function stuckSite(code: string): Record<string, string> {
  return {
    "site.json": JSON.stringify({ hosts: ["stuck.test"], workers: 2 }),
    "autorun/ar_stuck.ts": `
import { hosts, scheduler, websocket } from "sandflare";
const site = hosts.get("stuck.test");
site.add("/up", () => "up " + Deno.pid);
${code}
`,
  };
}

const STUCK_CASES: Record<string, { code: string; trigger?: string }> = {
  "a scheduler task": {
    code: `scheduler.newTask("spin", () => { while (true) {} });`,
  },
  "a Worker the site started": {
    code: `
const spin = URL.createObjectURL(new Blob(["while (true) {}"], { type: "text/javascript" }));
site.add("/spin", () => { new Worker(spin, { type: "module" }); return "spinning"; });`,
    trigger: "/spin",
  },
  "a timer in a page's worker": {
    code:
      `site.add("/spin", () => { setTimeout(() => { while (true) {} }, 10); return "later"; });`,
    trigger: "/spin",
  },
};

for (const [what, { code, trigger }] of Object.entries(STUCK_CASES)) {
  Deno.test(`code stuck in ${what} gets its sandbox replaced, without any request timing out`, async () => {
    const sitesDir = await writeSites({ stuck: stuckSite(code) });
    const server = await startServer({ sitesDir });
    try {
      if (trigger !== undefined) {
        assert.equal((await get(server, "stuck.test", trigger)).status, 200);
      }
      const line = await server.waitForLog(
        /\[stuck\] .*did not answer for 5 s \(stuck in synchronous code\); replacing the sandbox/,
        30_000,
      );
      assert.ok(line);
      await server.waitForLog(/\[stuck\] Sandbox restarted/, 20_000);
      // The replacement answers (a task would spin again at once).
      if (trigger === undefined) return;
      let status = 0;
      for (let i = 0; i < 40 && status !== 200; i++) {
        status = (await get(server, "stuck.test", "/up")).status;
        if (status !== 200) await delay(250);
      }
      assert.equal(status, 200);
    } finally {
      await server.stop();
    }
  });
}

for (
  const [mode, args] of [["cgroups", []], ["--no-cgroups", [
    "--no-cgroups",
  ]]] as const
) {
  Deno.test(`${mode}: what holds the sandboxes is said at start and on /stats, with each site's memory`, async () => {
    const sitesDir = await writeSites({
      small: {
        "site.json": JSON.stringify({ hosts: ["small.test"], memory: 96 }),
        "autorun/ar_small.ts":
          `import { hosts } from "sandflare";\nhosts.get("small.test").add("/", () => "small");\n`,
      },
    });
    const server = await startServer({ sitesDir, args: [...args] });
    try {
      const line = await server.waitForLog(/Site limits: /);
      const stats = JSON.parse(
        (await server.fetch("/stats?format=json")).text,
      ) as {
        limits: string;
        sites: {
          name: string;
          memoryMiB: number | null;
          memoryLimitMiB: number | null;
        }[];
      };
      assert.ok(line.endsWith(stats.limits), `${line}\n${stats.limits}`);
      if (mode === "cgroups") {
        assert.match(
          stats.limits,
          /memory: cgroup \/sys\/fs\/cgroup\/memory\/.*sandflare-\d+; CPU: cgroup /,
        );
      } else {
        assert.match(
          stats.limits,
          /each sandbox checks its resident memory.*nice 10.*--no-cgroups/,
        );
      }
      const small = stats.sites.find((s) => s.name === "small");
      assert.equal(small?.memoryLimitMiB, 96);
      assert.ok((small?.memoryMiB ?? 0) > 0, JSON.stringify(small));
      assert.ok((small?.memoryMiB ?? 0) < 96, JSON.stringify(small));
    } finally {
      await server.stop();
    }
    // Nothing is left behind in the cgroups.
    assert.deepEqual(
      [...Deno.readDirSync("/sys/fs/cgroup/cpu")].filter((e) =>
        e.name === `sandflare-${server.child.pid}`
      ),
      [],
    );
  });
}

/** inotify watches the process holds (each watched folder is one). */
function inotifyWatches(pid: number): number {
  let n = 0;
  for (const entry of Deno.readDirSync(`/proc/${pid}/fdinfo`)) {
    try {
      const text = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${entry.name}`);
      n += text.split("\n").filter((l) => l.startsWith("inotify wd:")).length;
    } catch {
      // Closed meanwhile.
    }
  }
  return n;
}

/** Bytes of the files under `dir`. */
function sizeOf(dir: string): number {
  let n = 0;
  try {
    for (const entry of Deno.readDirSync(dir)) {
      const path = join(dir, entry.name);
      n += entry.isDirectory ? sizeOf(path) : Deno.statSync(path).size;
    }
  } catch {
    // Missing.
  }
  return n;
}

Deno.test("a site over its disk quota loses its write access until it is under again; its writable folders are never watched", async () => {
  const sitesDir = await writeSites({
    filler: {
      "site.json": JSON.stringify({
        hosts: ["filler.test"],
        permissions: { read: ["data"], write: ["data"] },
        disk: 5,
      }),
      "autorun/ar_filler.ts": `
import { hosts } from "sandflare";
const site = hosts.get("filler.test");
site.add("/dirs", async () => {
  for (let i = 0; i < 300; i++) await Deno.mkdir("data/d" + i, { recursive: true });
  return "made";
});
site.add("/fill", async () => {
  const mib = new Uint8Array(1024 * 1024).fill(7);
  let written = 0;
  try {
    for (let i = 0; i < 60; i++) {
      await Deno.writeFile("data/f" + i, mib);
      written++;
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (err) {
    return "refused after " + written + ": " + (err as Error).name;
  }
  return "wrote " + written;
});
site.add("/one", async () => {
  try {
    await Deno.writeTextFile("data/one.txt", "x");
    return "written";
  } catch (err) {
    return "refused: " + (err as Error).name;
  }
});
`,
    },
  });
  const data = join(await Deno.realPath(join(sitesDir, "filler")), "data");
  await Deno.mkdir(data);
  const server = await startServer({ sitesDir });
  try {
    const watchesBefore = inotifyWatches(server.child.pid);
    assert.equal((await get(server, "filler.test", "/dirs")).body, "made");
    await delay(300);
    const grown = inotifyWatches(server.child.pid) - watchesBefore;
    assert.ok(grown < 5, `300 folders in data/ added ${grown} watches`);

    const fill = await get(server, "filler.test", "/fill");
    assert.doesNotMatch(fill.body, /wrote 60/);
    await server.waitForLog(
      /\[filler\] Over its disk quota: more than 5 MiB in data; it may not write until it is under again/,
    );
    // Measured once a second: a writer at 20 MiB/s gets at most a second's worth past it.
    assert.ok(
      sizeOf(data) < 30 * 1024 * 1024,
      `data/ holds ${sizeOf(data)} bytes`,
    );
    await server.waitForLog(/\[filler\] Sandbox restarted/);
    assert.equal(
      (await get(server, "filler.test", "/one")).body,
      "refused: NotCapable",
    );
    const stats = JSON.parse(
      (await server.fetch("/stats?format=json")).text,
    ) as {
      sites: { name: string; overDiskQuota: boolean; diskQuotaMiB: number }[];
    };
    const filler = stats.sites.find((s) => s.name === "filler");
    assert.equal(filler?.overDiskQuota, true);
    assert.equal(filler?.diskQuotaMiB, 5);

    // The operator makes room: write access comes back.
    for (const entry of Deno.readDirSync(data)) {
      await Deno.remove(join(data, entry.name), { recursive: true });
    }
    await server.waitForLog(
      /\[filler\] Under its disk quota again \(\d+ of 5 MiB\); write access is back/,
    );
    let body = "";
    for (let i = 0; i < 40 && body !== "written"; i++) {
      body = (await get(server, "filler.test", "/one")).body;
      if (body !== "written") await delay(250);
    }
    assert.equal(body, "written");
  } finally {
    await server.stop();
  }
});

Deno.test("a site loads no package from the server's cache, and none of the runtime's modules", async () => {
  const confine = new URL("../../src/sandbox/confine.ts", import.meta.url).href;
  const sitesDir = await writeSites({
    imp: {
      "site.json": JSON.stringify({ hosts: ["imp.test"] }),
      "autorun/ar_imp.ts": `
import { hosts } from "sandflare";
const site = hosts.get("imp.test");
const attempt = async (what: () => Promise<unknown>) => {
  try { return "loaded: " + String(await what()); } catch (err) { return "refused: " + (err as Error).message; }
};
// mime-db is in the server's own import map and npm cache.
site.add("/npm", () => attempt(async () => Object.keys((await import("npm:mime-db@1.54.0")).default).length));
site.add("/mapped", () => attempt(async () => Object.keys((await import("mime-db")).default).length));
site.add("/relimit", () => attempt(async () => {
  const { limitWorkers } = await import("${confine}");
  limitWorkers(new SharedArrayBuffer(4));
  return "a new count";
}));
`,
    },
  });
  const server = await startServer({ sitesDir });
  try {
    assert.match(
      (await get(server, "imp.test", "/npm")).body,
      /^refused: npm specifiers were requested; but --no-npm is specified/,
    );
    // The server's import map is not the sandboxes'.
    assert.match(
      (await get(server, "imp.test", "/mapped")).body,
      /^refused: Import "mime-db" not a dependency and not in import map/,
    );
    // The runtime's modules, even those already loaded in the worker.
    assert.match(
      (await get(server, "imp.test", "/relimit")).body,
      /^refused: Requires read access to ".*\/not_for_sites\/sandbox\/confine\.ts"/,
    );
  } finally {
    await server.stop();
  }
});

Deno.test("what Deno writes while it runs a site's code lands in that site's own cache, not the server's", async () => {
  const sitesDir = await writeSites({
    emits: {
      "site.json": JSON.stringify({ hosts: ["emits.test"] }),
      "autorun/ar_emits.ts":
        `import { hosts } from "sandflare";\nconst answer: string = "typed";\nhosts.get("emits.test").add("/", () => answer);\n`,
    },
  });
  const dataDir = await Deno.makeTempDir({ prefix: "sandflare-data-" });
  const siteDir = await Deno.realPath(join(sitesDir, "emits"));
  const server = await startServer({
    sitesDir,
    args: [`--data-dir=${dataDir}`],
  });
  try {
    assert.equal((await get(server, "emits.test", "/")).body, "typed");
    const emitted = (root: string) => {
      try {
        return [...Deno.readDirSync(join(root, "gen/file", siteDir, "autorun"))]
          .length;
      } catch {
        return 0;
      }
    };
    assert.equal(emitted(denoDir()), 0, "nothing in the server's cache");
    assert.equal(emitted(join(dataDir, "site-cache/emits")), 1);
  } finally {
    await server.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("no way around the Worker limit: node:worker_threads, process.getBuiltinModule, require, or hooking Worker.prototype", async () => {
  const sitesDir = await writeSites({
    around: {
      "site.json": JSON.stringify({ hosts: ["around.test"] }),
      "autorun/ar_around.ts": `
import { hosts } from "sandflare";
import { createRequire } from "node:module";
const site = hosts.get("around.test");
const attempt = async (what: () => unknown) => {
  try { return "made: " + String(await what()); } catch (err) { return "refused: " + (err as Error).message; }
};
const SPIN = "for (;;) {}";
const g = globalThis as any;
site.add("/import", () => attempt(async () => {
  const { Worker } = await import("node:worker_threads");
  return typeof new Worker(SPIN, { eval: true });
}));
site.add("/main-thread", async () => String((await import("node:worker_threads")).isMainThread));
site.add("/builtin", () => attempt(() => {
  const { Worker } = g.process.getBuiltinModule("node:worker_threads");
  return typeof new Worker(SPIN, { eval: true });
}));
site.add("/builtin-proto", () => attempt(() => {
  const get = Object.getPrototypeOf(g.process).getBuiltinModule ?? g.process.getBuiltinModule;
  const { Worker } = get.call(g.process, "worker_threads");
  return typeof new Worker(SPIN, { eval: true });
}));
site.add("/require", () => attempt(() => {
  const { Worker } = createRequire(import.meta.url)("worker_threads");
  return typeof new Worker(SPIN, { eval: true });
}));
const tokens: unknown[] = [];
site.add("/hook", () => {
  const proto = Worker.prototype as any;
  const post = proto.postMessage;
  proto.postMessage = function (this: Worker, message: any, ...rest: unknown[]) {
    const control = message?.__sandflare_nested;
    if (control !== undefined) {
      tokens.push(control.token);
      Atomics.store(new Int32Array(control.count), 0, -1000);
    }
    return post.call(this, message, ...rest);
  };
  const realAdd = Atomics.add;
  (Atomics as any).add = () => 0;
  const started: Worker[] = [];
  try {
    for (let i = 0; i < 8; i++) {
      started.push(new Worker(URL.createObjectURL(new Blob([""], { type: "text/javascript" })), { type: "module" }));
    }
  } catch { /* the limit */ }
  (Atomics as any).add = realAdd;
  proto.postMessage = post;
  return "started " + started.length + ", tokens seen " + tokens.length;
});
`,
    },
  });
  const server = await startServer({ sitesDir });
  try {
    for (const path of ["/import", "/builtin", "/builtin-proto", "/require"]) {
      assert.match(
        (await get(server, "around.test", path)).body,
        /^refused: .*Workers of its own/,
        path,
      );
    }
    // The rest of the module is there, as Deno gives it.
    assert.match(
      (await get(server, "around.test", "/main-thread")).body,
      /^(true|false)$/,
    );
    assert.equal(
      (await get(server, "around.test", "/hook")).body,
      "started 4, tokens seen 0",
    );
  } finally {
    await server.stop();
  }
});

Deno.test("a site that grows its Deno cache by importing modules it makes is stopped at its disk quota, and the cache emptied", async () => {
  const sitesDir = await writeSites({
    grower: {
      // No write permission at all.
      "site.json": JSON.stringify({ hosts: ["grower.test"], disk: 5 }),
      "autorun/ar_grower.ts": `
import { hosts } from "sandflare";
${cacheGrower('hosts.get("grower.test")')}`,
    },
  });
  const dataDir = await Deno.makeTempDir({ prefix: "sandflare-data-" });
  const server = await startServer({
    sitesDir,
    args: [`--data-dir=${dataDir}`],
  });
  try {
    const grow = await get(server, "grower.test", "/grow");
    assert.notEqual(grow.body, "grew");
    await server.waitForLog(
      /\[grower\] Its Deno cache went over its disk quota \(5 MiB/,
    );
    await server.waitForLog(/\[grower\] Sandbox restarted/);
    await delay(500);
    const cache = join(dataDir, "site-cache", "grower");
    const size = sizeOf(cache);
    assert.ok(size < 5 * 1024 * 1024, `the cache holds ${size} bytes`);
  } finally {
    await server.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("no sandbox outlives its gateway, even one killed with SIGKILL", async () => {
  const page = (host: string) =>
    `import { hosts } from "sandflare";\nhosts.get("${host}").add("/", () => "ok");\n`;
  const sitesDir = await writeSites({
    one: {
      "site.json": JSON.stringify({ hosts: ["one.test"], workers: 1 }),
      "autorun/ar_one.ts": page("one.test"),
    },
    two: {
      "site.json": JSON.stringify({ hosts: ["two.test"], workers: 2 }),
      "autorun/ar_two.ts": page("two.test"),
    },
  });
  const server = await startServer({ sitesDir });
  const pids = [...server.logs().matchAll(/sandbox pid (\d+)/g)].map((m) =>
    Number(m[1])
  );
  assert.equal(pids.length, 3, "root, one and two");
  await server.stop("SIGKILL");
  const deadline = Date.now() + 10_000;
  let left = pids;
  while (Date.now() < deadline) {
    left = pids.filter((pid) => {
      try {
        return !Deno.readTextFileSync(`/proc/${pid}/stat`).includes(") Z ");
      } catch {
        return false;
      }
    });
    if (left.length === 0) break;
    await delay(100);
  }
  assert.deepEqual(left, [], "sandboxes left behind");
});
