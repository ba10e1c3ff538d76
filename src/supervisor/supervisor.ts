/**
 * The supervisor owns the sites: it finds them, starts each in its sandbox,
 * watches their folders, reloads them as generations, indexes their static
 * files, checks their host claims and publishes what the gateway routes
 * against as one immutable {@linkcode Snapshot}, built aside and swapped
 * whole (the way Caddy provisions a config before switching to it).
 *
 * @module
 */

import { join, relative, resolve, sep as SEP } from "node:path";
import { log, siteOutput } from "../log.ts";
import type { WireRoutes } from "../protocol/messages.ts";
import type { CompiledPattern } from "../router/router.ts";
import {
  COMPILED,
  LoadError,
  SandboxProcess,
  type SandboxSpec,
  type SiteMessage,
} from "./sandbox_process.ts";
import { SiteRunner, type TaskGate } from "./site_runner.ts";
import { isInside } from "./paths.ts";
import {
  AUTORUN_RULE,
  defineRootSite,
  defineSite,
  discoverSites,
  ROOT_SITE,
  type SiteDefinition,
  SiteError,
  siteFolderNames,
} from "./sites.ts";
import {
  buildSnapshot,
  checkRoutes,
  emptySnapshot,
  pruneCompiled,
  type ServedSite,
  type Snapshot,
} from "./snapshot.ts";
import {
  emptyStaticIndex,
  scanStatic,
  type StaticIndex,
} from "./static_index.ts";
import { type Watch, watchFolder, watchFolderExcept } from "./watcher.ts";
import { describeSites, type SiteDescription } from "./describe.ts";
import { Coalescer } from "./coalesce.ts";
import { Slots } from "./slots.ts";
import { SpareAsks, Spares } from "./spares.ts";
import { FirstStart } from "./first_start.ts";
import {
  forgetRoutes,
  keepRoutes,
  readKeptRoutes,
  siteKey,
} from "./routes_cache.ts";
import type { Containment } from "./containment.ts";
import { measureDisk } from "./disk_usage.ts";
import {
  explainLoadFailure,
  LOCK_FILE,
  readSiteDependencies,
  sandboxImportMap,
  writeImportMap,
} from "./dependencies.ts";
import { DependencyError } from "./import_map.ts";
import { installedText, installSite } from "./install.ts";
import type { Isolation } from "./isolation.ts";
import {
  grantOf,
  type Grants,
  readGrants,
  requestedGrants,
  type ServerAddress,
} from "./grants.ts";

/** What the gateway reads of the sites: all it needs per request. */
export interface Sites {
  /** The sites being served and their routers; replaced whole on a change. */
  readonly snapshot: Snapshot;
  /** Sites whose last load failed, with why (for /stats). */
  readonly notLoaded: ReadonlyMap<string, string>;
}

/** Options of a {@linkcode Supervisor}. */
export interface SupervisorOptions {
  /** The folder holding `autorun/` (the root site). */
  projectDir: string;
  /** The folder of third-party sites. */
  sitesDir: string;
  /**
   * The operator's grants file; null gives every site what its site.json
   * asks for (`--grant-requests`).
   */
  grantsFile: string | null;
  /** The address the server listens on, once it does. */
  serverAddress: () => ServerAddress | null;
  /** Workers per site when site.json does not say. */
  threads: number;
  /** Seconds a page may run when site.json does not say. */
  requestTimeout: number;
  /** Requests in flight per site beyond which new ones get 503. */
  siteQueue: number;
  /** Idle time after which a site's sandbox stops (`--idle-stop`); null: never. */
  idleStopMs?: number | null;
  /** Bytes that may wait to be written to a sandbox before it is stopped. */
  maxInputBacklog: number;
  /** What holds each sandbox to its memory and CPU. */
  containment: Containment;
  /** CPUs one sandbox may use at most. */
  siteCpu: number;
  /** How sandboxes are isolated beyond Deno's permissions. */
  isolate: Isolation;
  /** The folder holding each site's own Deno cache (`SITE/`). */
  cacheDir: string;
  /**
   * Spare sandboxes kept for the sites reloaded last, one each, so that
   * their next reload starts warm (`--warm-spares`; see ./spares.ts).
   * @default {0}
   */
  warmSpares?: number;
  /**
   * Where, with `--idle-stop`, what each site registered is kept between
   * runs (see ./routes_cache.ts); absent: nothing is kept.
   */
  routesDir?: string;
  /** Where the import maps of sites with dependencies are written. */
  configDir: string;
  /** Install a site's dependencies before its sandbox starts (`--install`). */
  install: boolean;
  /** The command that installs a site's dependencies, for messages. */
  installCommand: (site: string) => string;
  /** A websocket send/close or a session question from a site. */
  onSiteMessage: (
    site: string,
    from: SandboxProcess,
    message: SiteMessage,
    body: Uint8Array,
    headerBytes: number,
  ) => number;
  /** A sandbox process ended (its websocket clients must be closed). */
  onSandboxExit: (sandbox: SandboxProcess) => void;
  /** A site's new generation took over: files cached for it are stale. */
  onReload?: (site: string) => void;
  /** Where scheduler tasks run, in a cluster. @default {here, always} */
  tasks?: TaskGate;
}

/** A site that could not be loaded. */
export interface SiteProblem {
  site: string;
  message: string;
}

/** The least time between two scans of one site's static files. */
const STATIC_SCAN_EVERY_MS = 1000;

/** How often the sites folder is listed, for links the watcher misses. */
const SITES_POLL_MS = 2000;

/** How often every sandbox is asked whether its workers answer. */
const HEARTBEAT_EVERY_MS = 2000;
/** How often sites are checked for --idle-stop. */
const IDLE_CHECK_MS = 1000;

/** How often each site's writable folders are measured against its quota. */
const DISK_CHECK_MS = 1000;
/** The longest wait between two measures of a site that takes long to walk. */
const DISK_CHECK_MOST_MS = 10_000;

const MIB = 1024 * 1024;

/** Installs (`--install`) that run at once. */
const MAX_INSTALLS = 4;

/** A spare unused this long is stopped. */
const SPARE_TTL_MS = 10 * 60_000;
/** How long after a reload its spare starts (see #keepSpareSoon). */
const SPARE_DELAY_MS = 300;
/**
 * How long after a site falls asleep its spare starts: long enough for the
 * sites that fall asleep over the next few idle checks to ask too, so that
 * only the last few of them start one (nobody waits on these).
 */
const SLEEP_SPARE_DELAY_MS = 3000;

/**
 * The lockfile as it is now: Deno reads it when the process starts, so a
 * spare started with another is not used.
 */
function lockStamp(def: SiteDefinition): string {
  const file = def.deps?.lockFile ?? null;
  if (file === null) return "";
  try {
    const info = Deno.statSync(file);
    return `${info.size}:${info.mtime?.getTime()}`;
  } catch {
    return "missing";
  }
}

/** Sandboxes that start at once (see #starts). */
const STARTS_AT_ONCE = Math.max(4, 4 * navigator.hardwareConcurrency);
/**
 * A start that takes longer gives its slot up: sites that hang as they
 * load (until their load timeout) do not hold the others back.
 */
const START_SLOT_MS = 2000;

/**
 * How long `--install` may take for one site before it fails: a site whose
 * packages do not come (a registry that stalls) must not hold the others'
 * loading, which waits for a free install, for long.
 */
export const SERVER_INSTALL_TIMEOUT_MS = 60_000;

const CODE_FILE_REGEXP = /\.(ts|tsx|mts|js|jsx|mjs|json)$/;
/** Files at the top of a site folder that change how its modules load. */
const DEPENDENCY_FILES = ["deno.json", "deno.jsonc", LOCK_FILE];

function isCodeFile(path: string): boolean {
  return CODE_FILE_REGEXP.test(path);
}

/** Owns every site of one server. */
export class Supervisor implements Sites {
  readonly #options: SupervisorOptions;
  #runners = new Map<string, SiteRunner>();
  #static = new Map<string, StaticIndex>();
  #snapshot: Snapshot = emptySnapshot();
  /** Route patterns compiled once per generation, kept across rebuilds. */
  #compiled = new Map<string, CompiledPattern>();
  #notLoaded = new Map<string, string>();
  /** Conflicts already reported, so each is logged once. */
  #conflicts = new Set<string>();
  /** Site folder names seen by the last scan. */
  #folderNames = new Set<string>();
  #watches = new Map<string, Watch>();
  #sitesWatch: Watch | null = null;
  #poll: ReturnType<typeof setInterval> | null = null;
  #heartbeat: ReturnType<typeof setInterval> | null = null;
  #diskWatch: ReturnType<typeof setInterval> | null = null;
  #idleWatch: ReturnType<typeof setInterval> | null = null;
  #measuring = false;
  /** Loads of a site, one at a time. */
  #loads = new Coalescer<string>((name) => this.#reloadOnce(name), {
    stopped: () => this.#stopping,
  });
  /** Scans of a site's static files, one at a time, at most one a second. */
  #staticScans = new Coalescer<string>(
    (name) => this.#rescanStaticOnce(name),
    { minIntervalMs: STATIC_SCAN_EVERY_MS, stopped: () => this.#stopping },
  );
  /** Scans of the sites folder, one at a time. */
  #folderScans = new Coalescer<null>(() => this.#rescanOnce(), {
    stopped: () => this.#stopping,
  });
  #stopping = false;
  #grants: Grants = requestedGrants();
  /** The grants file's modification time and size as last read. */
  #grantsStamp = "";
  /** Sites whose grant changed since their last load. */
  #regranted = new Set<string>();
  /** Scripts in each site's autorun/ that are not run, as last warned about. */
  #notRun = new Map<string, string[]>();
  /** Each site's lockfile as the server's own install (`--install`) left it. */
  #installedLocks = new Map<string, string>();
  /** Installs running now (`--install`), by site. */
  #installing = new Map<string, Promise<unknown>>();
  /**
   * Installs run a few at once: a server starting with many sites does not
   * start a `deno install` for each at once.
   */
  #installs = new Slots(MAX_INSTALLS);
  /**
   * Sandboxes starting at once, as the server starts and as sleeping sites
   * wake: a hundred sites on two cores load sooner a few at a time, a
   * thousand never all load at once, and a request to every sleeping site
   * at once wakes them in turn.
   */
  #starts = new Slots(STARTS_AT_ONCE);
  /** Spare sandboxes of the sites reloaded last (see ./spares.ts). */
  #spares: Spares;
  /** Sandboxes started for a site and not loaded yet. */
  #loadsRunning = 0;
  /** Which requests may be answered before every site has started. */
  #firstStart = new FirstStart(
    (site) => this.#starts.hurry(site),
    (site) => this.#runners.has(site),
    () => this.#publish(),
  );

  /**
   * Settles when a request for `host` (its Host, as the gateway reads it)
   * can be routed: at once after the first start; during it, as soon as the
   * one site that owns the name has started (moved to the front of the
   * start queue), when no other site may claim it; else when all have.
   */
  readyFor(host: string): Promise<void> {
    return this.#firstStart.readyFor(host);
  }

  /** Spares waiting to start: only the latest few do. */
  #spareAsks = new SpareAsks();
  /** Aborted at stop: no install outlives the server. */
  #installsStop = new AbortController();

  constructor(options: SupervisorOptions) {
    this.#options = options;
    this.#spares = new Spares(options.warmSpares ?? 0, SPARE_TTL_MS);
  }

  get snapshot(): Snapshot {
    return this.#snapshot;
  }

  get notLoaded(): ReadonlyMap<string, string> {
    return this.#notLoaded;
  }

  /** The spare sandboxes kept (see ./spares.ts), for /stats. */
  get spares(): { site: string; pid: number; memoryBytes: number | null }[] {
    return this.#spares.list().map(({ site, sandbox }) => ({
      site,
      pid: sandbox.pid,
      memoryBytes: sandbox.memoryBytes(),
    }));
  }

  /** Names of the sites loaded and serving (or restarting). */
  get siteNames(): string[] {
    return [...this.#runners.keys()];
  }

  /** The grants in force. */
  get grants(): Grants {
    return this.#grants;
  }

  /**
   * Loads the root site and every site folder; returns those that failed.
   * @throws {GrantsError} when the grants file cannot be used
   */
  async start(): Promise<SiteProblem[]> {
    const { grantsFile } = this.#options;
    if (grantsFile !== null) {
      this.#grantsStamp = await fileStamp(grantsFile);
      this.#grants = await readGrants(grantsFile);
    }
    const problems: SiteProblem[] = [];
    const defs: SiteDefinition[] = [];
    try {
      defs.push(await defineRootSite(this.#options.projectDir));
    } catch (err) {
      problems.push({ site: ROOT_SITE, message: messageOf(err) });
    }
    const { sites, errors, names } = await discoverSites(
      this.#options.sitesDir,
      this.#grantSource(),
    );
    this.#folderNames = new Set(names);
    defs.push(...sites);
    for (const e of errors) problems.push({ site: e.site, message: e.message });
    this.#firstStart.begin(defs);
    const results = await Promise.all(
      defs.map((def) =>
        this.#startSite(def).finally(() => this.#firstStart.started(def.name))
      ),
    );
    for (const problem of results) if (problem !== null) problems.push(problem);
    this.#publish();
    this.#firstStart.end();
    this.#starts.forgetHurried();
    for (const p of problems) {
      log.error(p.site, `Site not loaded: ${p.message}`);
      this.#notLoaded.set(p.site, p.message);
    }
    // Site code is watched all the time, not only after a page times out.
    this.#heartbeat = setInterval(() => {
      for (const runner of this.#runners.values()) runner.watch();
    }, HEARTBEAT_EVERY_MS);
    this.#diskWatch = setInterval(() => void this.#checkDisks(), DISK_CHECK_MS);
    if ((this.#options.idleStopMs ?? null) !== null) {
      this.#idleWatch = setInterval(() => {
        const now = performance.now();
        for (const runner of this.#runners.values()) {
          if (runner.asleep) continue;
          runner.sleepIfIdle(now);
          // It was visited, then went quiet: its next visit starts warm, if
          // it is among the last few to sleep or reload (--warm-spares).
          if (runner.asleep) {
            this.#keepSpareSoon(runner.name, runner, SLEEP_SPARE_DELAY_MS);
          }
        }
      }, IDLE_CHECK_MS);
    }

    return problems;
  }

  async #startSite(site: SiteDefinition): Promise<SiteProblem | null> {
    const def = await this.#prepare(site);
    if (typeof def === "string") return { site: site.name, message: def };
    const runner: SiteRunner = new SiteRunner(def, {
      check: (d, routes) =>
        checkRoutes(
          d,
          routes,
          this.#static.get(d.name) ?? emptyStaticIndex(),
          this.#compiled,
        ),
      threads: this.#options.threads,
      requestTimeout: this.#options.requestTimeout,
      queue: this.#options.siteQueue,
      idleStopMs: this.#options.idleStopMs ?? null,
      spawn: (d): SandboxProcess => this.#spawn(d, runner),
      onRoutesChanged: () => this.#publish(),
      starts: this.#starts,
      ...(this.#options.tasks === undefined
        ? {}
        : { tasks: this.#options.tasks }),
    });
    try {
      const files = await scanSiteStatic(def);
      const keep = await this.#keepKey(def, runner);
      const kept = keep === null
        ? null
        : await readKeptRoutes(keep.dir, def.name, keep.key);
      if (
        kept !== null && kept.tasks === 0 && !this.#stopping &&
        (def.root || this.#folderNames.has(def.name)) &&
        checkRoutes(def, kept, files, this.#compiled) === null
      ) {
        // Unchanged since its pages were kept: nothing starts until asked.
        runner.startAsleep(kept);
        this.#static.set(def.name, files);
        this.#runners.set(def.name, runner);
        log.info(
          def.name,
          `Asleep until its first request (${
            describePages(kept)
          }, as at its last load with these files)`,
        );
        return null;
      }
      const { sandbox, routes } = await this.#starts.run(
        () => runner.load(),
        START_SLOT_MS,
        def.name,
      );
      const problem = checkRoutes(def, routes, files, this.#compiled);
      if (problem !== null) {
        sandbox.kill("its routes were refused");
        return { site: def.name, message: problem };
      }
      if (this.#stopping) {
        sandbox.kill("the server is stopping");
        return null;
      }
      if (!def.root && !this.#folderNames.has(def.name)) {
        sandbox.kill("its folder was removed while it loaded");
        return null;
      }
      runner.adopt(sandbox, routes);
      this.#static.set(def.name, files);
      this.#runners.set(def.name, runner);
      log.info(def.name, describeLoad(def, routes, sandbox.pid));
      if (keep !== null) {
        // Sleeps now, unless it has tasks or a request waits for it: nobody
        // has asked for it yet.
        if (!this.#firstStart.wanted(def.name)) {
          runner.sleepIfIdle(Infinity, true);
        }
        await keepRoutes(keep.dir, def.name, keep.key, routes).catch((err) =>
          log.warn(
            def.name,
            `Its pages could not be kept for the next start: ${messageOf(err)}`,
          )
        );
      }
      return null;
    } catch (err) {
      return { site: def.name, message: messageOf(err) };
    }
  }

  #define(name: string): Promise<SiteDefinition> {
    return name === ROOT_SITE
      ? defineRootSite(this.#options.projectDir)
      : defineSite(
        name,
        join(this.#options.sitesDir, name),
        this.#grantSource(),
      );
  }

  #grantSource() {
    return { grants: this.#grants, server: this.#options.serverAddress() };
  }

  /**
   * Reads the grants file again when it changed, and reloads the sites
   * whose grant is not what it was (a grant can only be judged at load).
   * A file that cannot be used is logged and the grants in force stay.
   */
  async #checkGrants(): Promise<void> {
    const file = this.#options.grantsFile;
    if (file === null || this.#stopping) return;
    const stamp = await fileStamp(file);
    if (stamp === this.#grantsStamp) return;
    this.#grantsStamp = stamp;
    let next: Grants;
    try {
      next = await readGrants(file);
    } catch (err) {
      log.error(
        null,
        `Grants not changed, the previous ones stay: ${messageOf(err)}`,
      );
      return;
    }
    const before = this.#grants;
    this.#grants = next;
    const names = new Set([...this.#runners.keys(), ...this.#notLoaded.keys()]);
    names.delete(ROOT_SITE);
    const changed = [...names].filter((name) =>
      JSON.stringify(grantOf(before, name)) !==
        JSON.stringify(grantOf(next, name))
    );
    if (changed.length === 0) return;
    log.info(
      null,
      `Grants changed in ${file}: reloading ${changed.join(", ")}`,
    );
    await Promise.all(changed.map((name) => this.#regrant(name)));
  }

  /**
   * A site whose grant changed: reloaded when it still fits, stopped when
   * it asks for more than it is granted now (the generation serving was
   * judged against the old grant, so it must not keep serving). Goes
   * through the site's loads, so it never overlaps one.
   */
  #regrant(name: string): Promise<void> {
    this.#regranted.add(name);
    return this.reloadSite(name);
  }

  /**
   * Loads a new generation of one site (or starts a site that was not
   * running); the old generation serves until the new one has loaded.
   * Loads of one site never overlap: a change while one runs asks for one
   * more load after it.
   */
  reloadSite(name: string): Promise<void> {
    return this.#loads.run(name);
  }

  async #reloadOnce(name: string): Promise<void> {
    if (this.#stopping) return;
    let def: SiteDefinition;
    try {
      def = await this.#define(name);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound && name !== ROOT_SITE) {
        // The folder went away: a scan stops the site (not awaited: the
        // scan may be the one waiting for this load).
        void this.rescan();
        return;
      }
      const running = this.#runners.get(name);
      if (this.#regranted.delete(name) && running !== undefined) {
        this.#runners.delete(name);
        this.#spares.drop(name);
        this.#static.delete(name);
        this.#notLoaded.set(name, messageOf(err));
        this.#publish();
        log.error(
          name,
          `Site stopped: its grant no longer covers it: ${messageOf(err)}`,
        );
        await running.stop(10_000);
        return;
      }
      if (running !== undefined) {
        running.reloadFailed(messageOf(err));
      } else log.error(name, `Site not loaded: ${messageOf(err)}`);
      return;
    }
    this.#regranted.delete(name);
    const runner = this.#runners.get(name);
    if (runner === undefined) {
      const problem = await this.#startSite(def);
      if (problem !== null) {
        log.error(name, `Site not loaded: ${problem.message}`);
        this.#notLoaded.set(name, problem.message);
      } else {
        this.#notLoaded.delete(name);
        this.#publish();
      }
      return;
    }
    const prepared = await this.#prepare(def);
    if (typeof prepared === "string") {
      runner.reloadFailed(prepared);
      return;
    }
    def = prepared;
    let files: StaticIndex;
    try {
      files = await scanSiteStatic(def);
    } catch (err) {
      runner.reloadFailed(messageOf(err));
      return;
    }
    const writable = JSON.stringify(runner.def.manifest.permissions.write);
    const took = await runner.reload(
      def,
      (d, routes) => checkRoutes(d, routes, files, this.#compiled),
      () => {
        this.#static.set(name, files);
        this.#options.onReload?.(name);
        this.#publish();
      },
    );
    // Being worked on: its next reload starts warm.
    if (took) this.#keepSpareSoon(name, runner);
    // Its writable folders changed: they are left out of the watch.
    if (
      JSON.stringify(runner.def.manifest.permissions.write) !== writable &&
      this.#watches.has(name)
    ) {
      this.#watchSite(name);
    }
  }

  /**
   * Reads the grants again, reloads every site and picks up sites added or
   * removed (SIGHUP).
   */
  async reloadAll(): Promise<void> {
    this.#grantsStamp = "";
    await this.#checkGrants();
    await this.rescan();
    // Sites that did not load are tried again too.
    const names = new Set([...this.#runners.keys(), ...this.#notLoaded.keys()]);
    await Promise.all([...names].map((n) => this.reloadSite(n)));
  }

  /** Starts watching every site folder, the root site and the sites folder. */
  watch(): void {
    const autorun = join(this.#options.projectDir, "autorun");
    this.#watches.set(
      ROOT_SITE,
      watchFolder(autorun, {
        site: ROOT_SITE,
        ignore: (path) => !isCodeFile(path),
        onChange: () => void this.reloadSite(ROOT_SITE),
      }),
    );
    this.#sitesWatch = watchFolder(this.#options.sitesDir, {
      site: null,
      recursive: false,
      onChange: () => void this.rescan(),
    });
    // Deno's watcher reports no event when a link is made (`cli mount`):
    // the sites folder is also listed every few seconds.
    this.#poll = setInterval(() => {
      void this.rescan();
      void this.#checkGrants();
    }, SITES_POLL_MS);
    for (const name of this.#folderNames) this.#watchSite(name);
  }

  #watchSite(name: string): void {
    const folder = join(this.#options.sitesDir, name);
    let dir: string;
    try {
      dir = Deno.realPathSync(folder);
    } catch {
      return;
    }
    this.#watches.get(name)?.close();
    // A site's writable folders are never watched (they are not code).
    const writable = this.#runners.get(name)?.def.manifest.permissions.write ??
      [];
    this.#watches.set(
      name,
      watchFolderExcept(dir, writable, {
        site: name,
        ignore: (path) => this.#changeKind(name, dir, path) === null,
        onChange: (paths) => {
          const kinds = paths.map((p) => this.#changeKind(name, dir, p));
          if (kinds.includes("code")) void this.#codeChanged(name, dir, paths);
          else if (kinds.includes("static")) void this.rescanStatic(name);
        },
      }),
    );
  }

  /**
   * A change to a site's code reloads it, unless the change is only its
   * lockfile as the server's own install (`--install`) wrote it for the
   * generation serving: that reload would only install again. The install
   * may still be finishing when the change is seen.
   */
  async #codeChanged(
    name: string,
    dir: string,
    paths: string[],
  ): Promise<void> {
    // A save seen half-way (truncated, not yet written) would load an
    // empty script over a working one: its write is the next change.
    const emptied = [];
    for (const p of new Set(paths)) {
      if (!isCodeFile(p)) continue;
      const size = await Deno.stat(p).then((i) => i.size, () => null);
      if (size === 0) emptied.push(relative(dir, p));
    }
    if (emptied.length > 0) {
      log.warn(
        name,
        `${
          emptied.join(", ")
        } is empty: not reloaded until it has content (a save half-way)`,
      );
      return;
    }
    const lock = join(dir, LOCK_FILE);
    if (paths.every((p) => p === lock) && this.#runners.has(name)) {
      await this.#installing.get(name);
      const own = this.#installedLocks.get(name);
      const now = await Deno.readTextFile(lock).catch(() => null);
      if (own !== undefined && now === own) return;
    }
    await this.reloadSite(name);
  }

  /**
   * What a changed path means: code and site.json reload the site, files
   * under static/ re-index them, the site's writable folders and anything
   * else count for nothing.
   */
  #changeKind(
    name: string,
    dir: string,
    path: string,
  ): "code" | "static" | null {
    const rel = relative(dir, path);
    if (rel === "" || !isInside(dir, path)) return null;
    if (rel === "static" || rel.startsWith(`static${SEP}`)) return "static";
    const writable = this.#runners.get(name)?.def.manifest.permissions.write ??
      [];
    if (writable.some((w) => isInside(w, path))) return null;
    return rel === "site.json" || DEPENDENCY_FILES.includes(rel) ||
        isCodeFile(path)
      ? "code"
      : null;
  }

  /**
   * Re-indexes a site's static files (they changed; its code did not). One
   * scan of a site runs at a time, at most one a second (a site writing
   * into its own static folder cannot make the gateway rescan without end);
   * changes meanwhile ask for one more.
   */
  rescanStatic(name: string): Promise<void> {
    return this.#staticScans.run(name);
  }

  async #rescanStaticOnce(name: string): Promise<void> {
    const runner = this.#runners.get(name);
    if (runner === undefined || runner.routes === null || this.#stopping) {
      return;
    }
    try {
      const files = await scanSiteStatic(runner.def);
      const problem = checkRoutes(
        runner.def,
        runner.routes,
        files,
        this.#compiled,
      );
      if (problem !== null) {
        log.error(name, `Static files not updated: ${problem}`);
        return;
      }
      this.#static.set(name, files);
      this.#publish();
    } catch (err) {
      log.error(name, `Static files not updated: ${messageOf(err)}`);
    }
  }

  /**
   * Starts sites whose folders appeared and stops those whose folders went.
   * One scan runs at a time; one asked for meanwhile runs after it.
   */
  rescan(): Promise<void> {
    return this.#folderScans.run(null);
  }

  async #rescanOnce(): Promise<void> {
    if (this.#stopping) return;
    const names = new Set(await siteFolderNames(this.#options.sitesDir));
    const added = [...names].filter((n) => !this.#folderNames.has(n));
    const removed = [...this.#folderNames].filter((n) => !names.has(n));
    this.#folderNames = names;
    for (const name of removed) {
      this.#watches.get(name)?.close();
      this.#watches.delete(name);
      const runner = this.#runners.get(name);
      if (runner === undefined) continue;
      this.#runners.delete(name);
      this.#static.delete(name);
      this.#spares.drop(name);
      this.#publish();
      log.info(name, "Site folder removed: the site is stopped");
      if (this.#options.routesDir !== undefined) {
        await forgetRoutes(this.#options.routesDir, name);
      }
      await runner.stop(10_000);
    }
    await Promise.all(added.map(async (name) => {
      if (this.#sitesWatch !== null) this.#watchSite(name);
      log.info(name, "Site folder added");
      await this.reloadSite(name);
    }));
  }

  /**
   * What comes before a site's sandbox starts, on load and on reload: a
   * warning for the scripts it will not run, and with `--install`, its
   * dependencies.
   * @returns the site as it is now, or why it cannot start
   */
  async #prepare(def: SiteDefinition): Promise<SiteDefinition | string> {
    this.#warnNotRun(def);
    return this.#options.install && !def.root ? await this.#install(def) : def;
  }

  /**
   * `--install`: installs a site's dependencies before its sandbox starts.
   * @returns the site as it is now (it may have a lockfile it did not have),
   * or why its dependencies could not be installed
   */
  async #install(def: SiteDefinition): Promise<SiteDefinition | string> {
    const running = this.#installs.run(() =>
      installSite({
        site: def.name,
        siteDir: def.dir,
        scripts: def.scripts,
        deps: def.deps,
        projectDir: this.#options.projectDir,
        cacheDir: this.#siteCache(def.name),
        configDir: this.#options.configDir,
        quotaMiB: def.manifest.disk,
        touchLock: false,
        timeoutMs: SERVER_INSTALL_TIMEOUT_MS,
        signal: this.#installsStop.signal,
      })
    ).then((result) => {
      // Its own lockfile, as it left it: that change is no reason to reload.
      if (result.kind === "installed") {
        this.#installedLocks.set(def.name, result.lockText);
      }
      return result;
    });
    this.#installing.set(def.name, running.catch(() => {}));
    let result;
    try {
      result = await running;
    } finally {
      this.#installing.delete(def.name);
    }
    if (result.kind === "failed") {
      // A script of its own that does not parse fails the install first:
      // that, with its file and line, is what to say.
      return /^SyntaxError\b/.test(result.reason)
        ? result.reason
        : `installing its dependencies failed: ${result.reason}`;
    }
    if (result.kind === "nothing") return def;
    log.info(
      def.name,
      `Installed ${installedText(result)} (${
        Math.ceil(result.bytes / MIB)
      } MiB in its cache)`,
    );
    try {
      return { ...def, deps: await readSiteDependencies(def.dir) };
    } catch (err) {
      if (err instanceof DependencyError) return err.message;
      throw err;
    }
  }

  /**
   * With `--idle-stop`, where and under which key what `def` registers is
   * kept; null without it, or when the site cannot be kept.
   */
  async #keepKey(
    def: SiteDefinition,
    runner: SiteRunner,
  ): Promise<{ dir: string; key: string } | null> {
    const dir = this.#options.routesDir;
    if (dir === undefined || (this.#options.idleStopMs ?? null) === null) {
      return null;
    }
    const key = await siteKey(def, this.#options.projectDir, {
      workers: runner.workersOf(def),
      writes: !runner.disk.revoked,
    });
    return key === null ? null : { dir, key };
  }

  /**
   * Warns about the files in a site's autorun/ that are not run, when they
   * are not those it warned about last.
   */
  #warnNotRun(def: SiteDefinition): void {
    const before = this.#notRun.get(def.name) ?? [];
    this.#notRun.set(def.name, def.skipped);
    for (const file of def.skipped) {
      if (before.includes(file)) continue;
      log.warn(def.name, `${file} is not run: ${AUTORUN_RULE}`);
    }
  }

  /**
   * A sandbox for `def`: its spare if it has one started exactly so (see
   * ./spares.ts), else a new one.
   */
  #spawn(def: SiteDefinition, runner: SiteRunner): SandboxProcess {
    const spec = this.#specOf(def, runner);
    const spare = this.#spares.take(def.name, spec, lockStamp(def));
    const sandbox = spare ?? this.#launch(def, runner, spec);
    spare?.start(spec.scripts, spec.hosts);
    // Counted until loaded: spares wait while any load runs.
    this.#loadsRunning++;
    const done = () => this.#loadsRunning--;
    sandbox.loaded.then(done, done);
    return sandbox;
  }

  /**
   * Starts a spare for `runner`'s site as it is now (see ./spares.ts), a
   * moment after its reload or after it fell asleep, unless it reloaded or
   * woke meanwhile, other sandboxes are loading, or more recent sites have
   * asked for all the spares kept: in a storm of reloads or of sites falling
   * asleep together, spares would only add starts (measured by the review:
   * 30 sites asleep at once started 28 spares stopped at once).
   */
  #keepSpareSoon(
    name: string,
    runner: SiteRunner,
    delayMs = SPARE_DELAY_MS,
  ): void {
    if (this.#spares.size === 0) return;
    const generation = runner.generation;
    const asked = this.#spareAsks.ask(name);
    setTimeout(() => {
      const latest = this.#spareAsks.settle(name, asked, this.#spares.size);
      if (
        this.#stopping || this.#loadsRunning > 0 || !latest ||
        this.#runners.get(name) !== runner || runner.generation !== generation
      ) {
        return;
      }
      const def = runner.def;
      const spare = this.#launch(def, runner, {
        ...this.#specOf(def, runner),
        spare: true,
      });
      this.#spares.keep(name, spare, lockStamp(def));
    }, delayMs);
  }

  #launch(
    def: SiteDefinition,
    runner: SiteRunner,
    spec: Omit<SandboxSpec, "placement">,
  ): SandboxProcess {
    const sandbox = new SandboxProcess({
      ...spec,
      placement: this.#options.containment.place(def.name, {
        memoryMiB: def.manifest.memory,
        cpus: this.#options.siteCpu,
        workers: runner.workersOf(def),
      }),
    }, {
      onStderr: siteOutput(def.name),
      onSiteMessage: (from, msg, body, headerBytes) =>
        this.#options.onSiteMessage(def.name, from, msg, body, headerBytes),
    });
    void sandbox.exited.then(() => this.#options.onSandboxExit(sandbox));
    return sandbox;
  }

  /** How a sandbox for `def` is started now. */
  #specOf(
    def: SiteDefinition,
    runner: SiteRunner,
  ): Omit<SandboxSpec, "placement"> {
    const { read, write, net, env } = def.manifest.permissions;
    return {
      site: def.name,
      siteDir: def.dir,
      scripts: def.scripts,
      hosts: def.root ? ["*"] : def.manifest.hosts,
      workers: runner.workersOf(def),
      permissions: {
        read: [...def.baseRead, ...read],
        // Over its disk quota, a site may not write.
        write: runner.disk.revoked ? [] : write,
        net,
        env,
      },
      memory: def.manifest.memory,
      kv: def.manifest.kv,
      env: passedEnv(env),
      maxInputBacklog: this.#options.maxInputBacklog,
      isolate: this.#options.isolate,
      cacheDir: this.#makeSiteCache(def.name),
      streamIdleMs: runner.timeoutSeconds * 1000,
      ...this.#modulesOf(def),
    };
  }

  /**
   * How a site's sandbox resolves modules: with dependencies of its own, its
   * import map (written now, where no site can write) and its lockfile; and
   * how its load failures name what to install.
   */
  #modulesOf(
    def: SiteDefinition,
  ): Pick<SandboxSpec, "modules" | "explain"> {
    const { deps } = def;
    const explain = (message: string, location: string | null) =>
      explainLoadFailure(message, location, {
        site: def.name,
        siteDir: def.dir,
        map: deps?.map ?? { imports: {}, scopes: {} },
        command: this.#options.installCommand(def.name),
      });
    if (deps === null) return def.root ? {} : { explain };
    if (COMPILED) {
      // Its sandbox is this binary, with the modules built into it.
      throw new LoadError(
        "a site with dependencies of its own (deno.json, deno.lock) runs only under deno run, not in a binary made by deno compile",
        null,
      );
    }
    const importMap = writeImportMap(
      this.#options.configDir,
      def.name,
      sandboxImportMap(deps, this.#options.projectDir),
    );
    return { modules: { importMap, lockFile: deps.lockFile }, explain };
  }

  /**
   * The site's own Deno cache folder. What Deno writes on
   * its own while running a site's code (TypeScript emits, V8's code cache)
   * goes there: before, every site's landed in the server's cache, without
   * any write permission, and a site that writes new modules and imports
   * them grew it without end.
   */
  #siteCache(name: string): string {
    return join(resolve(this.#options.cacheDir), name);
  }

  /** The site's own Deno cache folder, made if missing (for a new sandbox). */
  #makeSiteCache(name: string): string {
    const dir = this.#siteCache(name);
    Deno.mkdirSync(dir, { recursive: true });
    return dir;
  }

  /**
   * Measures each site's writable folders. A site over its `disk` quota
   * loses its write access at once: its sandbox is replaced by one without
   * it. Once under again (the operator removed files, or raised the quota)
   * it gets it back with a reload.
   */
  async #checkDisks(): Promise<void> {
    if (this.#measuring) return;
    this.#measuring = true;
    try {
      for (const [name, runner] of this.#runners) {
        if (this.#stopping) break;
        if (performance.now() < runner.disk.nextCheck) continue;
        const started = performance.now();
        await this.#checkDisk(name, runner);
        // A walk that took long (a folder of many small files) is not
        // repeated at once: what the gateway spends measuring stays small.
        const took = performance.now() - started;
        runner.disk.nextCheck = performance.now() +
          Math.max(DISK_CHECK_MS, Math.min(DISK_CHECK_MOST_MS, took * 50));
      }
    } finally {
      this.#measuring = false;
    }
  }

  async #checkDisk(name: string, runner: SiteRunner): Promise<void> {
    const { write } = runner.def.manifest.permissions;
    const quota = runner.def.manifest.disk;
    // Any site grows its Deno cache by importing modules it makes (blob:,
    // data:, files it writes), with no permission at all: over the quota,
    // the sandbox is replaced and the cache emptied (Deno refills it).
    const cache = this.#siteCache(name);
    const cached = await measureDisk([cache], quota * MIB);
    if (cached.over) {
      log.error(
        name,
        `Its Deno cache went over its disk quota (${quota} MiB: its installed packages and the modules it made and imported); replacing the sandbox and emptying the cache (its packages must be installed again: ${
          this.#options.installCommand(name)
        })`,
      );
      // Its spare has the cache's files open already: it must not serve.
      this.#spares.drop(runner.name);
      runner.generation?.kill("its Deno cache went over its disk quota");
      emptyFolder(cache);
      return;
    }
    if (write.length === 0) {
      runner.disk.bytes = cached.bytes;
      return;
    }
    const usage = await measureDisk(write, quota * MIB);
    runner.disk.bytes = usage.bytes + cached.bytes;
    if (usage.over && !runner.disk.revoked) {
      runner.disk.revoked = true;
      const where = write.map((w) => relative(runner.def.dir, w)).join(", ");
      log.error(
        name,
        `Over its disk quota: more than ${quota} MiB in ${where}; it may not write until it is under again`,
      );
      this.#spares.drop(runner.name);
      runner.generation?.kill("it went over its disk quota");
    } else if (!usage.over && runner.disk.revoked) {
      runner.disk.revoked = false;
      log.info(
        name,
        `Under its disk quota again (${
          Math.ceil(usage.bytes / MIB)
        } of ${quota} MiB); write access is back`,
      );
      void this.reloadSite(name);
    }
  }

  /** Builds the snapshot of the sites as they are now, then swaps it in. */
  #publish(): void {
    const served: ServedSite[] = [];
    for (const runner of this.#runners.values()) {
      served.push({
        name: runner.name,
        runner,
        files: this.#static.get(runner.name) ?? emptyStaticIndex(),
      });
    }
    const next = buildSnapshot(
      served,
      (site, message) => log.error(site, `Routes left out: ${message}`),
      this.#compiled,
    );
    pruneCompiled(this.#compiled, served);
    const conflicts = new Set(next.conflicts);
    for (const c of conflicts) if (!this.#conflicts.has(c)) log.warn(null, c);
    this.#conflicts = conflicts;
    this.#snapshot = next;
  }

  /** What every site registered and may do, for `sandflare sites`. */
  describe(): SiteDescription[] {
    return describeSites(
      this.#snapshot,
      this.#notLoaded,
      {
        projectDir: this.#options.projectDir,
        sitesDir: this.#options.sitesDir,
      },
      this.#grants,
      this.#notRun,
    );
  }

  /** Stops watching and stops every site; in-flight requests get up to `graceMs`. */
  /** Starts or pauses a site's tasks: the cluster moved them. */
  runTasks(site: string, run: boolean): void {
    this.#runners.get(site)?.runTasks(run);
  }

  async stop(graceMs: number): Promise<void> {
    this.#stopping = true;
    this.#installsStop.abort();
    if (this.#poll !== null) clearInterval(this.#poll);
    if (this.#heartbeat !== null) clearInterval(this.#heartbeat);
    if (this.#diskWatch !== null) clearInterval(this.#diskWatch);
    if (this.#idleWatch !== null) clearInterval(this.#idleWatch);
    this.#sitesWatch?.close();
    for (const w of this.#watches.values()) w.close();
    this.#watches.clear();
    this.#spares.dropAll();
    await Promise.all([...this.#runners.values()].map((r) => r.stop(graceMs)));
    await this.#options.containment.close();
  }
}

/**
 * The variables of the server's environment a site may read: by name only
 * (a grant turns `env: true` into the names the operator lists).
 */
function passedEnv(env: boolean | string[]): Record<string, string> {
  const names = Array.isArray(env) ? env : [];
  const passed: Record<string, string> = {};
  for (const name of names) {
    const value = Deno.env.get(name);
    if (value !== undefined) passed[name] = value;
  }
  return passed;
}

/**
 * Empties a folder at once: it is renamed aside (a sandbox starting now
 * makes a new one), then removed in the background.
 */
function emptyFolder(dir: string): void {
  const aside = `${dir}.emptied-${Date.now()}`;
  try {
    Deno.renameSync(dir, aside);
  } catch {
    return; // gone already
  }
  Deno.remove(aside, { recursive: true }).catch((err) =>
    log.warn(null, `Could not remove ${aside}: ${(err as Error).message}`)
  );
}

/** A file's modification time and size, "" when it is missing. */
async function fileStamp(file: string): Promise<string> {
  try {
    const info = await Deno.stat(file);
    return `${info.mtime?.getTime()}:${info.size}`;
  } catch {
    return "";
  }
}

function scanSiteStatic(def: SiteDefinition): Promise<StaticIndex> {
  return scanStatic(join(def.dir, "static"));
}

function describeLoad(
  def: SiteDefinition,
  routes: WireRoutes,
  pid: number,
): string {
  return `Loaded ${def.scripts.length} script(s), ${
    describePages(routes)
  } (sandbox pid ${pid})`;
}

function describePages(routes: WireRoutes): string {
  const hosts = routes.hosts.map((h) => h.pattern).join(", ") || "none";
  return `${routes.pages.length} page(s), hosts: ${hosts}`;
}

/** One line for a load failure, with the file and line when known. */
export function messageOf(err: unknown): string {
  if (err instanceof LoadError && err.location !== null) {
    return `${err.location}: ${err.message}`;
  }
  if (err instanceof SiteError || err instanceof Error) return err.message;
  return String(err);
}
