/**
 * Installing a site's dependencies (`cli install`, `listen --install`):
 * Deno's `deno install --entrypoint`, run as the operator with the network,
 * caches every module the site's autorun scripts import (their static
 * graph) and every package its import map names, into the site's own cache
 * (`DATA_DIR/site-cache/SITE`, the DENO_DIR its sandbox runs with), and
 * writes the site's `deno.lock` in its folder. It runs with the import map
 * the sandbox will run with (`--no-config`; see ./sandbox_process.ts), so
 * the lockfile says what the sandbox will load, and never touches the
 * server's own `deno.lock`.
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  LOCK_FILE,
  sandboxImportMap,
  type SiteDependencies,
  writeImportMap,
} from "./dependencies.ts";
import { measureDisk } from "./disk_usage.ts";
import { installTargets } from "./import_map.ts";

/** What installing needs to know of a site. */
export interface InstallSpec {
  site: string;
  /** Real path of the site folder. */
  siteDir: string;
  /** file: URLs of its autorun scripts. */
  scripts: string[];
  /** Its dependencies as its folder declares them (null: none declared). */
  deps: SiteDependencies | null;
  /** The server's folder (holding deno.sandbox.jsonc). */
  projectDir: string;
  /** The site's own Deno cache folder. */
  cacheDir: string;
  /** Where import maps are written (`DATA_DIR/site-config`). */
  configDir: string;
  /** The site's disk quota in MiB, which its cache counts against. */
  quotaMiB: number;
  /**
   * Rewrite `deno.lock` even when Deno left it as it was, so that a running
   * server sees it change and loads the site.
   */
  touchLock: boolean;
  /** How long the install may take; past it, it is killed and fails. */
  timeoutMs: number;
  /** Aborts the install (the server is stopping, say). */
  signal?: AbortSignal;
}

/** How an install went. */
export type InstallResult =
  | {
    kind: "installed";
    /** npm and JSR packages in the lockfile. */
    packages: number;
    /** Remote modules (https:) in the lockfile. */
    modules: number;
    /** What the site's cache holds now. */
    bytes: number;
    /** The lockfile as written. */
    lockText: string;
  }
  | { kind: "nothing" }
  | { kind: "failed"; reason: string };

const MIB = 1024 * 1024;

/**
 * What an install put in a site's cache, as the log and `cli install` say
 * it: `1 package(s) and 2 remote module(s)`.
 */
export function installedText(
  result: Extract<InstallResult, { kind: "installed" }>,
): string {
  return `${result.packages} package(s)${
    result.modules > 0 ? ` and ${result.modules} remote module(s)` : ""
  }`;
}

/** How long `cli install` may take for one site (a large package, a slow link). */
export const CLI_INSTALL_TIMEOUT_MS = 10 * 60_000;

/**
 * Installs one site's dependencies.
 * @returns what was installed, "nothing" when the site imports no package
 * or remote module, or why it failed
 */
export async function installSite(spec: InstallSpec): Promise<InstallResult> {
  const entries = [
    ...spec.scripts.map((url) => fileURLToPath(url)),
    ...(spec.deps === null ? [] : installTargets(spec.deps.map)),
  ];
  if (entries.length === 0) return { kind: "nothing" };
  const lockFile = join(spec.siteDir, LOCK_FILE);
  const before = await readIfThere(lockFile);
  Deno.mkdirSync(spec.cacheDir, { recursive: true });
  const importMap = writeImportMap(
    spec.configDir,
    spec.site,
    sandboxImportMap(spec.deps, spec.projectDir),
  );
  const timeout = AbortSignal.timeout(spec.timeoutMs);
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "install",
      "--no-config",
      `--import-map=${importMap}`,
      "--node-modules-dir=none",
      `--lock=${lockFile}`,
      // Remote modules from Deno's default hosts only (jsr.io, deno.land,
      // esm.sh, cdn.jsdelivr.net, raw.githubusercontent.com, …): a site's
      // code must not make the operator's machine fetch from its own
      // network (loopback, the intranet, a cloud's metadata service).
      "--entrypoint",
      ...entries,
    ],
    cwd: spec.siteDir,
    env: { DENO_DIR: spec.cacheDir, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: spec.signal === undefined
      ? timeout
      : AbortSignal.any([timeout, spec.signal]),
  }).output();
  if (timeout.aborted) {
    return {
      kind: "failed",
      reason: `the install did not finish within ${
        Math.round(spec.timeoutMs / 1000)
      } s and was stopped`,
    };
  }
  if (spec.signal?.aborted) {
    return { kind: "failed", reason: "the install was stopped" };
  }
  if (!output.success) {
    return { kind: "failed", reason: errorOf(output.stderr, spec.siteDir) };
  }
  const after = await readIfThere(lockFile);
  const counts = after === null ? null : countLocked(after);
  if (counts === null || counts.packages + counts.modules === 0) {
    // Deno writes a lockfile only for packages and remote modules; one it
    // wrote with none (or left from before) says nothing.
    if (after !== null && before === null) await Deno.remove(lockFile);
    return { kind: "nothing" };
  }
  const quota = spec.quotaMiB * MIB;
  const usage = await measureDisk([spec.cacheDir], quota);
  if (usage.over) {
    return {
      kind: "failed",
      reason:
        `its packages and Deno cache (${spec.cacheDir}) take more than its disk quota of ${spec.quotaMiB} MiB; ask for more "disk" in its site.json (and grant it)`,
    };
  }
  if (spec.touchLock && after === before) await rewrite(lockFile, after!);
  return {
    kind: "installed",
    packages: counts.packages,
    modules: counts.modules,
    bytes: usage.bytes,
    lockText: after!,
  };
}

/** The packages and remote modules a lockfile holds; null if it cannot be read. */
function countLocked(
  text: string,
): { packages: number; modules: number } | null {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof data !== "object" || data === null) return null;
  const size = (value: unknown) =>
    typeof value === "object" && value !== null ? Object.keys(value).length : 0;
  const lock = data as Record<string, unknown>;
  return {
    packages: size(lock.npm) + size(lock.jsr),
    modules: size(lock.remote),
  };
}

/** The lines of Deno's error, without its colours, backtrace and blank lines. */
/**
 * Deno's error, on one line: its message and, for an error in a file of
 * the site (a syntax error, say), where, relative to the site folder; not
 * the source excerpt Deno draws under it, nor its backtrace.
 */
function errorOf(stderr: Uint8Array, siteDir: string): string {
  const lines = new TextDecoder().decode(stderr).split("\n")
    .map((line) => line.trimEnd())
    .filter((line) => line !== "");
  const start = lines.findIndex((line) => line.startsWith("error:"));
  const site = new URL(`file://${siteDir.replace(/\/*$/, "/")}`).href;
  const error = (start < 0 ? lines.slice(-3) : lines.slice(start))
    .filter((line) => !/^(Stack backtrace:|\s+\d+: |\s*\d*\s*\|)/.test(line))
    .slice(0, 4)
    .map((line) =>
      line.replace(/^error: /, "").trim()
        .replace(/^at (file:\S+)$/, (_, url: string) =>
          `at ${
            url.startsWith(site) ? decodeURI(url.slice(site.length)) : url
          }`)
    );
  return error.join(" ") || "deno install failed without saying why";
}

/** The same bytes again, through a rename, so that watchers see a change. */
async function rewrite(file: string, text: string): Promise<void> {
  const temp = `${file}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  await Deno.writeTextFile(temp, text);
  await Deno.rename(temp, file);
}

async function readIfThere(file: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}
