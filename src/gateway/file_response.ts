/**
 * Answering with a file: Content-Type, Content-Length, Last-Modified, a
 * strong ETag (for files up to `--max-etag-size`), 304, 206 and 416, HEAD;
 * the body is streamed from disk.
 *
 * @module
 */

import {
  contentRange,
  decideConditional,
  formatHttpDate,
  makeEtag,
  unsatisfiedRange,
} from "./conditional.ts";
import { contentTypeFor, type MimeTable } from "./mime.ts";

/** What a file answer needs from the request. */
export interface FileRequest {
  method: string;
  headers: Headers;
}

/** Options of {@linkcode fileResponse}. */
export interface FileResponseOptions {
  mime: MimeTable;
  etags: EtagCache;
  /** Files larger than this get no ETag. */
  maxEtagSize: number;
  /** Headers the site set (a Content-Type here wins). */
  headers?: Headers;
  /** Status for a full answer. @default {200} */
  status?: number;
}

/** A file answer and how many body bytes it sends. */
export interface FileAnswer {
  response: Response;
  bytes: number;
}

/** Digests of files, keyed by path, size and modification time. */
export class EtagCache {
  #entries = new Map<string, Promise<string>>();
  #limit: number;

  constructor(limit = 10_000) {
    this.#limit = limit;
  }

  /** The strong ETag of a file (computed once per version of it). */
  get(path: string, info: Deno.FileInfo): Promise<string> {
    const key = `${path}\0${info.size}\0${info.mtime?.getTime() ?? 0}\0${
      info.ino ?? 0
    }`;
    let etag = this.#entries.get(key);
    if (etag === undefined) {
      if (this.#entries.size >= this.#limit) this.#entries.clear();
      etag = digestFile(path).then(makeEtag);
      etag.catch(() => this.#entries.delete(key));
      this.#entries.set(key, etag);
    }
    return etag;
  }
}

async function digestFile(path: string): Promise<Uint8Array> {
  const bytes = await Deno.readFile(path);
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/**
 * Builds the answer for `path` (an existing regular file).
 *
 * @param req the request's method and headers
 * @param path the real path of the file
 * @param info its `Deno.stat`
 */
export async function fileResponse(
  req: FileRequest,
  path: string,
  info: Deno.FileInfo,
  options: FileResponseOptions,
): Promise<FileAnswer> {
  const headers = options.headers ?? new Headers();
  if (!headers.has("content-type")) {
    headers.set("content-type", contentTypeFor(options.mime, path));
  }
  const size = info.size;
  const lastModified = info.mtime === null
    ? null
    : Math.floor(info.mtime.getTime() / 1000) * 1000;
  const etag = size <= options.maxEtagSize
    ? await options.etags.get(path, info)
    : null;
  if (lastModified !== null) {
    headers.set("last-modified", formatHttpDate(lastModified));
  }
  if (etag !== null) headers.set("etag", etag);
  headers.set("accept-ranges", "bytes");
  const decision = decideConditional({
    method: req.method,
    ifNoneMatch: req.headers.get("if-none-match"),
    ifModifiedSince: req.headers.get("if-modified-since"),
    ifRange: req.headers.get("if-range"),
    range: req.headers.get("range"),
    etag,
    lastModified,
    size,
  });
  const head = req.method === "HEAD";
  switch (decision.status) {
    case 304:
      headers.delete("content-type");
      return {
        response: new Response(null, { status: 304, headers }),
        bytes: 0,
      };
    case 416:
      headers.set("content-range", unsatisfiedRange(size));
      headers.set("content-type", "text/plain; charset=utf-8");
      return {
        response: new Response(head ? null : "Range Not Satisfiable\n", {
          status: 416,
          headers,
        }),
        bytes: 0,
      };
    case 206: {
      const length = decision.end - decision.start + 1;
      headers.set(
        "content-range",
        contentRange(decision.start, decision.end, size),
      );
      headers.set("content-length", String(length));
      if (head) {
        return {
          response: new Response(null, { status: 206, headers }),
          bytes: 0,
        };
      }
      const body = await fileSlice(path, decision.start, length);
      return {
        response: new Response(body, { status: 206, headers }),
        bytes: length,
      };
    }
    case 200: {
      headers.set("content-length", String(size));
      const status = options.status ?? 200;
      if (head) {
        return { response: new Response(null, { status, headers }), bytes: 0 };
      }
      const file = await Deno.open(path, { read: true });
      return {
        response: new Response(file.readable, { status, headers }),
        bytes: size,
      };
    }
    default:
      return decision satisfies never;
  }
}

/** A stream of `length` bytes of `path` from `start`. */
async function fileSlice(
  path: string,
  start: number,
  length: number,
): Promise<ReadableStream<Uint8Array>> {
  const file = await Deno.open(path, { read: true });
  await file.seek(start, Deno.SeekMode.Start);
  let left = length;
  return new ReadableStream<Uint8Array>({
    type: "bytes",
    async pull(controller) {
      const chunk = new Uint8Array(Math.min(64 * 1024, left));
      const n = await file.read(chunk);
      if (n === null || n === 0) {
        file.close();
        controller.close();
        return;
      }
      left -= n;
      controller.enqueue(chunk.subarray(0, n));
      if (left <= 0) {
        file.close();
        controller.close();
      }
    },
    cancel() {
      file.close();
    },
  });
}
