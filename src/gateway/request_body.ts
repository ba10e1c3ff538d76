/**
 * Reading a request body for a site: bounded in size, and in time for a
 * client that stops sending or trickles it.
 *
 * @module
 */

import { concat } from "../protocol/frames.ts";

/** The slowest average rate a request body may arrive at, past its start. */
export const MIN_BODY_BYTES_PER_SECOND = 500;

const EMPTY = new Uint8Array(0);

/**
 * Reads a body of at most `limit` bytes.
 * @returns the body, or why it was not read
 */
export async function readBody(
  request: Request,
  limit: number,
  stallMs: number,
): Promise<Uint8Array | "too large" | "stalled"> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) return "too large";
  if (request.body === null) return EMPTY;
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = request.body.getReader();
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
    chunks.push(next.value);
  }
  return chunks.length === 1 ? chunks[0]! : concat(chunks);
}
