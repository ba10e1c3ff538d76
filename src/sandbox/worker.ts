/**
 * The entry of a site worker: loads the site's autorun scripts, reports what
 * they registered, then runs page callbacks and hooks for the host.
 *
 * It runs with exactly the site's Deno permissions.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import {
  confineGlobals,
  confineKv,
  limitWorkers,
  nestedWell,
  outputToLog,
} from "./confine.ts";
import { registry, routesOf, type SocketEntry } from "./_registry.ts";
import { hook, pauseTasks, startTasks } from "./api.ts";
import { PageRequest } from "./request.ts";
import type { PageResponse } from "./response.ts";
import {
  answerError,
  answerPage,
  loadScripts,
  type PageAnswer,
  stackOf,
  wantsDefaultType,
} from "./pages.ts";
import { SharedOut } from "./out.ts";
import {
  afterMicrotasks,
  concat,
  encodeFrame,
  FLUSH_HOPS,
  FrameDecoder,
} from "../protocol/frames.ts";
import { parseToSandbox } from "../protocol/messages.ts";
import type {
  FromSandbox,
  FromWorker,
  ToSandbox,
  ToWorker,
  WireReply,
  WireSession,
} from "../protocol/messages.ts";

confineGlobals();

// Captured before any site code runs, which may replace them.
const post = self.postMessage.bind(self);
const logError = outputToLog();

self.addEventListener("error", (event) => {
  event.preventDefault();
  logError(`Uncaught error: ${stackOf(event.error ?? event.message)}`);
});
self.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  logError(`Unhandled promise rejection: ${stackOf(event.reason)}`);
});

let siteDir = "";
/** The site folder's file: URL, with a trailing slash. */
let siteUrl = "";

function socketOf(channel: number): SocketEntry | undefined {
  return registry.sockets[channel];
}

const sessionCalls = new Map<
  number,
  { resolve: (s: WireSession) => void; reject: (e: Error) => void }
>();
let sessionCall = 0;

// Websocket sends go to the gateway the way replies do, so that a page that
// broadcasts and then answers has its broadcast written first.
registry.post = (message) => {
  if (message.t === "wsSend") {
    const binary = typeof message.data !== "string";
    const body = binary
      ? message.data as Uint8Array
      : ENCODER.encode(message.data as string);
    writeFrame({
      t: "wsSend",
      channel: message.channel,
      client: message.client,
      binary,
    }, body);
  } else if (message.t === "wsClose") writeFrame(message);
  else send(message);
};
registry.ask = (question) =>
  new Promise<WireSession>((resolve, reject) => {
    const call = ++sessionCall;
    sessionCalls.set(call, { resolve, reject });
    // A direct worker talks to the gateway itself; otherwise the host
    // renumbers calls across its workers.
    if (direct) writeFrame({ ...question, call });
    else send({ ...question, call });
  });

function send(message: FromWorker, transfer: Transferable[] = []): void {
  post(message, transfer);
}

const EMPTY = new Uint8Array(0);
const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();
// Captured before any site code runs (see ./out.ts).
const readStdin = Deno.stdin.read.bind(Deno.stdin);
const apply = Reflect.apply;
const isTrusted = Object.getOwnPropertyDescriptor(Event.prototype, "isTrusted")
  ?.get ?? (() => false);

/** Stdout shared with the host, and this worker's slot (set by "load"). */
let out: SharedOut | null = null;
let slot = 0;
/** Requests handed to this worker and not answered yet. */
const answering = new Set<number>();
/** This worker reads the gateway's frames from stdin itself (one worker). */
let direct = false;

/**
 * Writes a frame straight to the gateway (see ./out.ts): frames written
 * close together go in one write, a few microtasks later (measured, issue
 * 17: a write per reply was most of the sandbox's system time).
 */
function writeFrame(header: FromSandbox, body?: Uint8Array): void {
  if (out === null) throw new Error("The sandbox is not connected");
  const frame = encodeFrame(header, body);
  queued.push(frame);
  queuedBytes += frame.length;
  if (queuedBytes >= WRITE_BATCH_BYTES) writeQueued();
  else if (!writeScheduled) {
    writeScheduled = true;
    afterMicrotasks(FLUSH_HOPS, writeQueued);
  }
}

/** Frames made and not yet written. */
let queued: Uint8Array[] = [];
let queuedBytes = 0;
let writeScheduled = false;
/** Frames this large together are written at once. */
const WRITE_BATCH_BYTES = 256 * 1024;

function writeQueued(): void {
  writeScheduled = false;
  if (queued.length === 0) return;
  const frames = queued;
  queued = [];
  queuedBytes = 0;
  try {
    out!.write(frames.length === 1 ? frames[0]! : concat(frames));
  } catch (err) {
    logError(`A reply could not be written: ${(err as Error).message}`);
  }
}

/** Bodies larger than this are streamed, within the gateway's credit. */
const STREAM_OVER_BYTES = 64 * 1024;
/** The largest chunk of a streamed body in one frame. */
const CHUNK_BYTES = 64 * 1024;

/** A reply being streamed: the credit the gateway granted, and whether it gave up. */
interface Outgoing {
  credit: number;
  cancelled: boolean;
  wake: (() => void) | null;
  /** Cancels the site's stream (its client went away). */
  cancel: () => void;
}
const streaming = new Map<number, Outgoing>();
/** Requests whose reply is being read from a stream, before its head is sent. */
const reading = new Map<number, () => void>();

/** Answers request `id`, once: a second answer is dropped. */
function sendReply(id: number, reply: WireReply, body: Uint8Array): void {
  if (!answering.delete(id)) return;
  if (reply.kind === "body" && body.length > STREAM_OVER_BYTES) {
    void streamOut(id, reply, body.length, [body], null, null);
    return;
  }
  try {
    writeFrame({ t: "reply", id, reply }, body);
  } catch (err) {
    logError(`A reply could not be written: ${(err as Error).message}`);
  } finally {
    if (!direct) out?.finished(slot);
  }
}

type Read = ReadableStreamReadResult<unknown>;

/**
 * Answers with a stream's body. What the stream already holds when it is
 * read (any Response made from a string, bytes or JSON) goes whole, in one
 * frame; a stream that is still being written goes chunk by chunk as the
 * site writes it (server-sent events), pulled only as the client reads.
 */
async function sendStream(
  id: number,
  head: Extract<WireReply, { kind: "body" }>,
  stream: ReadableStream<unknown>,
): Promise<void> {
  let reader: ReadableStreamDefaultReader<unknown>;
  try {
    reader = stream.getReader();
  } catch (err) {
    failed(id, `The response body could not be read: ${stackOf(err)}`);
    return;
  }
  reading.set(id, () => void reader.cancel().catch(() => {}));
  const chunks: Uint8Array[] = [];
  let size = 0;
  let pending: Promise<Read> | null = null;
  try {
    while (size <= STREAM_OVER_BYTES) {
      pending = reader.read();
      const now = await settledSoon(pending);
      if (now === null) break; // still being written: stream it
      pending = null;
      if (now.done) {
        sendReply(id, head, joined(chunks, size));
        return;
      }
      const bytes = bytesOf(now.value);
      chunks.push(bytes);
      size += bytes.length;
    }
  } catch (err) {
    failed(id, `The response body failed: ${stackOf(err)}`);
    void reader.cancel().catch(() => {});
    return;
  } finally {
    reading.delete(id);
  }
  if (!answering.delete(id)) {
    // The client went away while the body was read.
    void reader.cancel().catch(() => {});
    return;
  }
  await streamOut(id, head, null, chunks, reader, pending);
}

/**
 * Sends a reply in chunks, each within the credit the gateway grants as its
 * client reads: the gateway holds only what is on its way, and a client
 * that does not read leaves the rest here, in the site's memory (and a
 * stream is not read further). The stream is cancelled when the client
 * goes away.
 */
async function streamOut(
  id: number,
  head: Extract<WireReply, { kind: "body" }>,
  length: number | null,
  chunks: Uint8Array[],
  reader: ReadableStreamDefaultReader<unknown> | null,
  pending: Promise<Read> | null,
): Promise<void> {
  const state: Outgoing = {
    credit: 0,
    cancelled: false,
    wake: null,
    cancel: () => void reader?.cancel().catch(() => {}),
  };
  streaming.set(id, state);
  let finished = false;
  try {
    writeFrame({
      t: "reply",
      id,
      reply: {
        kind: "stream",
        status: head.status,
        headers: head.headers,
        length,
      },
    });
    for (const chunk of chunks) await sendChunk(id, state, chunk);
    while (reader !== null && !state.cancelled) {
      if (pending === null) {
        // Pull from the site only when the client has room for more.
        await credited(state);
        if (state.cancelled) break;
        pending = reader.read();
      }
      const next = await pending;
      pending = null;
      if (next.done) break;
      await sendChunk(id, state, bytesOf(next.value));
    }
    finished = true;
    if (!state.cancelled) {
      writeFrame({ t: "chunk", id, end: true, failed: false });
    }
  } catch (err) {
    if (!state.cancelled) {
      logError(`A streamed reply broke off: ${stackOf(err)}`);
      try {
        writeFrame({ t: "chunk", id, end: true, failed: true });
      } catch {
        // The gateway is gone.
      }
    }
  } finally {
    streaming.delete(id);
    if (!finished || state.cancelled) state.cancel();
    if (!direct) out?.finished(slot);
  }
}

/** Waits until the gateway grants credit (or the client goes away). */
async function credited(state: Outgoing): Promise<void> {
  while (state.credit <= 0 && !state.cancelled) {
    await new Promise<void>((resolve) => state.wake = resolve);
  }
}

async function sendChunk(
  id: number,
  state: Outgoing,
  bytes: Uint8Array,
): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    await credited(state);
    if (state.cancelled) return;
    const n = Math.min(bytes.length - offset, state.credit, CHUNK_BYTES);
    writeFrame(
      { t: "chunk", id, end: false, failed: false },
      bytes.subarray(offset, offset + n),
    );
    state.credit -= n;
    offset += n;
  }
}

/**
 * The promise's outcome if it settles within a few microtask turns, else
 * null: a stream that holds its data answers a read that fast.
 */
async function settledSoon(promise: Promise<Read>): Promise<Read | null> {
  let result: Read | null = null;
  let settled = false;
  let error: unknown = null;
  let failedRead = false;
  promise.then((value) => {
    result = value;
    settled = true;
  }, (err) => {
    error = err;
    failedRead = true;
  });
  for (let i = 0; i < SOON_TURNS && !settled && !failedRead; i++) {
    await undefined;
  }
  if (failedRead) throw error;
  return settled ? result : null;
}

/** Microtask turns a read may take and still count as data already there. */
const SOON_TURNS = 8;

/** A stream's chunk as bytes: Uint8Array (or any view), or text. */
function bytesOf(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (typeof value === "string") return ENCODER.encode(value);
  throw new TypeError(
    `A response stream must give Uint8Array or string chunks, not ${
      value === null ? "null" : typeof value
    }`,
  );
}

function joined(chunks: Uint8Array[], size: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const all = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.length;
  }
  return all;
}

/** The gateway's credit for a streamed reply, or its client going away. */
function streamControl(msg: Extract<ToWorker, { t: "more" | "cancel" }>): void {
  const state = streaming.get(msg.id);
  if (msg.t === "cancel") {
    // Not answered yet: its answer will be dropped.
    if (answering.delete(msg.id) && !direct) out?.finished(slot);
    reading.get(msg.id)?.();
    if (state !== undefined) {
      state.cancelled = true;
      state.cancel();
    }
  } else if (state !== undefined) {
    state.credit += msg.bytes;
  }
  state?.wake?.();
  if (state !== undefined) state.wake = null;
}

/** `autorun/ar_x.ts:3:5` from the first stack location inside the site. */
function locate(err: unknown): string | null {
  const text = err instanceof Error
    ? `${err.message}\n${err.stack ?? ""}`
    : String(err);
  const LOCATION_REGEXP = /file:\/\/[^\s)'"]+?:\d+(?::\d+)?/g;
  for (const match of text.matchAll(LOCATION_REGEXP)) {
    if (match[0].startsWith(siteUrl)) {
      return decodeURI(match[0].slice(siteUrl.length));
    }
  }
  return null;
}

async function load(scripts: string[], declared: string[]): Promise<void> {
  try {
    await loadScripts(scripts, declared, scriptName);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    send({
      t: "loadFailed",
      message: firstLine(message),
      location: locate(err),
    });
    return;
  }
  registry.sealed = true;
  send({ t: "loaded", routes: routesOf(registry) });
}

/** `autorun/ar_x.ts` for a script's URL. */
function scriptName(url: string): string {
  return url.startsWith(siteUrl) ? decodeURI(url.slice(siteUrl.length)) : url;
}

function firstLine(text: string): string {
  const line = text.split("\n", 1)[0] ?? "";
  return line.length > 500 ? `${line.slice(0, 500)}…` : line;
}

function reply(id: number, res: PageResponse): void {
  let wire: { reply: WireReply; body: Uint8Array };
  try {
    wire = res.toWire(wantsDefaultType(res));
  } catch (err) {
    failed(id, `The response could not be sent: ${stackOf(err)}`);
    return;
  }
  const stream = res.streamBody;
  if (stream !== null && wire.reply.kind === "body") {
    void sendStream(id, wire.reply, stream);
    return;
  }
  sendReply(id, wire.reply, wire.body);
}

/** Sends what a page came to. */
function deliver(id: number, answer: PageAnswer): void {
  if (answer.kind === "response") reply(id, answer.res);
  else {
    sendReply(id, {
      kind: "error",
      code: answer.code,
      message: answer.message,
    }, EMPTY);
  }
}

function failed(id: number, why: string): void {
  const ref = crypto.randomUUID().slice(0, 8);
  logError(`[ref ${ref}] ${why}`);
  sendReply(id, {
    kind: "error",
    code: 500,
    message: `Internal Server Error (ref ${ref})`,
  }, EMPTY);
}

async function runPage(
  msg: Extract<ToWorker, { t: "request" }>,
): Promise<void> {
  const req = new PageRequest(msg.req, msg.body);
  deliver(
    msg.id,
    await answerPage(msg.page, msg.captures, req, siteDir, logError),
  );
}

self.addEventListener("message", (event: MessageEvent<ToWorker>) => {
  // Only the host's messages: site code can dispatch events on `self` too,
  // and can fake an event's own isTrusted, but not Event.prototype's getter.
  if (apply(isTrusted, event, []) !== true) return;
  const msg = event.data;
  if (msg.t === "load") {
    if (out !== null) return; // once
    siteDir = msg.siteDir;
    confineKv(msg.kv, msg.siteDir);
    siteUrl = new URL(`file://${siteDir.replace(/\/*$/, "/")}`).href;
    out = new SharedOut(msg.out);
    slot = msg.index;
    direct = msg.direct !== null;
    limitWorkers(msg.nested);
    if (msg.direct !== null) void readFrames(msg.direct);
    void load(msg.scripts, msg.hosts);
    return;
  }
  if (!direct) dispatch(msg);
});

/**
 * Direct mode: reads the gateway's frames from stdin, starting with the
 * bytes the host had read, until stdin ends or the gateway says shutdown.
 */
async function readFrames(first: Uint8Array): Promise<void> {
  const decoder = new FrameDecoder({ maxBodyBytes: 1024 * 1024 * 1024 });
  const buffer = new Uint8Array(64 * 1024);
  let chunk = first;
  try {
    while (true) {
      for (const frame of decoder.push(chunk)) {
        const msg = parseToSandbox(frame.header);
        if (msg.t === "shutdown") {
          ended({ shutdown: true, failed: false });
          return;
        }
        fromGateway(msg, frame.body);
      }
      const n = await readStdin(buffer);
      if (n === null) break;
      chunk = buffer.slice(0, n);
    }
  } catch (err) {
    logError(`Sandbox protocol failure: ${(err as Error).message}`);
    ended({ shutdown: false, failed: true });
    return;
  }
  // The gateway went away: nobody is left to answer.
  ended({ shutdown: false, failed: false });
}

/** Tells the host that stdin ended, once what is queued is written. */
function ended(how: { shutdown: boolean; failed: boolean }): void {
  writeQueued();
  send({ t: "ended", ...how });
}

/** A frame from the gateway, in direct mode. */
function fromGateway(
  msg: Exclude<ToSandbox, { t: "shutdown" }>,
  body: Uint8Array,
): void {
  switch (msg.t) {
    case "init":
      throw new Error("Sandbox received a second init");
    case "load":
      throw new Error("Sandbox received a second load");
    case "heartbeat":
      // The only worker answers for itself: a stuck one cannot.
      writeFrame({ t: "heartbeat", id: msg.id, ok: nestedWell() });
      break;
    case "activate":
      dispatch({ t: "startTasks" });
      break;
    case "pauseTasks":
      dispatch({ t: "pauseTasks" });
      break;
    case "reloading":
      dispatch({ t: "hook", name: "ReloadScripts" });
      break;
    case "request":
      dispatch({ ...msg, body });
      break;
    case "wsMessage":
      dispatch({
        t: "wsMessage",
        channel: msg.channel,
        client: msg.client,
        data: msg.binary ? body.slice() : DECODER.decode(body),
      });
      break;
    default:
      dispatch(msg);
  }
}

/** A message for this worker, from the host or (direct) the gateway. */
function dispatch(msg: Exclude<ToWorker, { t: "load" }>): void {
  switch (msg.t) {
    case "request":
      answering.add(msg.id);
      void runPage(msg);
      break;
    case "error":
      answering.add(msg.id);
      void answerError(
        msg.code,
        msg.message,
        new PageRequest(msg.req, EMPTY),
        logError,
      ).then((answer) => deliver(msg.id, answer));
      break;
    case "ping":
      send({ t: "pong", id: msg.id, ok: nestedWell() });
      break;
    case "hook":
      hook.call(msg.name).catch((err) =>
        logError(`Hook "${msg.name}" failed: ${stackOf(err)}`)
      );
      break;
    case "startTasks":
      startTasks();
      break;
    case "pauseTasks":
      pauseTasks();
      break;
    case "wsOpen":
      void socketOf(msg.channel)?.events.open(
        msg.client,
        msg.req,
        msg.captures,
      );
      break;
    case "wsMessage":
      void socketOf(msg.channel)?.events.message(msg.client, msg.data);
      break;
    case "wsClose":
      void socketOf(msg.channel)?.events.close(
        msg.client,
        msg.code,
        msg.reason,
      );
      break;
    case "sessionResult": {
      const pending = sessionCalls.get(msg.call);
      sessionCalls.delete(msg.call);
      if (msg.session !== null) pending?.resolve(msg.session);
      else {pending?.reject(
          new Error(msg.error ?? "The session could not be stored"),
        );}
      break;
    }
    case "more":
    case "cancel":
      streamControl(msg);
      break;
    default:
      msg satisfies never;
  }
}
