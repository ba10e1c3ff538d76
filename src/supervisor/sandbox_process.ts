/**
 * One sandbox process as the gateway sees it: spawn it with the site's
 * permissions, speak frames to it, settle every pending request when it
 * goes away.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { FrameDecoder, FrameWriter } from "../protocol/frames.ts";
import { Budget } from "../shared/budget.ts";
import { RepeatedWarning } from "../log.ts";
import type { Placement } from "./containment.ts";
import { bwrapCommand, type Isolation } from "./isolation.ts";
import { LOCKFILE_STALE } from "./dependencies.ts";
import {
  type FromSandbox,
  OUT_OF_MEMORY_EXIT,
  parseFromSandbox,
  type ToSandbox,
  type WirePermissions,
  type WireReply,
  type WireRequest,
  type WireRoutes,
} from "../protocol/messages.ts";

/** Everything needed to start a sandbox for one generation of a site. */
export interface SandboxSpec {
  site: string;
  /** Real path of the site folder. */
  siteDir: string;
  /** file: URLs of the autorun scripts in run order. */
  scripts: string[];
  /** The host patterns the site declares (a default fetch handler answers on each). */
  hosts: string[];
  workers: number;
  /**
   * A spare: the process starts, with the site's permissions, and boots its
   * workers, but loads nothing (no site code runs) until `start()` gives it
   * the scripts; see ./spares.ts.
   */
  spare?: boolean;
  /** The workers' permissions; `read` includes the site's own folder. */
  permissions: WirePermissions;
  /** The most memory of the whole process in MiB (see ./containment.ts). */
  memory: number;
  /** The site's Deno KV file (`--unstable-kv`, and only that file), or null. */
  kv?: string | null;
  /** Extra variables for the process (only those the site may read). */
  env: Record<string, string>;
  /**
   * Bytes that may wait to be written to the sandbox before it is stopped
   * as not reading them (default 64 MiB).
   */
  maxInputBacklog?: number;
  /**
   * Where the process runs (its cgroups, see ./containment.ts); none: the
   * sandbox holds itself to its memory and lowers its priority.
   */
  placement?: Placement;
  /** `bwrap`: run under bubblewrap too (see ./isolation.ts). */
  isolate?: Isolation;
  /**
   * The site's own Deno cache folder (DENO_DIR): what Deno writes on its
   * own while it runs the site's code (TypeScript emits, V8's code cache)
   * lands there, not in the server's cache.
   */
  cacheDir: string;
  /**
   * How long a streamed reply may wait for the site's next chunk while its
   * client waits for it (the site's request timeout), in ms.
   */
  streamIdleMs: number;
  /**
   * How the site's modules resolve when it has dependencies of its own
   * (see ./dependencies.ts); absent, it runs with `deno.sandbox.jsonc` and
   * loads no packages.
   */
  modules?: SandboxModules;
  /**
   * Rewords a load failure the operator fixes by installing the site's
   * dependencies; null leaves it as it is.
   */
  explain?: (message: string, location: string | null) => string | null;
}

/** The modules of a site with dependencies of its own. */
export interface SandboxModules {
  /** The import map written for the site (its entries and the runtime's). */
  importMap: string;
  /** The site's `deno.lock`, checked with `--frozen`; null: none. */
  lockFile: string | null;
}

const DEFAULT_INPUT_BACKLOG = 64 * 1024 * 1024;

/** Messages a site sends on its own (not replies): websockets and sessions. */
export type SiteMessage = Extract<
  FromSandbox,
  { t: "wsSend" | "wsClose" | "sessionGet" | "sessionSave" }
>;

/** How a sandbox reports to its owner. */
export interface SandboxOptions {
  /** A line the site wrote to stderr. */
  onStderr: (line: string) => void;
  /**
   * A websocket send/close or a session question from the site, with the
   * bytes of its JSON header (what it cost to read).
   * @returns what handling it cost, in frames (a broadcast costs more)
   */
  onSiteMessage: (
    sandbox: SandboxProcess,
    message: SiteMessage,
    body: Uint8Array,
    headerBytes: number,
  ) => number;
}

/** A reply to a request, with its body. */
export interface SandboxReply {
  reply: WireReply;
  /** The body; for a `stream` reply, the stream its chunks arrive on. */
  body: Uint8Array | ReadableStream<Uint8Array>;
}

/** A streamed reply on its way from the sandbox to a client. */
interface Incoming {
  id: number;
  controller: ReadableStreamDefaultController<Uint8Array>;
  /** Body bytes the sandbox may send in all (credit granted so far). */
  granted: number;
  received: number;
  /** Credit not yet read by the client: what the gateway may have to hold. */
  allowance: number;
  /** The client of an open-ended stream; null for a body of known length. */
  peer: string | null;
  /**
   * Since when the site owes a chunk (credit unused, nothing arriving),
   * in ms of performance.now(); null while the client has not read what
   * came.
   */
  owedSince: number | null;
}

/** Why a sandbox stopped answering. */
export class SandboxGoneError extends Error {
  override name = "SandboxGoneError";
  /** "crash": died by itself; "killed": stopped by the gateway (timeout, reload). */
  readonly kind: "crash" | "killed";
  constructor(kind: "crash" | "killed", message: string) {
    super(message);
    this.kind = kind;
  }
}

/** A site's scripts failed to load. */
export class LoadError extends Error {
  override name = "LoadError";
  /** `autorun/ar_x.ts:3:5` when known. */
  readonly location: string | null;
  constructor(message: string, location: string | null) {
    super(message);
    this.location = location;
  }
}

const PROJECT_ROOT = new URL("../../", import.meta.url);
const MAIN = new URL("main.ts", PROJECT_ROOT);
const LOAD_TIMEOUT_MS = 30_000;
/** How long a sandbox asked to shut down has before it is killed. */
export const STOP_GRACE_MS = 2000;
const STOPPED = "it was stopped";
/** How long lines after an out-of-memory report wait for the process to die. */
const OOM_CONFIRM_MS = 1000;
const MAX_HELD_LINES = 1000;

/** Bytes of one streamed reply the gateway lets a sandbox send ahead of its client. */
export const STREAM_WINDOW = 256 * 1024;
/** Bytes of streamed replies the gateway holds for one sandbox at most. */
export const SITE_STREAM_BYTES = 16 * 1024 * 1024;
/**
 * Bytes every stream may have on its way even when its site's budget is
 * used up (by clients that do not read): no stream of a site starves. Held
 * over the budget: one of these per open stream, and a site's open streams
 * count towards its `--site-queue`.
 */
export const STREAM_FLOOR = 16 * 1024;
/**
 * Open-ended streams (a body of unknown length: an event stream, say) one
 * sandbox may have open at once, and of those, from one client address;
 * past them, such a reply is answered 503 (and cancelled in the site):
 * clients opening endless streams they never read cannot make the gateway,
 * or the site, hold more, and one address cannot take every stream of a
 * site. A large body of known length streams too, but is not counted.
 */
export const MAX_STREAMS = 256;
export const MAX_STREAMS_PER_PEER = 32;

const TOO_MANY_STREAMS = new RepeatedWarning(
  "Streamed replies over the limit were answered 503",
);
/**
 * Frames a sandbox may send on its own per second (a burst of half that).
 * A session question counts as 5 (it is answered), a websocket send as one
 * per 5 clients it reaches.
 */
export const SITE_FRAMES_PER_SECOND = 10_000;
/** Bytes of frames a sandbox may send per second (a burst of twice that). */
export const SITE_BYTES_PER_SECOND = 64 * 1024 * 1024;
/** The largest frame header once a site has loaded (a reply's headers). */
const MAX_HEADER_AFTER_LOAD = 256 * 1024;
/** Frame cost handled in one turn of the event loop before others get theirs. */
const YIELD_EVERY = 200;
/** Bytes of JSON headers a sandbox may send per second (and at once). */
export const SITE_HEADER_BYTES_PER_SECOND = 4 * 1024 * 1024;
/** Bytes of log output read from a sandbox per second (a burst of twice that). */
export const SITE_LOG_BYTES_PER_SECOND = 64 * 1024;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
/** Largest body a site may send in one frame (a reply, a websocket message). */
export const MAX_REPLY_BYTES = 64 * 1024 * 1024;

/** An id a site cannot guess (heartbeats must not be forgeable). */
function unguessableId(): number {
  const [hi = 0, lo = 0] = crypto.getRandomValues(new Uint32Array(2));
  return (hi & 0x1fffff) * 0x100000000 + lo;
}

interface Pending {
  resolve: (value: SandboxReply) => void;
  reject: (err: Error) => void;
  /** Aborted once its client has gone (asked for when the queue is full). */
  client?: () => AbortSignal;
  /** The client's address (its streams are counted). */
  peer?: string;
}

/** A request dropped because its client went away. */
export class ClientGoneError extends Error {
  override name = "ClientGoneError";
}

/**
 * In a binary made by `deno compile`, the sandbox is the binary itself run
 * with `__sandbox`: its permissions are those compiled in, so the workers'
 * permissions are the only wall (ARCHITECTURE, "Sandbox process").
 */
export const COMPILED: boolean = import.meta.url.includes("/deno-compile-");

/** Each isolate's heap limit: the site's memory shared by its workers. */
function perIsolateMiB(spec: SandboxSpec): number {
  return Math.max(16, Math.floor(spec.memory / Math.max(1, spec.workers)));
}

function heapFlags(spec: SandboxSpec): string {
  return `--max-old-space-size=${
    perIsolateMiB(spec)
  },--enable-experimental-regexp-engine`;
}

/** Builds the `deno run` arguments of a sandbox process. */
export function sandboxArgs(spec: SandboxSpec): string[] {
  const runtime = [
    new URL("src/sandbox/", PROJECT_ROOT),
    new URL("src/protocol/", PROJECT_ROOT),
    new URL("src/shared/", PROJECT_ROOT),
  ].map((u) => decodeURIComponent(u.pathname));
  const read = [...spec.permissions.read, ...runtime];
  const args = [
    "run",
    "--no-prompt",
    // Packages come from the site's own cache, as `cli install` left it:
    // nothing is fetched while a site runs.
    "--cached-only",
    ...moduleArgs(spec.modules),
    // The linear engine lets a site's route patterns be checked where they
    // are written, so the load error names the file and line.
    `--v8-flags=${heapFlags(spec)}`,
    `--allow-read=${read.join(",")}`,
  ];
  if (spec.permissions.write.length > 0) {
    args.push(`--allow-write=${spec.permissions.write.join(",")}`);
  }
  if (spec.permissions.net.length > 0) {
    args.push(`--allow-net=${spec.permissions.net.join(",")}`);
  }
  // By name only: never the server's whole environment.
  if (Array.isArray(spec.permissions.env) && spec.permissions.env.length > 0) {
    args.push(`--allow-env=${spec.permissions.env.join(",")}`);
  }
  // Deno.openKv: its file is in a folder the site may write.
  if (typeof spec.kv === "string") args.push("--unstable-kv");
  // The host thread lowers its own priority (see ./containment.ts).
  args.push("--allow-sys=setPriority");
  args.push(decodeURIComponent(MAIN.pathname), "__sandbox");
  return args;
}

/**
 * How a sandbox resolves modules. A site without dependencies of its own
 * loads its own files and node: built-ins only (`--no-npm`, `--no-remote`),
 * with `deno.sandbox.jsonc`. A site with some gets its own import map, with
 * `--no-config`: a configuration outside the project that maps into it
 * makes Deno 2.9.6 take the server for a linked package, write its name,
 * version and dependencies into the site's lockfile (so any upgrade of the
 * server would make every site's lockfile out of date) and install the
 * server's packages into the site's cache. The two settings of
 * `deno.sandbox.jsonc` beyond its map are given as flags.
 */
function moduleArgs(modules: SandboxModules | undefined): string[] {
  if (modules === undefined) {
    return [
      "--no-npm",
      "--no-remote",
      "--no-lock",
      `--config=${
        decodeURIComponent(new URL("deno.sandbox.jsonc", PROJECT_ROOT).pathname)
      }`,
    ];
  }
  return [
    "--no-config",
    `--import-map=${modules.importMap}`,
    "--node-modules-dir=none",
    "--unstable-worker-options",
    ...(modules.lockFile === null
      ? ["--no-lock"]
      : [`--lock=${modules.lockFile}`, "--frozen"]),
  ];
}

/** A running sandbox process. */
export class SandboxProcess {
  readonly spec: SandboxSpec;
  /** Resolves with the site's routes once loaded; rejects with LoadError. */
  readonly loaded: Promise<WireRoutes>;
  /** Resolves when the process has exited, with a description of why. */
  readonly exited: Promise<string>;
  /** What this generation registered, once loaded. */
  routes: WireRoutes | null = null;
  /** Resident memory of the process as it last reported it. */
  rssBytes: number | null = null;
  #child: Deno.ChildProcess;
  #placement: Placement | null;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #out: FrameWriter;
  #outOfMemory = false;
  /** Lines held after an out-of-memory report, until it is confirmed. */
  #oomHeld: string[] | null = null;
  #oomTimer: ReturnType<typeof setTimeout> | undefined;
  #stderrDone: Promise<void>;
  #pending = new Map<number, Pending>();
  #streams = new Map<number, Incoming>();
  #idleTimer: ReturnType<typeof setInterval> | undefined;
  /** Open-ended streams, in all and per client address. */
  #endless = 0;
  #streamsByPeer = new Map<string, number>();
  #decoder: FrameDecoder | null = null;
  /** Credit outstanding over every stream: the most the gateway holds. */
  #held = 0;
  #heartbeats = new Map<number, (ok: boolean) => void>();
  #nextId = 1;
  #holds = 0;
  #gone: SandboxGoneError | null = null;
  #killReason: string | null = null;
  #killKind: "killed" | "crash" = "killed";
  /** SIGKILL was sent. */
  #signalled = false;
  #onLoaded!: (routes: WireRoutes) => void;
  #onLoadFailed!: (err: Error) => void;
  #stderrLine: (line: string) => void;
  #onSiteMessage: SandboxOptions["onSiteMessage"];
  #clients = 0;
  #retired = false;
  /** Deno refused the site's lockfile as out of date (see #stderrText). */
  #lockfileStale = false;

  constructor(spec: SandboxSpec, options: SandboxOptions) {
    this.spec = spec;
    this.#stderrLine = options.onStderr;
    this.#onSiteMessage = options.onSiteMessage;
    this.loaded = new Promise((resolve, reject) => {
      this.#onLoaded = resolve;
      this.#onLoadFailed = reject;
    });
    this.loaded.catch(() => {}); // observed by whoever awaits it
    this.#placement = spec.placement ?? null;
    const deno = Deno.execPath();
    const args = COMPILED ? ["__sandbox"] : sandboxArgs(spec);
    // Under bubblewrap, if asked; in its cgroups, where there are some.
    const isolated = spec.isolate === "bwrap"
      ? bwrapCommand({
        exec: deno,
        projectDir: decodeURIComponent(PROJECT_ROOT.pathname),
        siteDir: spec.siteDir,
        write: spec.permissions.write,
        cacheDir: spec.cacheDir,
        importMap: spec.modules?.importMap ?? null,
        net: spec.permissions.net.length > 0,
      }, args)
      : { exec: deno, args };
    const command = this.#placement?.command(isolated.exec, isolated.args) ??
      isolated;
    this.#child = new Deno.Command(command.exec, {
      args: command.args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      clearEnv: true,
      // Relative paths in site code resolve inside the site, as setFile's do.
      cwd: spec.siteDir,
      env: {
        ...inheritedEnv(),
        ...spec.env,
        DENO_DIR: spec.cacheDir,
        NO_COLOR: "1",
        // A compiled binary takes no --v8-flags on its command line.
        ...(COMPILED ? { DENO_V8_FLAGS: heapFlags(spec) } : {}),
      },
    }).spawn();
    const writer = this.#child.stdin.getWriter();
    this.#stdin = writer;
    // A sandbox that stops reading (a worker stuck while websocket messages
    // keep coming) must not grow the gateway's memory.
    const backlog = spec.maxInputBacklog ?? DEFAULT_INPUT_BACKLOG;
    this.#out = new FrameWriter(
      (bytes) => writer.write(bytes),
      // The process has ended (or is ending): its exit status says why,
      // so no reason of the gateway's may cover it.
      () => this.#cut(),
      {
        bytes: backlog,
        onOver: () =>
          this.kill(
            `it stopped reading its input (more than ${
              Math.round(backlog / 1048576)
            } MiB waiting)`,
          ),
      },
      // Frames for the sandbox wait for the end of a turn that queues none.
      setImmediate,
    );
    const watch = this.#placement === null || this.#placement.watchMemory;
    this.#send({
      t: "init",
      site: spec.site,
      siteDir: spec.siteDir,
      scripts: spec.spare ? null : spec.scripts,
      hosts: spec.hosts,
      workers: spec.workers,
      permissions: spec.permissions,
      kv: spec.kv ?? null,
      limits: {
        memoryBytes: watch ? spec.memory * 1024 * 1024 : null,
        nice: this.#placement === null || this.#placement.nice,
      },
    });
    if (!spec.spare) this.#timeLoad();
    this.#stderrDone = this.#readStderr();
    this.exited = this.#readFrames().then(() => this.#reap());
  }

  #timeLoad(): void {
    const loadTimer = setTimeout(
      () => this.kill(`it did not load within ${LOAD_TIMEOUT_MS / 1000} s`),
      LOAD_TIMEOUT_MS,
    );
    this.loaded.then(
      () => clearTimeout(loadTimer),
      () => clearTimeout(loadTimer),
    );
  }

  #started = false;

  /**
   * A spare (`spec.spare`) becomes its site's next generation: its workers,
   * booted with the site's permissions and no site code, load these
   * scripts. Once only.
   */
  start(scripts: string[], hosts: string[]): void {
    if (!this.spec.spare || this.#started) {
      throw new Error("Only a spare starts, and only once");
    }
    this.#started = true;
    this.#send({ t: "load", scripts, hosts });
    this.#timeLoad();
  }

  /** Requests sent to the sandbox and not answered yet. */
  get pending(): number {
    // A reply still streaming holds its place: the site queue bounds them.
    return this.#pending.size + this.#streams.size;
  }

  /** Requests in flight, and requests routed here that are on their way. */
  get inflight(): number {
    return this.#pending.size + this.#holds + this.#streams.size;
  }

  /**
   * Keeps this generation from stopping while a request routed to it is
   * still reading its body; pair with `release`.
   */
  hold(): void {
    this.#holds++;
  }

  /** Undoes one `hold`. */
  release(): void {
    this.#holds = Math.max(0, this.#holds - 1);
  }

  /** This generation now serves the site: start its scheduler tasks. */
  activate(): void {
    this.#send({ t: "activate" });
  }

  /** Another node runs the site's tasks now: they stop at their next sleep. */
  pauseTasks(): void {
    if (this.alive) this.#send({ t: "pauseTasks" });
  }

  /** Runs the site's `ReloadScripts` hook (a new generation is loading). */
  notifyReloading(): void {
    if (this.alive) this.#send({ t: "reloading" });
  }

  /** The process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /**
   * Memory the process holds: as its cgroup counts it where it has one,
   * else as the sandbox last reported its resident memory.
   */
  memoryBytes(): number | null {
    if (this.#gone !== null) return null;
    return this.#placement?.memoryBytes() ?? this.rssBytes;
  }

  /** False once the process is gone or being killed. */
  get alive(): boolean {
    return this.#gone === null && this.#killReason === null;
  }

  #send(message: ToSandbox, body?: Uint8Array): void {
    this.#out.send(message, body);
  }

  /** Sends a websocket event or a session answer to the site. */
  post(
    message: Extract<
      ToSandbox,
      { t: "wsOpen" | "wsMessage" | "wsClose" | "sessionResult" }
    >,
    body?: Uint8Array,
  ): void {
    if (this.#gone === null) this.#send(message, body);
  }

  /** Bytes waiting to be written to the sandbox (it reads more slowly). */
  get backlog(): number {
    return this.#out.backlog;
  }

  /** Websocket clients held by this generation: it stays while they are connected. */
  get clients(): number {
    return this.#clients;
  }

  /** Stops waiting for websocket clients: `stop` goes on and ends it. */
  retire(): void {
    this.#retired = true;
  }

  /** True once retired (its websocket clients are told the site reloaded). */
  get retired(): boolean {
    return this.#retired;
  }

  /** Counts a websocket client in (`+1`) or out (`-1`). */
  countClient(delta: 1 | -1): void {
    this.#clients = Math.max(0, this.#clients + delta);
  }

  /** Runs page `page` of the site for a request. */
  request(
    page: number,
    captures: string[],
    req: WireRequest,
    body: Uint8Array,
    client?: () => AbortSignal,
  ): { id: number; reply: Promise<SandboxReply> } {
    const id = this.#nextId++;
    const reply = this.#expect(id);
    const pending = this.#pending.get(id);
    if (pending !== undefined) {
      pending.peer = req.peer;
      if (client !== undefined) pending.client = client;
    }
    this.#send({ t: "request", id, page, captures, req }, body);
    return { id, reply };
  }

  /**
   * Drops the requests whose clients have gone (their replies reject with
   * ClientGoneError, and the sandbox is told to stop answering them).
   * Called when the site's queue is full: checking each request's client
   * as it goes would cost every request an event listener.
   * @returns how many were dropped
   */
  dropGone(): number {
    let dropped = 0;
    for (const [id, pending] of this.#pending) {
      if (pending.client?.().aborted !== true) continue;
      this.#pending.delete(id);
      if (this.#gone === null) this.#send({ t: "cancel", id });
      pending.reject(new ClientGoneError("The client went away"));
      dropped++;
    }
    return dropped;
  }

  /** Renders an error through the site's `Error` hook. */
  renderError(
    code: number,
    message: string,
    req: WireRequest,
  ): Promise<SandboxReply> {
    const id = this.#nextId++;
    const reply = this.#expect(id);
    this.#send({ t: "error", id, code, message, req });
    return reply;
  }

  /** Forgets a request the gateway already answered (e.g. timed out). */
  forget(id: number): void {
    this.#pending.delete(id);
  }

  /** Forgets a request whose client went away, and tells the sandbox. */
  #expect(id: number): Promise<SandboxReply> {
    if (this.#gone !== null) return Promise.reject(this.#gone);
    return new Promise((resolve, reject) =>
      this.#pending.set(id, { resolve, reject })
    );
  }

  /**
   * Asks whether every worker still answers; false when one is stuck or the
   * process does not answer within `timeoutMs`.
   */
  heartbeat(timeoutMs: number): Promise<boolean> {
    if (!this.alive) return Promise.resolve(false);
    const id = unguessableId();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#heartbeats.delete(id);
        resolve(false);
      }, timeoutMs);
      this.#heartbeats.set(id, (ok) => {
        clearTimeout(timer);
        this.#heartbeats.delete(id);
        resolve(ok);
      });
      this.#send({ t: "heartbeat", id });
    });
  }

  /**
   * Kills the process with SIGKILL, whatever its code is doing (a stop in
   * progress included); pending requests fail with kind "killed".
   */
  kill(reason: string, kind: "killed" | "crash" = "killed"): void {
    if (this.#gone !== null || this.#signalled) return;
    this.#signalled = true;
    // A stop asked for first is only the beginning of the story.
    if (this.#killReason === null || this.#killReason === STOPPED) {
      this.#killReason = reason;
      this.#killKind = kind;
    }
    this.#cut();
  }

  /**
   * SIGKILL, giving no reason of its own (for a process whose input broke,
   * or after `kill` has recorded one).
   */
  #cut(): void {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already exited: #reap reports it.
    }
  }

  /** Asks the sandbox to stop after its pending requests; kills it after `graceMs`. */
  async stop(graceMs: number): Promise<void> {
    const deadline = Date.now() + graceMs;
    while (
      this.inflight > 0 && Date.now() < deadline && this.#gone === null
    ) {
      await new Promise((r) => setTimeout(r, 20));
    }
    // Websocket clients keep an old generation until they close (the runner
    // retires generations beyond the last few).
    while (this.#clients > 0 && this.#gone === null && !this.#retired) {
      await new Promise((r) => setTimeout(r, 100));
    }
    if (this.#gone === null) {
      this.#killReason ??= STOPPED;
      this.#send({ t: "shutdown" });
      const timer = setTimeout(
        () => this.kill(`it did not stop within ${STOP_GRACE_MS} ms`),
        STOP_GRACE_MS,
      );
      await this.exited;
      clearTimeout(timer);
    }
  }

  async #readFrames(): Promise<void> {
    // A reply larger than this is a protocol violation: the gateway holds
    // replies in memory, and a site's "memory" limit does not cover it.
    const decoder = new FrameDecoder({ maxBodyBytes: MAX_REPLY_BYTES });
    this.#decoder = decoder;
    // What a site sends on its own (not answers to the gateway) is read at a
    // bounded rate: over it, the gateway stops reading, the pipe fills and
    // the site's own writes wait. Refusing costs the gateway nothing.
    // Small bursts: what one burst costs is a stall for everyone else.
    const frames = new Budget({
      perSecond: SITE_FRAMES_PER_SECOND,
      burst: SITE_FRAMES_PER_SECOND / 2,
    });
    const bytes = new Budget({ perSecond: SITE_BYTES_PER_SECOND });
    // JSON costs far more to parse than bodies cost to copy.
    const json = new Budget({
      perSecond: SITE_HEADER_BYTES_PER_SECOND,
      burst: SITE_HEADER_BYTES_PER_SECOND,
    });
    try {
      let sinceYield = 0;
      for await (const chunk of this.#child.stdout) {
        let headerBytes = 0;
        for (const frame of decoder.push(chunk)) {
          const msg = parseFromSandbox(frame.header);
          const cost = this.#dispatch(msg, frame.body, frame.headerBytes);
          headerBytes += frame.headerBytes;
          // Answers cost nothing. Over budget, the site waits; and a long
          // run of frames gives the other sites a turn now and then.
          if (cost === 0) continue;
          const pause = frames.spend(cost);
          sinceYield += cost;
          if (pause > 0 || sinceYield > YIELD_EVERY) {
            sinceYield = 0;
            await delay(pause);
          }
        }
        const pause = Math.max(
          bytes.spend(chunk.length),
          json.spend(headerBytes),
        );
        if (pause > 0) await delay(pause);
      }
    } catch (err) {
      // The site misbehaved: its requests get 502, as for a crash.
      this.kill(`it broke the protocol: ${(err as Error).message}`, "crash");
      return;
    }
    try {
      decoder.end();
    } catch (err) {
      // Output cut off inside a frame: a process killed while it wrote (out
      // of memory, say), whose exit says why; one still running broke the
      // protocol.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const exited = await Promise.race([
        this.#child.status.then(() => true),
        new Promise<false>((r) => timer = setTimeout(() => r(false), 1000)),
      ]);
      clearTimeout(timer);
      if (!exited) {
        this.kill(`it broke the protocol: ${(err as Error).message}`, "crash");
      }
    }
  }

  /**
   * Acts on one frame.
   * @returns what it costs the site's frame budget: nothing for an answer to
   * something the gateway asked, more for what costs the gateway more
   */
  #dispatch(msg: FromSandbox, body: Uint8Array, headerBytes: number): number {
    switch (msg.t) {
      case "loaded":
        if (this.routes !== null) return 1;
        this.routes = msg.routes;
        // Loaded: no frame needs a large header any more (the route table
        // was the one). A reply's headers are at most 64 KiB, JSON-escaped.
        if (this.#decoder !== null) {
          this.#decoder.maxHeaderBytes = MAX_HEADER_AFTER_LOAD;
        }
        this.#onLoaded(msg.routes);
        return 0;
      case "loadFailed":
        this.#onLoadFailed(this.#loadError(msg.message, msg.location));
        return this.routes === null ? 0 : 1;
      case "reply": {
        const pending = this.#pending.get(msg.id);
        if (pending === undefined) return 1;
        this.#pending.delete(msg.id);
        const endless = msg.reply.kind === "stream" &&
          msg.reply.length === null;
        const over = endless ? this.#overStreams(pending.peer ?? "") : null;
        if (over !== null) {
          TOO_MANY_STREAMS.note(this.spec.site, over);
          this.#send({ t: "cancel", id: msg.id });
          pending.resolve({
            reply: { kind: "error", code: 503, message: over },
            body: new Uint8Array(0),
          });
          return 0;
        }
        pending.resolve({
          reply: msg.reply,
          body: msg.reply.kind === "stream"
            ? this.#openStream(msg.id, endless ? pending.peer ?? "" : null)
            : body,
        });
        return 0;
      }
      case "chunk":
        // Every chunk counts, even of a reply that was asked for: a stream
        // of empty chunks must not be free.
        this.#chunk(msg, body);
        return 1;
      case "heartbeat": {
        const answer = this.#heartbeats.get(msg.id);
        answer?.(msg.ok);
        return answer === undefined ? 1 : 0;
      }
      case "usage":
        this.rssBytes = msg.rss;
        return 1;
      case "wsSend":
      case "wsClose":
      case "sessionGet":
      case "sessionSave":
        return Math.max(1, this.#onSiteMessage(this, msg, body, headerBytes));
      default:
        return msg satisfies never;
    }
  }

  /** Why one more open-ended stream for `peer` is refused, or null. */
  #overStreams(peer: string): string | null {
    if (this.#endless >= MAX_STREAMS) {
      return `The site has ${MAX_STREAMS} streamed replies open; try again later`;
    }
    if ((this.#streamsByPeer.get(peer) ?? 0) >= MAX_STREAMS_PER_PEER) {
      return `Your address has ${MAX_STREAMS_PER_PEER} streamed replies of this site open; close one and try again`;
    }
    return null;
  }

  /**
   * The stream a `stream` reply's chunks arrive on. The sandbox sends only
   * within credit, granted as the client reads: up to STREAM_WINDOW ahead
   * per reply, and SITE_STREAM_BYTES over all of this sandbox's replies
   * (past it, STREAM_FLOOR each). `peer`: the client of an open-ended
   * stream (counted); null for a body of known length.
   */
  #openStream(id: number, peer: string | null): ReadableStream<Uint8Array> {
    let state: Incoming;
    return new ReadableStream<Uint8Array>({
      start: (controller) => {
        state = {
          id,
          controller,
          granted: 0,
          received: 0,
          allowance: 0,
          owedSince: performance.now(),
          peer,
        };
        this.#streams.set(id, state);
        if (peer !== null) {
          this.#endless++;
          this.#streamsByPeer.set(
            peer,
            (this.#streamsByPeer.get(peer) ?? 0) + 1,
          );
        }
        this.#watchIdle();
        this.#grant(state);
      },
      pull: () => this.#grant(state),
      cancel: () => {
        if (!this.#streams.has(id)) return;
        this.#closeStream(state);
        if (this.#gone === null) this.#send({ t: "cancel", id });
      },
    }, new ByteLengthQueuingStrategy({ highWaterMark: STREAM_WINDOW }));
  }

  /** Grants a stream credit up to its window, as far as the site's budget allows. */
  #grant(state: Incoming): void {
    if (!this.#streams.has(state.id)) return;
    const queued = STREAM_WINDOW - (state.controller.desiredSize ?? 0);
    const consumed = state.received - Math.max(0, queued);
    const allowance = state.granted - consumed;
    this.#held += allowance - state.allowance;
    state.allowance = allowance;
    let grant = Math.min(
      STREAM_WINDOW - allowance,
      SITE_STREAM_BYTES - this.#held,
    );
    if (allowance < STREAM_FLOOR) {
      grant = Math.max(grant, STREAM_FLOOR - allowance);
    }
    // Credit goes out in pieces of a quarter window at least; a stream with
    // none left always gets its floor, so none waits for others to close.
    if (grant < STREAM_WINDOW / 4 && allowance > 0) return;
    if (grant <= 0) return;
    state.granted += grant;
    state.allowance += grant;
    this.#held += grant;
    this.#send({ t: "more", id: state.id, bytes: grant });
  }

  /**
   * A stream whose site sends nothing for `streamIdleMs` while its client
   * waits is broken off (the client's connection is cut) and cancelled in
   * the site: the whole-request timeout ends with the reply's head, and
   * this is what bounds a stream after it. Checked once a second while
   * streams are open.
   */
  #watchIdle(): void {
    if (this.#idleTimer !== undefined) return;
    this.#idleTimer = setInterval(() => {
      const now = performance.now();
      for (const state of [...this.#streams.values()]) {
        // Waiting for its client to read, the site owes nothing.
        const waiting = state.received === state.granted ||
          (state.controller.desiredSize ?? 0) <= 0;
        if (waiting) {
          state.owedSince = null;
          continue;
        }
        state.owedSince ??= now;
        if (now - state.owedSince < this.spec.streamIdleMs) continue;
        this.#stderrLine(
          `A streamed reply sent nothing for ${
            Math.round(this.spec.streamIdleMs / 1000)
          } s while its client waited; it was cut off (send a comment line now and then to keep a quiet stream open)`,
        );
        this.#closeStream(state);
        state.controller.error(new Error("The site's stream went idle"));
        if (this.#gone === null) this.#send({ t: "cancel", id: state.id });
      }
      if (this.#streams.size === 0) {
        clearInterval(this.#idleTimer);
        this.#idleTimer = undefined;
      }
    }, 1000);
  }

  /** A chunk of a streamed reply (dropped when nothing asked for it). */
  #chunk(msg: Extract<FromSandbox, { t: "chunk" }>, body: Uint8Array): void {
    const state = this.#streams.get(msg.id);
    if (state === undefined) return;
    state.owedSince = null;
    state.received += body.length;
    if (state.received > state.granted) {
      this.kill("it sent more of a reply than the gateway asked for", "crash");
      return;
    }
    if (body.length > 0) state.controller.enqueue(body);
    if (msg.end) {
      this.#closeStream(state);
      if (msg.failed) {
        state.controller.error(new Error("The site's reply broke off"));
      } else state.controller.close();
    }
  }

  #closeStream(state: Incoming): void {
    if (!this.#streams.delete(state.id)) return;
    if (state.peer !== null) {
      this.#endless--;
      const left = (this.#streamsByPeer.get(state.peer) ?? 1) - 1;
      if (left > 0) this.#streamsByPeer.set(state.peer, left);
      else this.#streamsByPeer.delete(state.peer);
    }
    this.#held -= state.allowance;
    state.allowance = 0;
  }

  async #readStderr(): Promise<void> {
    const lines = this.#child.stderr.pipeThrough(new TextDecoderStream());
    // Over this rate the gateway stops reading: the site's writes wait.
    const budget = new Budget({ perSecond: SITE_LOG_BYTES_PER_SECOND });
    let buffer = "";
    try {
      for await (const text of lines) {
        buffer += text;
        let nl: number;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          this.#stderrText(buffer.slice(0, nl));
          buffer = buffer.slice(nl + 1);
        }
        if (buffer.length > 16384) {
          this.#stderrText(buffer);
          buffer = "";
        }
        const pause = budget.spend(text.length);
        if (pause > 0) await delay(pause);
      }
    } catch {
      // The pipe closed with the process.
    }
    if (buffer.length > 0) this.#stderrText(buffer);
  }

  /**
   * One line of the site's stderr. V8's out-of-memory report is a screenful
   * of internals, which the exit reason says in one line instead; but a site
   * can print the same words, so the lines after them are only held back
   * until the process exits (then dropped) or {@linkcode OOM_CONFIRM_MS}
   * passes with it still running (then logged).
   */
  #stderrText(line: string): void {
    // Deno refuses to start with a lockfile that does not match the site's
    // imports: the load failure says what to run, not Deno's diff and its
    // advice to update the lockfile, which the sandbox may not write.
    if (this.#lockfileStale) return;
    if (
      this.routes === null && this.spec.modules?.lockFile != null &&
      line.startsWith(`error: ${LOCKFILE_STALE}`)
    ) {
      this.#lockfileStale = true;
      return;
    }
    if (this.#oomHeld !== null) {
      if (this.#oomHeld.length < MAX_HELD_LINES) this.#oomHeld.push(line);
      return;
    }
    if (
      line.includes("Fatal JavaScript out of memory") && this.#gone === null
    ) {
      this.#oomHeld = [line];
      this.#oomTimer = setTimeout(() => this.#releaseHeld(), OOM_CONFIRM_MS);
      return;
    }
    this.#stderrLine(line);
  }

  /** A load failure, reworded when installing the dependencies fixes it. */
  #loadError(message: string, location: string | null): LoadError {
    const explained = this.spec.explain?.(message, location) ?? null;
    return explained === null
      ? new LoadError(message, location)
      : new LoadError(explained, null);
  }

  /** Logs the lines held after an out-of-memory report that was not one. */
  #releaseHeld(): void {
    const held = this.#oomHeld ?? [];
    this.#oomHeld = null;
    clearTimeout(this.#oomTimer);
    for (const line of held) this.#stderrLine(line);
  }

  async #reap(): Promise<string> {
    const status = await this.#child.status;
    // Its last lines first (the pipe closes with the process).
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#stderrDone,
      new Promise((r) => timer = setTimeout(r, 500)),
    ]);
    clearTimeout(timer);
    // The kernel stopped it at its cgroup's memory limit, or it stopped
    // itself at its limit (where no cgroup holds it).
    // That is the reason whatever the gateway was about to do: a check on a
    // worker or a frame for the dying process comes a moment too late.
    if (
      this.#placement?.outOfMemory() === true ||
      status.code === OUT_OF_MEMORY_EXIT
    ) {
      this.#outOfMemory = true;
      this.#killReason = null;
    }
    this.#placement?.release();
    // Held lines are dropped only when the process really died of it.
    if (this.#oomHeld !== null) {
      if (status.success) this.#releaseHeld();
      else {
        this.#outOfMemory = true;
        clearTimeout(this.#oomTimer);
        this.#oomHeld = null;
      }
    }
    const how = status.signal !== null
      ? `was killed by ${status.signal}`
      : `exited with code ${status.code}`;
    const reason = this.#killReason !== null
      ? `it was killed because ${this.#killReason}`
      : this.#outOfMemory
      ? `it ran out of memory (its "memory" is ${this.spec.memory} MiB)`
      : status.code === 0
      ? "it exited"
      : `it ${how}`;
    const kind = this.#killReason !== null ? this.#killKind : "crash";
    this.#gone = new SandboxGoneError(
      kind,
      `Sandbox of site "${this.spec.site}" stopped: ${reason}`,
    );
    this.#onLoadFailed(
      this.#lockfileStale
        ? this.#loadError(LOCKFILE_STALE, null)
        : new LoadError(
          `The sandbox stopped before the site loaded: ${reason}`,
          null,
        ),
    );
    for (const p of this.#pending.values()) p.reject(this.#gone);
    this.#pending.clear();
    clearInterval(this.#idleTimer);
    this.#idleTimer = undefined;
    for (const state of [...this.#streams.values()]) {
      this.#closeStream(state);
      try {
        state.controller.error(this.#gone);
      } catch {
        // Already closed by its reader.
      }
    }
    for (const resolve of this.#heartbeats.values()) resolve(false);
    this.#heartbeats.clear();
    await this.#stdin.close().catch(() => {});
    return reason;
  }
}

/** What a sandbox inherits from the gateway's environment: where Deno's cache is. */
function inheritedEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (
    const name of [
      "HOME",
      "DENO_DIR",
      "XDG_CACHE_HOME",
      "PATH",
      "TZ",
      "LANG",
      // Where packages were installed from names their folder in the cache.
      "NPM_CONFIG_REGISTRY",
    ]
  ) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}
