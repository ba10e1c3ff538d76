/**
 * Static files compressed once (issue 17): a file's second GET by a client
 * that accepts an encoding starts compressing its bytes on a thread of the
 * gateway's own (compress_worker.ts), within a share of that thread per
 * site; later requests get the stored result, with its own ETag, until the
 * file changes. Until it is ready the file goes as it is, marked
 * `no-transform`, so Deno's engine does not compress it on every request.
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

/**
 * Whether mime-db calls `contentType` compressible (parameters ignored),
 * except `application/octet-stream`: mime-db says yes, but it is what any
 * file of unknown type gets (an .exe, a .zip, random bytes).
 */
export function isCompressible(contentType: string): boolean {
  const type = contentType.split(";", 1)[0]!.trim().toLowerCase();
  if (type === "application/octet-stream") return false;
  const entry = (db as Record<string, { compressible?: boolean } | undefined>)[
    type
  ];
  return entry?.compressible === true;
}

/** The package's class, as much of it as is used here (it has no types). */
const Negotiator = negotiator as unknown as new (
  request: { headers: Record<string, string> },
) => {
  encodings(available: string[], options: { preferred: string[] }): string[];
};

/** Accept-Encoding values seen, and the encoding each allows. */
const chosen = new Map<string, Encoding | null>();
const MAX_REMEMBERED = 64;

/**
 * Longer `Accept-Encoding` values are not read (a browser's is about 30
 * characters): measured, the negotiator package takes 34 ms for 60 KiB.
 * Such a client gets the file as it is.
 */
export const MAX_ACCEPT_ENCODING = 256;

/**
 * The stored encoding a request's `Accept-Encoding` allows: the one it
 * weighs highest, Brotli when it weighs both alike (a browser sends them
 * with equal weight).
 *
 * @example
 * ```ts
 * acceptedEncoding("gzip, deflate, br"); // "br"
 * acceptedEncoding("gzip;q=1, br;q=0.5"); // "gzip"
 * acceptedEncoding(null); // null
 * ```
 */
export function acceptedEncoding(header: string | null): Encoding | null {
  if (
    header === null || header === "" || header.length > MAX_ACCEPT_ENCODING
  ) return null;
  const known = chosen.get(header);
  if (known !== undefined) return known;
  // Codings and parameter names are case-insensitive (RFC 9110 §8.4.1,
  // §5.6.6); the package compares `q` as it is written.
  const best = new Negotiator({
    headers: { "accept-encoding": header.toLowerCase() },
  }).encodings([...ENCODINGS], { preferred: [...ENCODINGS] })[0];
  const pick = ENCODINGS.find((e) => e === best) ?? null;
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

/** A file as {@linkcode Precompressor} sees it. */
export interface Compressible {
  /** Who pays for its compression: its site (folder). */
  owner: string;
  bytes: () => Uint8Array;
  etag: string | null;
  variants: Variants;
  /** Whether a result of so many bytes may be kept (memory). */
  keep: (bytes: number) => boolean;
}

/**
 * The compression thread's time is shared: after a job of T ms it starts
 * the next one no sooner than {@linkcode THREAD_SHARE}·T later (at most a
 * quarter of a core), and the site whose file it was waits
 * {@linkcode SITE_SHARE}·T (a site rewriting its files all the time gets a
 * tenth of it; the others get their turns between).
 */
const THREAD_SHARE = 3;
const SITE_SHARE = 10;

/**
 * Makes stored encodings, one file at a time, within a share of one core
 * and each site within its own share.
 */
export class Precompressor {
  #running = false;
  /** No job starts before this time. */
  #readyAt = 0;
  /** Sites that had a job, and when each may have the next. */
  #sites = new Map<string, number>();
  readonly #now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** Whether a file of this type and size is ever stored compressed. */
  static worthy(contentType: string, size: number): boolean {
    return size >= COMPRESS_MIN_BYTES && isCompressible(contentType);
  }

  /**
   * The stored `encoding` of a file, or null when it is not ready or not
   * worth it. `start`: make it now if the thread and the file's site have
   * time (only for a request that will get the body).
   */
  encoded(
    file: Compressible,
    encoding: Encoding,
    start = true,
  ): Encoded | null {
    const known = file.variants[encoding];
    if (typeof known === "object") return known;
    const now = this.#now();
    if (
      known !== undefined || !start || this.#running || now < this.#readyAt ||
      now < (this.#sites.get(file.owner) ?? 0)
    ) return null;
    file.variants[encoding] = "pending";
    this.#running = true;
    const input = file.bytes();
    compress(encoding, input).then((bytes) => {
      const keep = bytes.length <= input.length * WORTH_KEEPING &&
        file.keep(bytes.length);
      file.variants[encoding] = keep
        ? { encoding, bytes, etag: encodedEtag(file.etag, encoding) }
        : "none";
    }, () => {
      file.variants[encoding] = "none";
    }).finally(() => {
      const end = this.#now();
      const took = end - now;
      this.#running = false;
      this.#readyAt = end + THREAD_SHARE * took;
      for (const [site, at] of this.#sites) {
        if (at <= end) this.#sites.delete(site);
      }
      this.#sites.set(file.owner, end + SITE_SHARE * took);
    });
    return null;
  }
}
