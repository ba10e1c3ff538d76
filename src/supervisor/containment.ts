/**
 * How each sandbox process is held to its site's memory and to its share
 * of the CPUs, as a whole: heap, ArrayBuffers, Wasm memory and every worker.
 *
 * Where the server may make cgroups (version 1 here: a `memory` and a `cpu`
 * hierarchy mounted writable, as on this project's machines, or the subtree
 * a systemd service gets with `Delegate=yes` on such a system), each sandbox
 * runs in one of its own, made beneath the server's own cgroup and removed
 * when it exits:
 * - memory: `memory.limit_in_bytes` is the site's `memory`; past it the
 *   kernel kills the sandbox at once, whatever allocated it;
 * - CPU: `cpu.cfs_quota_us` lets it use `--site-cpu` CPUs at most, measured
 *   every 100 ms, however many threads it runs.
 *
 * Otherwise (no cgroups, not writable, or the server cannot read
 * /proc/self/cgroup: Deno 2.9.6 asks for `--allow-all` for that):
 * - memory: the sandbox's own host thread (no site code runs there) reads
 *   the process's resident memory, every 250 ms when far from the limit and
 *   down to every 5 ms close to it, and ends the process when it is over;
 *   memory allocated faster than about 1 GiB a second may pass the limit by
 *   what a few milliseconds allow. Resident memory includes Deno's own code
 *   pages (about 45 MiB), which a cgroup charges to whoever loaded them first;
 * - CPU: the host thread lowers itself to nice 10 before it starts the
 *   workers, which inherit it, so the gateway comes first; sites are not
 *   bounded against each other beyond the stuck-worker watch.
 *
 * A sandbox starts inside its cgroups: `/bin/sh` writes its own pid into
 * them, then becomes Deno (`exec`), so every page the process maps counts.
 *
 * @module
 */

import { join } from "node:path";
import { log } from "../log.ts";

/** What holds a sandbox's memory. */
export type MemoryBound = "cgroup" | "watchdog";
/** What holds a sandbox's CPU use. */
export type CpuBound = "cgroup" | "nice";

/** One sandbox's place. */
export interface Placement {
  /** The sandbox holds itself to its memory (no cgroup does). */
  readonly watchMemory: boolean;
  /** The sandbox lowers its priority to nice 10 (no cgroup holds its CPU). */
  readonly nice: boolean;
  /**
   * The command that starts the sandbox in its cgroups, from the one that
   * starts it (the same where there are none).
   */
  command(exec: string, args: string[]): { exec: string; args: string[] };
  /** Memory its cgroup counts now, in bytes; null without one. */
  memoryBytes(): number | null;
  /** After it exited: whether the kernel stopped it for memory. */
  outOfMemory(): boolean;
  /** Removes what was made for it; call once it has exited. */
  release(): void;
}

/** The limits of one sandbox. */
export interface SandboxLimits {
  memoryMiB: number;
  /** CPUs it may use at most (1 = one whole CPU). */
  cpus: number;
  /** Workers in its pool. */
  workers: number;
}

/**
 * The most threads a sandbox may have (`pids.max`): Deno's own (about 10
 * idle; 44 measured with 1,500 file reads in flight), one per worker, and
 * the site's own 4, with room to spare. Past it a new thread fails, and the
 * sandbox with it: a backstop for threads made some way no one thought of.
 */
export function threadsFor(workers: number): number {
  return 128 + workers + 4;
}

/** A controller's hierarchy: where the server's own cgroup is in it. */
interface Hierarchy {
  /** The server's cgroup directory. */
  own: string;
  /** The directory made for this server's sandboxes. */
  base: string;
}

/**
 * The server's own cgroup directory for a v1 `controller`, from
 * /proc/self/cgroup and /proc/self/mountinfo; null when it is not mounted.
 */
export function ownCgroupDir(
  controller: string,
  procCgroup: string,
  mountinfo: string,
): string | null {
  let path: string | null = null;
  for (const line of procCgroup.split("\n")) {
    const [, controllers, p] = line.split(":", 3) as [
      string?,
      string?,
      string?,
    ];
    if (controllers?.split(",").includes(controller) && p !== undefined) {
      path = p;
    }
  }
  if (path === null) return null;
  for (const line of mountinfo.split("\n")) {
    const [left, right] = line.split(" - ");
    if (left === undefined || right === undefined) continue;
    const [fstype, , options = ""] = right.split(" ");
    if (fstype !== "cgroup" || !options.split(",").includes(controller)) {
      continue;
    }
    const fields = left.split(" ");
    const root = fields[3] ?? "/";
    const mountPoint = fields[4];
    if (mountPoint === undefined || !path.startsWith(root)) continue;
    const rest = root === "/" ? path : path.slice(root.length);
    return join(mountPoint, rest);
  }
  return null;
}

/** Reads a file of /proc or of a cgroup, "" when it cannot. */
function readText(file: string): string {
  try {
    return Deno.readTextFileSync(file);
  } catch {
    return "";
  }
}

/**
 * Makes this server's directory beneath its own cgroup, after removing
 * those left by servers that are gone. Null (with why) when it cannot.
 */
function makeBase(
  controller: string,
  own: string | null,
): Hierarchy | string {
  if (own === null) return `no ${controller} cgroup is mounted`;
  try {
    for (const entry of Deno.readDirSync(own)) {
      const match = /^sandflare-(\d+)$/.exec(entry.name);
      if (match === null || !entry.isDirectory) continue;
      if (readText(`/proc/${match[1]}/cmdline`) !== "") continue;
      removeTree(join(own, entry.name));
    }
    const base = join(own, `sandflare-${Deno.pid}`);
    Deno.mkdirSync(base, { recursive: true });
    return { own, base };
  } catch (err) {
    return `the ${controller} cgroup ${own} is not writable (${
      (err as Error).message
    })`;
  }
}

/** Removes an empty cgroup and the empty ones beneath it. */
function removeTree(dir: string): void {
  try {
    for (const entry of Deno.readDirSync(dir)) {
      if (entry.isDirectory) removeTree(join(dir, entry.name));
    }
    Deno.removeSync(dir);
  } catch {
    // Still has processes, or already gone.
  }
}

/** How long a sandbox's cgroups are retried for when something is left in them. */
const RELEASE_TRIES = 40;
const RELEASE_EVERY_MS = 250;

/**
 * Removes a sandbox's cgroups once it has exited. What is still in them (a
 * process bubblewrap started, which dies only after bwrap itself) is killed
 * first, and the removal is retried for up to 10 s: a cgroup left behind
 * would stay for good.
 */
async function releaseAll(dirs: string[]): Promise<void> {
  for (let attempt = 0; attempt < RELEASE_TRIES; attempt++) {
    for (const dir of dirs) {
      for (const pid of readText(join(dir, "cgroup.procs")).split("\n")) {
        if (!/^\d+$/.test(pid)) continue;
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch {
          // Gone already.
        }
      }
      removeTree(dir);
    }
    if (dirs.every((dir) => !exists(dir))) return;
    await new Promise((resolve) => setTimeout(resolve, RELEASE_EVERY_MS));
  }
  log.warn(null, `Could not remove the cgroups ${dirs.join(", ")}`);
}

/** Whether a path exists (false when it cannot be told). */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The number of the kernel's OOM kills in a v1 memory cgroup. */
function oomKills(dir: string): number {
  const match = /^oom_kill (\d+)$/m.exec(
    readText(join(dir, "memory.oom_control")),
  );
  return match === null ? 0 : Number(match[1]);
}

/** Holds every sandbox of one server to its limits. */
export class Containment {
  readonly memory: MemoryBound;
  readonly cpu: CpuBound;
  /** Why cgroups are not used, when they are not. */
  readonly fallbackReason: string | null;
  #memory: Hierarchy | null;
  #cpu: Hierarchy | null;
  /** Threads: a backstop, whatever made them (a `pids` hierarchy, if any). */
  #pids: Hierarchy | null = null;
  #next = 0;
  /**
   * `nice` may be run (the deployment unit's scoped --allow-run does not
   * allow it): without it, only the threads a sandbox makes after it starts
   * are lowered.
   */
  #niceCommand = Deno.permissions.querySync({ name: "run", command: "nice" })
    .state === "granted";
  /** Removals of sandboxes' cgroups still being retried. */
  #releasing = new Set<Promise<void>>();

  /** `cgroups: false` uses the watchdog and nice (for `--no-cgroups`). */
  constructor(options: { cgroups: boolean }) {
    let memory: Hierarchy | string = "cgroups are turned off (--no-cgroups)";
    let cpu: Hierarchy | string = memory;
    let procCgroup = "";
    let mountinfo = "";
    if (options.cgroups) {
      try {
        procCgroup = Deno.readTextFileSync("/proc/self/cgroup");
        mountinfo = Deno.readTextFileSync("/proc/self/mountinfo");
      } catch (err) {
        memory = cpu = err instanceof Deno.errors.NotCapable
          ? "Deno 2.9.6 reads /proc/self/cgroup only with --allow-all"
          : `/proc/self/cgroup cannot be read (${(err as Error).message})`;
      }
    }
    if (procCgroup !== "") {
      memory = makeBase(
        "memory",
        ownCgroupDir("memory", procCgroup, mountinfo),
      );
      cpu = makeBase("cpu", ownCgroupDir("cpu", procCgroup, mountinfo));
      const pids = makeBase(
        "pids",
        ownCgroupDir("pids", procCgroup, mountinfo),
      );
      this.#pids = typeof pids === "string" ? null : pids;
    }
    this.#memory = typeof memory === "string" ? null : memory;
    this.#cpu = typeof cpu === "string" ? null : cpu;
    this.memory = this.#memory === null ? "watchdog" : "cgroup";
    this.cpu = this.#cpu === null ? "nice" : "cgroup";
    const reasons = [memory, cpu].filter((r) => typeof r === "string");
    this.fallbackReason = reasons.length === 0
      ? null
      : [...new Set(reasons)].join("; ");
  }

  /** One line for the log at start and for /stats. */
  describe(): string {
    const memory = this.#memory === null
      ? "memory: each sandbox checks its resident memory (every 5–250 ms)"
      : `memory: cgroup ${this.#memory.base}`;
    const cpu = this.#cpu === null
      ? this.#niceCommand
        ? "CPU: sandboxes at nice 10"
        : "CPU: sandboxes' workers at nice 10 (Deno's own threads at 0: nice may not be run)"
      : `CPU: cgroup ${this.#cpu.base} (--site-cpu each)${
        this.#pids === null ? "" : `; threads: cgroup ${this.#pids.base}`
      }`;
    const why = this.fallbackReason === null
      ? ""
      : ` (no cgroup: ${this.fallbackReason})`;
    return `Site limits: ${memory}; ${cpu}${why}`;
  }

  /** The place of a new sandbox of `site`: its cgroups made with `limits`. */
  place(site: string, limits: SandboxLimits): Placement {
    const name = `${site.replace(/[^A-Za-z0-9_.-]/g, "_")}.${++this.#next}`;
    const dirs: string[] = [];
    let memoryDir: string | null = null;
    try {
      if (this.#memory !== null) {
        memoryDir = join(this.#memory.base, name);
        Deno.mkdirSync(memoryDir);
        dirs.push(memoryDir);
        const bytes = String(limits.memoryMiB * 1024 * 1024);
        Deno.writeTextFileSync(join(memoryDir, "memory.limit_in_bytes"), bytes);
        // Where there is swap, swapping must not stretch the bound.
        try {
          Deno.writeTextFileSync(
            join(memoryDir, "memory.memsw.limit_in_bytes"),
            bytes,
          );
        } catch {
          // Swap accounting is off.
        }
      }
      if (this.#cpu !== null) {
        const cpuDir = join(this.#cpu.base, name);
        Deno.mkdirSync(cpuDir);
        dirs.push(cpuDir);
        Deno.writeTextFileSync(join(cpuDir, "cpu.cfs_period_us"), "100000");
        Deno.writeTextFileSync(
          join(cpuDir, "cpu.cfs_quota_us"),
          String(Math.max(1000, Math.round(limits.cpus * 100_000))),
        );
      }
      if (this.#pids !== null) {
        const pidsDir = join(this.#pids.base, name);
        Deno.mkdirSync(pidsDir);
        dirs.push(pidsDir);
        Deno.writeTextFileSync(
          join(pidsDir, "pids.max"),
          String(threadsFor(limits.workers)),
        );
      }
    } catch (err) {
      for (const dir of dirs) removeTree(dir);
      throw new Error(
        `The sandbox's cgroup could not be made: ${(err as Error).message}`,
      );
    }
    return {
      watchMemory: memoryDir === null,
      nice: this.#cpu === null,
      // The shell enters the cgroups, then becomes Deno: everything the
      // process maps is counted, from its first page.
      command: (exec, args) => {
        // Started at nice 10 as a whole where it may be: the threads Deno
        // makes before any code runs (V8's compilers among them) too.
        const started = this.#cpu === null && this.#niceCommand
          ? { exec: "nice", args: ["-n", "10", exec, ...args] }
          : { exec, args };
        return dirs.length === 0 ? started : {
          exec: "/bin/sh",
          args: [
            "-c",
            `${
              dirs.map((_, i) => `echo $$ > "$${i + 1}" && `).join("")
            }shift ${dirs.length} && exec "$@"`,
            "sandbox",
            ...dirs.map((dir) => join(dir, "cgroup.procs")),
            started.exec,
            ...started.args,
          ],
        };
      },
      memoryBytes: () => {
        if (memoryDir === null) return null;
        const usage = readText(join(memoryDir, "memory.usage_in_bytes"));
        return usage === "" ? null : Number(usage);
      },
      outOfMemory: () => memoryDir !== null && oomKills(memoryDir) > 0,
      release: () => {
        const done = releaseAll(dirs);
        this.#releasing.add(done);
        void done.finally(() => this.#releasing.delete(done));
      },
    };
  }

  /**
   * Removes this server's cgroups once its sandboxes have exited. Any
   * process still in one is killed first: a sandbox started as the server
   * stopped (a restart racing the stop) must not outlive it.
   */
  async close(): Promise<void> {
    await Promise.all(this.#releasing);
    const left: string[] = [];
    for (const h of [this.#memory, this.#cpu, this.#pids]) {
      if (h === null) continue;
      try {
        for (const entry of Deno.readDirSync(h.base)) {
          if (entry.isDirectory) left.push(join(h.base, entry.name));
        }
      } catch {
        // Gone already.
      }
    }
    await releaseAll(left);
    for (const h of [this.#memory, this.#cpu, this.#pids]) {
      if (h !== null) removeTree(h.base);
    }
  }
}
