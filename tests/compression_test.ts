/**
 * Compression policy (issue 17): small answers go as they are, since
 * compressing them costs the gateway more than it saves; larger ones are
 * compressed for clients that accept it; a site can say no.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { brotliDecompressSync, gunzipSync } from "node:zlib";
import { delay, startServer, writeSites } from "./helpers/server.ts";

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

/** One request on its own connection; the answer's head, and body bytes. */
async function askBytes(
  port: number,
  path: string,
  headers: Record<string, string>,
  method = "GET",
): Promise<
  { status: number; headers: Record<string, string>; body: Uint8Array }
> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const lines = Object.entries(headers).map(([n, v]) => `${n}: ${v}\r\n`);
  await conn.write(
    new TextEncoder().encode(
      `${method} ${path} HTTP/1.1\r\nHost: x\r\n${
        lines.join("")
      }Connection: close\r\n\r\n`,
    ),
  );
  const all = new Uint8Array(await new Response(conn.readable).arrayBuffer());
  const end = all.findIndex((_, i) =>
    all[i] === 13 && all[i + 1] === 10 && all[i + 2] === 13 &&
    all[i + 3] === 10
  );
  const [statusLine, ...fields] = new TextDecoder()
    .decode(all.subarray(0, end)).split("\r\n");
  const head: Record<string, string> = {};
  for (const field of fields) {
    const colon = field.indexOf(":");
    head[field.slice(0, colon).toLowerCase()] = field.slice(colon + 1).trim();
  }
  return {
    status: Number(statusLine!.split(" ")[1]),
    headers: head,
    body: all.subarray(end + 4),
  };
}

Deno.test("a static file is compressed once and the stored encoding served after", async () => {
  const script = Array.from(
    { length: 2000 },
    (_, i) => `export function f${i}() { return ${i}; }\n`,
  ).join("");
  const sitesDir = await writeSites({
    files: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "static/*/app.js": script,
      "static/*/tiny.css": "body { color: red }\n",
      "static/*/noise.png": "\x89PNG" + "n".repeat(4000),
      "static/*/head.js": script,
      "autorun/ar_files.ts": `
import { hosts } from "sandflare";
hosts.any.add("/as-is", (_req, res) => {
  res.setHeader("Cache-Control", "no-transform");
  res.setFile("static/*/app.js");
});
hosts.any.add("/identity", (_req, res) => {
  res.setHeader("Content-Encoding", "identity");
  res.setFile("static/*/app.js");
});
`,
    },
  });
  const server = await startServer({ sitesDir });
  const ask = (
    path: string,
    headers: Record<string, string> = {},
    method = "GET",
  ) => askBytes(server.port, path, headers, method);
  /** Asks until the stored encoding (its own strong ETag) comes back. */
  const stored = async (path: string, encoding: string) => {
    // The compression thread shares its time (a site waits ten times as
    // long as its last file took): seconds on a busy machine.
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const answer = await ask(path, { "Accept-Encoding": encoding });
      if (answer.headers["etag"]?.endsWith(`-${encoding}"`)) return answer;
      await delay(25);
    }
    throw new Error(`${path} never came back stored as ${encoding}`);
  };
  try {
    const plain = await ask("/app.js");
    assert.equal(plain.headers["content-encoding"], undefined);
    // As it is, never compressed on the fly (Deno's engine would, on every
    // request): stored, or not at all.
    assert.equal(plain.headers["cache-control"], "no-transform");
    assert.equal(new TextDecoder().decode(plain.body), script);
    const etag = plain.headers["etag"]!;
    assert.match(etag, /^"[^"]+"$/);
    assert.equal(plain.headers["vary"], "Accept-Encoding");

    // A browser's Accept-Encoding: Brotli, stored once, with its own ETag.
    const br = await stored("/app.js", "br");
    assert.equal(br.headers["content-encoding"], "br");
    assert.equal(br.headers["etag"], `${etag.slice(0, -1)}-br"`);
    assert.equal(Number(br.headers["content-length"]), br.body.length);
    assert.ok(br.body.length < script.length / 4);
    assert.equal(
      new TextDecoder().decode(brotliDecompressSync(br.body)),
      script,
    );
    const browser = await ask("/app.js", {
      "Accept-Encoding": "gzip, deflate, br, zstd",
    });
    assert.deepEqual(browser.body, br.body);
    // Its ETag revalidates that encoding; the file's own does not.
    const fresh = await ask("/app.js", {
      "Accept-Encoding": "br",
      "If-None-Match": br.headers["etag"]!,
    });
    assert.equal(fresh.status, 304);
    assert.equal(fresh.headers["vary"], "Accept-Encoding");
    const stale = await ask("/app.js", {
      "Accept-Encoding": "br",
      "If-None-Match": etag,
    });
    assert.equal(stale.status, 200);

    const gz = await stored("/app.js", "gzip");
    assert.equal(gz.headers["content-encoding"], "gzip");
    assert.equal(new TextDecoder().decode(gunzipSync(gz.body)), script);
    // A client that refuses Brotli gets gzip.
    const noBr = await ask("/app.js", { "Accept-Encoding": "br;q=0, gzip" });
    assert.equal(noBr.headers["content-encoding"], "gzip");

    // A header too long to be read (a browser's is 30 characters): as it is.
    const long = await ask("/app.js", {
      "Accept-Encoding": `${"a,".repeat(30_000)}br`,
    });
    assert.equal(long.status, 200);
    assert.equal(long.headers["content-encoding"], undefined);
    assert.equal(long.headers["cache-control"], "no-transform");
    assert.equal(new TextDecoder().decode(long.body), script);

    // A page that says how its file goes is obeyed.
    for (const path of ["/as-is", "/identity"]) {
      const own = await ask(path, { "Accept-Encoding": "br" });
      assert.equal(own.status, 200, path);
      assert.equal(new TextDecoder().decode(own.body), script, path);
      assert.equal(own.headers["etag"], etag, path);
    }
    const identity = await server.raw(
      "GET /identity HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\nConnection: close\r\n\r\n",
    );
    assert.equal(
      identity.raw.match(/^content-encoding:/gim)?.length,
      1,
      "one Content-Encoding",
    );
    assert.equal(identity.headers["content-encoding"], "identity");

    // HEAD requests never start a compression (they get no body), nor
    // does a file's first GET.
    for (let i = 0; i < 5; i++) {
      await ask("/head.js", { "Accept-Encoding": "br" }, "HEAD");
    }
    await ask("/head.js", { "Accept-Encoding": "br" });
    await delay(500);
    const notYet = await ask("/head.js", { "Accept-Encoding": "br" });
    assert.equal(notYet.headers["content-encoding"], undefined);
    await stored("/head.js", "br");

    // A range is of the file's own bytes.
    const range = await ask("/app.js", {
      "Accept-Encoding": "br",
      "Range": "bytes=0-9",
    });
    assert.equal(range.status, 206);
    assert.equal(range.headers["content-encoding"], undefined);
    assert.equal(new TextDecoder().decode(range.body), script.slice(0, 10));

    // Too small to be worth it, or not compressible: sent as they are.
    const tiny = await ask("/tiny.css", { "Accept-Encoding": "br" });
    assert.equal(tiny.headers["content-encoding"], undefined);
    assert.equal(tiny.headers["cache-control"], "no-transform");
    const png = await ask("/noise.png", { "Accept-Encoding": "br" });
    assert.equal(png.headers["content-encoding"], undefined);

    // A changed file is compressed again: its new bytes, a new ETag.
    const changed = script.replace("f0()", "g0()");
    await Deno.writeTextFile(join(sitesDir, "files/static/*/app.js"), changed);
    for (let i = 0; i < 200; i++) {
      const again = await stored("/app.js", "br");
      if (again.headers["etag"] !== br.headers["etag"]) {
        assert.equal(
          new TextDecoder().decode(brotliDecompressSync(again.body)),
          changed,
        );
        return;
      }
      await delay(25);
    }
    throw new Error("the changed file was never served");
  } finally {
    await server.stop();
  }
});
