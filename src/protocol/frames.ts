/**
 * The frame codec between the gateway and a sandbox process.
 *
 * A frame is `[u32 header length][u32 body length][header][body]`, big endian.
 * The header is UTF-8 JSON (a message); the body is raw bytes (a request or
 * response body), sent without re-encoding. Both sides treat the other's
 * frames as untrusted: lengths are checked before anything is allocated.
 *
 * @module
 */

/** One decoded frame: the parsed JSON header and the body bytes. */
export interface Frame {
  header: unknown;
  body: Uint8Array;
  /** Bytes of the JSON header, as received. */
  headerBytes: number;
}

/** Limits a decoder enforces before allocating. */
export interface FrameLimits {
  /** Largest JSON header accepted. @default {1048576} */
  maxHeaderBytes?: number;
  /** Largest body accepted. @default {134217728} */
  maxBodyBytes?: number;
}

/** A frame stream that cannot be decoded: the peer is broken or hostile. */
export class FrameError extends Error {
  override name = "FrameError";
}

const PREFIX_BYTES = 8;
const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Encodes one frame.
 *
 * @param header a JSON-serialisable message
 * @param body optional body bytes, copied in after the header
 * @returns the frame's bytes
 * @example
 * ```ts
 * const bytes = encodeFrame({ t: "shutdown" });
 * ```
 */
export function encodeFrame(
  header: unknown,
  body: Uint8Array = EMPTY,
): Uint8Array {
  const json = encoder.encode(JSON.stringify(header));
  const out = new Uint8Array(PREFIX_BYTES + json.length + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, json.length);
  view.setUint32(4, body.length);
  out.set(json, PREFIX_BYTES);
  out.set(body, PREFIX_BYTES + json.length);
  return out;
}

/** The parts joined into one array. */
export function concat(parts: Uint8Array[]): Uint8Array {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    all.set(p, offset);
    offset += p.length;
  }
  return all;
}

/**
 * Incremental decoder: feed it chunks as they arrive, take whole frames out.
 *
 * @example
 * ```ts
 * const d = new FrameDecoder();
 * for (const frame of d.push(encodeFrame({ t: "x" }))) console.log(frame.header);
 * d.end(); // throws FrameError if a frame was cut short
 * ```
 */
export class FrameDecoder {
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #maxHeader: number;
  #maxBody: number;

  constructor(limits: FrameLimits = {}) {
    this.#maxHeader = limits.maxHeaderBytes ?? 1024 * 1024;
    this.#maxBody = limits.maxBodyBytes ?? 128 * 1024 * 1024;
  }

  /** The largest header accepted from now on. */
  set maxHeaderBytes(bytes: number) {
    this.#maxHeader = bytes;
  }

  /** Bytes received but not yet part of a whole frame. */
  get buffered(): number {
    return this.#buffered;
  }

  /**
   * Adds a chunk and returns every frame it completes, in order.
   * @throws {FrameError} on a length over the limits or a header that is not JSON
   */
  push(chunk: Uint8Array): Frame[] {
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    const frames: Frame[] = [];
    while (this.#buffered >= PREFIX_BYTES) {
      const prefix = this.#peek(PREFIX_BYTES);
      const view = new DataView(prefix.buffer, prefix.byteOffset, PREFIX_BYTES);
      const headerLength = view.getUint32(0);
      const bodyLength = view.getUint32(4);
      if (headerLength > this.#maxHeader) {
        throw new FrameError(
          `Frame header of ${headerLength} bytes exceeds the limit of ${this.#maxHeader}`,
        );
      }
      if (bodyLength > this.#maxBody) {
        throw new FrameError(
          `Frame body of ${bodyLength} bytes exceeds the limit of ${this.#maxBody}`,
        );
      }
      const total = PREFIX_BYTES + headerLength + bodyLength;
      if (this.#buffered < total) break;
      const bytes = this.#take(total);
      frames.push({
        header: parseHeader(
          bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength),
        ),
        body: bytes.subarray(PREFIX_BYTES + headerLength),
        headerBytes: headerLength,
      });
    }
    return frames;
  }

  /** Removes and returns the bytes not yet part of a whole frame. */
  takeRest(): Uint8Array {
    if (this.#buffered === 0) return new Uint8Array(0);
    this.#join();
    const rest = this.#chunks[0]!;
    this.#chunks = [];
    this.#buffered = 0;
    return rest;
  }

  /**
   * Marks the end of the stream.
   * @throws {FrameError} if a partial frame is left over
   */
  end(): void {
    if (this.#buffered > 0) {
      throw new FrameError(
        `Stream ended inside a frame (${this.#buffered} bytes left over)`,
      );
    }
  }

  /** The first `n` buffered bytes, joining chunks only when needed. */
  #peek(n: number): Uint8Array {
    const first = this.#chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    this.#join();
    return this.#chunks[0]!.subarray(0, n);
  }

  /** Removes and returns the first `n` buffered bytes. */
  #take(n: number): Uint8Array {
    let first = this.#chunks[0]!;
    if (first.length < n) {
      this.#join();
      first = this.#chunks[0]!;
    }
    const out = first.subarray(0, n);
    if (first.length === n) this.#chunks.shift();
    else this.#chunks[0] = first.subarray(n);
    this.#buffered -= n;
    return out;
  }

  #join(): void {
    const all = new Uint8Array(this.#buffered);
    let offset = 0;
    for (const chunk of this.#chunks) {
      all.set(chunk, offset);
      offset += chunk.length;
    }
    this.#chunks = [all];
  }
}

function parseHeader(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch (err) {
    throw new FrameError(
      `Frame header is not UTF-8 JSON: ${(err as Error).message}`,
    );
  }
}

/**
 * Microtasks a writer of frames waits before it writes, where it has no
 * end-of-turn scheduler (a sandbox's host and workers). Requests that
 * arrive together are answered at different microtask depths (each is a
 * few awaits further along): writing at the first would write once per
 * reply.
 */
export const FLUSH_HOPS = 12;

/** The most turns of the event loop a {@linkcode FrameWriter} waits. */
const MAX_WAIT_TURNS = 8;
/** A {@linkcode FrameWriter} holding this many frames writes them. */
const MAX_WAIT_FRAMES = 32;

// Captured when this module loads: in a worker, before any site code runs.
const enqueue = queueMicrotask;

/** Calls `fn` after `hops` microtasks. */
export function afterMicrotasks(hops: number, fn: () => void): void {
  enqueue(() => hops > 1 ? afterMicrotasks(hops - 1, fn) : fn());
}

/**
 * Collects frames written close together into one write.
 *
 * @example
 * ```ts ignore
 * const out = new FrameWriter((bytes) => Deno.stdout.write(bytes));
 * out.send({ t: "shutdown" });
 * ```
 */
export class FrameWriter {
  #pending: Uint8Array[] = [];
  #size = 0;
  #scheduled = false;
  #chain: Promise<void> = Promise.resolve();
  #write: (bytes: Uint8Array) => Promise<unknown>;
  #onError: (err: unknown) => void;
  #backlog = 0;
  #limit: { bytes: number; onOver: () => void } | null;
  #nextTurn: ((fn: () => void) => void) | null;

  /**
   * `limit`: when more than `bytes` wait to be written (the reader stopped
   * reading), `onOver` is called once; nothing is dropped. `nextTurn`:
   * calls a function at the end of the event loop's turn (the gateway
   * passes `setImmediate`); without it, frames go after
   * {@linkcode FLUSH_HOPS} microtasks. A sandbox does without: importing
   * `node:timers` loads Deno's Node layer into each of its isolates
   * (measured: 7 MiB each, and site starts 7 times slower with 100 sites).
   */
  constructor(
    write: (bytes: Uint8Array) => Promise<unknown>,
    onError: (err: unknown) => void = () => {},
    limit: { bytes: number; onOver: () => void } | null = null,
    nextTurn: ((fn: () => void) => void) | null = null,
  ) {
    this.#write = write;
    this.#onError = onError;
    this.#limit = limit;
    this.#nextTurn = nextTurn;
  }

  /** Bytes handed to the writer and not written yet. */
  get backlog(): number {
    return this.#backlog + this.#size;
  }

  /** Queues one frame; it is written within a few turns of the event loop. */
  send(header: unknown, body?: Uint8Array): void {
    const frame = encodeFrame(header, body);
    this.#pending.push(frame);
    this.#size += frame.length;
    if (this.#scheduled) return;
    this.#scheduled = true;
    this.#seen = this.#pending.length;
    this.#turns = 0;
    if (this.#nextTurn === null) afterMicrotasks(FLUSH_HOPS, this.#flush);
    else this.#nextTurn(this.#turn);
  }

  /** Frames queued when the last turn ended, and turns waited. */
  #seen = 0;
  #turns = 0;

  /**
   * Writes at the end of a turn of the event loop that queued no frame, or
   * after {@linkcode MAX_WAIT_TURNS} turns or {@linkcode MAX_WAIT_FRAMES}
   * frames. `Deno.serve` hands over one request a turn: writing at the end
   * of each would write once per request (measured, issue 17: 1.07 writes
   * per request to a sandbox with `--fast-connections`, 0.10 this way). An
   * idle server writes at the end of the first turn.
   */
  #turn = (): void => {
    const queued = this.#pending.length;
    if (
      queued > this.#seen && this.#turns < MAX_WAIT_TURNS &&
      queued < MAX_WAIT_FRAMES
    ) {
      this.#seen = queued;
      this.#turns++;
      this.#nextTurn!(this.#turn);
      return;
    }
    this.#flush();
  };

  /** Resolves once everything queued so far has been written. */
  drained(): Promise<void> {
    if (!this.#scheduled) return this.#chain;
    // A flush is queued; read the chain once it has run.
    this.#flushed ??= Promise.withResolvers<void>();
    return this.#flushed.promise.then(() => this.#chain);
  }

  /** Settled by the next flush, for `drained` calls made before it. */
  #flushed: PromiseWithResolvers<void> | null = null;

  #flush = (): void => {
    this.#scheduled = false;
    this.#flushed?.resolve();
    this.#flushed = null;
    const frames = this.#pending;
    const size = this.#size;
    this.#pending = [];
    this.#size = 0;
    const bytes = frames.length === 1 ? frames[0]! : concat(frames);
    this.#backlog += size;
    if (this.#limit !== null && this.#backlog > this.#limit.bytes) {
      const { onOver } = this.#limit;
      this.#limit = null;
      onOver();
    }
    this.#chain = this.#chain
      .then(() => this.#write(bytes))
      .then(() => {
        this.#backlog -= size;
      }, this.#onError);
  };
}
