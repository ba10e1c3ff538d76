/**
 * Compression policy (issue 17): small answers go as they are, since
 * compressing them costs the gateway more than it saves; larger ones are
 * compressed for clients that accept it; a site can say no.
 */

import assert from "node:assert/strict";
import { startServer, writeSites } from "./helpers/server.ts";

Deno.test("small answers and error pages are not compressed; larger ones are, unless the site says no", async () => {
  const sitesDir = await writeSites({
    sizes: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_sizes.ts": `
import { hosts } from "sandflare";
hosts.any.add("/small", () => "<p>" + "s".repeat(300) + "</p>");
hosts.any.add("/cached", (_req, res) => {
  res.setHeader("Cache-Control", "public, max-age=60");
  res.append("small and cached");
});
hosts.any.add("/large", () => "<p>" + "l".repeat(20_000) + "</p>");
hosts.any.add("/large-no", (_req, res) => {
  res.setHeader("Cache-Control", "no-transform");
  res.append("<p>" + "n".repeat(20_000) + "</p>");
});
`,
    },
  });
  const server = await startServer({ sitesDir });
  const ask = (path: string) =>
    server.raw(
      `GET ${path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nConnection: close\r\n\r\n`,
    );
  try {
    const small = await ask("/small");
    assert.equal(small.headers["content-encoding"], undefined);
    assert.equal(small.headers["cache-control"], "no-transform");
    assert.equal(small.body.length, 307);
    const cached = await ask("/cached");
    assert.equal(cached.headers["content-encoding"], undefined);
    assert.equal(
      cached.headers["cache-control"],
      "public, max-age=60, no-transform",
    );
    const missing = await ask("/missing");
    assert.equal(missing.status, 404);
    assert.equal(missing.headers["content-encoding"], undefined);
    const large = await ask("/large");
    assert.match(large.headers["content-encoding"] ?? "", /^(br|gzip|zstd)$/);
    assert.equal(large.headers["cache-control"], undefined);
    const no = await ask("/large-no");
    assert.equal(no.headers["content-encoding"], undefined);
  } finally {
    await server.stop();
  }
});
