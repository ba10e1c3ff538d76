/**
 * What a site's code finds in its worker's global scope, set up before any
 * of it runs: no storage shared with other sites, no door into the runtime's
 * internals, and Workers of its own only a few at a time, each watched.
 *
 * Removed:
 * - `caches`: Deno keeps one Cache API store per main module under the
 *   server's DENO_DIR, and every sandbox has the same main module, so sites
 *   read and overwrote each other's entries, and wrote there without any
 *   write permission (measured: 200 MiB).
 * - `localStorage`, `sessionStorage`: not defined in Deno's workers; removed
 *   again in case a later Deno adds them, for the same reason.
 * - `Deno[Deno.internal]`: the runtime's internals, `core` among them.
 *
 * Nested workers (`new Worker(...)` in site code) start from
 * `./nested.ts`, which sets up the same scope, then imports the site's
 * module. At most {@linkcode MAX_NESTED_WORKERS} run in a sandbox at once
 * (over all its workers); each answers the pool worker's heartbeat, so one
 * stuck in a loop gets its whole sandbox replaced like a stuck pool worker.
 * Deno gives a nested worker its parent's permissions, or fewer when asked
 * (it refuses more).
 *
 * @module
 */

// deno-lint-ignore-file no-console -- a sandbox's stderr is its site's log

/** Nested workers a sandbox may have running at once, over all its workers. */
export const MAX_NESTED_WORKERS = 4;

import Module from "node:module";
import { normalize, resolve } from "node:path";
import { Worker as NodeWorker } from "node:worker_threads";
import { STUCK_AFTER_MS } from "../protocol/messages.ts";
import guardedWorkerThreads from "./no_worker_threads.ts";
import { NESTED_URL as NESTED, RUNTIME_FILES } from "./runtime_files.ts";

/** Marks the control messages between a nested worker and its parent. */
const CONTROL = "__sandflare_nested";

// Captured when this module loads, before any site code runs: site code
// shares these realms and may replace any built-in it can reach.
const apply = Reflect.apply;
const hasOwn = Object.hasOwn;
const isTrusted = Object.getOwnPropertyDescriptor(Event.prototype, "isTrusted")
  ?.get ?? (() => false);
/** A message event's data: an own field in Deno 2.9.6, not a getter to replace. */
const dataOf = (event: MessageEvent): unknown =>
  hasOwn(event, "data") ? event.data : undefined;
const stopImmediate = Event.prototype.stopImmediatePropagation;
const dispatchOn = EventTarget.prototype.dispatchEvent;
const now = performance.now.bind(performance);
const { add, sub } = Atomics;
const randomId = crypto.randomUUID.bind(crypto);
const OriginalWorker = globalThis.Worker;
const workerPost = OriginalWorker.prototype.postMessage;
const workerTerminate = OriginalWorker.prototype.terminate;
const workerListen = OriginalWorker.prototype.addEventListener;
const WORKER_THREADS_REGEXP = /^(node:)?worker_threads$/;

/**
 * Site output goes to stderr, the site's log: stdout carries the sandbox's
 * frames. Returns `console.error` as it was.
 */
export function outputToLog(): (...data: unknown[]) => void {
  const logError = console.error.bind(console);
  console.log =
    console.info =
    console.debug =
    console.trace =
      logError;
  return logError;
}

/** Removes the global scope's ways out (see the module doc). */
export function confineGlobals(): void {
  const global = globalThis as Record<PropertyKey, unknown>;
  for (const name of ["caches", "localStorage", "sessionStorage"]) {
    delete global[name];
  }
  const deno = Deno as unknown as Record<PropertyKey, unknown>;
  const internal = deno.internal;
  if (typeof internal === "symbol") delete deno[internal];
  deno.serve = serveInSite;
  blockNodeWorkers();
}

/** Deno KV stores one worker may have open at once (each is a thread). */
export const MAX_KV_HANDLES = 4;

/**
 * `Deno.openKv` in a pool worker opens the site's own file (site.json
 * `kv`) and nothing else: no other file in a folder it may write (which
 * the quota would count, but "kv" would not name), no `:memory:` store, at
 * most {@linkcode MAX_KV_HANDLES} at once, since each is an OS thread.
 * Without `kv`, and in nested workers, it is not defined.
 */
export function confineKv(file: string | null, siteDir = "/"): void {
  const deno = Deno as unknown as Record<string, unknown>;
  const open = deno.openKv;
  if (file === null || typeof open !== "function") {
    delete deno.openKv;
    return;
  }
  const openFile = open.bind(Deno) as (path: string) => Promise<Deno.Kv>;
  // Taken now: a site that replaces Kv.prototype.close with a no-op must not
  // have its stores counted closed while they stay open.
  const kvClose = Deno.Kv.prototype.close;
  let opened = 0;
  // Deno defines it as a getter; the site cannot put the original back.
  const openKv = async (path?: string): Promise<Deno.Kv> => {
    if (path !== undefined && resolvePath(path, siteDir) !== file) {
      throw new TypeError(
        `Deno.openKv(${
          JSON.stringify(String(path))
        }): this site's store is ${file} (site.json "kv"); call Deno.openKv() or give that path`,
      );
    }
    if (opened >= MAX_KV_HANDLES) {
      throw new Error(
        `Deno.openKv(): ${MAX_KV_HANDLES} stores are open in this worker already; open one and reuse it`,
      );
    }
    opened++;
    let kv: Deno.Kv;
    try {
      kv = await openFile(file);
    } catch (err) {
      opened--;
      throw err;
    }
    let closed = false;
    kv.close = () => {
      Reflect.apply(kvClose, kv, []);
      if (!closed) {
        closed = true;
        opened--;
      }
    };
    return kv;
  };
  Object.defineProperty(deno, "openKv", {
    value: openKv,
    writable: false,
    configurable: false,
    enumerable: true,
  });
}

/** A path as Deno resolves it: relative ones against the site's folder (its working folder). */
function resolvePath(path: string, siteDir: string): string {
  const text = String(path);
  if (text.startsWith("file://")) return normalize(new URL(text).pathname);
  return resolve(siteDir, text);
}

/**
 * `Deno.serve` in a site: the server listens for it, so say what to write
 * instead (without this, Deno's error is about a net permission).
 */
function serveInSite(): never {
  throw new Error(
    "Deno.serve() cannot run inside a Sandflare site: the server listens for it. " +
      "Export the handler instead: `export default { fetch(request) { … } }` " +
      '(or `hosts.any.mount("/", handler)`), and it answers every path the ' +
      "site's pages do not",
  );
}

/**
 * `node:worker_threads` without its Worker for `process.getBuiltinModule`
 * and `require` (deno.json maps the import itself; see
 * ./no_worker_threads.ts). An npm package's own `import` of it is not
 * mapped (an import map does not reach into packages), so the real class
 * refuses too: its constructor calls its parent's, which now throws, and
 * the class is sealed so that no site can put its parent back.
 */
function blockNodeWorkers(): void {
  if (Object.isExtensible(NodeWorker)) {
    // The parent: the refusing Worker sites get for the module itself.
    Object.setPrototypeOf(NodeWorker, guardedWorkerThreads.Worker);
    Object.preventExtensions(NodeWorker);
  }
  const proc = (globalThis as { process?: unknown }).process;
  if (typeof proc === "object" && proc !== null) {
    const get = (proc as { getBuiltinModule?: unknown }).getBuiltinModule;
    if (typeof get === "function") {
      const guarded = function (this: unknown, id: unknown): unknown {
        return WORKER_THREADS_REGEXP.test(String(id))
          ? guardedWorkerThreads
          : apply(get, proc, [id]);
      };
      for (
        let o: object | null = proc;
        o !== null;
        o = Object.getPrototypeOf(o)
      ) {
        if (hasOwn(o, "getBuiltinModule")) {
          Object.defineProperty(o, "getBuiltinModule", {
            value: guarded,
            writable: false,
            configurable: false,
          });
        }
      }
    }
  }
  const modules = Module as unknown as { _load?: unknown };
  const load = modules._load;
  if (typeof load === "function") {
    Object.defineProperty(modules, "_load", {
      value: function (this: unknown, request: unknown, ...rest: unknown[]) {
        return WORKER_THREADS_REGEXP.test(String(request))
          ? guardedWorkerThreads
          : apply(load, this, [request, ...rest]);
      },
      writable: false,
      configurable: false,
    });
  }
}

/**
 * A control message between a nested worker and its parent. `secret` is
 * given to the child in `start`, before any site code runs on either side
 * of it, and proves what only the child's runtime sends.
 */
type Control =
  | { kind: "start"; url: string; secret: string; count: SharedArrayBuffer }
  | { kind: "ping" }
  | { kind: "pong"; secret: string; ok: boolean }
  | { kind: "closing"; secret: string }
  /** An error the site's code did not handle, for the parent's listeners. */
  | { kind: "error"; secret: string; message: string };

/** A field of a control message, its own (not one a prototype lends). */
function field(control: object, name: string): unknown {
  return hasOwn(control, name)
    ? (control as Record<string, unknown>)[name]
    : undefined;
}

function controlOf(event: MessageEvent): object | null {
  if (apply(isTrusted, event, []) !== true) return null;
  const data = dataOf(event);
  if (typeof data !== "object" || data === null || !hasOwn(data, CONTROL)) {
    return null;
  }
  const control = field(data, CONTROL);
  return typeof control === "object" && control !== null ? control : null;
}

function wrap(control: Control): Record<string, Control> {
  return { [CONTROL]: control };
}

/** One nested worker as its parent watches it. */
interface Child {
  worker: Worker;
  secret: string;
  /** When the outstanding ping was sent; null when answered. */
  pinged: number | null;
  /** Its own nested workers were all well at its last answer. */
  ok: boolean;
}

/** The count of nested workers running, shared by the whole sandbox. */
let count: Int32Array | null = null;
/** Nested workers started here (a plain array: Map methods can be replaced). */
const children: Child[] = [];

function childOf(worker: unknown): Child | null {
  for (let i = 0; i < children.length; i++) {
    if (children[i]!.worker === worker) return children[i]!;
  }
  return null;
}

/** Gives a nested worker's place back, once. */
function release(child: Child): void {
  for (let i = 0; i < children.length; i++) {
    if (children[i] !== child) continue;
    children[i] = children[children.length - 1]!;
    children.length--;
    if (count !== null) sub(count, 0, 1);
    return;
  }
}

/**
 * Whether every nested worker started here (and theirs, recursively)
 * answered its last ping within {@linkcode STUCK_AFTER_MS}; pings those that
 * have answered again. Called on each heartbeat of this worker.
 */
export function nestedWell(): boolean {
  const at = now();
  let well = true;
  for (let i = 0; i < children.length; i++) {
    const child = children[i]!;
    if (child.pinged !== null) {
      if (at - child.pinged > STUCK_AFTER_MS) well = false;
      continue;
    }
    if (!child.ok) well = false;
    child.pinged = at;
    apply(workerPost, child.worker, [wrap({ kind: "ping" })]);
  }
  return well;
}

/**
 * The `deno` option of a nested worker, with read access to the runtime
 * files added when it asks for its own read permission.
 */
function withRuntime(
  options: WorkerOptions | undefined,
): Pick<WorkerOptions, "deno"> {
  const deno = (options as { deno?: unknown } | undefined)?.deno;
  if (typeof deno !== "object" || deno === null) return {};
  const permissions = (deno as { permissions?: unknown }).permissions;
  if (permissions === "none") {
    return {
      deno: {
        permissions: {
          read: [...RUNTIME_FILES],
          write: false,
          net: false,
          env: false,
          run: false,
          ffi: false,
          sys: false,
          import: false,
        },
      },
    } as Pick<WorkerOptions, "deno">;
  }
  if (typeof permissions !== "object" || permissions === null) return {};
  const read: unknown = (permissions as { read?: unknown }).read;
  const files = Array.isArray(read)
    ? [...read.map(String), ...RUNTIME_FILES]
    : read === false || read === "none"
    ? [...RUNTIME_FILES]
    : read;
  return {
    deno: { ...deno, permissions: { ...permissions, read: files } },
  } as Pick<WorkerOptions, "deno">;
}

/**
 * Replaces `Worker` with one that counts and watches what it starts.
 * `counter` is the sandbox's count of running nested workers, shared by all
 * its workers.
 */
export function limitWorkers(counter: SharedArrayBuffer): void {
  // Once: site code can import this module (Deno checks no permission for
  // a module already loaded), and must not swap the count for a new one.
  if (count !== null) throw new Error("Workers are already limited");
  const shared = counter;
  const running = new Int32Array(counter);
  count = running;
  function SiteWorker(
    this: unknown,
    specifier: string | URL,
    options?: WorkerOptions,
  ): Worker {
    if (!new.target) {
      throw new TypeError(
        "Failed to construct 'Worker': Please use the 'new' operator",
      );
    }
    const url = new URL(String(specifier), location.href).href;
    if (add(running, 0, 1) >= MAX_NESTED_WORKERS) {
      sub(running, 0, 1);
      throw new Error(
        `A site may run at most ${MAX_NESTED_WORKERS} Workers of its own at once (site.json "workers" sets the pool that answers requests)`,
      );
    }
    let worker: Worker;
    try {
      worker = new OriginalWorker(NESTED, {
        ...options,
        type: "module",
        ...withRuntime(options),
      });
    } catch (err) {
      sub(running, 0, 1);
      throw err;
    }
    const secret = randomId();
    const child: Child = { worker, secret, pinged: null, ok: true };
    children[children.length] = child;
    apply(workerListen, worker, [
      "message",
      (event: MessageEvent) => {
        const control = controlOf(event);
        if (control === null) return;
        apply(stopImmediate, event, []);
        if (field(control, "secret") !== secret) return;
        const kind = field(control, "kind");
        if (kind === "pong") {
          child.pinged = null;
          child.ok = field(control, "ok") === true;
        } else if (kind === "closing") {
          // Ended for sure, whoever sent it: then its place is free.
          apply(workerTerminate, worker, []);
          release(child);
        } else if (kind === "error") {
          apply(dispatchOn, worker, [
            new ErrorEvent("error", {
              message: String(field(control, "message")),
            }),
          ]);
        }
      },
    ]);
    apply(workerPost, worker, [
      wrap({ kind: "start", url, secret, count: shared }),
    ]);
    return worker;
  }
  SiteWorker.prototype = OriginalWorker.prototype;
  Object.defineProperty(OriginalWorker.prototype, "constructor", {
    value: SiteWorker,
    writable: true,
    configurable: true,
  });
  OriginalWorker.prototype.terminate = function (this: Worker): void {
    const child = childOf(this);
    apply(workerTerminate, this, []);
    if (child !== null) release(child);
  };
  Object.defineProperty(globalThis, "Worker", {
    value: SiteWorker,
    writable: true,
    configurable: true,
  });
}

/** What a nested worker uses of its global scope (typed here without the worker lib). */
interface WorkerScope {
  postMessage(message: unknown): void;
  dispatchEvent(event: Event): boolean;
  addEventListener(type: string, listener: (event: Event) => void): void;
  close(): void;
}

/**
 * In a nested worker: waits for the parent's start message, then imports the
 * site's module; answers pings with the health of its own nested workers.
 * Messages that arrive before the module has loaded are dispatched to it
 * once it has.
 */
export function runNested(): void {
  const self = globalThis as unknown as WorkerScope;
  let secret: string | null = null;
  const early: MessageEvent[] = [];
  let started = false;
  const postOwn = self.postMessage;
  const toParent = (message: unknown) => apply(postOwn, self, [message]);
  const dispatch = self.dispatchEvent.bind(self);
  // A worker that ends tells its parent, which then ends it for sure and
  // gives its place back (one that ends without a word looks stuck).
  const close = self.close;
  const closing = function (): void {
    if (secret !== null) toParent(wrap({ kind: "closing", secret }));
    apply(close, self, []);
  };
  self.close = closing;
  for (
    let p = Object.getPrototypeOf(self);
    p !== null;
    p = Object.getPrototypeOf(p)
  ) {
    try {
      if (hasOwn(p, "close")) (p as { close: () => void }).close = closing;
    } catch {
      // Not writable: calling it is then a stop without a word.
    }
  }
  // Deno ends a worker on an error it did not handle, which the parent
  // could not tell from one that stopped answering: as in browsers, the
  // worker goes on, and its parent hears of the error.
  const report = (what: string, err: unknown) => {
    const message = err instanceof Error
      ? (err.stack ?? err.message)
      : String(err);
    console.error(`${what} in a Worker the site started: ${message}`);
    if (secret !== null) {
      toParent(wrap({ kind: "error", secret, message: String(err) }));
    }
  };
  self.addEventListener("error", (event) => {
    event.preventDefault();
    const { error, message } = event as ErrorEvent;
    report("Uncaught error", error ?? message);
  });
  self.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    report(
      "Unhandled promise rejection",
      (event as PromiseRejectionEvent).reason,
    );
  });
  self.addEventListener("message", (e) => {
    const event = e as MessageEvent;
    const control = controlOf(event);
    if (control !== null) {
      apply(stopImmediate, event, []);
      const kind = field(control, "kind");
      if (kind === "start" && secret === null) {
        const given = field(control, "secret");
        const counter = field(control, "count");
        const url = field(control, "url");
        if (
          typeof given !== "string" || typeof url !== "string" ||
          !(counter instanceof SharedArrayBuffer)
        ) return;
        secret = given;
        limitWorkers(counter);
        import(url).then(
          () => {
            started = true;
            for (const early_ of early.splice(0)) {
              dispatch(
                new MessageEvent("message", {
                  data: dataOf(early_),
                  ports: [...early_.ports],
                }),
              );
            }
          },
          (err) => report("Its module failed to load", err),
        );
      } else if (kind === "ping" && secret !== null) {
        toParent(wrap({ kind: "pong", secret, ok: nestedWell() }));
      }
      return;
    }
    if (!started && apply(isTrusted, event, []) === true) {
      apply(stopImmediate, event, []);
      early.push(event);
    }
  });
}
