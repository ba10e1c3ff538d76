import assert from "node:assert/strict";
import {
  acceptedEncoding,
  encodedEtag,
  type Encoding,
  isCompressible,
  Precompressor,
  type Variants,
} from "./precompressed.ts";

Deno.test("acceptedEncoding: the encoding weighed highest, Brotli on a tie; a long header is not read", async (t) => {
  const table: [string | null, Encoding | null][] = [
    [null, null],
    ["", null],
    ["identity", null],
    ["gzip, deflate, br, zstd", "br"],
    ["gzip", "gzip"],
    ["GZIP", "gzip"],
    ["br;q=0, gzip", "gzip"],
    ["gzip;q=0, br;q=0.1", "br"],
    ["gzip;q=1, br;q=0.5", "gzip"],
    ["br;Q=0, gzip;q=0.5", "gzip"],
    ["BR, GZIP", "br"],
    [`${"a,".repeat(200)}br`, null],
    ["*", "br"],
    ["*;q=0", null],
    ["br;q=0, *", "gzip"],
    ["deflate, zstd", null],
  ];
  for (const [header, want] of table) {
    await t.step(String(header), () => {
      assert.equal(acceptedEncoding(header), want);
      assert.equal(acceptedEncoding(header), want); // remembered
    });
  }
});

Deno.test("encodedEtag: each encoding is a representation of its own", () => {
  assert.equal(encodedEtag('"abc"', "br"), '"abc-br"');
  assert.equal(encodedEtag('"abc"', "gzip"), '"abc-gzip"');
  assert.equal(encodedEtag(null, "br"), null);
});

Deno.test("isCompressible: by mime-db, parameters ignored", () => {
  assert.ok(isCompressible("text/html; charset=utf-8"));
  assert.ok(isCompressible("text/javascript; charset=utf-8"));
  assert.ok(isCompressible("image/svg+xml"));
  assert.ok(!isCompressible("image/png"));
  assert.ok(!isCompressible("application/zip"));
  assert.ok(!isCompressible("application/octet-stream"));
  assert.ok(Precompressor.worthy("text/css", 1024));
  assert.ok(!Precompressor.worthy("text/css", 1023));
});

/** A file for the Precompressor, and what it was asked. */
function compressible(owner: string, room = true) {
  const text = new TextEncoder().encode(
    "hello compressible world\n".repeat(200),
  );
  const file = {
    made: 0,
    kept: [] as number[],
    owner,
    bytes: () => {
      file.made++;
      return text;
    },
    etag: '"e"',
    variants: {} as Variants,
    keep: (bytes: number) => {
      file.kept.push(bytes);
      return room;
    },
  };
  return file;
}

async function settled(file: { variants: Variants }): Promise<void> {
  while (Object.values(file.variants).includes("pending")) {
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("Precompressor: one job at a time, made once, kept within memory", async () => {
  let clock = 0;
  const compressor = new Precompressor(() => clock);
  const a = compressible("site-a");
  const b = compressible("site-b");
  assert.equal(compressor.encoded(a, "br"), null); // started
  assert.equal(compressor.encoded(a, "br"), null); // pending: not again
  assert.equal(compressor.encoded(b, "br"), null); // busy: not started
  assert.equal(b.variants.br, undefined);
  await settled(a);
  const stored = compressor.encoded(a, "br");
  assert.equal(stored?.encoding, "br");
  assert.equal(stored?.etag, '"e-br"');
  assert.deepEqual(a.kept, [stored!.bytes.length]);
  assert.equal(a.made, 1);
  // No room in memory: never stored, never tried again.
  clock += 1000;
  const full = compressible("site-c", false);
  assert.equal(compressor.encoded(full, "gzip", false), null); // a HEAD
  assert.equal(full.variants.gzip, undefined);
  compressor.encoded(full, "gzip");
  await settled(full);
  assert.equal(full.variants.gzip, "none");
  assert.equal(compressor.encoded(full, "gzip"), null);
  assert.equal(full.made, 1);
});

Deno.test("Precompressor: the thread's time is shared, a site's more so", async () => {
  let clock = 0;
  const compressor = new Precompressor(() => clock);
  const hostile = compressible("hostile");
  const other = compressible("other");
  // A job that takes 100 ms (by this clock).
  compressor.encoded(hostile, "br");
  clock += 100;
  await settled(hostile);
  // The thread rests 3 × 100 ms; the site 10 × 100 ms.
  const next = compressible("hostile");
  clock += 299;
  assert.equal(compressor.encoded(other, "br"), null);
  assert.equal(other.variants.br, undefined, "the thread rests");
  clock += 1;
  assert.equal(compressor.encoded(next, "br"), null);
  assert.equal(next.variants.br, undefined, "the site waits longer");
  compressor.encoded(other, "br");
  assert.equal(other.variants.br, "pending", "another site's turn");
  await settled(other);
  clock += 1000;
  compressor.encoded(next, "br");
  assert.equal(next.variants.br, "pending");
  await settled(next);
});
