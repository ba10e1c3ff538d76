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

import { STUCK_AFTER_MS } from "../protocol/messages.ts";

/** Marks the control messages between a nested worker and its parent. */
const CONTROL = "__sandflare_nested";

const apply = Reflect.apply;
const isTrusted = Object.getOwnPropertyDescriptor(Event.prototype, "isTrusted")
  ?.get ?? (() => false);
const stopImmediate = Event.prototype.stopImmediatePropagation;
const now = performance.now.bind(performance);

/** Removes the global scope's ways out (see the module doc). */
export function confineGlobals(): void {
  const global = globalThis as Record<PropertyKey, unknown>;
  for (const name of ["caches", "localStorage", "sessionStorage"]) {
    delete global[name];
  }
  const deno = Deno as unknown as Record<PropertyKey, unknown>;
  const internal = deno.internal;
  if (typeof internal === "symbol") delete deno[internal];
}

/** A control message: a nested worker's start, ping or pong. */
type Control =
  | { kind: "start"; url: string; token: string; count: SharedArrayBuffer }
  | { kind: "ping"; token: string }
  | { kind: "pong"; token: string; ok: boolean }
  | { kind: "closing"; token: string }
  /** An error the site's code did not handle, for the parent's listeners. */
  | { kind: "error"; token: string; message: string };

function controlOf(event: MessageEvent): Control | null {
  if (apply(isTrusted, event, []) !== true) return null;
  const data: unknown = event.data;
  if (typeof data !== "object" || data === null || !(CONTROL in data)) {
    return null;
  }
  const control = (data as Record<string, unknown>)[CONTROL];
  return typeof control === "object" && control !== null
    ? control as Control
    : null;
}

function wrap(control: Control): Record<string, Control> {
  return { [CONTROL]: control };
}

/** One nested worker as its parent watches it. */
interface Child {
  token: string;
  /** When the outstanding ping was sent; null when answered. */
  pinged: number | null;
  /** Its own nested workers were all well at its last answer. */
  ok: boolean;
  /** Its place among the running ones was given back. */
  released: boolean;
}

/** Nested workers started here: their places, and their heartbeats. */
let count: Int32Array | null = null;
const children = new Map<Worker, Child>();

/**
 * Whether every nested worker started here (and theirs, recursively)
 * answered its last ping within {@linkcode STUCK_AFTER_MS}; pings those that
 * have answered again. Called on each heartbeat of this worker.
 */
export function nestedWell(): boolean {
  const at = now();
  let well = true;
  for (const [worker, child] of children) {
    if (child.pinged !== null) {
      if (at - child.pinged > STUCK_AFTER_MS) well = false;
      continue;
    }
    if (!child.ok) well = false;
    child.pinged = at;
    post(worker, wrap({ kind: "ping", token: child.token }));
  }
  return well;
}

const OriginalWorker = globalThis.Worker;
const post = (worker: Worker, message: unknown) =>
  apply(OriginalWorker.prototype.postMessage, worker, [message]);
const terminate = OriginalWorker.prototype.terminate;
const listen = OriginalWorker.prototype.addEventListener;
const NESTED = new URL("./nested.ts", import.meta.url).href;

/** The runtime files a nested worker starts from: it may always read them. */
export const RUNTIME_FILES: readonly string[] = [
  NESTED,
  import.meta.url,
  new URL("../protocol/messages.ts", import.meta.url).href,
].map((href) => decodeURIComponent(new URL(href).pathname));

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

function release(worker: Worker): void {
  const child = children.get(worker);
  if (child === undefined || child.released) return;
  child.released = true;
  children.delete(worker);
  if (count !== null) Atomics.sub(count, 0, 1);
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
  count = new Int32Array(counter);
  const shared = counter;
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
    if (Atomics.add(count!, 0, 1) >= MAX_NESTED_WORKERS) {
      Atomics.sub(count!, 0, 1);
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
      Atomics.sub(count!, 0, 1);
      throw err;
    }
    const token = crypto.randomUUID();
    const child: Child = { token, pinged: null, ok: true, released: false };
    children.set(worker, child);
    apply(listen, worker, [
      "message",
      (event: MessageEvent) => {
        const control = controlOf(event);
        if (control === null || control.token !== token) return;
        apply(stopImmediate, event, []);
        if (control.kind === "pong") {
          child.pinged = null;
          child.ok = control.ok;
        } else if (control.kind === "closing") {
          release(worker);
        } else if (control.kind === "error") {
          worker.dispatchEvent(
            new ErrorEvent("error", { message: control.message }),
          );
        }
      },
    ]);
    post(worker, wrap({ kind: "start", url, token, count: shared }));
    return worker;
  }
  SiteWorker.prototype = OriginalWorker.prototype;
  Object.defineProperty(OriginalWorker.prototype, "constructor", {
    value: SiteWorker,
    writable: true,
    configurable: true,
  });
  OriginalWorker.prototype.terminate = function (this: Worker): void {
    release(this);
    apply(terminate, this, []);
  };
  Object.defineProperty(globalThis, "Worker", {
    value: SiteWorker,
    writable: true,
    configurable: true,
  });
}

/**
 * In a nested worker: waits for the parent's start message, then imports the
 * site's module; answers pings with the health of its own nested workers.
 * Messages that arrive before the module has loaded are dispatched to it
 * once it has.
 */
/** What a nested worker uses of its global scope (typed here without the worker lib). */
interface WorkerScope {
  postMessage(message: unknown): void;
  dispatchEvent(event: Event): boolean;
  addEventListener(type: string, listener: (event: Event) => void): void;
  close(): void;
}

export function runNested(): void {
  const self = globalThis as unknown as WorkerScope;
  let token: string | null = null;
  const early: MessageEvent[] = [];
  let started = false;
  const postToParent = self.postMessage.bind(self);
  const dispatch = self.dispatchEvent.bind(self);
  // A worker that ends tells its parent, so that its place is given back
  // (one that ends without a word looks stuck, and is replaced).
  const scope = Object.getPrototypeOf(self) as { close: () => void };
  const close = self.close;
  const closing = function (this: unknown): void {
    if (token !== null) postToParent(wrap({ kind: "closing", token }));
    apply(close, self, []);
  };
  self.close = closing;
  for (let p = scope; p !== null; p = Object.getPrototypeOf(p)) {
    try {
      if (Object.hasOwn(p, "close")) {
        (p as { close: () => void }).close = closing;
      }
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
    if (token !== null) {
      postToParent(wrap({ kind: "error", token, message: String(err) }));
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
    if (control !== null && (token === null || control.token === token)) {
      apply(stopImmediate, event, []);
      if (control.kind === "start" && token === null) {
        token = control.token;
        limitWorkers(control.count);
        import(control.url).then(
          () => {
            started = true;
            for (const e of early.splice(0)) {
              dispatch(
                new MessageEvent("message", {
                  data: e.data,
                  ports: [...e.ports],
                }),
              );
            }
          },
          (err) => report("Its module failed to load", err),
        );
      } else if (control.kind === "ping" && token !== null) {
        postToParent(wrap({ kind: "pong", token, ok: nestedWell() }));
      }
      return;
    }
    if (!started && apply(isTrusted, event, []) === true) {
      apply(stopImmediate, event, []);
      early.push(event);
    }
  });
}
