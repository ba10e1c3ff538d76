/**
 * Lifecycle (SPEC §8): pid file, draining on SIGTERM/SIGINT, sandboxes
 * stopped with the server, crash-loop backoff.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  delay,
  type SiteFiles,
  startServer,
  writeSites,
} from "./helpers/server.ts";

const SITES: SiteFiles = {
  slow: {
    "site.json": JSON.stringify({ hosts: ["*"] }),
    "autorun/ar_slow.ts": `
import { hosts } from "sandflare";
hosts.any.add("/slow", async () => { await new Promise((r) => setTimeout(r, 1500)); return "finished"; });
hosts.any.add("/fast", () => "fast");
`,
  },
};

function sandboxPids(logs: string): number[] {
  return [...logs.matchAll(/sandbox pid (\d+)/g)].map((m) => Number(m[1]));
}

async function processExists(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return !/^\d+ \([^)]*\) Z/.test(stat); // a zombie is gone for our purposes
  } catch {
    return false;
  }
}

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`${signal} lets in-flight requests finish, stops every sandbox, removes the pid file`, async () => {
    const sitesDir = await writeSites(SITES);
    const pidFile = join(sitesDir, "server.pid");
    const server = await startServer({
      sitesDir,
      args: [`--out-pid=${pidFile}`],
    });
    try {
      assert.equal(
        (await Deno.readTextFile(pidFile)).trim(),
        String(server.child.pid),
      );
      const pids = sandboxPids(server.logs());
      assert.equal(pids.length, 2, "root and slow sandboxes");
      for (const pid of pids) assert.ok(await processExists(pid));
      // A terminal's Ctrl-C reaches sandboxes too: only the gateway stops them.
      for (const pid of pids) Deno.kill(pid, signal);
      await delay(200);
      for (const pid of pids) {
        assert.ok(await processExists(pid), `sandbox ${pid} ignored ${signal}`);
      }
      assert.equal((await server.fetch("/fast")).text, "fast");

      const inflight = server.fetch("/slow");
      await delay(300);
      const status = await server.stop(signal);
      const res = await inflight;
      assert.equal(res.status, 200);
      assert.equal(res.text, "finished");
      assert.equal(status.code, 0);
      await assert.rejects(Deno.stat(pidFile), Deno.errors.NotFound);
      for (const pid of pids) {
        assert.equal(await processExists(pid), false, `sandbox ${pid} stopped`);
      }
      assert.match(server.logs(), new RegExp(`${signal}: stopping`));
    } finally {
      await server.stop("SIGKILL");
      await Deno.remove(sitesDir, { recursive: true });
    }
  });
}

Deno.test("a site that keeps crashing is restarted with growing backoff; others serve", async () => {
  const sitesDir = await writeSites({
    ...SITES,
    crashy: {
      "site.json": JSON.stringify({
        hosts: ["crashy.test"],
        memory: 64,
        workers: 1,
        requestTimeout: 2,
      }),
      "autorun/ar_crashy.ts": `
import { hosts } from "sandflare";
let loaded = false;
try {
  await Deno.stat(new URL("../started", import.meta.url));
  loaded = true;
} catch { /* first generation */ }
if (loaded) {
  // Every later generation dies while loading.
  const hoard: number[][] = [];
  while (true) hoard.push(new Array(1_000_000).fill(1.5));
}
hosts.get("crashy.test").add("/", () => "first generation");
`,
    },
  });
  const server = await startServer({ sitesDir });
  try {
    const first = await server.raw(
      "GET / HTTP/1.1\r\nHost: crashy.test\r\nConnection: close\r\n\r\n",
    );
    assert.equal(first.body, "first generation");
    await Deno.writeTextFile(join(sitesDir, "crashy", "started"), "");
    // Kill the sandbox from outside, as the OOM killer would.
    const pid = Number(/\[crashy\].*sandbox pid (\d+)/.exec(server.logs())![1]);
    Deno.kill(pid, "SIGKILL");
    await server.waitForLog(
      /\[crashy\] Sandbox stopped: .*SIGKILL.*restarting now/,
    );
    const delays: number[] = [];
    const deadline = Date.now() + 15_000;
    while (delays.length < 3 && Date.now() < deadline) {
      delays.splice(
        0,
        delays.length,
        ...[
          ...server.logs().matchAll(
            /\[crashy\] Restart failed: .*trying again in (\d+) ms/g,
          ),
        ].map((m) => Number(m[1])),
      );
      await delay(50);
    }
    assert.ok(
      delays.length >= 3,
      `three failed restarts logged:\n${server.logs()}`,
    );
    assert.ok(
      delays[1]! > delays[0]! && delays[2]! > delays[1]!,
      `backoff grows: ${delays}`,
    );
    assert.equal((await server.fetch("/fast")).text, "fast");
    const during = await server.raw(
      "GET / HTTP/1.1\r\nHost: crashy.test\r\nConnection: close\r\n\r\n",
    );
    assert.equal(
      during.status,
      503,
      "a site that cannot come back answers 503 after its timeout",
    );
    // The crash loop is on /stats too.
    const stats = JSON.parse((await server.fetch("/stats?format=json")).text);
    const crashy = stats.sites.find((x: { name: string }) =>
      x.name === "crashy"
    );
    assert.equal(crashy.state, "restarting");
    assert.ok(crashy.restarts >= 3, `restarts: ${crashy.restarts}`);
    assert.match(crashy.lastProblem, /memory/);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a second stop signal exits at once", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  try {
    const inflight = server.fetch("/slow").catch(() => null);
    await delay(200);
    server.child.kill("SIGTERM");
    await delay(400); // a signal within 250 ms counts as the same one
    const t0 = Date.now();
    server.child.kill("SIGTERM");
    const status = await server.exited();
    assert.ok(Date.now() - t0 < 1000, "did not wait for the in-flight request");
    assert.equal(status.code, 1);
    assert.match(server.logs(), /Second stop signal: exiting now/);
    await inflight;
  } finally {
    await server.stop("SIGKILL");
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("if the gateway is killed, its sandboxes exit, even one stuck in site code", async () => {
  const sitesDir = await writeSites({
    stuck: {
      // One worker: it reads its own frames, and this page never returns.
      "site.json": JSON.stringify({ hosts: ["*"], requestTimeout: 60 }),
      "autorun/ar_stuck.ts": `
import { hosts } from "sandflare";
hosts.any.add("/spin", () => { while (true) {} });
hosts.any.add("/ok", () => "ok");
`,
    },
  });
  const server = await startServer({ sitesDir });
  try {
    const pids = sandboxPids(server.logs());
    assert.equal(pids.length, 2, "root and stuck sandboxes");
    assert.equal((await server.fetch("/ok")).text, "ok");
    void server.fetch("/spin").catch(() => {});
    await delay(300);
    await server.stop("SIGKILL");
    // Within 3 s: before the sandbox's next memory report (every 5 s) would
    // find the pipe broken.
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline) {
      const alive = await Promise.all(pids.map(processExists));
      if (!alive.some(Boolean)) break;
      await delay(100);
    }
    for (const pid of pids) {
      assert.equal(await processExists(pid), false, `sandbox ${pid} exited`);
    }
  } finally {
    await server.stop("SIGKILL");
    await Deno.remove(sitesDir, { recursive: true });
  }
});
