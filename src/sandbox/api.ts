/**
 * The script API of Sandflare: what a site's autorun scripts import from
 * `"sandflare"`.
 *
 * @example
 * ```ts ignore
 * import { hook, hosts } from "sandflare";
 *
 * hosts.any.add("/hello", (_req, res) => res.append("hello world"));
 * hosts.any.addPattern("/user/(\\d+)", (req, res, id) => res.json({ id }));
 * hook.add("Error", "plain", (err, _req, res) => {
 *   res.append(`Oops: ${err.code}`);
 *   return true;
 * });
 * ```
 *
 * @module
 */

import { assertLoading, registry, type SocketEntry } from "./_registry.ts";
import { PageRequest } from "./request.ts";
import type { WireRequest } from "../protocol/messages.ts";
import { HaltSignal, type PageResponse } from "./response.ts";

export type { PageRequest } from "./request.ts";
export { escapeHtml, html, raw, SafeHtml } from "./html.ts";
import type { SafeHtml } from "./html.ts";
import {
  isMountPrefix,
  LINEAR_ENGINE,
  MAX_HOSTS_PER_SITE,
  MAX_MOUNT_PREFIX_LENGTH,
  MAX_MOUNTS_PER_SITE,
  MAX_PATTERN_LENGTH,
  MAX_PATTERNS_PER_SITE,
  mountPrefix,
} from "../shared/route_limits.ts";
export type {
  CookieOptions,
  PageResponse,
  SetFileOptions,
} from "./response.ts";

/** What a page callback may return: nothing, text or `html` to append, or a Response. */
export type PageResult = void | undefined | string | SafeHtml | Response;

/** A page callback; captures of a pattern page follow `req` and `res`. */
export type PageCallback = (
  req: PageRequest,
  res: PageResponse,
  ...captures: string[]
) => PageResult | Promise<PageResult>;

/**
 * What Deno Deploy and `deno serve` pass a handler besides the request: who
 * is asking, and a promise settled once the handler has answered.
 */
export interface FetchHandlerInfo {
  remoteAddr: { transport: "tcp"; hostname: string; port: number };
  completed: Promise<void>;
}

/**
 * A standard fetch handler, as Deno Deploy, Cloudflare Workers, Bun and
 * Hono (`app.fetch`) write them.
 */
export type FetchHandler = (
  request: Request,
  info: FetchHandlerInfo,
) => Response | Promise<Response>;

/** Options of `hosts.get`. */
export interface HostOptions {
  /** Do not fall back to `hosts.any` when no page of this host matches. */
  noFallback?: boolean;
}

/** A host pattern's page table. */
export interface Host {
  /** The host pattern, e.g. `*.example.test`; `*` for `hosts.any`. */
  readonly pattern: string;
  /** Adds a page for an exact path. @default method "GET" */
  add(path: string, callback: PageCallback, method?: string): void;
  /**
   * Adds a page for a regular expression matched against the whole path;
   * its capture groups are passed to the callback after `req` and `res`.
   */
  addPattern(
    pattern: RegExp | string,
    callback: PageCallback,
    method?: string,
  ): void;
  /**
   * Mounts a fetch handler under a path prefix, for every method: it
   * answers `prefix` and every path below it that no page answers, and sees
   * the full original URL (nothing is stripped).
   */
  mount(prefix: string, handler: FetchHandler | { fetch: FetchHandler }): void;
}

/** Error details passed to the `Error` hook. */
export interface HttpErrorInfo {
  code: number;
  message: string;
}

/** The built-in hooks and their arguments. */
export interface HookSignatures {
  Loaded: [];
  ReloadScripts: [];
  Request: [req: PageRequest, res: PageResponse];
  Error: [err: HttpErrorInfo, req: PageRequest, res: PageResponse];
  ListDirectory: [req: PageRequest, res: PageResponse, path: string];
}

/** Any hook callback. */
export type HookFunction = (...args: never[]) => unknown;

type HookArgs<N extends string> = N extends keyof HookSignatures
  ? HookSignatures[N]
  : unknown[];

const METHOD_REGEXP = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const ALLOWED_FLAGS_REGEXP = /^[ms]*$/;

function runsInLinearTime(source: string, flags: string): boolean {
  try {
    new RegExp(`^(?:${source})$`, `${flags}l`);
    return true;
  } catch {
    return false;
  }
}

/**
 * A route pattern as the router takes it, checked where it is written.
 * @param count the patterns of its kind the site registered so far
 */
function checkPattern(
  call: string,
  source: RegExp | string,
  count: number,
): { source: string; flags: string } {
  const regex = source instanceof RegExp
    ? { source: source.source, flags: source.flags }
    : { source: String(source), flags: "" };
  if (regex.source.length > MAX_PATTERN_LENGTH) {
    throw new RangeError(
      `${call}: the pattern is ${regex.source.length} characters long; route patterns may have at most ${MAX_PATTERN_LENGTH}`,
    );
  }
  if (count >= MAX_PATTERNS_PER_SITE) {
    throw new RangeError(
      `${call}: a site may register at most ${MAX_PATTERNS_PER_SITE} route patterns; use fewer patterns, or one with alternatives`,
    );
  }
  if (!ALLOWED_FLAGS_REGEXP.test(regex.flags)) {
    throw new TypeError(
      `${call}: flags "${regex.flags}" are not allowed; use only m or s (route patterns run on a linear-time engine, which cannot do i or u; write [Aa] for case)`,
    );
  }
  try {
    new RegExp(regex.source, regex.flags);
  } catch (err) {
    throw new SyntaxError(`${call}: ${(err as Error).message}`);
  }
  if (LINEAR_ENGINE && !runsInLinearTime(regex.source, regex.flags)) {
    throw new SyntaxError(
      `${call}: route patterns run on a linear-time engine, which cannot do backreferences, lookahead or large {n,m} counts; rewrite the pattern without them`,
    );
  }
  return regex;
}

function checkMethod(call: string, method: string): string {
  if (typeof method !== "string" || !METHOD_REGEXP.test(method)) {
    throw new TypeError(
      `${call}: ${JSON.stringify(method)} is not an HTTP method`,
    );
  }
  return method.toUpperCase();
}

function checkCallback(call: string, callback: unknown): PageCallback {
  if (typeof callback !== "function") {
    throw new TypeError(`${call}: the callback must be a function`);
  }
  return callback as PageCallback;
}

function hostCall(pattern: string, name: string, arg: unknown): string {
  const target = pattern === "*"
    ? "hosts.any"
    : `hosts.get(${JSON.stringify(pattern)})`;
  const text = String(arg);
  const shown = text.length > 60 ? `${text.slice(0, 60)}…` : text;
  return `${target}.${name}(${JSON.stringify(shown)})`;
}

function createHost(pattern: string): Host {
  return {
    pattern,
    add(path, callback, method = "GET") {
      const call = hostCall(pattern, "add", path);
      assertLoading(call);
      if (typeof path !== "string" || !path.startsWith("/")) {
        throw new TypeError(`${call}: the path must start with "/"`);
      }
      const m = checkMethod(call, method);
      registry.pages.push({
        spec: { id: registry.pages.length, host: pattern, method: m, path },
        callback: checkCallback(call, callback),
        label: `${m} ${path}`,
      });
    },
    addPattern(source, callback, method = "GET") {
      const call = hostCall(pattern, "addPattern", source);
      assertLoading(call);
      const regex = checkPattern(
        call,
        source,
        registry.pages.filter((p) => p.spec.regex).length,
      );
      const m = checkMethod(call, method);
      registry.pages.push({
        spec: { id: registry.pages.length, host: pattern, method: m, regex },
        callback: checkCallback(call, callback),
        label: `${m} /${regex.source}/${regex.flags}`,
      });
    },
    mount(prefix, handler) {
      const call = hostCall(pattern, "mount", prefix);
      assertLoading(call);
      if (!isMountPrefix(prefix)) {
        throw new TypeError(
          `${call}: the prefix must start with "/", have no "." or ".." segment and be at most ${MAX_MOUNT_PREFIX_LENGTH} characters`,
        );
      }
      const fetch = fetchOf(call, handler);
      const trimmed = mountPrefix(prefix);
      const mounts = registry.pages.filter((p) => p.spec.prefix !== undefined);
      if (mounts.length >= MAX_MOUNTS_PER_SITE) {
        throw new RangeError(
          `${call}: a site may mount at most ${MAX_MOUNTS_PER_SITE} handlers; mount one under a shorter prefix and route inside it`,
        );
      }
      if (
        mounts.some((p) => p.spec.host === pattern && p.spec.prefix === trimmed)
      ) {
        throw new Error(`${call}: a handler is already mounted there`);
      }
      registry.pages.push({
        spec: {
          id: registry.pages.length,
          host: pattern,
          method: "*",
          prefix: trimmed,
        },
        callback: (req) => runFetch(fetch, req, call),
        label: `handler at ${trimmed}`,
      });
    },
  };
}

/** The function of a handler given as one, or as an object with `fetch`. */
function fetchOf(call: string, handler: unknown): FetchHandler {
  if (typeof handler === "function") return handler as FetchHandler;
  if (typeof handler === "object" && handler !== null) {
    const fetch = (handler as { fetch?: unknown }).fetch;
    if (typeof fetch === "function") {
      return (request, info) => Reflect.apply(fetch, handler, [request, info]);
    }
  }
  throw new TypeError(
    `${call}: the handler must be a function (request) => Response, or an object with such a fetch method`,
  );
}

async function runFetch(
  fetch: FetchHandler,
  req: PageRequest,
  call: string,
): Promise<Response> {
  const { promise, resolve } = Promise.withResolvers<void>();
  const info: FetchHandlerInfo = {
    remoteAddr: { transport: "tcp", hostname: req.peer, port: 0 },
    completed: promise,
  };
  try {
    const response = await fetch(req.toRequest(), info);
    if (!(response instanceof Response)) {
      throw new TypeError(
        `${call}: the handler returned ${
          response === null ? "null" : typeof response
        }, not a Response`,
      );
    }
    return response;
  } finally {
    resolve();
  }
}

/**
 * Mounts a script's `export default { fetch }` at `/` on every host the
 * site declares (its site.json `hosts`). Called by the worker once the
 * scripts have run.
 *
 * @param script the script's path, for messages
 * @param handler the default export
 * @param declared the site's host patterns
 */
export function mountDefault(
  script: string,
  handler: unknown,
  declared: string[],
): void {
  const call = `export default in ${script}`;
  const fetch = fetchOf(call, handler);
  if (declared.length === 0) {
    throw new Error(
      `${call}: the site declares no hosts; list them under "hosts" in its site.json (["*"] for every host)`,
    );
  }
  // On hosts.any when the site may use it: a request for one of its named
  // hosts falls back there, after the site's hosts.any pages, so every
  // page of the site answers first. Named hosts that do not fall back get
  // the handler themselves.
  const targets = declared.includes("*")
    ? declared.filter((pattern) =>
      pattern === "*" ||
      registry.hosts.get(pattern.toLowerCase())?.noFallback === true
    )
    : declared;
  for (const pattern of targets) {
    const host = pattern === "*" ? hosts.any : getHost(pattern);
    if (
      registry.pages.some((p) =>
        p.spec.host === host.pattern && p.spec.prefix === "/"
      )
    ) {
      throw new Error(
        `${call}: a handler is already mounted at "/" on ${
          pattern === "*" ? "hosts.any" : `"${pattern}"`
        } (only one script may export a default fetch handler)`,
      );
    }
    host.mount("/", fetch);
  }
}

const hostObjects = new Map<string, Host>();

function getHost(pattern: string, options: HostOptions = {}): Host {
  if (typeof pattern !== "string" || pattern.trim() === "") {
    throw new TypeError(
      'hosts.get() takes a host pattern such as "example.test"',
    );
  }
  const key = pattern.split(",").map((p) => p.trim().toLowerCase()).join(",");
  const call = `hosts.get(${JSON.stringify(pattern)})`;
  let host = hostObjects.get(key);
  if (host === undefined) {
    assertLoading(call);
    if (hostObjects.size >= MAX_HOSTS_PER_SITE) {
      throw new RangeError(
        `${call}: a site may register at most ${MAX_HOSTS_PER_SITE} hosts; use a pattern such as "*.example.test"`,
      );
    }
    host = createHost(key);
    hostObjects.set(key, host);
    registry.hosts.set(key, { pattern: key, noFallback: false });
  }
  if (options.noFallback) {
    assertLoading(call);
    registry.hosts.set(key, { pattern: key, noFallback: true });
  }
  return host;
}

/** The hosts of this site. */
export const hosts: {
  /** The wildcard host, shared by every site allowed `"*"`. */
  readonly any: Host;
  /** Returns (creating once) the host for a pattern. */
  get(pattern: string, options?: HostOptions): Host;
} = {
  get any(): Host {
    return getHost("*");
  },
  get: getHost,
};

/** The hooks of this site. */
export const hook: {
  /** Adds (or replaces) callback `id` of hook `name`; lower priority runs first. */
  add<N extends string>(
    name: N,
    id: string,
    fn: (...args: HookArgs<N>) => unknown,
    priority?: number,
  ): void;
  /** Removes callback `id` of hook `name`. */
  remove(name: string, id: string): void;
  /**
   * Calls every callback of `name` in order; the first that returns anything
   * but `undefined` stops the chain, and its value is returned.
   */
  call<N extends string>(name: N, ...args: HookArgs<N>): Promise<unknown>;
  /** Like `call`, but a throwing callback is logged and answered with a 500. */
  safeCall<N extends string>(name: N, ...args: HookArgs<N>): Promise<unknown>;
} = {
  add(name, id, fn, priority = 0) {
    if (typeof fn !== "function") {
      throw new TypeError(
        `hook.add(${JSON.stringify(name)}, ${
          JSON.stringify(id)
        }): fn must be a function`,
      );
    }
    let entries = registry.hooks.get(name);
    if (entries === undefined) {
      entries = new Map();
      registry.hooks.set(name, entries);
    }
    entries.set(id, {
      fn: fn as HookFunction,
      priority: Number(priority) || 0,
      order: registry.hookOrder++,
    });
  },
  remove(name, id) {
    registry.hooks.get(name)?.delete(id);
  },
  call(name, ...args) {
    return callHook(name, args, false);
  },
  safeCall(name, ...args) {
    return callHook(name, args, true);
  },
};

async function callHook(
  name: string,
  args: unknown[],
  safe: boolean,
): Promise<unknown> {
  const entries = registry.hooks.get(name);
  if (entries === undefined || entries.size === 0) return undefined;
  const ordered = [...entries.entries()].sort(([, a], [, b]) =>
    a.priority - b.priority || a.order - b.order
  );
  for (const [id, entry] of ordered) {
    let result: unknown;
    try {
      result = await (entry.fn as (...a: unknown[]) => unknown)(...args);
    } catch (err) {
      if (!safe) throw err;
      // deno-lint-ignore no-console -- the site's log is its stderr
      console.error(`Hook "${name}" callback "${id}" failed: ${stackOf(err)}`);
      throw new HaltSignal(500, "");
    }
    if (result !== undefined) return result;
  }
  return undefined;
}

/** A task that runs longer than this between two sleeps is warned about. */
const BLOCK_WARN_MS = 500;

/** The task whose synchronous segment is running, when known. */
let currentTask: string | null = null;

function checkBlock(name: string, started: number): void {
  const ms = performance.now() - started;
  if (ms > BLOCK_WARN_MS) {
    // deno-lint-ignore no-console -- the site's log is its stderr
    console.error(
      `Task "${name}" blocked its worker for ${
        Math.round(ms)
      } ms; await scheduler.sleep() more often or move the work out of the task`,
    );
  }
}

/** The site's scheduler. */
export const scheduler: {
  /**
   * Adds a task. A site's tasks run once per site, in one worker of the
   * current generation, and stop with it (a reload starts them again).
   */
  newTask(name: string, fn: () => unknown): void;
  /** Inside a task: waits `seconds` without blocking the site. */
  sleep(seconds: number): Promise<void>;
} = {
  newTask(name, fn) {
    const call = `scheduler.newTask(${JSON.stringify(name)})`;
    assertLoading(call);
    if (typeof name !== "string" || name === "") {
      throw new TypeError(`${call}: the task needs a name`);
    }
    if (typeof fn !== "function") {
      throw new TypeError(`${call}: the task must be a function`);
    }
    if (registry.tasks.some((t) => t.name === name)) {
      throw new Error(`${call}: a task of that name already exists`);
    }
    registry.tasks.push({ name, fn });
  },
  sleep(seconds) {
    const ms = Math.max(0, Number(seconds) * 1000 || 0);
    // Known when sleep() is called in the same synchronous run as the task's
    // start or its last resume, which is how tasks are written.
    const owner = currentTask;
    return new Promise((resolve) =>
      setTimeout(function wake() {
        // Paused (another node runs the tasks): wakes when resumed.
        if (tasksPaused) return parked.push(wake);
        if (owner === null) return resolve();
        currentTask = owner;
        const started = performance.now();
        resolve();
        // Runs after the task's continuation has run up to its next await.
        queueMicrotask(() => {
          currentTask = null;
          checkBlock(owner, started);
        });
      }, ms)
    );
  },
};

/** Whether the tasks were started in this worker. */
let tasksStarted = false;
/** Whether they wait at their sleeps (another node of the cluster runs them). */
let tasksPaused = false;
/** Sleeps that ended while paused. */
const parked: (() => void)[] = [];

/**
 * Stops the tasks at their next `scheduler.sleep()`: a sleep that ends
 * while paused ends only once the tasks are resumed.
 */
export function pauseTasks(): void {
  tasksPaused = true;
}

/**
 * Starts every registered task in this worker (called in the one worker
 * the sandbox picked), or resumes them after {@linkcode pauseTasks}. A
 * throwing task is logged with its name.
 */
export function startTasks(): void {
  tasksPaused = false;
  if (tasksStarted) {
    for (const wake of parked.splice(0)) wake();
    return;
  }
  tasksStarted = true;
  for (const task of registry.tasks) {
    currentTask = task.name;
    const started = performance.now();
    let run: Promise<unknown>;
    try {
      run = Promise.resolve(task.fn());
    } catch (err) {
      run = Promise.reject(err);
    }
    currentTask = null;
    checkBlock(task.name, started);
    run.catch((err) => {
      // deno-lint-ignore no-console -- the site's log is its stderr
      console.error(`Task "${task.name}" failed: ${stackOf(err)}`);
    });
  }
}

function stackOf(err: unknown): string {
  return err instanceof Error ? err.stack ?? err.message : String(err);
}

/** A websocket client, as a channel's callbacks see it. */
export interface WebSocketClient {
  /** Random, unique for the server's lifetime. */
  readonly id: string;
  /** The client's address. */
  readonly peer: string;
  /**
   * The upgrade request: its headers, cookies, host, path and query, as a
   * page's `req` has them (its body is empty). `session.get(client)` reads
   * the session of its cookie.
   */
  readonly request: PageRequest;
  /** The capture groups of a `registerPattern` registration, else empty. */
  readonly captures: readonly string[];
  /** Sends a message to this client. */
  send(message: string | Uint8Array): void;
  /** Closes the connection. @default code 1000 */
  close(code?: number, reason?: string): void;
}

/** A websocket registration. */
export interface WebSocketChannel {
  /** The path, or the pattern's source for `registerPattern`. */
  readonly path: string;
  readonly protocol: string | null;
  /** A client connected. */
  onConnect: ((client: WebSocketClient) => unknown) | null;
  /** A text (string) or binary (Uint8Array) message from a client. */
  onMessage:
    | ((client: WebSocketClient, message: string | Uint8Array) => unknown)
    | null;
  /** A client went away (it closed, or the server closed it). */
  onDisconnect:
    | ((client: WebSocketClient, code: number, reason: string) => unknown)
    | null;
  /**
   * Sends a message to one client (a client or its id) or, without one, to
   * every client of this channel, whichever worker holds them.
   */
  send(message: string | Uint8Array, client?: WebSocketClient | string): void;
  /** The clients connected through this worker. */
  readonly clients: ReadonlyMap<string, WebSocketClient>;
}

/** Options of `websocket.register` and `websocket.registerPattern`. */
export interface WebSocketOptions {
  /**
   * Origins (`"https://app.example"`) whose pages may connect besides the
   * host the request went to, or `["*"]` for any. By default a browser's
   * handshake from another site's page is refused with 403, since the
   * client carries its visitor's cookies and session.
   */
  origins?: string[];
}

const CLOSE_REASON_MAX = 123;
const EMPTY_BODY = new Uint8Array(0);

/** Clients made by channels (what `session.get(client)` accepts). */
const knownClients = new WeakSet<WebSocketClient>();

/** The request of a client this worker did not see connect: nothing in it. */
function unknownRequest(): WireRequest {
  return {
    method: "GET",
    path: "/",
    fullUrl: "/",
    scheme: "http",
    authority: "",
    query: "",
    headers: [],
    host: "",
    peer: "",
    startTime: Date.now(),
    upgraded: true,
  };
}

function checkMessage(message: unknown): string | Uint8Array {
  if (typeof message === "string" || message instanceof Uint8Array) {
    return message;
  }
  throw new TypeError("A websocket message is a string or a Uint8Array");
}

function createChannel(
  id: number,
  place: { path: string } | { regex: { source: string; flags: string } },
  protocol: string | null,
  origins: string[],
): SocketEntry & { channel: WebSocketChannel } {
  const clients = new Map<string, WebSocketClient>();
  const label = "path" in place ? place.path : place.regex.source;
  const send = (data: string | Uint8Array, client: string | null) =>
    registry.post({
      t: "wsSend",
      channel: id,
      client,
      data: checkMessage(data),
    });
  const channel: WebSocketChannel = {
    path: label,
    protocol,
    onConnect: null,
    onMessage: null,
    onDisconnect: null,
    clients,
    send(message, client) {
      send(
        message,
        client === undefined
          ? null
          : typeof client === "string"
          ? client
          : client.id,
      );
    },
  };
  const clientObject = (
    clientId: string,
    req: WireRequest,
    captures: string[],
  ): WebSocketClient => {
    const client: WebSocketClient = {
      id: clientId,
      peer: req.peer,
      request: new PageRequest(req, EMPTY_BODY),
      captures: Object.freeze([...captures]),
      send: (message) => send(message, clientId),
      close(code = 1000, reason = "") {
        if (!(code === 1000 || (code >= 3000 && code <= 4999))) {
          throw new RangeError(
            `client.close(): code must be 1000 or 3000–4999, got ${code}`,
          );
        }
        registry.post({
          t: "wsClose",
          channel: id,
          client: clientId,
          code,
          reason: String(reason).slice(0, CLOSE_REASON_MAX),
        });
      },
    };
    knownClients.add(client);
    return client;
  };
  const known = (clientId: string) =>
    clients.get(clientId) ?? clientObject(clientId, unknownRequest(), []);
  const run = async (what: string, fn: (() => unknown) | null) => {
    if (fn === null) return;
    try {
      await fn();
    } catch (err) {
      // deno-lint-ignore no-console -- the site's log is its stderr
      console.error(`websocket ${label} ${what} failed: ${stackOf(err)}`);
    }
  };
  return {
    spec: { id, host: "*", ...place, protocol, origins },
    events: {
      async open(clientId, req, captures) {
        const client = clientObject(clientId, req, captures);
        clients.set(clientId, client);
        await run(
          "onConnect",
          channel.onConnect && (() => channel.onConnect!(client)),
        );
      },
      async message(clientId, data) {
        const client = known(clientId);
        await run(
          "onMessage",
          channel.onMessage && (() => channel.onMessage!(client, data)),
        );
      },
      async close(clientId, code, reason) {
        const client = known(clientId);
        clients.delete(clientId);
        await run(
          "onDisconnect",
          channel.onDisconnect &&
            (() => channel.onDisconnect!(client, code, reason)),
        );
      },
    },
    channel,
  };
}

function checkOrigins(call: string, options: unknown): string[] {
  if (options === undefined) return [];
  if (typeof options !== "object" || options === null) {
    throw new TypeError(`${call}: the options must be an object`);
  }
  const origins = (options as WebSocketOptions).origins;
  if (origins === undefined) return [];
  if (!Array.isArray(origins) || origins.length > 64) {
    throw new TypeError(
      `${call}: "origins" must be a list of at most 64 origins such as "https://app.example", or ["*"]`,
    );
  }
  return origins.map((o: unknown) => {
    if (o === "*") return o;
    let url: URL | null = null;
    try {
      url = typeof o === "string" ? new URL(o) : null;
    } catch {
      url = null;
    }
    if (
      url === null || !/^https?:$/.test(url.protocol) ||
      url.origin.toLowerCase() !== String(o).toLowerCase()
    ) {
      throw new TypeError(
        `${call}: ${
          JSON.stringify(o)
        } is not an origin; write it as "https://host[:port]", with nothing after the host`,
      );
    }
    return url.origin.toLowerCase();
  });
}

function register(
  call: string,
  place: { path: string } | { regex: { source: string; flags: string } },
  protocol: string | null,
  host: Host,
  options: unknown,
): WebSocketChannel {
  if (
    protocol !== null &&
    (typeof protocol !== "string" ||
      !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(protocol))
  ) {
    throw new TypeError(
      `${call}: the protocol must be a token such as "chat"`,
    );
  }
  if (
    typeof host !== "object" || host === null ||
    hostObjects.get(host.pattern) !== host
  ) {
    throw new TypeError(
      `${call}: the host must come from hosts.get() or be hosts.any`,
    );
  }
  const origins = checkOrigins(call, options);
  const same = (spec: SocketEntry["spec"]) =>
    "path" in place
      ? spec.path === place.path
      : spec.regex?.source === place.regex.source &&
        spec.regex.flags === place.regex.flags;
  const taken = registry.sockets.some((s) =>
    s.spec.host === host.pattern && same(s.spec) &&
    s.spec.protocol === protocol
  );
  if (taken) {
    throw new Error(
      `${call}: already registered on this host with this protocol`,
    );
  }
  const entry = createChannel(
    registry.sockets.length,
    place,
    protocol,
    origins,
  );
  entry.spec.host = host.pattern;
  registry.sockets.push(entry);
  return entry.channel;
}

/** Websockets of this site. */
export const websocket: {
  /**
   * Registers a websocket endpoint at `path` (and sub-protocol `protocol`,
   * when clients must ask for one) on `host`.
   */
  register(
    path: string,
    protocol?: string | null,
    host?: Host,
    options?: WebSocketOptions,
  ): WebSocketChannel;
  /**
   * Registers a websocket endpoint on every path `pattern` matches (a
   * RegExp or a regular-expression string matched against the whole path,
   * as `host.addPattern`); a client's `captures` hold its groups.
   */
  registerPattern(
    pattern: RegExp | string,
    protocol?: string | null,
    host?: Host,
    options?: WebSocketOptions,
  ): WebSocketChannel;
} = {
  register(path, protocol = null, host = hosts.any, options) {
    const call = `websocket.register(${JSON.stringify(path)})`;
    assertLoading(call);
    if (typeof path !== "string" || !path.startsWith("/")) {
      throw new TypeError(`${call}: the path must start with "/"`);
    }
    return register(call, { path }, protocol, host, options);
  },
  registerPattern(pattern, protocol = null, host = hosts.any, options) {
    const call = `websocket.registerPattern(${
      JSON.stringify(String(pattern).slice(0, 60))
    })`;
    assertLoading(call);
    const regex = checkPattern(
      call,
      pattern,
      registry.sockets.filter((s) => s.spec.regex !== undefined).length,
    );
    return register(call, { regex }, protocol, host, options);
  },
};

/** A session: its id, its data, and `save()` to store changes. */
export interface Session {
  readonly id: string;
  data: Record<string, unknown>;
  /** Stores `data` (and refreshes the cookie's lifetime). */
  save(): Promise<void>;
}

/** Sessions, stored by the server (not by the site) and kept across restarts. */
export const session: {
  /**
   * The session of this request's cookie `name`; a new one (and its
   * cookie) when there is none.
   */
  get(req: PageRequest, res: PageResponse, name?: string): Promise<Session>;
  /**
   * The session of a websocket client's cookie `name`, read now (what a
   * page saved since the client connected is there). A client without one
   * gets empty data, and `save()` throws: only a page can set the cookie.
   */
  get(client: WebSocketClient, name?: string): Promise<Session>;
} = {
  // deno-lint-ignore require-await -- bad arguments reject, as they always did
  async get(
    first: PageRequest | WebSocketClient,
    second?: PageResponse | string,
    third?: string,
  ): Promise<Session> {
    if (knownClients.has(first as WebSocketClient)) {
      return clientSession(
        first as WebSocketClient,
        checkCookieName(typeof second === "string" ? second : "session"),
      );
    }
    if (!(first instanceof PageRequest) || typeof second !== "object") {
      throw new TypeError(
        "session.get(): pass a page's req and res, or a websocket client",
      );
    }
    return pageSession(first, second, checkCookieName(third ?? "session"));
  },
};

function checkCookieName(name: string): string {
  if (typeof name !== "string" || !/^[A-Za-z0-9_.-]{1,64}$/.test(name)) {
    throw new TypeError(
      `session.get(): ${JSON.stringify(name)} is not a cookie name`,
    );
  }
  return name;
}

async function pageSession(
  req: PageRequest,
  res: PageResponse,
  name: string,
): Promise<Session> {
  const fromCookie = req.cookies[name] ?? null;
  const wire = await registry.ask({ t: "sessionGet", name, id: fromCookie });
  const setCookie = () =>
    res.setCookie(name, wire.id, {
      path: "/",
      httpOnly: true,
      sameSite: "Lax",
      secure: wire.secure,
      maxAge: wire.maxAge,
    });
  if (wire.fresh) setCookie();
  return storedSession(name, wire, setCookie);
}

/** A session the store knows (or will, once saved); `saved` runs after each save. */
function storedSession(
  name: string,
  wire: { id: string; data: Record<string, unknown> },
  saved: () => void = () => {},
): Session {
  const result: Session = {
    id: wire.id,
    data: wire.data,
    async save() {
      await registry.ask({
        t: "sessionSave",
        name,
        id: wire.id,
        data: result.data,
      });
      saved();
    },
  };
  return result;
}

async function clientSession(
  client: WebSocketClient,
  name: string,
): Promise<Session> {
  const fromCookie = client.request.cookies[name] ?? null;
  const wire = fromCookie === null
    ? null
    : await registry.ask({ t: "sessionGet", name, id: fromCookie });
  if (wire === null || wire.fresh) {
    return {
      id: "",
      data: {},
      save() {
        return Promise.reject(
          new Error(
            `This websocket client has no session "${name}": a page starts one (session.get(req, res)), then the client connects`,
          ),
        );
      },
    };
  }
  return storedSession(name, wire);
}
