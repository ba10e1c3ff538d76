/**
 * Reading a request body for a site: bounded in size, and in time for a
 * client that stops sending or trickles it.
 *
 * @module
 */

import { concat } from "../protocol/frames.ts";
import {
  type Answer,
  defaultError,
  type ErrorAnswer,
  type RequestContext,
} from "./answer.ts";

/** The slowest average rate a request body may arrive at, past its start. */
export const MIN_BODY_BYTES_PER_SECOND = 500;

const EMPTY = new Uint8Array(0);

/** Bytes of request bodies held at once: four of the largest, 64 MiB at least. */
export function bodyBytesMax(maxPostLength: number): number {
  return Math.max(64 * 1024 * 1024, 4 * maxPostLength);
}

/** What {@linkcode pageBody} needs besides the request. */
export interface PageBodyOptions {
  maxPostLength: number;
  /** Seconds a body may pause. */
  stallSeconds: number;
  bodies: BodyBytes;
  /** The error answer, through the site's `Error` hook. */
  error: ErrorAnswer;
}

/**
 * The body of a request for a page of `site`, or the answer when it cannot
 * be read: 413 (too large), 408 (it stalled or trickled; the connection is
 * closed), 503 (bodies being read fill what the gateway holds).
 */
export async function pageBody(
  request: Request,
  site: string,
  ctx: RequestContext,
  options: PageBodyOptions,
): Promise<Uint8Array | Answer> {
  const { maxPostLength, stallSeconds, bodies } = options;
  const body = await readBody(
    request,
    maxPostLength,
    stallSeconds * 1000,
    bodies,
  );
  if (body instanceof Uint8Array) return body;
  if (body === "too large") {
    return options.error(
      413,
      `The request body is larger than ${maxPostLength} bytes`,
      site,
      ctx,
    );
  }
  const answer = defaultError(
    body === "busy" ? 503 : 408,
    body === "busy"
      ? `The server is receiving ${bodies.max} bytes of request bodies already; try again in a moment`
      : `The request body paused for ${stallSeconds} s, or arrived at under ${MIN_BODY_BYTES_PER_SECOND} bytes a second`,
    { accept: ctx.accept, method: ctx.wire.method },
    site,
  );
  answer.response.headers.set("connection", "close");
  if (body === "busy") answer.response.headers.set("retry-after", "5");
  return answer;
}

/**
 * The bytes of request bodies being read, over all requests: a body is held
 * in memory until it is whole, so many clients sending large bodies slowly
 * could otherwise fill the gateway's memory.
 */
export interface BodyBytes {
  held: number;
  /** The most held at once; a body that would go over gets "busy". */
  max: number;
}

/**
 * Reads a body of at most `limit` bytes, counting what it holds in `bodies`
 * while it is read.
 * @returns the body, or why it was not read
 */
export async function readBody(
  request: Request,
  limit: number,
  stallMs: number,
  bodies: BodyBytes,
): Promise<Uint8Array | "too large" | "stalled" | "busy"> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) return "too large";
  if (request.body === null) return EMPTY;
  let size = 0;
  try {
    return await readChunks(request.body, limit, stallMs, (n) => {
      if (bodies.held + n > bodies.max) return false;
      bodies.held += n;
      size += n;
      return true;
    });
  } finally {
    bodies.held -= size;
  }
}

async function readChunks(
  body: ReadableStream<Uint8Array>,
  limit: number,
  stallMs: number,
  hold: (n: number) => boolean,
): Promise<Uint8Array | "too large" | "stalled" | "busy"> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = body.getReader();
  const started = Date.now();
  while (true) {
    // A client that stops sending its body (slow POST) is not waited for,
    // nor one that trickles it: after 4 stall times it must have sent
    // MIN_BODY_BYTES_PER_SECOND on average (like Apache's mod_reqtimeout).
    const deadline = started + 4 * stallMs +
      (size / MIN_BODY_BYTES_PER_SECOND) * 1000;
    const wait = Math.min(stallMs, deadline - Date.now());
    if (wait <= 0) {
      await reader.cancel().catch(() => {});
      return "stalled";
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stalled = new Promise<"stalled">((resolve) => {
      timer = setTimeout(() => resolve("stalled"), wait);
    });
    const next = await Promise.race([reader.read(), stalled]);
    clearTimeout(timer);
    if (next === "stalled") {
      await reader.cancel().catch(() => {});
      return "stalled";
    }
    if (next.done) break;
    size += next.value.length;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      return "too large";
    }
    if (!hold(next.value.length)) {
      await reader.cancel().catch(() => {});
      return "busy";
    }
    chunks.push(next.value);
  }
  return chunks.length === 1 ? chunks[0]! : concat(chunks);
}
