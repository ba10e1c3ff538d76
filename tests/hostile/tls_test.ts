/**
 * HTTPS with HTTP/2 by ALPN and HTTP/1.1, with a self-signed certificate made
 * by openssl; unreadable or wrong files are a clear startup error.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { cliCommand, writeSites } from "../helpers/server.ts";
import { curl } from "../helpers/nginx.ts";
import { selfSigned, startTlsServer } from "../helpers/tls.ts";

for (const mode of ["", "--fast-connections"]) {
  Deno.test(`HTTPS serves HTTP/2 by ALPN and HTTP/1.1${mode === "" ? "" : ` (${mode})`}`, async () => {
    const sitesDir = await writeSites({
      tls: {
        "site.json": JSON.stringify({ hosts: ["*"] }),
        "autorun/ar_tls.ts":
          `import { hosts } from "sandflare";\nhosts.any.add("/secure", () => "over tls");\n`,
      },
    });
    const { server, cert } = await startTlsServer(
      sitesDir,
      mode === "" ? [] : [mode],
    );
    try {
      await server.waitForLog(/Listening on https:\/\/127\.0\.0\.1:\d+/);
      const url = `https://127.0.0.1:${server.port}/secure`;
      const h2 = await curl([
        "--cacert",
        cert,
        "--http2",
        "-w",
        " %{http_version}",
        url,
      ]);
      assert.equal(h2.stdout, "over tls 2", h2.stderr);
      const h1 = await curl([
        "--cacert",
        cert,
        "--http1.1",
        "-w",
        " %{http_version}",
        url,
      ]);
      assert.equal(h1.stdout, "over tls 1.1", h1.stderr);
    } finally {
      await server.stop();
      await Deno.remove(sitesDir, { recursive: true });
    }
  });
}

Deno.test("bad --tls-cert or --tls-key files are a clear startup error", async (t) => {
  const dir = await Deno.makeTempDir();
  const { cert, key } = await selfSigned(dir);
  const cases: [string, string[], RegExp][] = [
    ["missing cert", [
      `--tls-cert=${join(dir, "nope.pem")}`,
      `--tls-key=${key}`,
    ], /--tls-cert: cannot read/],
    [
      "key given as cert",
      [`--tls-cert=${key}`, `--tls-key=${key}`],
      /--tls-cert: .* is not a PEM file/,
    ],
    [
      "cert given as key",
      [`--tls-cert=${cert}`, `--tls-key=${cert}`],
      /--tls-key: .* is not a PEM file/,
    ],
  ];
  try {
    for (const [name, args, message] of cases) {
      await t.step(name, async () => {
        const out = await cliCommand([
          "listen",
          "--port=0",
          `--sites-dir=${dir}`,
          ...args,
        ]).output();
        const stderr = new TextDecoder().decode(out.stderr);
        assert.equal(out.code, 2, stderr);
        assert.match(stderr, message);
        assert.doesNotMatch(stderr, /^\s+at /m, "no stack trace");
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
