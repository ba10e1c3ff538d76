import assert from "node:assert/strict";
import {
  acceptedEncoding,
  encodedEtag,
  type Encoding,
  isCompressible,
  Precompressor,
  type Variants,
} from "./precompressed.ts";

Deno.test("acceptedEncoding: Brotli before gzip whenever both are acceptable", async (t) => {
  const table: [string | null, Encoding | null][] = [
    [null, null],
    ["", null],
    ["identity", null],
    ["gzip, deflate, br, zstd", "br"],
    ["gzip", "gzip"],
    ["GZIP", "gzip"],
    ["br;q=0, gzip", "gzip"],
    ["gzip;q=0, br;q=0.1", "br"],
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
  assert.ok(Precompressor.worthy("text/css", 1024));
  assert.ok(!Precompressor.worthy("text/css", 1023));
});

Deno.test("Precompressor: one job at a time, made once, kept within memory", async () => {
  const compressor = new Precompressor();
  const text = new TextEncoder().encode(
    "hello compressible world\n".repeat(200),
  );
  let made = 0;
  const kept: number[] = [];
  const file = (room: boolean) => ({
    bytes: () => {
      made++;
      return text;
    },
    etag: '"e"',
    variants: {} as Variants,
    keep: (bytes: number) => {
      kept.push(bytes);
      return room;
    },
  });
  const a = file(true);
  const b = file(true);
  assert.equal(compressor.encoded(a, "br"), null); // started
  assert.equal(compressor.encoded(a, "br"), null); // pending: not again
  assert.equal(compressor.encoded(b, "br"), null); // busy: not started
  assert.equal(b.variants.br, undefined);
  while (a.variants.br === "pending") {
    await new Promise((r) => setTimeout(r, 5));
  }
  const stored = compressor.encoded(a, "br");
  assert.equal(stored?.encoding, "br");
  assert.equal(stored?.etag, '"e-br"');
  assert.deepEqual(kept, [stored!.bytes.length]);
  assert.equal(made, 1);
  // No room in memory: never stored, never tried again.
  const full = file(false);
  compressor.encoded(full, "gzip");
  while (full.variants.gzip === "pending") {
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.equal(full.variants.gzip, "none");
  assert.equal(compressor.encoded(full, "gzip"), null);
  assert.equal(made, 2);
});
