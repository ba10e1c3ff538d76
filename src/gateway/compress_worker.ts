/**
 * The gateway's compression thread (precompressed.ts): Brotli at its best
 * quality takes hundreds of milliseconds for a 256 KiB file, and Deno's
 * `node:zlib` does that on the calling thread even when asked
 * asynchronously. Here it stalls nobody's request.
 *
 * A message is `{ id, encoding, bytes }`; the answer `{ id, bytes }`, or
 * `{ id, error }`.
 *
 * @module
 */

/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />

import zlib from "node:zlib";

self.onmessage = (event: MessageEvent<unknown>) => {
  const { id, encoding, bytes } = event.data as {
    id: number;
    encoding: "br" | "gzip";
    bytes: Uint8Array;
  };
  try {
    const out = encoding === "br"
      ? zlib.brotliCompressSync(bytes, {
        params: {
          [zlib.constants.BROTLI_PARAM_QUALITY]:
            zlib.constants.BROTLI_MAX_QUALITY,
          [zlib.constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
        },
      })
      : zlib.gzipSync(bytes, { level: zlib.constants.Z_BEST_COMPRESSION });
    const owned = new Uint8Array(out); // a copy that owns its buffer
    self.postMessage({ id, bytes: owned }, [owned.buffer]);
  } catch (err) {
    self.postMessage({ id, error: String(err) });
  }
};
