/**
 * RFC 9112 edges, in both connection modes: an absolute-form target is
 * routed by its own authority, two Host headers or none get 400, and an
 * HTTP/2 request (no Host, an `:authority`) is routed by its authority.
 */

import assert from "node:assert/strict";
import { startServer, writeSites } from "../helpers/server.ts";
import { curl } from "../helpers/nginx.ts";
import { startTlsServer } from "../helpers/tls.ts";

const SITES = {
  a: {
    "site.json": JSON.stringify({ hosts: ["a.test"] }),
    "autorun/ar_a.ts":
      `import { hosts } from "sandflare";\nhosts.get("a.test", { noFallback: true }).add("/", () => "site a");\n`,
  },
  b: {
    "site.json": JSON.stringify({ hosts: ["b.test"] }),
    "autorun/ar_b.ts":
      `import { hosts } from "sandflare";\nhosts.get("b.test", { noFallback: true }).add("/", () => "site b");\n`,
  },
};

for (const mode of ["", "--fast-connections"]) {
  const label = mode === "" ? "" : ` (${mode})`;
  Deno.test(`request targets and Host headers follow RFC 9112${label}`, async (t) => {
    const sitesDir = await writeSites(SITES);
    const server = await startServer({
      sitesDir,
      args: mode === "" ? [] : [mode],
    });
    try {
      await t.step(
        "an absolute-form target is routed by its authority",
        async () => {
          const res = await server.raw(
            "GET http://a.test/ HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
          );
          assert.equal(res.status, 200);
          assert.equal(res.body, "site a");
        },
      );
      await t.step("two Host headers get 400", async () => {
        const res = await server.raw(
          "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        );
        assert.equal(res.status, 400);
      });
      await t.step("HTTP/1.1 without Host gets 400", async () => {
        const res = await server.raw(
          "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert.equal(res.status, 400);
        assert.match(res.body, /no Host header/);
      });
      await t.step("an ordinary request still works", async () => {
        const res = await server.raw(
          "GET / HTTP/1.1\r\nHost: B.test:80\r\nConnection: close\r\n\r\n",
        );
        assert.equal(res.body, "site b");
      });
    } finally {
      await server.stop();
      await Deno.remove(sitesDir, { recursive: true });
    }
  });

  Deno.test(`an HTTP/2 request is routed by its :authority${label}`, async () => {
    const sitesDir = await writeSites(SITES);
    const { server, cert } = await startTlsServer(
      sitesDir,
      mode === "" ? [] : [mode],
    );
    try {
      for (const [host, want] of [["a.test", "site a"], ["b.test", "site b"]]) {
        const h2 = await curl([
          "--cacert",
          cert,
          "--http2",
          "--resolve",
          `${host}:${server.port}:127.0.0.1`,
          "-k",
          "-w",
          " %{http_version}",
          `https://${host}:${server.port}/`,
        ]);
        assert.equal(h2.stdout, `${want} 2`, h2.stderr);
      }
    } finally {
      await server.stop();
      await Deno.remove(sitesDir, { recursive: true });
    }
  });
}
