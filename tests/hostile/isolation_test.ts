/**
 * `--isolate=bwrap` (issue 15): each sandbox runs under bubblewrap too, a
 * second wall behind Deno's permissions. Seen from outside, through /proc:
 * its own mount, PID, IPC and UTS namespaces, no network of the host's
 * unless it may use the network, and a root that shows the runtime and its
 * own site folder, not the other sites or the server's data.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { startServer, type TestServer, writeSites } from "../helpers/server.ts";

/** The Deno process of a site's sandbox (bwrap's child's child), by its cwd. */
function sandboxOf(dir: string): number {
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`);
      if (!cmdline.includes("__sandbox") || cmdline.startsWith("bwrap")) {
        continue;
      }
      if (Deno.readLinkSync(`/proc/${entry.name}/cwd`) === dir) {
        return Number(entry.name);
      }
    } catch {
      // Gone, or not ours to read.
    }
  }
  throw new Error(`No sandbox runs in ${dir}`);
}

function ns(pid: number | "self", kind: string): string {
  return Deno.readLinkSync(`/proc/${pid}/ns/${kind}`);
}

function sees(pid: number, path: string): boolean {
  try {
    Deno.statSync(`/proc/${pid}/root${path}`);
    return true;
  } catch {
    return false;
  }
}

async function get(server: TestServer, host: string, path: string) {
  return await server.raw(
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
  );
}

Deno.test("--isolate=bwrap: a sandbox sees only the runtime and its own folder, in namespaces of its own", async () => {
  const page = (host: string) =>
    `import { hosts } from "sandflare";\nhosts.get("${host}").add("/", () => "ok " + Deno.pid);\n`;
  const sitesDir = await writeSites({
    quiet: {
      "site.json": JSON.stringify({
        hosts: ["quiet.test"],
        permissions: { write: ["data"] },
      }),
      "autorun/ar_q.ts": page("quiet.test"),
    },
    talker: {
      "site.json": JSON.stringify({
        hosts: ["talker.test"],
        permissions: { net: ["example.com:443"] },
      }),
      "autorun/ar_t.ts": page("talker.test"),
    },
  });
  const server = await startServer({ sitesDir, args: ["--isolate=bwrap"] });
  try {
    const quietDir = await Deno.realPath(join(sitesDir, "quiet"));
    const talkerDir = await Deno.realPath(join(sitesDir, "talker"));
    assert.match((await get(server, "quiet.test", "/")).body, /^ok \d+$/);
    const quiet = sandboxOf(quietDir);
    const talker = sandboxOf(talkerDir);
    for (const kind of ["mnt", "pid", "ipc", "uts"]) {
      assert.notEqual(ns(quiet, kind), ns("self", kind), `${kind} namespace`);
    }
    // Its PID namespace: it is not the pid it has outside.
    assert.notEqual(
      (await get(server, "quiet.test", "/")).body,
      `ok ${quiet}`,
    );
    assert.notEqual(ns(quiet, "net"), ns("self", "net"), "no network");
    assert.equal(ns(talker, "net"), ns("self", "net"), "net: it may connect");
    assert.ok(sees(quiet, quietDir));
    assert.ok(sees(quiet, join(quietDir, "data")), "its writable folder");
    assert.ok(!sees(quiet, talkerDir), "another site's folder");
    assert.ok(!sees(quiet, "/etc/passwd"));
    assert.ok(!sees(quiet, "/etc/resolv.conf"));
    assert.ok(sees(talker, "/etc/resolv.conf"));
    // The server's own data (sessions) and tools are not there.
    const project = new URL("../../", import.meta.url).pathname;
    assert.ok(sees(quiet, join(project, "src/sandbox/worker.ts")));
    assert.ok(!sees(quiet, join(project, "tests")));
    assert.ok(!sees(quiet, join(project, "tools/test-tools.sh")));
    assert.ok(!sees(quiet, join(project, "README.md")));
  } finally {
    await server.stop();
  }
});

/** This server's cgroups left in a hierarchy (its sandboxes' folders). */
function cgroupsOf(serverPid: number, controller: string): string[] | null {
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(dir)) {
      if (!entry.isDirectory) continue;
      const path = join(dir, entry.name);
      if (entry.name === `sandflare-${serverPid}`) {
        found.push(
          path,
          ...[...Deno.readDirSync(path)].filter((e) => e.isDirectory)
            .map((e) => e.name),
        );
      } else if (!entry.name.startsWith("sandflare-")) walk(path);
    }
  };
  walk(`/sys/fs/cgroup/${controller}`);
  return found;
}

Deno.test("--isolate=bwrap with cgroups: a sandbox replaced while it tears down a large heap leaves no cgroup behind", async () => {
  const sitesDir = await writeSites({
    heavy: {
      "site.json": JSON.stringify({ hosts: ["heavy.test"], memory: 3072 }),
      "autorun/ar_heavy.ts": `
import { hosts } from "sandflare";
const held: Uint8Array[] = [];
for (let i = 0; i < 10; i++) held.push(new Uint8Array(256 * 1024 * 1024).fill(1));
hosts.get("heavy.test").add("/", () => "held " + held.length);
`,
    },
  });
  // Filling 2.5 GiB takes seconds, and far longer on a busy machine (seen:
  // over 20 s while other suites ran).
  // No spare: this counts the generations replaced (a spare's cgroups are
  // checked in tests/spares_test.ts).
  const server = await startServer({
    sitesDir,
    args: ["--isolate=bwrap", "--warm-spares=0"],
    timeoutMs: 90_000,
  });
  const pid = server.child.pid;
  try {
    const script = join(sitesDir, "heavy", "autorun", "ar_heavy.ts");
    for (let i = 0; i < 3; i++) {
      await Deno.writeTextFile(script, `\n// ${i}`, { append: true });
      await server.waitForLog(new RegExp(`\\[heavy\\] Reloaded in`), 90_000);
      server.out.length = 0;
      server.err.length = 0;
    }
    // Root and heavy: one sandbox each, so one folder each, once the old
    // generations' folders are gone (retried for up to 10 s).
    const deadline = Date.now() + 15_000;
    let left: string[] = [];
    while (Date.now() < deadline) {
      left = ["memory", "cpu", "pids"].flatMap((c) =>
        (cgroupsOf(pid, c) ?? []).filter((n) => !n.startsWith("/"))
      );
      if (left.length === 6) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal(left.length, 6, left.join(", "));
  } finally {
    await server.stop();
  }
  for (const controller of ["memory", "cpu", "pids"]) {
    assert.deepEqual(cgroupsOf(pid, controller), [], controller);
  }
});
