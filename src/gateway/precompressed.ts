/**
 * Static files compressed once (issue 17): the first request that accepts
 * an encoding starts compressing the file's bytes off the gateway's thread;
 * later requests get the stored result, with its own ETag, until the file
 * changes. Until it is ready the file goes out as it is, and Deno's engine
 * compresses it on the fly as before.
 *
 * Only files the gateway holds in memory (see file_cache.ts), of a type
 * mime-db marks compressible, of at least {@linkcode COMPRESS_MIN_BYTES}.
 *
 * @module
 */

import negotiator from "negotiator";
import db from "mime-db";
import { COMPRESS_MIN_BYTES } from "./answer.ts";

/** The encodings stored, best first. */
export type Encoding = "br" | "gzip";
const ENCODINGS: readonly Encoding[] = ["br", "gzip"];

/** One stored encoding of a file. */
export interface Encoded {
  encoding: Encoding;
  bytes: Uint8Array<ArrayBuffer>;
  /** The file's ETag for this encoding (a representation of its own). */
  etag: string | null;
}

/** What is known of a file's encodings: stored, being made, or not worth it. */
export type Variants = Partial<Record<Encoding, Encoded | "pending" | "none">>;

/** Results this much smaller than the file, or more, are kept. */
const WORTH_KEEPING = 0.9;

/** The compression thread, started on first use. */
let thread: Worker | null = null;
const waiting = new Map<
  number,
  { resolve: (bytes: Uint8Array<ArrayBuffer>) => void; reject: () => void }
>();
let nextId = 0;

/**
 * `input` in `encoding`, at the best compression, made on the compression
 * thread (compress_worker.ts).
 */
function compress(
  encoding: Encoding,
  input: Uint8Array,
): Promise<Uint8Array<ArrayBuffer>> {
  if (thread === null) {
    thread = new Worker(new URL("./compress_worker.ts", import.meta.url), {
      type: "module",
      name: "compression",
      deno: { permissions: "none" },
    });
    thread.onmessage = (event: MessageEvent<unknown>) => {
      const data = event.data as { id?: unknown; bytes?: unknown };
      const job = waiting.get(Number(data.id));
      waiting.delete(Number(data.id));
      if (data.bytes instanceof Uint8Array) {
        job?.resolve(data.bytes as Uint8Array<ArrayBuffer>);
      } else job?.reject();
    };
    thread.onerror = (event) => {
      // Not expected; the files go out as they are from now on.
      event.preventDefault();
      for (const job of waiting.values()) job.reject();
      waiting.clear();
    };
  }
  clearTimeout(idleTimer);
  const id = nextId++;
  const worker = thread;
  return new Promise<Uint8Array<ArrayBuffer>>((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    worker.postMessage({ id, encoding, bytes: input });
  }).finally(() => {
    if (waiting.size > 0) return;
    // Files change seldom: the thread goes once idle, and a live thread
    // would keep a process that is otherwise done from ending.
    const timer = setTimeout(() => {
      thread?.terminate();
      thread = null;
    }, THREAD_IDLE_MS);
    Deno.unrefTimer(timer);
    idleTimer = timer;
  });
}

/** How long the compression thread stays without work. */
const THREAD_IDLE_MS = 5000;
let idleTimer: ReturnType<typeof setTimeout> | undefined;

/** Whether mime-db calls `contentType` compressible (parameters ignored). */
export function isCompressible(contentType: string): boolean {
  const type = contentType.split(";", 1)[0]!.trim().toLowerCase();
  const entry = (db as Record<string, { compressible?: boolean } | undefined>)[
    type
  ];
  return entry?.compressible === true;
}

/** The package's class, as much of it as is used here (it has no types). */
const Negotiator = negotiator as unknown as new (
  request: { headers: Record<string, string> },
) => { encodings(available: string[]): string[] };

/** Accept-Encoding values seen, and the encoding each allows. */
const chosen = new Map<string, Encoding | null>();
const MAX_REMEMBERED = 64;

/**
 * The stored encoding a request's `Accept-Encoding` allows: Brotli before
 * gzip whenever both are acceptable (as nginx's `brotli_static` and
 * Caddy's `precompressed` do; a browser sends them with equal weight).
 *
 * @example
 * ```ts
 * acceptedEncoding("gzip, deflate, br"); // "br"
 * acceptedEncoding("gzip;q=1, br;q=0"); // "gzip"
 * acceptedEncoding(null); // null
 * ```
 */
export function acceptedEncoding(header: string | null): Encoding | null {
  if (header === null || header === "") return null;
  const known = chosen.get(header);
  if (known !== undefined) return known;
  const acceptable = new Negotiator({
    headers: { "accept-encoding": header },
  }).encodings([...ENCODINGS]);
  const pick = ENCODINGS.find((e) => acceptable.includes(e)) ?? null;
  if (chosen.size >= MAX_REMEMBERED) chosen.clear();
  chosen.set(header, pick);
  return pick;
}

/** A file's ETag for an encoding of it: `"…-br"` for `"…"`. */
export function encodedEtag(
  etag: string | null,
  encoding: Encoding,
): string | null {
  if (etag === null) return null;
  return `${etag.slice(0, -1)}-${encoding}"`;
}

/**
 * Makes stored encodings, one file at a time (a site with many files
 * cannot keep the gateway's compression threads busy).
 */
export class Precompressor {
  #running = 0;
  readonly #maxRunning: number;

  constructor(maxRunning = 1) {
    this.#maxRunning = maxRunning;
  }

  /** Whether a file of this type and size is ever stored compressed. */
  static worthy(contentType: string, size: number): boolean {
    return size >= COMPRESS_MIN_BYTES && isCompressible(contentType);
  }

  /**
   * The stored `encoding` of a file, or null when it is not ready (it is
   * started now if it can be) or not worth it.
   * @param file the file's bytes, its ETag, where its variants are kept,
   *   and whether a result of so many bytes may be kept (memory)
   */
  encoded(
    file: {
      bytes: () => Uint8Array;
      etag: string | null;
      variants: Variants;
      keep: (bytes: number) => boolean;
    },
    encoding: Encoding,
  ): Encoded | null {
    const known = file.variants[encoding];
    if (typeof known === "object") return known;
    if (known !== undefined || this.#running >= this.#maxRunning) return null;
    file.variants[encoding] = "pending";
    this.#running++;
    const input = file.bytes();
    compress(encoding, input).then((bytes) => {
      const keep = bytes.length <= input.length * WORTH_KEEPING &&
        file.keep(bytes.length);
      file.variants[encoding] = keep
        ? { encoding, bytes, etag: encodedEtag(file.etag, encoding) }
        : "none";
    }, () => {
      file.variants[encoding] = "none";
    }).finally(() => this.#running--);
    return null;
  }
}
