/**
 * Stopping means stopped: every sandbox that is replaced, removed or shut
 * down is gone within a bounded time whatever its code does, one site never
 * runs as two live sandboxes, and a folder linked in is noticed.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  childrenOf,
  delay,
  startServer,
  writeSites,
} from "../../helpers/server.ts";

const SPIN = {
  // One worker, busy for good once its task starts.
  "site.json": JSON.stringify({ hosts: ["*"] }),
  "autorun/ar_spin.ts": `
import { hosts, scheduler } from "sandflare";
hosts.any.add("/spin-ready", () => "ready");
scheduler.newTask("spin", () => { while (true) {} });
`,
};

/** The sandboxes of a server whose site folder is `dir` (by their cwd). */
function sandboxes(serverPid: number, dir: string): number[] {
  return childrenOf(
    serverPid,
    (pid, command) =>
      command.includes("__sandbox") &&
      Deno.readLinkSync(`/proc/${pid}/cwd`) === dir,
  );
}

async function waitFor(
  what: string,
  ok: () => boolean,
  ms = 10_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`Not within ${ms} ms: ${what}`);
    await delay(50);
  }
}

Deno.test("a stuck single-worker sandbox is gone after a reload, and after its folder is removed", async () => {
  const sitesDir = await writeSites({ spin: SPIN });
  const server = await startServer({ sitesDir });
  const dir = await Deno.realPath(join(sitesDir, "spin"));
  try {
    await delay(300); // its task is spinning
    const [first] = sandboxes(server.child.pid, dir);
    assert.ok(first !== undefined);
    await Deno.writeTextFile(
      join(dir, "autorun/ar_spin.ts"),
      SPIN["autorun/ar_spin.ts"] + "\n// changed\n",
    );
    await server.waitForLog(/\[spin\] Reloaded in/);
    // In flight: nothing; then 2 s to shut down, then SIGKILL.
    await waitFor(
      "the old generation is gone",
      () => !sandboxes(server.child.pid, dir).includes(first),
      6000,
    );
    await Deno.remove(dir, { recursive: true });
    await server.waitForLog(/\[spin\] Site folder removed/);
    await waitFor(
      "no sandbox is left for the removed site",
      () => sandboxes(server.child.pid, dir).length === 0,
      6000,
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("SIGTERM with a stuck site stops the server in time, every sandbox gone", async () => {
  const sitesDir = await writeSites({ spin: SPIN });
  const server = await startServer({ sitesDir });
  const dir = await Deno.realPath(join(sitesDir, "spin"));
  try {
    await delay(300);
    assert.equal(sandboxes(server.child.pid, dir).length, 1);
    const pid = server.child.pid;
    const [sandbox] = sandboxes(pid, dir);
    const started = Date.now();
    const status = await server.stop("SIGTERM");
    assert.equal(status.code, 0);
    // No request in flight: 1 s for the sites, 2 s to shut down, SIGKILL.
    assert.ok(Date.now() - started < 8000, `${Date.now() - started} ms`);
    assert.throws(() => Deno.statSync(`/proc/${sandbox}`), "sandbox gone");
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a site whose script appears while its first load runs loads once", async () => {
  const sitesDir = await writeSites({
    nb: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_nb.ts":
        `import { hosts } from "sandflare";\nhosts.any.add("/nb", () => "nb");\n`,
    },
  });
  const server = await startServer({ sitesDir });
  const dir = join(sitesDir, "late");
  try {
    // The first version takes a while to load; the second arrives meanwhile.
    const script = (version: number) =>
      `import { hosts, scheduler } from "sandflare";\nawait new Promise((r) => setTimeout(r, ${
        version === 1 ? 800 : 0
      }));\nhosts.any.add("/late", () => "late ${version}");\nscheduler.newTask("tick", async () => { while (true) { console.log("tick"); await scheduler.sleep(0.2); } });\n`;
    await Deno.mkdir(join(dir, "autorun"), { recursive: true });
    await Deno.writeTextFile(join(dir, "autorun/ar_late.ts"), script(1));
    await Deno.writeTextFile(
      join(dir, "site.json"),
      JSON.stringify({ hosts: ["*"] }),
    );
    await delay(300);
    await Deno.writeTextFile(join(dir, "autorun/ar_late.ts"), script(2));
    const real = await Deno.realPath(dir);
    await waitFor(
      "the second version is served",
      () => server.err.some((l) => /\[late\] Reloaded/.test(l)),
    );
    assert.equal((await server.fetch("/late")).text, "late 2");
    await delay(2500); // the first generation has stopped by now
    // The one serving, and the spare waiting for its next reload (no log
    // line names a spare).
    const logged = new Set(
      [...server.logs().matchAll(/\[late\] .*sandbox pid (\d+)/g)].map((m) =>
        Number(m[1])
      ),
    );
    const running = sandboxes(server.child.pid, real);
    assert.equal(
      running.filter((p) => logged.has(p)).length,
      1,
      `one generation: ${running}`,
    );
    assert.ok(running.length <= 2, `at most its spare besides: ${running}`);
    await Deno.remove(dir, { recursive: true });
    await server.waitForLog(/\[late\] Site folder removed/);
    await waitFor(
      "no sandbox is left",
      () => sandboxes(server.child.pid, real).length === 0,
      6000,
    );
    const ticks = server.err.filter((l) => /\[late\] tick/.test(l)).length;
    await delay(1000);
    assert.equal(
      server.err.filter((l) => /\[late\] tick/.test(l)).length,
      ticks,
      "its scheduler task stopped",
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a site folder linked into the sites folder (cli mount) is noticed without SIGHUP", async () => {
  const sitesDir = await writeSites({});
  const elsewhere = await writeSites({
    linked: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_linked.ts":
        `import { hosts } from "sandflare";\nhosts.any.add("/linked", () => "linked");\n`,
    },
  });
  const server = await startServer({ sitesDir });
  try {
    await Deno.symlink(join(elsewhere, "linked"), join(sitesDir, "linked"));
    await server.waitForLog(/\[linked\] Loaded/, 10_000);
    assert.equal((await server.fetch("/linked")).text, "linked");
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
    await Deno.remove(elsewhere, { recursive: true });
  }
});

Deno.test("a site's line saying 'Fatal JavaScript out of memory' does not hide its later lines", async () => {
  const sitesDir = await writeSites({
    liar: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_liar.ts": `
import { hosts } from "sandflare";
hosts.any.add("/lie", () => {
  console.log("Fatal JavaScript out of memory: not really");
  return "lied";
});
hosts.any.add("/after", () => { console.log("a later line"); return "ok"; });
`,
    },
  });
  const server = await startServer({ sitesDir });
  try {
    assert.equal((await server.fetch("/lie")).text, "lied");
    await delay(100);
    assert.equal((await server.fetch("/after")).text, "ok");
    await server.waitForLog(/\[liar\] a later line/, 5000);
    await server.waitForLog(/\[liar\] Fatal JavaScript out of memory/, 5000);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
