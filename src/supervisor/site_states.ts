/**
 * What a running server tells `cli sites`: each site's state and since
 * when, in `sites-state.json` in `--data-dir`. The server rewrites the file
 * (write, then rename) within a second of a change and removes it when it
 * stops; `cli sites` believes it only while the process that wrote it runs,
 * and only for the same sites folder.
 *
 * @module
 */

import { join, resolve } from "node:path";

/** A site as the running server has it (the same words as /stats). */
export type SiteState = "serving" | "asleep" | "restarting" | "not loaded";

/** A site's state in a running server, and since when. */
export interface RunningSite {
  state: SiteState;
  /** When the server first saw the site in this state (ISO 8601, to 1 s). */
  since: string;
}

/** What a running server wrote. */
export interface RunningStates {
  /** The server's process id. */
  pid: number;
  /** Its `--sites-dir`, resolved (see {@linkcode resolvedDir}). */
  sitesDir: string;
  sites: Record<string, RunningSite>;
}

/** The file's name in `--data-dir`. */
export const STATE_FILE = "sites-state.json";

const STATES: ReadonlySet<string> = new Set<SiteState>([
  "serving",
  "asleep",
  "restarting",
  "not loaded",
]);

/** `dir` as a real absolute path, or resolved only if it cannot be read. */
export function resolvedDir(dir: string): string {
  try {
    return Deno.realPathSync(dir);
  } catch {
    return resolve(dir);
  }
}

/** Keeps `sites-state.json` up to date while the server runs. */
export class StateFile {
  #file: string;
  #sitesDir: string;
  #read: () => ReadonlyMap<string, SiteState>;
  #everyMs: number;
  #sites = new Map<string, RunningSite>();
  #timer: ReturnType<typeof setInterval> | null = null;
  #writing: Promise<void> = Promise.resolve();

  /**
   * `read`: each site's state now. `everyMs`: how often it is asked.
   */
  constructor(
    dataDir: string,
    sitesDir: string,
    read: () => ReadonlyMap<string, SiteState>,
    everyMs = 1000,
  ) {
    this.#file = join(dataDir, STATE_FILE);
    this.#sitesDir = resolvedDir(sitesDir);
    this.#read = read;
    this.#everyMs = everyMs;
  }

  /** Writes the states now, then whenever one changes. */
  start(): void {
    this.#tick();
    this.#timer = setInterval(() => this.#tick(), this.#everyMs);
  }

  #tick(): void {
    const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    const next = new Map<string, RunningSite>();
    let changed = this.#timer === null; // the first tick writes

    for (const [name, state] of this.#read()) {
      const was = this.#sites.get(name);
      if (was?.state === state) next.set(name, was);
      else {
        next.set(name, { state, since: now });
        changed = true;
      }
    }
    // Idle, with many sites: nothing is written, nor even serialized.
    if (!changed && next.size === this.#sites.size) return;
    this.#sites = next;
    const text = JSON.stringify(
      {
        pid: Deno.pid,
        sitesDir: this.#sitesDir,
        sites: Object.fromEntries(next),
      } satisfies RunningStates,
      null,
      1,
    );
    this.#writing = this.#writing.then(() => this.#write(text));
  }

  async #write(text: string): Promise<void> {
    const temporary = `${this.#file}.${Deno.pid}.tmp`;
    try {
      await Deno.writeTextFile(temporary, text + "\n");
      await Deno.rename(temporary, this.#file);
    } catch {
      // The data folder went away or is read-only: `cli sites` goes without.
      await Deno.remove(temporary).catch(() => {});
    }
  }

  /** Stops writing and removes the file, if it is this server's. */
  async stop(): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    await this.#writing;
    const states = await readStates(
      join(this.#file, ".."),
      this.#sitesDir,
      () => true,
    );
    if (states?.pid === Deno.pid) {
      await Deno.remove(this.#file).catch(() => {});
    }
  }
}

/** True while process `pid` runs (Linux; elsewhere, assumed). */
function running(pid: number): boolean {
  try {
    Deno.statSync("/proc/self");
  } catch {
    return true;
  }
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * What the server running on `dataDir` and `sitesDir` wrote, or null when
 * none runs there (no file, an unreadable one, its process has ended, or it
 * serves another sites folder).
 */
export async function readStates(
  dataDir: string,
  sitesDir: string,
  isRunning: (pid: number) => boolean = running,
): Promise<RunningStates | null> {
  let data: unknown;
  try {
    data = JSON.parse(await Deno.readTextFile(join(dataDir, STATE_FILE)));
  } catch {
    return null;
  }
  if (typeof data !== "object" || data === null) return null;
  const { pid, sites, sitesDir: served } = data as {
    pid?: unknown;
    sites?: unknown;
    sitesDir?: unknown;
  };
  if (!Number.isSafeInteger(pid) || typeof sites !== "object" || !sites) {
    return null;
  }
  if (served !== resolvedDir(sitesDir)) return null;
  if (!isRunning(pid as number)) return null;
  const out: Record<string, RunningSite> = {};
  for (const [name, value] of Object.entries(sites)) {
    const { state, since } = (value ?? {}) as {
      state?: unknown;
      since?: unknown;
    };
    if (typeof state === "string" && STATES.has(state)) {
      out[name] = {
        state: state as SiteState,
        since: typeof since === "string" ? since : "",
      };
    }
  }
  return { pid: pid as number, sitesDir: served, sites: out };
}
