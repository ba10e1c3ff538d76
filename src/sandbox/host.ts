/**
 * The sandbox process of one site: reads frames from the gateway on stdin,
 * keeps the site's worker pool, writes frames back on stdout.
 *
 * @module
 */

// deno-lint-ignore-file no-console -- a sandbox's stderr is its site's log

import {
  concat,
  encodeFrame,
  FrameDecoder,
  FrameWriter,
} from "../protocol/frames.ts";
import { SharedOut } from "./out.ts";
import { RUNTIME_FILES } from "./runtime_files.ts";
import { after, every } from "./timers.ts";
import {
  type FromSandbox,
  type FromWorker,
  MAX_WORKERS,
  OUT_OF_MEMORY_EXIT,
  parseFromWorker,
  parseToSandbox,
  type SandboxSelfLimits,
  STUCK_AFTER_MS,
  type ToSandbox,
  type ToWorker,
  type WirePermissions,
  type WireRoutes,
} from "../protocol/messages.ts";

const DECODER = new TextDecoder();

/** How often the sandbox reports its memory to the gateway. */
const USAGE_EVERY_MS = 5000;

/** How often a sandbox checks that its gateway is still there. */
const ORPHAN_CHECK_MS = 1000;

/** How long a worker may take to answer a ping before it counts as stuck. */
const PING_TIMEOUT_MS = STUCK_AFTER_MS;

interface PoolWorker {
  worker: Worker;
  /** Websocket clients this worker holds. */
  clients: number;
  index: number;
}

type InitMessage = Extract<ToSandbox, { t: "init" }>;
/** What a pool loads: from init, or for a spare from its `load` frame. */
type Load = Pick<Extract<ToSandbox, { t: "load" }>, "scripts" | "hosts">;

/**
 * Runs the sandbox until the gateway closes stdin or says `shutdown`.
 * @returns the exit code
 */
export async function runSandbox(): Promise<number> {
  // A terminal's Ctrl-C reaches the whole process group: the gateway decides
  // when a sandbox stops (a shutdown frame, or its stdin closing).
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    Deno.addSignalListener(signal, () => {});
  }
  // Whatever else it is doing, a sandbox never outlives its gateway: nobody
  // is left to read what it writes (seen: a pool sandbox left behind).
  const gateway = Deno.ppid;
  every(ORPHAN_CHECK_MS, () => {
    if (Deno.ppid !== gateway) Deno.exit(0);
  });
  // Stdout is shared with the workers (see ./out.ts).
  const shared = new SharedOut(MAX_WORKERS);
  const out = new FrameWriter(
    (bytes) => Promise.resolve(shared.write(bytes)),
    () => Deno.exit(70),
  );
  const decoder = new FrameDecoder({ maxBodyBytes: 1024 * 1024 * 1024 });
  // Plain reads, not a stream: a stream reads ahead, and in direct mode the
  // worker must get every byte after the init frame.
  const buffer = new Uint8Array(64 * 1024);
  let pool: Pool | null = null;
  try {
    while (true) {
      const n = await Deno.stdin.read(buffer);
      if (n === null) break;
      const frames = decoder.push(buffer.slice(0, n));
      for (let i = 0; i < frames.length; i++) {
        const frame = frames[i]!;
        const msg = parseToSandbox(frame.header);
        let load: Load | null = null;
        if (msg.t === "init") {
          if (pool !== null) throw new Error("Sandbox received a second init");
          if (msg.workers > MAX_WORKERS) {
            throw new Error(
              `Sandbox asked for more than ${MAX_WORKERS} workers`,
            );
          }
          await lowerPriority(msg.limits);
          watchMemory(msg.limits);
          pool = new Pool(msg, out, shared);
          // A spare's workers start now, and wait for `load`.
          pool.boot();
          if (msg.scripts !== null) {
            load = { scripts: msg.scripts, hosts: msg.hosts };
          }
        } else if (msg.t === "load") {
          if (pool === null || pool.loading) {
            throw new Error("Sandbox received load before init, or twice");
          }
          load = { scripts: msg.scripts, hosts: msg.hosts };
        }
        if (load !== null && pool !== null) {
          if (pool.direct) {
            // One worker: it reads the gateway's frames itself, which saves
            // a thread hop per request. What was read past init goes first.
            const rest = [
              ...frames.slice(i + 1).map((f) => encodeFrame(f.header, f.body)),
              decoder.takeRest(),
            ];
            void pool.start(load, concat(rest));
            // The worker may be stuck in site code and never see stdin end:
            // if the gateway dies, this sandbox must not outlive it.
            const parent = Deno.ppid;
            const orphaned = new Promise<{ failed: boolean }>((resolve) => {
              every(1000, () => {
                if (Deno.ppid !== parent) resolve({ failed: false });
              });
            });
            const { failed } = await Promise.race([pool.ended, orphaned]);
            await out.drained();
            pool.stop();
            return failed ? 70 : 0;
          }
          void pool.start(load, null);
        } else if (msg.t === "init" || msg.t === "load") {
          // A spare: nothing to load yet.
        } else if (msg.t === "shutdown") {
          // Drain first: a worker stopped mid-write would keep the lock.
          await out.drained();
          pool?.stop();
          return 0;
        } else if (pool === null || !pool.loading) {
          throw new Error(`Sandbox received "${msg.t}" before it loaded`);
        } else {
          pool.handle(msg, frame.body);
        }
      }
    }
  } catch (err) {
    console.error(`Sandbox protocol failure: ${(err as Error).message}`);
    return 70;
  }
  // The gateway went away: nobody is left to answer.
  pool?.stop();
  return 0;
}

/**
 * The sandbox checks its resident memory (where no cgroup does) sooner the
 * closer it is to its limit: as if memory could grow by this many bytes a
 * millisecond, within these bounds.
 */
const GROWTH_PER_MS = 1024 * 1024;
const MEMORY_CHECK_MS = { least: 5, most: 250 };

/**
 * Where no cgroup holds this sandbox's CPU: lowers its priority before any
 * worker starts (they inherit it).
 */
async function lowerPriority(limits: SandboxSelfLimits): Promise<void> {
  if (!limits.nice) return;
  try {
    // Loaded only here: Node's layer costs a sandbox start 10-15 ms.
    const { setPriority } = await import("node:os");
    setPriority(10);
  } catch (err) {
    console.error(
      `The sandbox could not lower its priority: ${(err as Error).message}`,
    );
  }
}

/**
 * Where no cgroup holds this sandbox's memory: ends the process when its
 * resident memory (every worker's heap, ArrayBuffers and Wasm memory) is
 * over the limit. This thread runs no site code, so a site cannot stop it;
 * it starts before any site code is loaded.
 */
function watchMemory(limits: SandboxSelfLimits): void {
  const limit = limits.memoryBytes;
  if (limit === null) return;
  // A check costs about 10 µs.
  const check = () => {
    const rss = Deno.memoryUsage().rss;
    if (rss > limit) {
      console.error(
        `Out of memory: ${
          Math.round(rss / 1048576)
        } MiB resident, over the site's "memory" of ${
          Math.round(limit / 1048576)
        } MiB; the sandbox stops`,
      );
      Deno.exit(OUT_OF_MEMORY_EXIT);
    }
    const { least, most } = MEMORY_CHECK_MS;
    after(
      Math.min(most, Math.max(least, (limit - rss) / GROWTH_PER_MS)),
      check,
    );
  };
  check();
}

class Pool {
  #init: InitMessage;
  #out: FrameWriter;
  #shared: SharedOut;
  #workers: PoolWorker[] = [];
  #pings = new Map<
    number,
    { worker: PoolWorker; answer: (ok: boolean) => void }
  >();
  /** The count of nested workers running, shared by the workers. */
  #nested = new SharedArrayBuffer(4);

  constructor(init: InitMessage, out: FrameWriter, shared: SharedOut) {
    this.#init = init;
    this.#out = out;
    this.#shared = shared;
    this.ended = new Promise((resolve) => this.#onEnded = resolve);
  }

  #send(message: FromSandbox, body?: Uint8Array): void {
    this.#out.send(message, body);
  }

  /** One worker, which reads the gateway's frames from stdin itself. */
  get direct(): boolean {
    return this.#init.workers <= 1;
  }

  /** Settles when a direct worker's stdin ends (see `start`). */
  readonly ended: Promise<{ shutdown: boolean; failed: boolean }>;
  #onEnded!: (how: { shutdown: boolean; failed: boolean }) => void;

  #bootError: Error | null = null;

  /**
   * Starts the workers: they run the runtime's code, and no site code until
   * `start` tells them what to load.
   */
  boot(): void {
    const { workers, permissions } = this.#init;
    try {
      for (let i = 0; i < Math.max(1, workers); i++) {
        this.#workers.push(this.#spawn(i, permissions));
      }
    } catch (err) {
      this.#bootError = err as Error;
    }
  }

  /** True once `start` has been called: a pool loads once. */
  loading = false;

  /**
   * Loads the site's scripts in the booted workers. `direct`: the bytes
   * already read past init (or load), for a single worker that reads stdin
   * itself; null otherwise.
   */
  async start(
    load: Load,
    direct: Uint8Array | null,
  ): Promise<void> {
    this.loading = true;
    const { site, siteDir } = this.#init;
    const { scripts, hosts } = load;
    let reports: FromWorker[];
    try {
      if (this.#bootError !== null) throw this.#bootError;
      reports = await Promise.all(
        this.#workers.map((w) =>
          this.#load(w, {
            t: "load",
            site,
            siteDir,
            kv: this.#init.kv,
            scripts,
            hosts,
            out: this.#shared.buffer,
            index: w.index,
            nested: this.#nested,
            direct,
          })
        ),
      );
    } catch (err) {
      this.#send({
        t: "loadFailed",
        message: (err as Error).message,
        location: null,
      });
      return;
    }
    const failed = reports.find((r) => r.t === "loadFailed");
    if (failed !== undefined) {
      this.#send(failed as FromSandbox);
      return;
    }
    const tables = reports.map((r) =>
      JSON.stringify((r as { routes: WireRoutes }).routes)
    );
    if (tables.some((t) => t !== tables[0])) {
      this.#send({
        t: "loadFailed",
        message:
          "The site's workers registered different pages; registration must not depend on timing or randomness",
        location: null,
      });
      return;
    }
    this.#send(reports[0] as FromSandbox);
    const usage = () => this.#send({ t: "usage", rss: Deno.memoryUsage().rss });
    usage();
    every(USAGE_EVERY_MS, usage);
  }

  #spawn(index: number, permissions: WirePermissions): PoolWorker {
    const worker = new Worker(new URL("./worker.ts", import.meta.url), {
      type: "module",
      name: `${this.#init.site}#${index + 1}`,
      deno: {
        permissions: {
          // Workers the site starts begin with the runtime's ./nested.ts.
          read: [...permissions.read, ...RUNTIME_FILES],
          write: permissions.write.length > 0 ? permissions.write : false,
          net: permissions.net.length > 0 ? permissions.net : false,
          // By name only, whatever the message says.
          env: Array.isArray(permissions.env) && permissions.env.length > 0
            ? permissions.env
            : false,
          run: false,
          ffi: false,
          sys: false,
          import: false,
        },
      },
    });
    const entry: PoolWorker = { worker, clients: 0, index };
    worker.addEventListener("error", (event) => {
      event.preventDefault();
      console.error(`Worker ${index + 1} failed: ${event.message}`);
    });
    worker.addEventListener(
      "message",
      (event) => this.#onWorkerMessage(entry, event.data),
    );
    return entry;
  }

  #loading = new Map<PoolWorker, (msg: FromWorker) => void>();

  #load(w: PoolWorker, msg: ToWorker): Promise<FromWorker> {
    return new Promise((resolve) => {
      this.#loading.set(w, resolve);
      w.worker.postMessage(msg);
    });
  }

  #onWorkerMessage(w: PoolWorker, data: unknown): void {
    const msg = parseFromWorker(data);
    if (msg === null) return;
    switch (msg.t) {
      case "loaded":
      case "loadFailed": {
        const resolve = this.#loading.get(w);
        this.#loading.delete(w);
        resolve?.(msg);
        break;
      }
      case "ended":
        // Only a direct worker reads stdin; from any other, site code sent it.
        if (this.direct) {
          this.#onEnded({ shutdown: msg.shutdown, failed: msg.failed });
        }
        break;
      case "pong": {
        const ping = this.#pings.get(msg.id);
        if (ping?.worker === w) ping.answer(msg.ok);
        break;
      }
      case "sessionGet":
      case "sessionSave": {
        // Calls are numbered per worker; the gateway sees one number space.
        const call = ++this.#callId;
        this.#calls.set(call, { worker: w, call: msg.call });
        this.#send({ ...msg, call });
        break;
      }
      default:
        msg satisfies never;
    }
  }

  #callId = 0;
  #calls = new Map<number, { worker: PoolWorker; call: number }>();
  /** Which worker holds each websocket client (its events go there). */
  #clients = new Map<string, PoolWorker>();

  handle(
    msg: Exclude<ToSandbox, { t: "init" } | { t: "load" } | { t: "shutdown" }>,
    body: Uint8Array,
  ): void {
    switch (msg.t) {
      case "request": {
        const w = this.#pick();
        this.#shared.started(w.index);
        // A copy that owns its buffer, so it can be transferred.
        const own =
          body.byteOffset === 0 && body.byteLength === body.buffer.byteLength
            ? body
            : body.slice();
        w.worker.postMessage({ ...msg, body: own } satisfies ToWorker, [
          own.buffer as ArrayBuffer,
        ]);
        break;
      }
      case "error": {
        const w = this.#pick();
        this.#shared.started(w.index);
        w.worker.postMessage(msg satisfies ToWorker);
        break;
      }
      case "heartbeat":
        void this.#heartbeat(msg.id);
        break;
      case "activate":
      case "pauseTasks":
        // A site's tasks run once per site: in the first worker only.
        this.#workers[0]?.worker.postMessage(
          {
            t: msg.t === "activate" ? "startTasks" : "pauseTasks",
          } satisfies ToWorker,
        );
        break;
      case "reloading":
        for (const w of this.#workers) {
          w.worker.postMessage(
            { t: "hook", name: "ReloadScripts" } satisfies ToWorker,
          );
        }
        break;
      case "wsOpen": {
        // Spread clients over the workers: fewest clients first.
        let w = this.#workers[0]!;
        for (const x of this.#workers) if (x.clients < w.clients) w = x;
        w.clients++;
        this.#clients.set(msg.client, w);
        w.worker.postMessage(msg satisfies ToWorker);
        break;
      }
      case "wsMessage": {
        const w = this.#clients.get(msg.client) ?? this.#pick();
        const data = msg.binary ? body.slice() : DECODER.decode(body);
        w.worker.postMessage(
          {
            t: "wsMessage",
            channel: msg.channel,
            client: msg.client,
            data,
          } satisfies ToWorker,
        );
        break;
      }
      case "wsClose": {
        const w = this.#clients.get(msg.client) ?? this.#pick();
        if (this.#clients.delete(msg.client)) {
          w.clients = Math.max(0, w.clients - 1);
        }
        w.worker.postMessage(msg satisfies ToWorker);
        break;
      }
      case "sessionResult": {
        const call = this.#calls.get(msg.call);
        this.#calls.delete(msg.call);
        call?.worker.worker.postMessage(
          { ...msg, call: call.call } satisfies ToWorker,
        );
        break;
      }
      case "more":
      case "cancel":
        // The host does not see which worker answers a request (workers
        // write their replies themselves): every worker hears it, the one
        // streaming request `id` acts. Credit comes once per 64 KiB sent.
        for (const w of this.#workers) {
          w.worker.postMessage(msg satisfies ToWorker);
        }
        break;
      default:
        msg satisfies never;
    }
  }

  #pick(): PoolWorker {
    let best = this.#workers[0]!;
    let least = this.#shared.inflight(best.index);
    for (const w of this.#workers) {
      const n = this.#shared.inflight(w.index);
      if (n < least) [best, least] = [w, n];
    }
    return best;
  }

  async #heartbeat(id: number): Promise<void> {
    const answers = this.#workers.map((w) => this.#ping(w));
    const ok = (await Promise.all(answers)).every(Boolean);
    this.#send({ t: "heartbeat", id, ok });
  }

  #ping(w: PoolWorker): Promise<boolean> {
    // Random ids, and only the pinged worker's pong counts: a worker cannot
    // answer for a stuck neighbour.
    const id = crypto.getRandomValues(new Uint32Array(1))[0]!;
    return new Promise((resolve) => {
      const cancel = after(PING_TIMEOUT_MS, () => {
        this.#pings.delete(id);
        resolve(false);
      });
      this.#pings.set(id, {
        worker: w,
        answer: (ok) => {
          cancel();
          this.#pings.delete(id);
          resolve(ok);
        },
      });
      w.worker.postMessage({ t: "ping", id } satisfies ToWorker);
    });
  }

  stop(): void {
    for (const w of this.#workers) w.worker.terminate();
    this.#workers = [];
  }
}
