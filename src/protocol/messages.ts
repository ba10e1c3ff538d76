/**
 * Every message between the gateway and a sandbox process, as discriminated
 * unions, with the guards that narrow what arrives as `unknown`.
 *
 * The sandbox runs untrusted site code, so everything the gateway receives is
 * checked field by field; anything malformed is a protocol violation and the
 * sandbox is replaced.
 *
 * @module
 */

/** A host a site registered. */
export interface WireHost {
  pattern: string;
  noFallback: boolean;
}

/**
 * A page a site registered: `path` for exact pages, `regex` for patterns,
 * `prefix` for a handler mounted under a path (method `*`: every method).
 */
export interface WirePage {
  id: number;
  host: string;
  method: string;
  path?: string;
  regex?: { source: string; flags: string };
  prefix?: string;
}

/** What a generation of a site registered, reported once it has loaded. */
export interface WireRoutes {
  hosts: WireHost[];
  pages: WirePage[];
  /** Hook names with at least one callback, e.g. `Error`. */
  hooks: string[];
  /** Websocket registrations; `id` is the channel number. */
  websockets: WireSocket[];
  /** How many scheduler tasks the site registered. */
  tasks: number;
}

/**
 * A websocket registration: `websocket.register(path, protocol, host)`, or
 * `websocket.registerPattern(pattern, …)` (give either `path` or `regex`).
 */
export interface WireSocket {
  id: number;
  host: string;
  path?: string;
  regex?: { source: string; flags: string };
  protocol: string | null;
  /**
   * Origins (`scheme://host[:port]`) whose pages may connect besides the
   * request's own host; `["*"]` for any. A browser's handshake from any
   * other origin is refused with 403.
   */
  origins: string[];
}

/** A session as the gateway hands it to a site. */
export interface WireSession {
  id: string;
  data: Record<string, unknown>;
  /** True when the id is new: the site sets the cookie. */
  fresh: boolean;
  /** Cookie attributes the gateway decides. */
  secure: boolean;
  maxAge: number;
}

/** A request as the site sees it; the body travels as the frame body. */
export interface WireRequest {
  method: string;
  /** Decoded, absolute, without `.`/`..` segments. */
  path: string;
  /** The request target as received. */
  fullUrl: string;
  /** How the client reached the server: `http` or `https`. */
  scheme: "http" | "https";
  /** The host (and port) the request was routed by, as received. */
  authority: string;
  /** The raw query string, without `?`. */
  query: string;
  /** Flat `[name, value, name, value, …]`, names lower-case. */
  headers: string[];
  host: string;
  peer: string;
  startTime: number;
  upgraded: boolean;
}

/**
 * A websocket client connected to channel `channel`: the upgrade request
 * and the captures of a pattern registration (gateway to sandbox to worker).
 */
export interface WsOpen {
  t: "wsOpen";
  channel: number;
  client: string;
  req: WireRequest;
  captures: string[];
}

/** Deno permissions for a site's workers; paths are absolute. */
export interface WirePermissions {
  read: string[];
  write: string[];
  net: string[];
  env: boolean | string[];
}

/** The exit code of a sandbox that ended itself over its memory. */
export const OUT_OF_MEMORY_EXIT = 86;

/** Limits a sandbox enforces on itself where no cgroup does. */
export interface SandboxSelfLimits {
  /** End the process when its resident memory is over this; null: a cgroup holds it. */
  memoryBytes: number | null;
  /** Lower the process to nice 10 before starting its workers. */
  nice: boolean;
}

function isSelfLimits(value: unknown): value is SandboxSelfLimits {
  return isRecord(value) &&
    (value.memoryBytes === null || isId(value.memoryBytes)) &&
    typeof value.nice === "boolean";
}

/** Gateway → sandbox. */
export type ToSandbox =
  | {
    t: "init";
    site: string;
    siteDir: string;
    /**
     * file: URLs of the autorun scripts, in the order they run; null for a
     * spare, which starts its workers and runs no site code until `load`
     * says what to load (see src/supervisor/spares.ts).
     */
    scripts: string[] | null;
    /** The host patterns the site declares (site.json `hosts`). */
    hosts: string[];
    workers: number;
    permissions: WirePermissions;
    /** The site's Deno KV file (site.json `kv`), the only one it may open. */
    kv: string | null;
    /** What the sandbox holds itself to (see src/supervisor/containment.ts). */
    limits: SandboxSelfLimits;
  }
  | {
    t: "request";
    id: number;
    page: number;
    captures: string[];
    req: WireRequest;
  }
  /** A spare becomes its site's next generation: load these scripts. */
  | { t: "load"; scripts: string[]; hosts: string[] }
  | { t: "error"; id: number; code: number; message: string; req: WireRequest }
  | { t: "heartbeat"; id: number }
  /** A new generation is about to load: run the `ReloadScripts` hook. */
  | { t: "reloading" }
  /**
   * This generation now serves the site: start its scheduler tasks (or
   * resume them after `pauseTasks`).
   */
  | { t: "activate" }
  /**
   * Another node of the cluster runs the site's tasks now: each stops at
   * its next `scheduler.sleep()` until `activate`.
   */
  | { t: "pauseTasks" }
  | WsOpen
  /** A message from a client; the frame body holds it. */
  | { t: "wsMessage"; channel: number; client: string; binary: boolean }
  | {
    t: "wsClose";
    channel: number;
    client: string;
    code: number;
    reason: string;
  }
  /** The answer to a sessionGet or sessionSave. */
  | {
    t: "sessionResult";
    call: number;
    session: WireSession | null;
    error: string | null;
  }
  /**
   * Credit for a streamed reply: the sandbox may send `bytes` more bytes of
   * request `id`'s body (flow control: the gateway holds only what its
   * client has not read yet).
   */
  | { t: "more"; id: number; bytes: number }
  /** The client of request `id` went away: stop answering it. */
  | { t: "cancel"; id: number }
  | { t: "shutdown" };

/** How a site answered a request; a `body` reply's bytes are the frame body. */
export type WireReply =
  | { kind: "body"; status: number; headers: string[] }
  | {
    kind: "file";
    status: number;
    headers: string[];
    path: string;
    listDirectory: boolean;
  }
  | { kind: "error"; code: number; message: string }
  /**
   * The body follows in `chunk` frames, each sent within the credit the
   * gateway grants with `more` (none before the first).
   */
  | {
    kind: "stream";
    status: number;
    headers: string[];
    /** The body's length when known (it becomes Content-Length). */
    length: number | null;
  };

/** Sandbox → gateway. */
export type FromSandbox =
  | { t: "loaded"; routes: WireRoutes }
  | { t: "loadFailed"; message: string; location: string | null }
  | { t: "reply"; id: number; reply: WireReply }
  | { t: "heartbeat"; id: number; ok: boolean }
  /**
   * Part of a streamed reply's body (the frame body); `end` closes it, and
   * `failed` says it broke off (the client's connection is cut).
   */
  | { t: "chunk"; id: number; end: boolean; failed: boolean }
  /** The sandbox's resident memory in bytes, sent every few seconds. */
  | { t: "usage"; rss: number }
  /** Send to one client of the channel, or to all (`client: null`); body = message. */
  | { t: "wsSend"; channel: number; client: string | null; binary: boolean }
  | {
    t: "wsClose";
    channel: number;
    client: string;
    code: number;
    reason: string;
  }
  /** The session `id` (from the cookie) of cookie `name`, or a new one. */
  | { t: "sessionGet"; call: number; name: string; id: string | null }
  | {
    t: "sessionSave";
    call: number;
    name: string;
    id: string;
    data: Record<string, unknown>;
  };

/** A message that does not have the shape its type says. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
}

type Json = Record<string, unknown>;

function isRecord(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === "string");
}

function isId(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function isStatus(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 100 &&
    (value as number) <= 599;
}

function isHeaderList(value: unknown): value is string[] {
  return isStringArray(value) && value.length % 2 === 0;
}

function isWireHost(value: unknown): value is WireHost {
  return isRecord(value) && typeof value.pattern === "string" &&
    typeof value.noFallback === "boolean";
}

function isWirePage(value: unknown): value is WirePage {
  if (!isRecord(value)) return false;
  if (!isId(value.id) || typeof value.host !== "string") return false;
  if (typeof value.method !== "string") return false;
  const { path, regex, prefix } = value;
  const given = [path, regex, prefix].filter((v) => v !== undefined).length;
  if (given !== 1) return false;
  if (path !== undefined) return typeof path === "string";
  if (prefix !== undefined) return typeof prefix === "string";
  return isRecord(regex) && typeof regex.source === "string" &&
    typeof regex.flags === "string";
}

function isWireSocket(value: unknown): value is WireSocket {
  if (!isRecord(value) || !isId(value.id)) return false;
  if (typeof value.host !== "string" || !isStringArray(value.origins)) {
    return false;
  }
  if (value.protocol !== null && typeof value.protocol !== "string") {
    return false;
  }
  const { path, regex } = value;
  if ((path === undefined) === (regex === undefined)) return false;
  if (path !== undefined) return typeof path === "string";
  return isRecord(regex) && typeof regex.source === "string" &&
    typeof regex.flags === "string";
}

function isWireRoutes(value: unknown): value is WireRoutes {
  return isRecord(value) && Array.isArray(value.hosts) &&
    value.hosts.every(isWireHost) && Array.isArray(value.pages) &&
    value.pages.every(isWirePage) && isStringArray(value.hooks) &&
    Array.isArray(value.websockets) && value.websockets.every(isWireSocket) &&
    isId(value.tasks);
}

/**
 * Narrows a route table kept on disk (see supervisor/routes_cache.ts).
 * @returns the table, or null when it is not one
 */
export function parseWireRoutes(value: unknown): WireRoutes | null {
  return isWireRoutes(value) ? value : null;
}

function isCloseCode(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 1000 &&
    (value as number) <= 4999;
}

function isSessionName(value: unknown): value is string {
  return typeof value === "string" && /^[A-Za-z0-9_.-]{1,64}$/.test(value);
}

function isWireReply(value: unknown): value is WireReply {
  if (!isRecord(value)) return false;
  switch (value.kind) {
    case "body":
      return isStatus(value.status) && isHeaderList(value.headers);
    case "file":
      return isStatus(value.status) && isHeaderList(value.headers) &&
        typeof value.path === "string" &&
        typeof value.listDirectory === "boolean";
    case "error":
      return isStatus(value.code) && typeof value.message === "string";
    case "stream":
      return isStatus(value.status) && isHeaderList(value.headers) &&
        (value.length === null || isId(value.length));
    default:
      return false;
  }
}

/**
 * Narrows a frame header from a sandbox.
 *
 * @param value the decoded JSON header
 * @returns the message, typed
 * @throws {ProtocolError} when it is not a valid sandbox message
 * @example
 * ```ts
 * const msg = parseFromSandbox({ t: "heartbeat", id: 1, ok: true });
 * ```
 */
export function parseFromSandbox(value: unknown): FromSandbox {
  if (isRecord(value)) {
    switch (value.t) {
      case "loaded":
        if (isWireRoutes(value.routes)) {
          return { t: "loaded", routes: value.routes };
        }
        break;
      case "loadFailed":
        if (
          typeof value.message === "string" &&
          (value.location === null || typeof value.location === "string")
        ) {
          return {
            t: "loadFailed",
            message: value.message,
            location: value.location,
          };
        }
        break;
      case "reply":
        if (isId(value.id) && isWireReply(value.reply)) {
          return { t: "reply", id: value.id, reply: value.reply };
        }
        break;
      case "heartbeat":
        if (isId(value.id) && typeof value.ok === "boolean") {
          return { t: "heartbeat", id: value.id, ok: value.ok };
        }
        break;
      case "usage":
        if (isId(value.rss)) return { t: "usage", rss: value.rss };
        break;
      case "chunk":
        if (
          isId(value.id) && typeof value.end === "boolean" &&
          typeof value.failed === "boolean"
        ) {
          return {
            t: "chunk",
            id: value.id,
            end: value.end,
            failed: value.failed,
          };
        }
        break;
      case "wsSend":
        if (
          isId(value.channel) && typeof value.binary === "boolean" &&
          (value.client === null || typeof value.client === "string")
        ) {
          return {
            t: "wsSend",
            channel: value.channel,
            client: value.client,
            binary: value.binary,
          };
        }
        break;
      case "wsClose":
        if (
          isId(value.channel) && typeof value.client === "string" &&
          isCloseCode(value.code) && typeof value.reason === "string"
        ) {
          return {
            t: "wsClose",
            channel: value.channel,
            client: value.client,
            code: value.code,
            reason: value.reason,
          };
        }
        break;
      case "sessionGet":
        if (
          isId(value.call) && isSessionName(value.name) &&
          (value.id === null || typeof value.id === "string")
        ) {
          return {
            t: "sessionGet",
            call: value.call,
            name: value.name,
            id: value.id,
          };
        }
        break;
      case "sessionSave":
        if (
          isId(value.call) && isSessionName(value.name) &&
          typeof value.id === "string" && isRecord(value.data)
        ) {
          return {
            t: "sessionSave",
            call: value.call,
            name: value.name,
            id: value.id,
            data: value.data,
          };
        }
        break;
    }
  }
  throw new ProtocolError(`Malformed message from sandbox: ${describe(value)}`);
}

function isWireSession(value: unknown): value is WireSession {
  return isRecord(value) && typeof value.id === "string" &&
    isRecord(value.data) &&
    typeof value.fresh === "boolean" && typeof value.secure === "boolean" &&
    typeof value.maxAge === "number";
}

function isWireRequest(value: unknown): value is WireRequest {
  return isRecord(value) && typeof value.method === "string" &&
    typeof value.path === "string" && typeof value.fullUrl === "string" &&
    (value.scheme === "http" || value.scheme === "https") &&
    typeof value.authority === "string" &&
    typeof value.query === "string" && isHeaderList(value.headers) &&
    typeof value.host === "string" && typeof value.peer === "string" &&
    typeof value.startTime === "number" && typeof value.upgraded === "boolean";
}

function isWirePermissions(value: unknown): value is WirePermissions {
  return isRecord(value) && isStringArray(value.read) &&
    isStringArray(value.write) && isStringArray(value.net) &&
    (typeof value.env === "boolean" || isStringArray(value.env));
}

/**
 * Narrows a frame header from the gateway.
 *
 * @param value the decoded JSON header
 * @returns the message, typed
 * @throws {ProtocolError} when it is not a valid gateway message
 * @example
 * ```ts
 * const msg = parseToSandbox({ t: "shutdown" });
 * ```
 */
export function parseToSandbox(value: unknown): ToSandbox {
  if (isRecord(value)) {
    switch (value.t) {
      case "init":
        if (
          typeof value.site === "string" && typeof value.siteDir === "string" &&
          (value.scripts === null || isStringArray(value.scripts)) &&
          isStringArray(value.hosts) &&
          isId(value.workers) && isWirePermissions(value.permissions) &&
          isSelfLimits(value.limits) &&
          (value.kv === null || typeof value.kv === "string")
        ) {
          return {
            t: "init",
            site: value.site,
            siteDir: value.siteDir,
            scripts: value.scripts,
            hosts: value.hosts,
            workers: value.workers,
            permissions: value.permissions,
            kv: value.kv,
            limits: value.limits,
          };
        }
        break;
      case "load":
        if (isStringArray(value.scripts) && isStringArray(value.hosts)) {
          return { t: "load", scripts: value.scripts, hosts: value.hosts };
        }
        break;
      case "request":
        if (
          isId(value.id) && isId(value.page) && isStringArray(value.captures) &&
          isWireRequest(value.req)
        ) {
          return {
            t: "request",
            id: value.id,
            page: value.page,
            captures: value.captures,
            req: value.req,
          };
        }
        break;
      case "error":
        if (
          isId(value.id) && isStatus(value.code) &&
          typeof value.message === "string" && isWireRequest(value.req)
        ) {
          return {
            t: "error",
            id: value.id,
            code: value.code,
            message: value.message,
            req: value.req,
          };
        }
        break;
      case "heartbeat":
        if (isId(value.id)) return { t: "heartbeat", id: value.id };
        break;
      case "reloading":
        return { t: "reloading" };
      case "activate":
        return { t: "activate" };
      case "pauseTasks":
        return { t: "pauseTasks" };
      case "wsOpen":
        if (
          isId(value.channel) && typeof value.client === "string" &&
          isWireRequest(value.req) && isStringArray(value.captures)
        ) {
          return {
            t: "wsOpen",
            channel: value.channel,
            client: value.client,
            req: value.req,
            captures: value.captures,
          };
        }
        break;
      case "wsMessage":
        if (
          isId(value.channel) && typeof value.client === "string" &&
          typeof value.binary === "boolean"
        ) {
          return {
            t: "wsMessage",
            channel: value.channel,
            client: value.client,
            binary: value.binary,
          };
        }
        break;
      case "wsClose":
        if (
          isId(value.channel) && typeof value.client === "string" &&
          Number.isInteger(value.code) && typeof value.reason === "string"
        ) {
          return {
            t: "wsClose",
            channel: value.channel,
            client: value.client,
            code: value.code as number,
            reason: value.reason,
          };
        }
        break;
      case "sessionResult":
        if (
          isId(value.call) &&
          (value.session === null || isWireSession(value.session)) &&
          (value.error === null || typeof value.error === "string")
        ) {
          return {
            t: "sessionResult",
            call: value.call,
            session: value.session,
            error: value.error,
          };
        }
        break;
      case "more":
        if (isId(value.id) && isId(value.bytes)) {
          return { t: "more", id: value.id, bytes: value.bytes };
        }
        break;
      case "cancel":
        if (isId(value.id)) return { t: "cancel", id: value.id };
        break;
      case "shutdown":
        return { t: "shutdown" };
    }
  }
  throw new ProtocolError(`Malformed message from gateway: ${describe(value)}`);
}

function describe(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

/** The most workers a site may have (site.json "workers", --threads). */
export const MAX_WORKERS = 64;

/**
 * A worker whose event loop has not answered a ping for this long is stuck
 * (src/sandbox/confine.ts), and its sandbox is replaced.
 */
export const STUCK_AFTER_MS = 5000;

// Inside a sandbox: between the sandbox host and its workers (postMessage).
// The worker runs site code, so the host narrows what it receives.

/** Host → worker. */
export type ToWorker =
  | {
    t: "load";
    site: string;
    siteDir: string;
    /** The site's Deno KV file, or null. */
    kv: string | null;
    scripts: string[];
    /** The host patterns the site declares: a default fetch handler answers on each. */
    hosts: string[];
    /** The shared stdout lock and counters (see src/sandbox/out.ts). */
    out: SharedArrayBuffer;
    /** This worker's slot among the counters. */
    index: number;
    /** The count of nested workers running, shared by the pool (src/sandbox/confine.ts). */
    nested: SharedArrayBuffer;
    /**
     * The site's only worker reads the gateway's frames from stdin itself,
     * starting with these bytes the host had already read.
     */
    direct: Uint8Array | null;
  }
  | {
    t: "request";
    id: number;
    page: number;
    captures: string[];
    req: WireRequest;
    body: Uint8Array;
  }
  | { t: "error"; id: number; code: number; message: string; req: WireRequest }
  | { t: "ping"; id: number }
  /** Run a hook in this worker (e.g. `ReloadScripts`). */
  | { t: "hook"; name: string }
  /** This worker runs the site's scheduler tasks (or resumes them). */
  | { t: "startTasks" }
  /** This worker's tasks stop at their next sleep until `startTasks`. */
  | { t: "pauseTasks" }
  | WsOpen
  | {
    t: "wsMessage";
    channel: number;
    client: string;
    data: string | Uint8Array;
  }
  | {
    t: "wsClose";
    channel: number;
    client: string;
    code: number;
    reason: string;
  }
  | {
    t: "sessionResult";
    call: number;
    session: WireSession | null;
    error: string | null;
  }
  /** Credit for a streamed reply (see ToSandbox "more"). */
  | { t: "more"; id: number; bytes: number }
  /** The client of request `id` went away. */
  | { t: "cancel"; id: number };

/**
 * A worker's websocket output. The worker writes it to the gateway itself
 * (as `wsSend` and `wsClose` frames), in order with its replies.
 */
export type SocketOut =
  | {
    t: "wsSend";
    channel: number;
    client: string | null;
    data: string | Uint8Array;
  }
  | {
    t: "wsClose";
    channel: number;
    client: string;
    code: number;
    reason: string;
  };

/** Worker → host. */
export type FromWorker =
  | { t: "loaded"; routes: WireRoutes }
  | { t: "loadFailed"; message: string; location: string | null }
  /** `ok`: the worker's own nested workers answered in time too. */
  | { t: "pong"; id: number; ok: boolean }
  /** A direct worker's stdin ended: `shutdown` if the gateway asked. */
  | { t: "ended"; shutdown: boolean; failed: boolean }
  | { t: "sessionGet"; call: number; name: string; id: string | null }
  | {
    t: "sessionSave";
    call: number;
    name: string;
    id: string;
    data: Record<string, unknown>;
  };

/**
 * Narrows a message from a worker; returns null for anything else (site code
 * can call `postMessage` itself).
 */
export function parseFromWorker(value: unknown): FromWorker | null {
  if (typeof value !== "object" || value === null) return null;
  const msg = value as Record<string, unknown>;
  switch (msg.t) {
    case "loaded":
    case "loadFailed":
      return msg as FromWorker; // re-checked by the gateway's parseFromSandbox
    case "pong":
      return Number.isSafeInteger(msg.id) && typeof msg.ok === "boolean"
        ? msg as FromWorker
        : null;
    case "ended":
      return typeof msg.shutdown === "boolean" &&
          typeof msg.failed === "boolean"
        ? msg as FromWorker
        : null;
    case "sessionGet":
    case "sessionSave":
      return msg as FromWorker; // re-checked by the gateway's parseFromSandbox
    default:
      return null;
  }
}
