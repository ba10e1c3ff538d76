/**
 * What the gateway knows about files it served recently (static files and
 * `setFile` answers): real path,
 * size, dates, ETag and, for small files, the bytes themselves. Entries are
 * checked against the disk at most once per `revalidateMs` (as nginx's
 * open_file_cache does), so a changed file is served within that time.
 *
 * @module
 */

import { isInside } from "../supervisor/paths.ts";
import {
  contentRange,
  decideConditional,
  formatHttpDate,
  makeEtag,
  unsatisfiedRange,
} from "./conditional.ts";
import { contentTypeFor, type MimeTable } from "./mime.ts";
import { COMPRESS_MIN_BYTES, notCompressed } from "./answer.ts";
import {
  acceptedEncoding,
  type Encoded,
  Precompressor,
  type Variants,
} from "./precompressed.ts";

/** Statuses that cannot carry a body: never open a file for them. */
const NO_BODY = new Set([204, 205, 304]);

// fatal: refuse invalid UTF-8; ignoreBOM: keep a BOM, so the bytes round-trip.
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const ENCODER = new TextEncoder();

/** A static file as cached. */
export interface CachedFile {
  /** The folder it must stay in: its site's. */
  boundary: string;
  /** Real path (inside the site). */
  real: string;
  /** Bytes of it counted as held in memory (0 when streamed). */
  held: number;
  size: number;
  mtimeMs: number;
  ino: number;
  lastModified: number | null;
  lastModifiedText: string | null;
  etag: string | null;
  contentType: string;
  /** The bytes, for files up to the cache's per-file limit. */
  body: Uint8Array | null;
  /**
   * The same bytes as text when they are valid UTF-8: Deno sends a string
   * body about twice as fast as a Uint8Array (measured: 64 KiB, 49k vs
   * 27k req/s), and encoding valid UTF-8 back gives the identical bytes.
   */
  text: string | null;
  /** Content-Type, Accept-Ranges and Last-Modified, made once. */
  baseHeaders: [string, string][];
  checkedAt: number;
  /**
   * Held in memory, compressible and not tiny: stored compressed once
   * (precompressed.ts), and its answers vary by Accept-Encoding.
   */
  compressible: boolean;
  /** Its stored encodings, as far as they are made. */
  variants: Variants;
  /** Requests that could have used a stored encoding. */
  asked: number;
  /** No longer the cached version of its path. */
  forgotten: boolean;
}

/** Options of {@linkcode FileCache}. */
export interface FileCacheOptions {
  mime: MimeTable;
  /** Files larger than this get no ETag. */
  maxEtagSize: number;
  /** Files up to this size are kept in memory. @default {262144} */
  maxFileBytes?: number;
  /** Bytes kept in memory at most. @default {67108864} */
  maxTotalBytes?: number;
  /** How often an entry is checked against the disk. @default {1000} */
  revalidateMs?: number;
}

/** The cache; one per gateway. */
export class FileCache {
  #entries = new Map<string, Promise<CachedFile | null>>();
  #ready = new Map<string, CachedFile>();
  #bytes = 0;
  #options: Required<FileCacheOptions>;
  #compressor: Precompressor;

  constructor(options: FileCacheOptions) {
    this.#options = {
      maxFileBytes: 256 * 1024,
      maxTotalBytes: 64 * 1024 * 1024,
      revalidateMs: 1000,
      ...options,
    };
    this.#compressor = new Precompressor();
  }

  /**
   * The file stored in the encoding `acceptEncoding` allows, or null: not
   * compressible, not accepted, not made yet, or not worth it. A GET (not
   * a HEAD, which gets no body) of a file asked for before starts making
   * it.
   */
  encoded(
    file: CachedFile,
    acceptEncoding: string | null,
    method: string,
  ): Encoded | null {
    if (!file.compressible) return null;
    const encoding = acceptedEncoding(acceptEncoding);
    if (encoding === null) return null;
    const start = method === "GET" && ++file.asked >= 2;
    return this.#compressor.encoded(
      {
        owner: file.boundary,
        bytes: () => file.body ?? ENCODER.encode(file.text ?? ""),
        etag: file.etag,
        variants: file.variants,
        // Stored encodings count towards the bytes kept in memory, while the
        // file is still the one cached.
        keep: (bytes) => {
          if (
            file.forgotten || this.#bytes + bytes > this.#options.maxTotalBytes
          ) return false;
          this.#bytes += bytes;
          return true;
        },
      },
      encoding,
      start,
    );
  }

  /** Bytes of files and their stored encodings held in memory. */
  get bytesHeld(): number {
    return this.#bytes;
  }

  /** Forgets everything (static files were re-indexed). */
  clear(): void {
    for (const file of this.#ready.values()) file.forgotten = true;
    this.#entries.clear();
    this.#ready.clear();
    this.#bytes = 0;
  }

  /**
   * The file at `path`, or null when it is gone, not a regular file, or its
   * real path is outside `boundary`.
   */
  /**
   * The file when it is cached and was checked against the disk within the
   * revalidation time; otherwise null (use `get`).
   */
  peek(path: string, boundary: string): CachedFile | null {
    const cached = this.#ready.get(`${boundary}\0${path}`);
    if (
      cached === undefined ||
      Date.now() - cached.checkedAt >= this.#options.revalidateMs
    ) return null;
    return cached;
  }

  async get(path: string, boundary: string): Promise<CachedFile | null> {
    const key = `${boundary}\0${path}`;
    const pending = this.#entries.get(key);
    if (pending !== undefined) {
      const cached = await pending;
      if (
        cached !== null &&
        Date.now() - cached.checkedAt < this.#options.revalidateMs
      ) return cached;
      if (cached !== null && await this.#unchanged(cached, path)) {
        return cached;
      }
      // Another request found it changed meanwhile and is loading it anew.
      const now = this.#entries.get(key);
      if (now !== pending) return now === undefined ? null : await now;
      this.#forget(key, cached);
    }
    const loading = this.#load(path, boundary);
    this.#entries.set(key, loading);
    const loaded = await loading;
    if (loaded === null) this.#entries.delete(key);
    else this.#ready.set(key, loaded);
    return loaded;
  }

  /** Forgets an entry, and the bytes it held, once. */
  #forget(key: string, cached: CachedFile | null): void {
    this.#entries.delete(key);
    if (cached === null || cached.forgotten) return;
    cached.forgotten = true;
    if (this.#ready.get(key) === cached) this.#ready.delete(key);
    this.#bytes -= cached.held;
    for (const variant of Object.values(cached.variants)) {
      if (typeof variant === "object") this.#bytes -= variant.bytes.length;
    }
  }

  /** Whether `path` still leads to the same, unchanged file. */
  async #unchanged(cached: CachedFile, path: string): Promise<boolean> {
    try {
      // A link may now lead elsewhere.
      if (await Deno.realPath(path) !== cached.real) return false;
      const info = await Deno.stat(cached.real);
      if (
        info.size !== cached.size ||
        (info.mtime?.getTime() ?? 0) !== cached.mtimeMs ||
        (info.ino ?? 0) !== cached.ino
      ) {
        return false;
      }
      cached.checkedAt = Date.now();
      return true;
    } catch {
      return false;
    }
  }

  async #load(path: string, boundary: string): Promise<CachedFile | null> {
    let real: string;
    let file: Deno.FsFile;
    let info: Deno.FileInfo;
    try {
      real = await Deno.realPath(path);
      // One open file for its facts and its bytes: a site that rewrites
      // the file meanwhile cannot make them disagree (a Content-Length
      // that is not the body's length would let it answer the next
      // request on the connection, another site's).
      file = await Deno.open(real, { read: true });
    } catch {
      return null;
    }
    const { maxFileBytes, maxTotalBytes, maxEtagSize, mime } = this.#options;
    let body: Uint8Array | null = null;
    let held = 0;
    try {
      info = await file.stat();
      if (!info.isFile || !isInside(boundary, real)) return null;
      if (
        info.size <= maxFileBytes && this.#bytes + info.size <= maxTotalBytes
      ) {
        // Reserved before reading, so loads running at once stay in bounds.
        this.#bytes += info.size;
        const read = await readUpTo(file, maxFileBytes + 1).catch(() => null);
        this.#bytes -= info.size;
        if (read === null) return null;
        // Grown past the limit meanwhile: streamed, as a large file is.
        if (read.length <= maxFileBytes) {
          body = read;
          held = read.length;
          this.#bytes += held;
        }
      }
    } catch {
      return null;
    } finally {
      file.close();
    }
    // The size is the bytes held, or (streamed) what the file had when
    // looked at; a stream sends exactly that many (see exactly()).
    const size = body?.length ?? info.size;
    let etag: string | null = null;
    if (size <= maxEtagSize) {
      // A file held in memory is hashed; a larger one is never read whole
      // for its ETag (a site could make the gateway read gigabytes): it
      // gets one from its identity, size and time, as nginx does.
      etag = body !== null
        ? makeEtag(
          new Uint8Array(
            await crypto.subtle.digest(
              "SHA-256",
              body as Uint8Array<ArrayBuffer>,
            ),
          ),
        )
        : `"${(info.ino ?? 0).toString(16)}-${size.toString(16)}-${
          (info.mtime?.getTime() ?? 0).toString(16)
        }"`;
    }
    const lastModified = info.mtime === null
      ? null
      : Math.floor(info.mtime.getTime() / 1000) * 1000;
    let text: string | null = null;
    if (body !== null) {
      try {
        text = UTF8.decode(body);
        body = null; // one copy is enough: ranges re-encode the text
      } catch {
        text = null; // not UTF-8: sent as bytes
      }
    }
    const contentType = contentTypeFor(mime, real);
    const lastModifiedText = lastModified === null
      ? null
      : formatHttpDate(lastModified);
    const baseHeaders: [string, string][] = [["content-type", contentType], [
      "accept-ranges",
      "bytes",
    ]];
    if (lastModifiedText !== null) {
      baseHeaders.push(["last-modified", lastModifiedText]);
    }
    return {
      boundary,
      real,
      size,
      held,
      mtimeMs: info.mtime?.getTime() ?? 0,
      ino: info.ino ?? 0,
      lastModified,
      lastModifiedText,
      etag,
      contentType,
      baseHeaders,
      body,
      text,
      checkedAt: Date.now(),
      compressible: (body !== null || text !== null) &&
        Precompressor.worthy(contentType, size),
      variants: {},
      asked: 0,
      forgotten: false,
    };
  }
}

/**
 * The answer for a cached file: 200, 206, 304 or 416 by the request's
 * conditional and range headers; small files from memory, others streamed.
 */
export async function fileAnswer(
  req: { method: string; headers: Headers },
  file: CachedFile,
  extra: [string, string][],
  status = 200,
  stored: Encoded | null = null,
): Promise<{ response: Response; bytes: number }> {
  // A range is of the file's own bytes: it is answered from them.
  const chose = siteChoseEncoding(extra);
  const encoded = req.headers.get("range") === null && !chose ? stored : null;
  // A Content-Type the site set wins over the one from the file name.
  const typed = extra.some(([n]) => n.toLowerCase() === "content-type");
  const headers: [string, string][] = typed
    ? [...extra, ["accept-ranges", "bytes"]]
    : [
      ["content-type", file.contentType],
      ["accept-ranges", "bytes"],
      ...extra,
    ];
  if (file.lastModifiedText !== null) {
    headers.push(["last-modified", file.lastModifiedText]);
  }
  let etag = file.etag;
  if (!chose) etag = representation(file, encoded, headers);
  else if (etag !== null) headers.push(["etag", etag]);
  const conditional = req.headers.get("if-none-match") !== null ||
    req.headers.get("if-modified-since") !== null ||
    req.headers.get("range") !== null;
  const decision = conditional
    ? decideConditional({
      method: req.method,
      ifNoneMatch: req.headers.get("if-none-match"),
      ifModifiedSince: req.headers.get("if-modified-since"),
      ifRange: req.headers.get("if-range"),
      range: req.headers.get("range"),
      etag,
      lastModified: file.lastModified,
      size: file.size,
    })
    : { status: 200 as const };
  const head = req.method === "HEAD";
  switch (decision.status) {
    case 304:
      return {
        response: new Response(null, {
          status: 304,
          headers: headers.filter(([n]) => n.toLowerCase() !== "content-type"),
        }),
        bytes: 0,
      };
    case 416:
      for (const h of headers) {
        if (h[0].toLowerCase() === "content-type") {
          h[1] = "text/plain; charset=utf-8";
        }
      }
      headers.push(["content-range", unsatisfiedRange(file.size)]);
      return {
        response: new Response(head ? null : "Range Not Satisfiable\n", {
          status: 416,
          headers,
        }),
        bytes: 0,
      };
    case 206: {
      const length = decision.end - decision.start + 1;
      headers.push([
        "content-range",
        contentRange(decision.start, decision.end, file.size),
      ]);
      headers.push(["content-length", String(length)]);
      if (head) {
        return {
          response: new Response(null, { status: 206, headers }),
          bytes: 0,
        };
      }
      const bytes = file.body ??
        (file.text !== null ? ENCODER.encode(file.text) : null);
      const body = bytes !== null
        ? bytes.subarray(decision.start, decision.end + 1)
        : await slice(file.real, decision.start, length);
      return {
        response: new Response(body as BodyInit, { status: 206, headers }),
        bytes: length,
      };
    }
    case 200: {
      if (encoded !== null && !NO_BODY.has(status)) {
        headers.push(["content-encoding", encoded.encoding]);
        headers.push(["content-length", String(encoded.bytes.length)]);
        return {
          response: new Response(head ? null : encoded.bytes, {
            status,
            headers,
          }),
          bytes: head ? 0 : encoded.bytes.length,
        };
      }
      headers.push(["content-length", String(file.size)]);
      if (head) {
        return { response: new Response(null, { status, headers }), bytes: 0 };
      }
      if (NO_BODY.has(status)) {
        return { response: new Response(null, { status, headers }), bytes: 0 };
      }
      const body = file.text ?? file.body ??
        exactly(
          (await Deno.open(file.real, { read: true })).readable,
          file.size,
        );
      return {
        response: new Response(body as BodyInit, { status, headers }),
        bytes: file.size,
      };
    }
    default:
      return decision satisfies never;
  }
}

/**
 * Whether a page's `setFile` answer says how it is encoded: its own
 * `Content-Encoding`, or `Cache-Control: no-transform`. It is then sent as
 * the site said, never with a stored encoding.
 */
export function siteChoseEncoding(headers: [string, string][]): boolean {
  return headers.some(([name, value]) => {
    const lower = name.toLowerCase();
    return lower === "content-encoding" ||
      (lower === "cache-control" && /no-transform/i.test(value));
  });
}

/**
 * Adds the headers that depend on the encoding sent (`encoded`, or the
 * file's own bytes): ETag, Vary, and `no-transform` on a file too small to
 * be worth compressing.
 * @returns the ETag sent
 */
function representation(
  file: CachedFile,
  encoded: Encoded | null,
  headers: [string, string][],
): string | null {
  const etag = encoded?.etag ?? file.etag;
  if (etag !== null) headers.push(["etag", etag]);
  if (file.compressible) headers.push(["vary", "Accept-Encoding"]);
  // Held in memory, a file goes stored or as it is, never compressed again
  // on every request (that cost 1.6 ms of the gateway's CPU per 64 KiB
  // request); a tiny one is not worth it.
  if (
    encoded === null &&
    (file.compressible || file.size < COMPRESS_MIN_BYTES)
  ) notCompressed(headers);
  return etag;
}

/**
 * The 200 answer to a plain GET of a file held in memory (null for one
 * that is not), made without a turn of the event loop.
 * @param encoded the file's stored encoding to send, if any
 */
export function wholeFileAnswer(
  file: CachedFile,
  encoded: Encoded | null,
  server: [string, string],
): { response: Response; bytes: number } | null {
  const own = file.text ?? file.body;
  if (own === null) return null;
  const headers = [...file.baseHeaders];
  representation(file, encoded, headers);
  if (encoded !== null) headers.push(["content-encoding", encoded.encoding]);
  const body = encoded?.bytes ?? own;
  const bytes = encoded?.bytes.length ?? file.size;
  headers.push(["content-length", String(bytes)], server);
  return {
    response: new Response(body as BodyInit, { status: 200, headers }),
    bytes,
  };
}

/**
 * At most `limit` bytes of an open file, from where it is.
 * @returns the bytes read (fewer at its end)
 */
async function readUpTo(file: Deno.FsFile, limit: number): Promise<Uint8Array> {
  const out = new Uint8Array(limit);
  let filled = 0;
  while (filled < limit) {
    const n = await file.read(out.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return out.slice(0, filled);
}

/**
 * `stream` as exactly `length` bytes, the Content-Length already sent:
 * bytes past it are dropped, and a stream that ends before it fails, so
 * the engine closes the connection. A file changed while it is sent can
 * cut its own answer short, never spill into the next one.
 */
function exactly(
  stream: ReadableStream<Uint8Array>,
  length: number,
): ReadableStream<Uint8Array> {
  const reader = stream.getReader();
  let left = length;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (left === 0) {
        await reader.cancel().catch(() => {});
        controller.close();
        return;
      }
      const { value, done } = await reader.read();
      if (done) {
        controller.error(new Error("The file shrank while it was sent"));
        return;
      }
      const piece = value.length > left ? value.subarray(0, left) : value;
      left -= piece.length;
      controller.enqueue(piece);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

/** `length` bytes of the file at `path` from `start`, exactly (see exactly()). */
async function slice(
  path: string,
  start: number,
  length: number,
): Promise<ReadableStream<Uint8Array>> {
  const file = await Deno.open(path, { read: true });
  try {
    await file.seek(start, Deno.SeekMode.Start);
  } catch (err) {
    file.close();
    throw err;
  }
  return exactly(file.readable, length);
}
