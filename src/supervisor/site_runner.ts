/**
 * Keeps one site served: starts its sandbox, hands it requests, answers for
 * it when it is slow or gone, and replaces it with backoff when it dies.
 *
 * @module
 */

import { log } from "../log.ts";
import {
  STUCK_AFTER_MS,
  type WirePage,
  type WireRequest,
  type WireRoutes,
} from "../protocol/messages.ts";
import {
  ClientGoneError,
  LoadError,
  SandboxGoneError,
  type SandboxProcess,
  type SandboxReply,
} from "./sandbox_process.ts";
import { Deadlines } from "./deadlines.ts";
import type { Slots } from "./slots.ts";
import type { SiteDefinition } from "./sites.ts";

/** What became of a request handed to a site. */
export type Outcome =
  | { kind: "reply"; reply: SandboxReply }
  | { kind: "failed"; status: 502 | 503; message: string }
  /** The client went away first: the request no longer counts for the site. */
  | { kind: "gone" };

/** Counters shown on /stats. */
export interface SiteCounters {
  requests: number;
  errors: number;
  restarts: number;
  reloads: number;
  /** Requests refused because the site's queue was full. */
  overloaded: number;
}

/** Options of a runner. */
export interface SiteRunnerOptions {
  /** Workers when site.json does not say. */
  threads: number;
  /** Seconds a callback may run when site.json does not say. */
  requestTimeout: number;
  /** Checks a generation's routes before it serves (null when fine). */
  check: (def: SiteDefinition, routes: WireRoutes) => string | null;
  /** Requests in flight (or waiting for a restart) beyond which new ones get 503. */
  queue: number;
  /** Starts a sandbox process for a site (a seam for tests). */
  spawn: (def: SiteDefinition) => SandboxProcess;
  /** How long a stuck-check waits for the sandbox to answer. @default {6000} */
  heartbeatMs?: number;
  /**
   * Time without requests after which the sandbox stops until the next
   * request (`--idle-stop`); null: never.
   */
  idleStopMs?: number | null;
  /**
   * Whether this node runs the site's scheduler tasks (in a cluster, one
   * node does). Told whether the site has any.
   * @default {always}
   */
  tasks?: TaskGate;
  /**
   * A generation that took over without a reload (a wake, a restart)
   * registered other pages than the one before: the router must be built
   * again.
   */
  onRoutesChanged?: () => void;
  /** Where sandboxes start a few at a time (wakes wait their turn there). */
  starts?: Slots;
}

/** The generation and pages a request was routed against. */
export interface Routed {
  /** Null when none was serving (the site slept, or was restarting). */
  generation: SandboxProcess | null;
  routes: WireRoutes | null;
}

/** Whether two tables register the same hosts, pages and websockets alike. */
function samePages(a: WireRoutes, b: WireRoutes): boolean {
  return JSON.stringify([a.hosts, a.pages, a.websockets]) ===
    JSON.stringify([b.hosts, b.pages, b.websockets]);
}

/** The key of a page: what it answers, whatever its number. */
function pageKey(p: WirePage): string {
  return JSON.stringify([p.host, p.method, p.path, p.regex, p.prefix]);
}

/**
 * The id in `now` of page `id` of `then`: the page registered for the same
 * host, method and pattern; null when there is none.
 */
function samePage(
  then: WireRoutes | null,
  now: WireRoutes | null,
  id: number,
): number | null {
  const page = then?.pages.find((p) => p.id === id);
  if (page === undefined || now === null) return null;
  const key = pageKey(page);
  return now.pages.find((p) => pageKey(p) === key)?.id ?? null;
}

/** Decides where a site's scheduler tasks run (see `task_leases.ts`). */
export interface TaskGate {
  /** Declares whether `site` has tasks here; whether they may run now. */
  want(site: string, wanted: boolean): boolean;
}

const MAX_BACKOFF_MS = 30_000;
/** Old generations kept for their websocket clients. */
const MAX_DRAINING = 2;
/** Request deadlines of every site share one coarse timer. */
const DEADLINES = new Deadlines();
const FIRST_BACKOFF_MS = 100;
const STABLE_MS = 30_000;
/**
 * After a failed wake, requests get 503 without a new try for this long,
 * doubled with each failure in a row up to MAX_BACKOFF_MS: a site that
 * cannot start does not start a sandbox per request.
 */
const WAKE_RETRY_MS = 1000;
/** A wake gives its start slot up after this long (see Slots). */
const WAKE_SLOT_MS = 2000;

interface Waiter {
  resolve: (sandbox: SandboxProcess | null) => void;
}

/** One site's supervisor. */
export class SiteRunner {
  /** The definition of the generation being served. */
  def: SiteDefinition;
  readonly counters: SiteCounters = {
    requests: 0,
    errors: 0,
    restarts: 0,
    reloads: 0,
    overloaded: 0,
  };
  /** The routes of the generation being served. */
  routes: WireRoutes | null = null;
  /** The last reason the sandbox stopped, for /stats and `sites`. */
  lastProblem: string | null = null;
  /**
   * The site's writable folders and Deno cache as last measured (bytes,
   * null before the first measure), whether its write access is taken away
   * for being over its disk quota, and when to measure next
   * (`performance.now()`).
   */
  readonly disk: { bytes: number | null; revoked: boolean; nextCheck: number } =
    { bytes: null, revoked: false, nextCheck: 0 };
  #options: SiteRunnerOptions;
  #sandbox: SandboxProcess | null = null;
  #waiters: Waiter[] = [];
  #crashes = 0;
  #stopping = false;
  /** Generations being asked whether they are stuck. */
  #checking = new WeakSet<SandboxProcess>();
  #restartTimer: ReturnType<typeof setTimeout> | null = null;
  #reloading: Promise<boolean> | null = null;
  #reloadNext: SiteDefinition | null = null;
  #draining: SandboxProcess[] = [];
  /** When the site was last busy (`performance.now()`). */
  #lastActive = performance.now();
  #asleep = false;
  #waking: Promise<void> | null = null;
  #wakeFailedAt = -Infinity;
  #wakeBackoffMs = WAKE_RETRY_MS;

  constructor(def: SiteDefinition, options: SiteRunnerOptions) {
    this.def = def;
    this.#options = options;
  }

  /** The site's name. */
  get name(): string {
    return this.def.name;
  }

  /** Seconds a request to this site may take. */
  get timeoutSeconds(): number {
    // Not asked for: the server's default, but never over the grant.
    return this.def.manifest.requestTimeout ??
      Math.min(
        this.#options.requestTimeout,
        this.def.grant?.requestTimeout ?? Infinity,
      );
  }

  /** Workers in the pool of a generation of this site. */
  workersOf(def: SiteDefinition): number {
    return def.manifest.workers ??
      Math.min(this.#options.threads, def.grant?.workers ?? Infinity);
  }

  /** What a request is routed against now: ids of pages belong to it. */
  routedNow(): Routed {
    return { generation: this.generation, routes: this.routes };
  }

  /** The generation serving now, if any (requests are routed against it). */
  get generation(): SandboxProcess | null {
    return this.#sandbox !== null && this.#sandbox.alive ? this.#sandbox : null;
  }

  /** True while a sandbox is loaded and answering. */
  get ready(): boolean {
    return this.#sandbox !== null && this.#sandbox.alive;
  }

  /** True while the site sleeps: no sandbox until its next request. */
  get asleep(): boolean {
    return this.#asleep;
  }

  /**
   * Stops the sandbox of a site idle for `idleStopMs`: no request in that
   * time, none in flight or streaming, no websocket client, no scheduler
   * task, and nothing else under way (a reload, a restart). Called about
   * once a second.
   */
  sleepIfIdle(now = performance.now(), started = false): void {
    const idleMs = this.#options.idleStopMs ?? null;
    const sandbox = this.#sandbox;
    if (
      idleMs === null || this.#asleep || this.#stopping ||
      this.#reloading !== null || this.#waking !== null ||
      sandbox === null || !sandbox.alive || this.routes === null
    ) {
      return;
    }
    if (
      this.routes.tasks > 0 || sandbox.inflight > 0 || sandbox.clients > 0 ||
      this.#draining.some((g) => g.alive && g.clients > 0)
    ) {
      this.#lastActive = now;
      return;
    }
    if (now - this.#lastActive < idleMs) return;
    this.#asleep = true;
    this.#sandbox = null;
    log.info(
      this.name,
      started
        ? `Asleep until its first request (sandbox pid ${sandbox.pid} stops)`
        : `Asleep after ${
          Math.round(idleMs / 1000)
        } s without requests (sandbox pid ${sandbox.pid} stops); the next request starts it`,
    );
    sandbox.retire();
    void sandbox.stop(0);
  }

  /**
   * Serves nothing until the first request, which starts the sandbox:
   * `routes` are what the site registered at its last load, with the same
   * files (see ./routes_cache.ts).
   */
  startAsleep(routes: WireRoutes): void {
    this.routes = routes;
    this.#asleep = true;
  }

  /** Starts the sandbox of a sleeping site, once however many ask. */
  #wake(): void {
    if (this.#waking !== null) return;
    const started = performance.now();
    this.#waking = (async () => {
      try {
        const starts = this.#options.starts;
        const sandbox = starts === undefined
          ? await this.#replace()
          : await starts.run(() => this.#replace(), WAKE_SLOT_MS);
        if (sandbox === null) return;
        this.#wakeBackoffMs = WAKE_RETRY_MS;
        log.info(
          this.name,
          `Awake in ${
            Math.round(performance.now() - started)
          } ms (sandbox pid ${sandbox.pid})`,
        );
      } catch (err) {
        const why = err instanceof LoadError ? err.message : String(err);
        if (performance.now() - this.#wakeFailedAt < 2 * MAX_BACKOFF_MS) {
          this.#wakeBackoffMs = Math.min(
            MAX_BACKOFF_MS,
            this.#wakeBackoffMs * 2,
          );
        }
        this.#wakeFailedAt = performance.now();
        this.noteProblem(
          `Could not wake the site: ${why}; requests get 503 for ${
            this.#wakeBackoffMs / 1000
          } s before it is tried again`,
        );
        // Those waiting get 503; a request after the back-off tries again.
        for (const w of this.#waiters.splice(0)) w.resolve(null);
      } finally {
        this.#waking = null;
      }
    })();
  }

  /** True while a sleeping site that failed to wake is not tried again. */
  #wakeHeldBack(): boolean {
    return this.#asleep && this.#waking === null &&
      performance.now() - this.#wakeFailedAt < this.#wakeBackoffMs;
  }

  /**
   * The sandbox serving now, started first if the site sleeps, or null at
   * `deadline` (ms since the epoch): for a websocket handshake.
   */
  serving(deadline: number): Promise<SandboxProcess | null> {
    this.#lastActive = performance.now();
    return this.#current(deadline);
  }

  /**
   * Loads the site in a new sandbox and returns what it registered, without
   * serving it yet; the caller checks the routes, then calls `adopt`.
   * @throws {LoadError} when the scripts fail to load
   */
  async load(
    def: SiteDefinition = this.def,
  ): Promise<{ sandbox: SandboxProcess; routes: WireRoutes }> {
    const sandbox = this.#options.spawn(def);
    try {
      const routes = await sandbox.loaded;
      return { sandbox, routes };
    } catch (err) {
      sandbox.kill("it failed to load");
      throw err;
    }
  }

  /** Serves `sandbox` from now on; the previous one finishes and stops. */
  adopt(sandbox: SandboxProcess, routes: WireRoutes): void {
    const previous = this.#sandbox;
    this.#sandbox = sandbox;
    this.routes = routes;
    this.#asleep = false;
    this.#lastActive = performance.now();
    const startedAt = Date.now();
    void sandbox.exited.then((reason) =>
      this.#onExit(sandbox, reason, startedAt)
    );
    const gate = this.#options.tasks;
    if (gate === undefined || gate.want(this.def.name, routes.tasks > 0)) {
      sandbox.activate();
    }
    for (const w of this.#waiters.splice(0)) w.resolve(sandbox);
    if (previous !== null) {
      // Old generations stay while their websocket clients are connected;
      // beyond the last few, the oldest is retired (its clients get 1012).
      this.#draining = this.#draining.filter((g) => g.alive);
      this.#draining.push(previous);
      while (this.#draining.length > MAX_DRAINING) {
        this.#draining.shift()!.retire();
      }
      void previous.stop(10_000);
    }
  }

  /**
   * Loads a new generation from `def`; only when it has loaded and `check`
   * accepts its routes does it take over (`onSwap` runs in the same tick).
   * A failed load leaves the current generation serving. Reloads asked for
   * while one runs are coalesced into one more.
   * @returns whether the last reload took over
   */
  reload(
    def: SiteDefinition,
    check: (def: SiteDefinition, routes: WireRoutes) => string | null,
    onSwap: () => void,
  ): Promise<boolean> {
    if (this.#reloading !== null) {
      this.#reloadNext = def;
      return this.#reloading;
    }
    this.#reloading = (async () => {
      let next: SiteDefinition | null = def;
      let ok = false;
      while (next !== null && !this.#stopping) {
        this.#reloadNext = null;
        ok = await this.#reloadOnce(next, check, onSwap);
        next = this.#reloadNext;
      }
      this.#reloading = null;
      return ok;
    })();
    return this.#reloading;
  }

  async #reloadOnce(
    def: SiteDefinition,
    check: (def: SiteDefinition, routes: WireRoutes) => string | null,
    onSwap: () => void,
  ): Promise<boolean> {
    const started = performance.now();
    this.#sandbox?.notifyReloading();
    let loaded: { sandbox: SandboxProcess; routes: WireRoutes };
    try {
      loaded = await this.load(def);
    } catch (err) {
      const where = err instanceof LoadError && err.location !== null
        ? `${err.location}: `
        : "";
      this.reloadFailed(`${where}${(err as Error).message}`);
      return false;
    }
    const problem = check(def, loaded.routes);
    if (problem !== null || this.#stopping) {
      loaded.sandbox.kill("its routes were refused");
      if (problem !== null) {
        this.noteProblem(
          `Reload refused, the previous version keeps serving: ${problem}`,
        );
      }
      return false;
    }
    this.def = def;
    this.adopt(loaded.sandbox, loaded.routes);
    onSwap();
    this.counters.reloads++;
    log.info(
      this.name,
      `Reloaded in ${
        Math.round(performance.now() - started)
      } ms (sandbox pid ${loaded.sandbox.pid})`,
    );
    return true;
  }

  /** Notes a reload that did not take over, and why. */
  reloadFailed(why: string): void {
    this.noteProblem(
      `Reload failed, the previous version keeps serving: ${why}`,
    );
  }

  /** Logs a problem of the site and shows it on /stats until the next. */
  noteProblem(problem: string): void {
    this.lastProblem = problem;
    log.error(this.name, problem);
  }

  #onExit(sandbox: SandboxProcess, reason: string, startedAt: number): void {
    if (sandbox !== this.#sandbox || this.#stopping) return;
    this.#sandbox = null;
    this.lastProblem = reason;
    if (Date.now() - startedAt >= STABLE_MS) this.#crashes = 0;
    const delay = this.#crashes === 0
      ? 0
      : Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (this.#crashes - 1));
    this.#crashes++;
    log.error(
      this.name,
      `Sandbox stopped: ${reason}; restarting ${
        delay === 0 ? "now" : `in ${delay} ms`
      }`,
    );
    this.#scheduleRestart(delay);
  }

  #scheduleRestart(delay: number): void {
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = null;
      void this.#restart();
    }, delay);
  }

  /**
   * Loads the current definition in a new sandbox and serves it, checked
   * like a reloaded generation; null when the server stopped meanwhile.
   * @throws {LoadError} when it fails to load or its routes are refused
   */
  async #replace(): Promise<SandboxProcess | null> {
    const { sandbox, routes } = await this.load();
    if (this.#stopping) {
      sandbox.kill("the server is stopping");
      return null;
    }
    const problem = this.#options.check(this.def, routes);
    if (problem !== null) {
      sandbox.kill("its routes were refused");
      throw new LoadError(`its routes were refused: ${problem}`, null);
    }
    const before = this.routes;
    this.adopt(sandbox, routes);
    if (before !== null && !samePages(before, routes)) {
      this.#options.onRoutesChanged?.();
    }
    return sandbox;
  }

  async #restart(): Promise<void> {
    if (this.#stopping) return;
    this.counters.restarts++;
    try {
      const sandbox = await this.#replace();
      if (sandbox === null) return;
      log.info(this.name, `Sandbox restarted (pid ${sandbox.pid})`);
    } catch (err) {
      const why = err instanceof LoadError ? err.message : String(err);
      const delay = Math.min(
        MAX_BACKOFF_MS,
        FIRST_BACKOFF_MS * 2 ** this.#crashes,
      );
      this.#crashes++;
      this.lastProblem = why;
      log.error(
        this.name,
        `Restart failed: ${why}; trying again in ${delay} ms`,
      );
      this.#scheduleRestart(delay);
    }
  }

  /** The serving sandbox, waiting for a replacement until `deadline`. */
  #current(deadline: number): Promise<SandboxProcess | null> {
    if (this.#sandbox !== null && this.#sandbox.alive) {
      return Promise.resolve(this.#sandbox);
    }
    if (
      this.#stopping || this.#waiters.length >= this.#options.queue ||
      this.#wakeHeldBack()
    ) {
      return Promise.resolve(null);
    }
    if (this.#asleep) this.#wake();
    return new Promise((resolve) => {
      const waiter: Waiter = { resolve };
      this.#waiters.push(waiter);
      setTimeout(() => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) {
          this.#waiters.splice(i, 1);
          resolve(null);
        }
      }, Math.max(0, deadline - Date.now()));
    });
  }

  /**
   * Runs a page; never rejects. A request whose `signal` has aborted (the
   * client went away) stops counting against the queue when the queue is
   * full: it is forgotten and the sandbox told to stop answering it.
   */
  async dispatch(
    page: number,
    captures: string[],
    req: WireRequest,
    body: Uint8Array,
    routed: Routed,
    signal?: () => AbortSignal,
  ): Promise<Outcome> {
    this.counters.requests++;
    this.#lastActive = performance.now();
    const deadline = req.startTime + this.timeoutSeconds * 1000;
    // The generation the request was routed against, while it still runs:
    // page ids belong to it.
    const { generation } = routed;
    const sandbox = generation !== null && generation.alive
      ? generation
      : await this.#current(deadline);
    if (sandbox === null) {
      return this.#failed(
        503,
        "The site is not available right now",
      );
    }
    if (sandbox !== generation && routed.routes !== this.routes) {
      // Routed against the pages of a generation that no longer runs (the
      // site slept, or restarted): the one serving may number them
      // otherwise, if what it registered depends on more than its files.
      const same = samePage(routed.routes, this.routes, page);
      if (same === null) {
        return this.#failed(
          503,
          "The site registered other pages as it started; try again",
        );
      }
      page = same;
    }
    // A site that does not answer cannot make the gateway hold requests
    // without bound; those whose clients left do not count.
    if (
      sandbox.pending >= this.#options.queue && sandbox.dropGone() === 0
    ) {
      this.counters.overloaded++;
      return this.#failed(
        503,
        `The site has ${this.#options.queue} requests in flight; try again later`,
      );
    }
    const { id, reply } = sandbox.request(page, captures, req, body, signal);
    return this.#settle(sandbox, reply, deadline, () => sandbox.forget(id));
  }

  /** Renders an error page through the site's `Error` hook; null when it cannot. */
  async renderError(
    code: number,
    message: string,
    req: WireRequest,
  ): Promise<SandboxReply | null> {
    const deadline = Date.now() + Math.min(this.timeoutSeconds, 5) * 1000;
    // A sleeping site renders its own error pages too (a 404 wakes it, as
    // any request does), unless waking it has just failed (#current gives
    // null then): that error is the one being rendered.
    const sandbox = this.#asleep
      ? await this.#current(deadline)
      : this.#sandbox;
    if (sandbox === null || !sandbox.alive) return null;
    const outcome = await this.#settle(
      sandbox,
      sandbox.renderError(code, message, req),
      deadline,
      () => {},
    );
    return outcome.kind === "reply" ? outcome.reply : null;
  }

  #settle(
    sandbox: SandboxProcess,
    reply: Promise<SandboxReply>,
    deadline: number,
    forget: () => void,
  ): Promise<Outcome> {
    return new Promise<Outcome>((resolve) => {
      let settled = false;
      const timer = DEADLINES.add(deadline, () => {
        if (settled) return;
        settled = true;
        forget();
        void this.#checkStuck(sandbox, this.timeoutSeconds);
        resolve(
          this.#failed(
            503,
            `The page did not answer within ${this.timeoutSeconds} s`,
          ),
        );
      });
      reply.then(
        (result) => {
          DEADLINES.cancel(timer);
          if (settled) {
            // Answered after the client left or the time ran out.
            if (result.body instanceof ReadableStream) {
              void result.body.cancel();
            }
            return;
          }
          settled = true;
          resolve({ kind: "reply", reply: result });
        },
        (err) => {
          DEADLINES.cancel(timer);
          if (settled) return;
          settled = true;
          if (err instanceof ClientGoneError) {
            resolve({ kind: "gone" });
            return;
          }
          const crashed = err instanceof SandboxGoneError &&
            err.kind === "crash";
          resolve(this.#failed(
            crashed ? 502 : 503,
            crashed
              ? "The site failed while answering"
              : "The site was restarted while answering",
          ));
        },
      );
    });
  }

  #failed(status: 502 | 503, message: string): Outcome {
    this.counters.errors++;
    return { kind: "failed", status, message };
  }

  /**
   * The watch kept on a site's code all the time: each live generation is
   * asked whether its workers, and the Workers they started, answer; one
   * that does not within {@linkcode STUCK_AFTER_MS} is replaced, whatever
   * it was running (a page, a scheduler task, a websocket handler).
   */
  watch(): void {
    for (const sandbox of this.#live()) {
      if (sandbox.routes !== null) void this.#checkStuck(sandbox, null);
    }
  }

  /** The generations alive: the one serving and those draining. */
  #live(): SandboxProcess[] {
    return [this.#sandbox, ...this.#draining].filter((
      g,
    ): g is SandboxProcess => g !== null && g.alive);
  }

  /**
   * Replaces a sandbox whose workers do not answer. `timedOut`: a request
   * ran out of time (the log says so), or null for the regular watch.
   */
  async #checkStuck(
    sandbox: SandboxProcess,
    timedOut: number | null,
  ): Promise<void> {
    if (this.#checking.has(sandbox) || !sandbox.alive) return;
    this.#checking.add(sandbox);
    try {
      const ok = await sandbox.heartbeat(
        this.#options.heartbeatMs ?? STUCK_AFTER_MS + 1000,
      );
      if (!ok && sandbox.alive) {
        const stuck =
          `A worker, or a Worker the site started, did not answer for ${
            STUCK_AFTER_MS / 1000
          } s`;
        log.error(
          this.name,
          timedOut === null
            ? `${stuck} (stuck in synchronous code); replacing the sandbox`
            : `${stuck} after the ${timedOut} s request timeout; replacing the sandbox`,
        );
        sandbox.kill("a worker was stuck in synchronous code");
      }
    } finally {
      this.#checking.delete(sandbox);
    }
  }

  /** Stops the site: in-flight requests get up to `graceMs`. */
  /** Starts (or resumes) or pauses the site's tasks: their node changed. */
  runTasks(run: boolean): void {
    if (run) this.#sandbox?.activate();
    else this.#sandbox?.pauseTasks();
  }

  async stop(graceMs: number): Promise<void> {
    this.#stopping = true;
    this.#options.tasks?.want(this.name, false);
    if (this.#restartTimer !== null) clearTimeout(this.#restartTimer);
    for (const w of this.#waiters.splice(0)) w.resolve(null);
    const sandbox = this.#sandbox;
    this.#sandbox = null;
    const all = [...this.#draining, ...(sandbox === null ? [] : [sandbox])];
    this.#draining = [];
    for (const g of all) g.retire();
    await Promise.all(all.map((g) => g.stop(graceMs)));
  }
}
