/**
 * Warm starts for sites being worked on or visited now and then. After a
 * site reloads, or falls asleep after its requests (`--idle-stop`), a spare
 * sandbox is started for its next generation: the process is up and its
 * workers have booted, but it has loaded none of the site's code. The next
 * reload, restart or wake hands it the scripts, and costs only their load.
 * At most `--warm-spares` are kept, for the sites that reloaded or slept
 * last, so sleeping sites hold that many processes at most.
 *
 * Deno fixes a process's permissions when it starts, and a worker can only
 * get a subset of its process's. So a spare cannot be generic and become a
 * site's later: it starts with the permissions of the one site it is for,
 * exactly those the site's next sandbox would get (the same arguments, the
 * same environment, in a cgroup of its own). It is used once, only if the
 * site's sandbox would still be started exactly so (site.json, grant, disk
 * quota unchanged), and is stopped otherwise. A generic spare would need a
 * permission broker (`DENO_PERMISSION_BROKER_PATH`): measured in Deno 2.9.6,
 * a broker answers every check of the process, so a Worker started with
 * `permissions: "none"` could read what the broker allows, which is weaker
 * than the per-worker walls the sandbox has now.
 *
 * @module
 */

import { log } from "../log.ts";
import type { SandboxProcess, SandboxSpec } from "./sandbox_process.ts";

/** What must be equal for a spare to be used: all but what it is told at start. */
export function spareKey(
  spec: Omit<SandboxSpec, "placement">,
  extra: string,
): string {
  const { scripts: _s, hosts: _h, spare: _x, ...rest } = spec;
  // The placement is each process's own (its cgroups).
  return JSON.stringify({ ...rest, placement: undefined, extra });
}

interface Spare {
  sandbox: SandboxProcess;
  key: string;
  timer: ReturnType<typeof setTimeout>;
}

/** At most `size` spares, one per site, each dropped after `ttlMs` unused. */
export class Spares {
  readonly size: number;
  readonly ttlMs: number;
  /** In the order they were kept: the first is the oldest. */
  #spares = new Map<string, Spare>();

  constructor(size: number, ttlMs: number) {
    this.size = size;
    this.ttlMs = ttlMs;
  }

  /**
   * The spare of `site` if it may serve `spec`; any other is stopped.
   * @param extra what else decides the process, as at `keep` (its lockfile)
   */
  take(
    site: string,
    spec: Omit<SandboxSpec, "placement">,
    extra: string,
  ): SandboxProcess | null {
    const spare = this.#spares.get(site);
    if (spare === undefined) return null;
    this.#spares.delete(site);
    clearTimeout(spare.timer);
    if (spare.sandbox.alive && spare.key === spareKey(spec, extra)) {
      return spare.sandbox;
    }
    spare.sandbox.kill("its site's sandbox is now started otherwise");
    return null;
  }

  /** Keeps `sandbox` (a spare for `site`), the oldest going beyond `size`. */
  keep(site: string, sandbox: SandboxProcess, extra: string): void {
    this.drop(site);
    const timer = setTimeout(
      () => this.drop(site, `unused for ${this.ttlMs / 60_000} min`),
      this.ttlMs,
    );
    this.#spares.set(site, {
      sandbox,
      key: spareKey(sandbox.spec, extra),
      timer,
    });
    while (this.#spares.size > this.size) {
      const oldest = this.#spares.keys().next().value!;
      this.drop(oldest, "the spares went to sites reloaded or asleep since");
    }
  }

  /** The spares kept, oldest first. */
  list(): { site: string; sandbox: SandboxProcess }[] {
    return [...this.#spares].map(([site, s]) => ({ site, sandbox: s.sandbox }));
  }

  /** Stops the spare of `site`, if any. */
  drop(site: string, why?: string): void {
    const spare = this.#spares.get(site);
    if (spare === undefined) return;
    this.#spares.delete(site);
    clearTimeout(spare.timer);
    if (why !== undefined) log.info(site, `Spare sandbox stopped: ${why}`);
    spare.sandbox.kill("it was a spare no longer wanted");
  }

  /** Stops every spare (the server stops). */
  dropAll(): void {
    for (const site of [...this.#spares.keys()]) this.drop(site);
  }
}

/**
 * Asks for spares that wait to start (a moment after a reload or a sleep):
 * only the `size` latest start, since the spares keep only that many. Sites
 * that fall asleep together would otherwise start a spare each, all but
 * the last few stopped at once (the review saw 84 in 6 rounds of 30 sites).
 */
export class SpareAsks {
  #latest = new Map<string, number>();
  #count = 0;

  /** Records an ask for `site`'s spare; returns its number. */
  ask(site: string): number {
    const number = ++this.#count;
    this.#latest.set(site, number);
    return number;
  }

  /**
   * Ends the wait of ask `number` for `site`: true when fewer than `size`
   * asks still waiting are newer (the site's own newer ask counts).
   */
  settle(site: string, number: number, size: number): boolean {
    let newer = 0;
    for (const other of this.#latest.values()) if (other > number) newer++;
    if (this.#latest.get(site) === number) this.#latest.delete(site);
    return newer < size;
  }
}
