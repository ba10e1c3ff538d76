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
