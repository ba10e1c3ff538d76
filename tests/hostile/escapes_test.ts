/**
 * A hostile site abusing the gateway itself: forged registrations, header
 * smuggling to a front proxy, error-page loops, descriptor leaks, huge
 * replies, log injection. Each is refused; the gateway and the other sites
 * go on.
 */

import assert from "node:assert/strict";
import {
  delay,
  startServer,
  type TestServer,
  writeSites,
} from "../helpers/server.ts";

const SITES = {
  victim: {
    "site.json": JSON.stringify({ hosts: ["victim.test"] }),
    "autorun/ar_victim.ts":
      `import { hosts } from "sandflare";\nhosts.get("victim.test").add("/", () => "victim ok");\n`,
  },
  forger: {
    "site.json": JSON.stringify({ hosts: ["forger.test"] }),
    "autorun/ar_forger.ts": `
import { hosts } from "sandflare";
// Claim victim.test by posting a forged table before the real one.
self.postMessage({ t: "loaded", routes: { hosts: [], hooks: [], websockets: [], tasks: 0,
  pages: [{ id: 0, host: "victim.test", method: "GET", path: "/pwn" }] } });
hosts.get("forger.test").add("/", () => "forger");
`,
  },
  wshost: {
    "site.json": JSON.stringify({ hosts: ["wshost.test"] }),
    "autorun/ar_wshost.ts": `
import { websocket } from "sandflare";
websocket.register("/x", null, { pattern: "not a host!" } as never);
`,
  },
  comma: {
    "site.json": JSON.stringify({
      hosts: ["comma.test"],
      permissions: { read: ["data,/etc"] },
    }),
    "autorun/ar_comma.ts": `export {};`,
  },
  evil: {
    "site.json": JSON.stringify({ hosts: ["evil.test"] }),
    "big.bin": "b".repeat(300 * 1024),
    "autorun/ar_evil.ts": `
import { hook, hosts } from "sandflare";
const evil = hosts.get("evil.test");
evil.add("/accel", (_req, res) => {
  res.setHeader("X-Accel-Redirect", "/./etc/passwd");
  res.setHeader("X-Sendfile", "/etc/passwd");
  return "nothing to see";
});
evil.add("/loop", (_req, res) => res.halt(404, "start the loop"));
hook.add("Error", "loop", (_err, _req, res) => { res.setFile("missing-file"); return true; });
evil.add("/nocontent", (_req, res) => { res.status = 204; res.setFile("big.bin"); });
evil.add("/huge", () => "h".repeat(65 * 1024 * 1024));
evil.add("/inject", () => {
  console.log("innocent\\r\\n2026-01-01T00:00:00Z info [victim] FORGED LINE");
  return "injected";
});
`,
  },
};

async function get(server: TestServer, host: string, path: string) {
  return await server.raw(
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
    { timeoutMs: 15_000 },
  );
}

Deno.test("a hostile site cannot abuse the gateway", async (t) => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  const victimOk = async () =>
    assert.equal((await get(server, "victim.test", "/")).body, "victim ok");
  try {
    await t.step(
      "a forged table naming another site's host is refused",
      async () => {
        const line = await server.waitForLog(/\[forger\] Site not loaded/);
        assert.match(line, /victim\.test/);
        assert.equal((await get(server, "victim.test", "/pwn")).status, 404);
        await victimOk();
      },
    );

    await t.step(
      "a websocket on a made-up host is a load error, not a gateway crash",
      async () => {
        assert.match(
          await server.waitForLog(/\[wshost\] Site not loaded/),
          /hosts\.get\(\)/,
        );
        await victimOk();
      },
    );

    await t.step("a comma in a permission path is refused", async () => {
      assert.match(
        await server.waitForLog(/\[comma\] Site not loaded/),
        /comma/,
      );
    });

    await t.step(
      "a site cannot send X-Accel-Redirect or X-Sendfile to a front proxy",
      async () => {
        const res = await get(server, "evil.test", "/accel");
        assert.equal(res.body, "nothing to see");
        assert.equal(res.headers["x-accel-redirect"], undefined);
        assert.equal(res.headers["x-sendfile"], undefined);
      },
    );

    await t.step(
      "an Error hook that fails renders once, then the default page",
      async () => {
        const t0 = performance.now();
        const res = await get(server, "evil.test", "/loop");
        assert.ok(performance.now() - t0 < 2000, "no loop");
        assert.equal(res.status, 404);
      },
    );

    await t.step(
      "setFile with a bodiless status opens no file (no descriptor leak)",
      async () => {
        const fds = () =>
          Array.from(Deno.readDirSync(`/proc/${server.child.pid}/fd`)).length;
        const before = fds();
        for (let i = 0; i < 100; i++) {
          assert.equal(
            (await get(server, "evil.test", "/nocontent")).status,
            204,
          );
        }
        assert.ok(fds() - before < 20, `descriptors: ${before} → ${fds()}`);
      },
    );

    await t.step(
      "a reply over 64 MiB to a client that stops reading: the gateway holds only its window",
      async () => {
        const rss = () =>
          Number(
            /VmRSS:\s+(\d+)/.exec(
              Deno.readTextFileSync(`/proc/${server.child.pid}/status`),
            )![1],
          ) / 1024;
        const before = rss();
        const conn = await Deno.connect({
          hostname: "127.0.0.1",
          port: server.port,
        });
        await conn.write(
          new TextEncoder().encode(
            "GET /huge HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
          ),
        );
        const buffer = new Uint8Array(64 * 1024);
        const first = await conn.read(buffer);
        const head = new TextDecoder().decode(buffer.subarray(0, first ?? 0));
        assert.match(head, /^HTTP\/1\.1 200/);
        assert.match(
          head,
          new RegExp(`content-length: ${65 * 1048576}\r`, "i"),
        );
        // Not reading: whole, the reply would be 65 MiB in the gateway.
        await delay(1500);
        const held = rss() - before;
        let bytes = first ?? 0;
        while (true) {
          const n = await conn.read(buffer);
          if (n === null) break;
          bytes += n;
        }
        conn.close();
        assert.ok(held < 24, `the gateway grew ${held.toFixed(1)} MiB`);
        assert.ok(bytes > 65 * 1048576, `${bytes} bytes`);
        await victimOk();
      },
    );

    await t.step("site output cannot forge log lines", async () => {
      assert.equal(
        (await get(server, "evil.test", "/inject")).body,
        "injected",
      );
      // Each line a site writes is stamped and prefixed with its name; a
      // carriage return is shown as an escape.
      assert.match(
        await server.waitForLog(/innocent/),
        / site \[evil\] innocent\\x0d$/,
      );
      const forged = await server.waitForLog(/FORGED LINE/);
      assert.match(
        forged,
        /^\S+ site \[evil\] 2026-01-01T00:00:00Z info \[victim\] FORGED LINE$/,
      );
    });
  } finally {
    const status = await server.stop();
    assert.equal(status.code, 0, "the gateway survived");
    await Deno.remove(sitesDir, { recursive: true });
  }
});
