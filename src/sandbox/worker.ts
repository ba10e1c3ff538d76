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
  limitWorkers,
  nestedWell,
  outputToLog,
} from "./confine.ts";
import { registry, routesOf, type SocketEntry } from "./_registry.ts";
import { hook, startTasks } from "./api.ts";
import { PageRequest } from "./request.ts";
import { HaltSignal, PageResponse } from "./response.ts";
import { SafeHtml } from "./html.ts";
import { SharedOut } from "./out.ts";
import { encodeFrame, FrameDecoder } from "../protocol/frames.ts";
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

/** Writes a frame straight to the gateway (see ./out.ts). */
function writeFrame(header: FromSandbox, body?: Uint8Array): void {
  if (out === null) throw new Error("The sandbox is not connected");
  out.write(encodeFrame(header, body));
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
}
const streaming = new Map<number, Outgoing>();

/** Answers request `id`, once: a second answer is dropped. */
function sendReply(id: number, reply: WireReply, body: Uint8Array): void {
  if (!answering.delete(id)) return;
  if (reply.kind === "body" && body.length > STREAM_OVER_BYTES) {
    void streamReply(id, reply, body);
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

/**
 * Sends a large body in chunks, each within the credit the gateway grants
 * as its client reads: the gateway holds only what is on its way, and a
 * client that does not read leaves the rest here, in the site's memory.
 */
async function streamReply(
  id: number,
  reply: Extract<WireReply, { kind: "body" }>,
  body: Uint8Array,
): Promise<void> {
  const state: Outgoing = { credit: 0, cancelled: false, wake: null };
  streaming.set(id, state);
  try {
    writeFrame({
      t: "reply",
      id,
      reply: {
        kind: "stream",
        status: reply.status,
        headers: reply.headers,
        length: body.length,
      },
    });
    let offset = 0;
    while (offset < body.length) {
      while (state.credit <= 0 && !state.cancelled) {
        await new Promise<void>((resolve) => state.wake = resolve);
      }
      if (state.cancelled) return;
      const n = Math.min(body.length - offset, state.credit, CHUNK_BYTES);
      writeFrame(
        { t: "chunk", id, end: false, failed: false },
        body.subarray(offset, offset + n),
      );
      state.credit -= n;
      offset += n;
    }
    writeFrame({ t: "chunk", id, end: true, failed: false });
  } catch (err) {
    logError(`A reply could not be written: ${(err as Error).message}`);
  } finally {
    streaming.delete(id);
    if (!direct) out?.finished(slot);
  }
}

/** The gateway's credit for a streamed reply, or its client going away. */
function streamControl(msg: Extract<ToWorker, { t: "more" | "cancel" }>): void {
  const state = streaming.get(msg.id);
  if (msg.t === "cancel") {
    // Not answered yet: its answer will be dropped.
    if (answering.delete(msg.id) && !direct) out?.finished(slot);
    if (state !== undefined) state.cancelled = true;
  } else if (state !== undefined) {
    state.credit += msg.bytes;
  }
  state?.wake?.();
  if (state !== undefined) state.wake = null;
}

/** The error's stack without the sandbox's own frames. */
function stackOf(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const lines = (err.stack ?? err.message).split("\n");
  return lines.filter((l) => !INTERNAL_FRAME_REGEXP.test(l)).join("\n")
    // Deno's advice is for whoever runs deno; a site asks in its site.json.
    .replace(
      /, run again with the --allow-(\w+) flag/g,
      (_, what) =>
        ` (a site gets only what its site.json asks for: add it under "permissions"${
          what === "run" || what === "ffi" || what === "sys"
            ? ", though sites may never have this one"
            : what === "read" || what === "write"
            ? "; paths must be inside the site folder"
            : ""
        })`,
    );
}

const INTERNAL_FRAME_REGEXP = new RegExp(
  `^\\s+at .*(${RegExp.escape(new URL("./", import.meta.url).href)}|ext:)`,
);

/** `autorun/ar_x.ts:3:5` from the first stack location inside the site. */
function locate(err: unknown): string | null {
  const text = err instanceof Error
    ? `${err.message}\n${err.stack ?? ""}`
    : String(err);
  const prefix =
    new URL(`file://${siteDir.endsWith("/") ? siteDir : siteDir + "/"}`).href;
  const LOCATION_REGEXP = /file:\/\/[^\s)'"]+?:\d+(?::\d+)?/g;
  for (const match of text.matchAll(LOCATION_REGEXP)) {
    if (match[0].startsWith(prefix)) {
      return decodeURI(match[0].slice(prefix.length));
    }
  }
  return null;
}

async function load(scripts: string[]): Promise<void> {
  try {
    for (const url of scripts) await import(url);
    await hook.call("Loaded");
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

function firstLine(text: string): string {
  const line = text.split("\n", 1)[0] ?? "";
  return line.length > 500 ? `${line.slice(0, 500)}…` : line;
}

function reply(id: number, res: PageResponse): void {
  let wire: { reply: WireReply; body: Uint8Array };
  try {
    wire = res.toWire();
  } catch (err) {
    failed(id, `The response could not be sent: ${stackOf(err)}`);
    return;
  }
  sendReply(id, wire.reply, wire.body);
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

async function applyResult(result: unknown, res: PageResponse): Promise<void> {
  if (typeof result === "string" || result instanceof SafeHtml) {
    res.append(result);
  } else if (result instanceof Response) {
    res.clear();
    res.status = result.status;
    result.headers.forEach((value, name) => {
      if (name !== "set-cookie") res.setHeader(name, value);
    });
    // Joined, several cookies would be one broken one.
    for (const cookie of result.headers.getSetCookie()) {
      res.appendHeader("Set-Cookie", cookie);
    }
    res.append(new Uint8Array(await result.arrayBuffer()));
  }
}

async function runPage(
  msg: Extract<ToWorker, { t: "request" }>,
): Promise<void> {
  const req = new PageRequest(msg.req, msg.body);
  const res = new PageResponse();
  const page = registry.pages[msg.page];
  try {
    if (page === undefined) throw new Error(`No page with id ${msg.page}`);
    const hooked = await hook.call("Request", req, res);
    if (hooked !== undefined) await applyResult(hooked, res);
    else await applyResult(await page.callback(req, res, ...msg.captures), res);
    const listed = await listDirectory(req, res);
    if (listed !== null) {
      reply(msg.id, listed);
      return;
    }
  } catch (err) {
    if (err instanceof HaltSignal) {
      await runError(msg.id, err.code, err.message, req);
    } else {
      const label = page?.label ?? `page ${msg.page}`;
      const ref = crypto.randomUUID().slice(0, 8);
      logError(
        `[ref ${ref}] ${req.method} ${req.fullUrl} failed in page ${label}: ${
          stackOf(err)
        }`,
      );
      await runError(msg.id, 500, `Internal Server Error (ref ${ref})`, req);
    }
    return;
  }
  reply(msg.id, res);
}

/**
 * `setFile(folder, { listDirectory: true })`: the site's `ListDirectory`
 * hook may render the listing; null leaves it to the gateway's default.
 */
async function listDirectory(
  req: PageRequest,
  res: PageResponse,
): Promise<PageResponse | null> {
  const file = res.file;
  if (file === null || !file.listDirectory) return null;
  if ((registry.hooks.get("ListDirectory")?.size ?? 0) === 0) return null;
  const dir = new URL(
    file.path.replace(/^\/+/, ""),
    `file://${siteDir.endsWith("/") ? siteDir : siteDir + "/"}`,
  );
  const info = await Deno.stat(dir).catch(() => null);
  if (info === null || !info.isDirectory) return null;
  const listing = new PageResponse();
  const result = await hook.call("ListDirectory", req, listing, file.path);
  if (result === undefined && !listing.hasContent) return null;
  await applyResult(result, listing);
  return listing;
}

/** Renders an error through the site's `Error` hook, else asks for the default page. */
async function runError(
  id: number,
  code: number,
  message: string,
  req: PageRequest,
): Promise<void> {
  const res = new PageResponse();
  res.status = code;
  try {
    const result = await hook.call("Error", { code, message }, req, res);
    if (result !== undefined || res.hasContent) {
      await applyResult(result, res);
      reply(id, res);
      return;
    }
  } catch (err) {
    logError(`Error hook failed while rendering ${code}: ${stackOf(err)}`);
  }
  sendReply(id, { kind: "error", code, message }, EMPTY);
}

self.addEventListener("message", (event: MessageEvent<ToWorker>) => {
  // Only the host's messages: site code can dispatch events on `self` too,
  // and can fake an event's own isTrusted, but not Event.prototype's getter.
  if (apply(isTrusted, event, []) !== true) return;
  const msg = event.data;
  if (msg.t === "load") {
    if (out !== null) return; // once
    siteDir = msg.siteDir;
    out = new SharedOut(msg.out);
    slot = msg.index;
    direct = msg.direct !== null;
    limitWorkers(msg.nested);
    if (msg.direct !== null) void readFrames(msg.direct);
    void load(msg.scripts);
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
          send({ t: "ended", shutdown: true, failed: false });
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
    send({ t: "ended", shutdown: false, failed: true });
    return;
  }
  // The gateway went away: nobody is left to answer.
  send({ t: "ended", shutdown: false, failed: false });
}

/** A frame from the gateway, in direct mode. */
function fromGateway(
  msg: Exclude<ToSandbox, { t: "shutdown" }>,
  body: Uint8Array,
): void {
  switch (msg.t) {
    case "init":
      throw new Error("Sandbox received a second init");
    case "heartbeat":
      // The only worker answers for itself: a stuck one cannot.
      writeFrame({ t: "heartbeat", id: msg.id, ok: nestedWell() });
      break;
    case "activate":
      dispatch({ t: "startTasks" });
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
      void runError(
        msg.id,
        msg.code,
        msg.message,
        new PageRequest(msg.req, new Uint8Array(0)),
      );
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
    case "wsOpen":
      void socketOf(msg.channel)?.events.open(msg.client, msg.peer);
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
