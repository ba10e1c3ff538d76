/**
 * A site's own dependencies as the supervisor uses them: its `deno.json`
 * and `deno.lock` read from its folder, the import map its sandbox runs with
 * written where no site can write (`DATA_DIR/site-config/`), and Deno's
 * "not in the cache" errors turned into the command the operator runs.
 *
 * A site *has dependencies* when its folder holds a `deno.json` (or
 * `deno.jsonc`) or a `deno.lock`. Its sandbox then runs with that import
 * map, with `npm:` and remote modules allowed from its own cache
 * (`--cached-only` still), and with `--lock=SITE/deno.lock --frozen` when
 * it has a lockfile. Other sites run as before, with `deno.sandbox.jsonc`,
 * `--no-npm` and `--no-remote`.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join, resolve } from "node:path";
import { isInside } from "./paths.ts";
import {
  absoluteRuntimeMap,
  DependencyError,
  folderUrl,
  type ImportMap,
  literalAt,
  mappedSpecifier,
  mergeImportMaps,
  notInstalled,
  parseJsoncText,
  parseSiteConfig,
} from "./import_map.ts";

/** A site's lockfile, in its folder. */
export const LOCK_FILE = "deno.lock";
/** A site's configuration files, in the order Deno looks for them. */
export const CONFIG_FILES: readonly string[] = ["deno.json", "deno.jsonc"];
/** The runtime's own configuration of sandboxes, in the project folder. */
export const SANDBOX_CONFIG = "deno.sandbox.jsonc";

/** A site's dependencies, as its folder declares them. */
export interface SiteDependencies {
  /** Its `deno.json` or `deno.jsonc`, null when it has none. */
  configFile: string | null;
  /** Its `deno.lock`, null when it has none. */
  lockFile: string | null;
  /** Its own import map entries (absolute, without `"sandflare"`). */
  map: ImportMap;
}

const EMPTY_MAP: ImportMap = { imports: {}, scopes: {} };

/**
 * Reads the dependencies a site folder declares; null when it has neither
 * a `deno.json` nor a `deno.lock`.
 * @throws {DependencyError} naming the file, the field and what is valid
 */
export async function readSiteDependencies(
  siteDir: string,
): Promise<SiteDependencies | null> {
  let configFile: string | null = null;
  let map = EMPTY_MAP;
  for (const name of CONFIG_FILES) {
    const file = join(siteDir, name);
    const text = await readIfThere(file);
    if (text === null) continue;
    configFile = file;
    map = parseSiteConfig(text, { file, siteDir });
    break;
  }
  const lock = join(siteDir, LOCK_FILE);
  const lockText = await readIfThere(lock);
  if (lockText !== null) checkLockfile(lockText, lock);
  if (configFile === null && lockText === null) return null;
  return { configFile, lockFile: lockText === null ? null : lock, map };
}

/** A lockfile Deno can read: a JSON object with a `version`. */
function checkLockfile(text: string, file: string): void {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new DependencyError(
      `${file} is not valid JSON (${
        (err as Error).message
      }); delete it and install the site's dependencies again`,
    );
  }
  if (
    typeof data !== "object" || data === null ||
    typeof (data as { version?: unknown }).version !== "string"
  ) {
    throw new DependencyError(
      `${file} is not a Deno lockfile (no "version"); delete it and install the site's dependencies again`,
    );
  }
}

/**
 * The largest `deno.json` or `deno.lock` a site may have: the gateway reads
 * them and builds an import map from them on its own thread.
 */
export const MAX_DEPENDENCY_FILE_BYTES = 1024 * 1024;

async function readIfThere(file: string): Promise<string | null> {
  try {
    const info = await Deno.stat(file);
    if (info.isFile && info.size > MAX_DEPENDENCY_FILE_BYTES) {
      throw new DependencyError(
        `${file} is ${info.size} bytes; a site's deno.json and deno.lock may be at most ${MAX_DEPENDENCY_FILE_BYTES} bytes`,
      );
    }
    return await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    if (err instanceof Deno.errors.IsADirectory) {
      throw new DependencyError(`${file} is a folder, not a file`);
    }
    throw err;
  }
}

const runtimeMaps = new Map<string, ImportMap>();

/** The runtime's import map (`deno.sandbox.jsonc`), made absolute; read once. */
export function runtimeImportMap(projectDir: string): ImportMap {
  const cached = runtimeMaps.get(projectDir);
  if (cached !== undefined) return cached;
  const file = join(projectDir, SANDBOX_CONFIG);
  const url = new URL(SANDBOX_CONFIG, folderUrl(projectDir)).href;
  const map = absoluteRuntimeMap(
    parseJsoncText(Deno.readTextFileSync(file), file),
    url,
  );
  runtimeMaps.set(projectDir, map);
  return map;
}

/** The import map a site's sandbox runs with (its entries, then the runtime's). */
export function sandboxImportMap(
  deps: SiteDependencies | null,
  projectDir: string,
): ImportMap {
  return mergeImportMaps(deps?.map ?? EMPTY_MAP, runtimeImportMap(projectDir));
}

/** How long an import map no generation is starting with is kept. */
const STALE_MAP_MS = 60_000;

/**
 * Writes a site's import map into `configDir` (a folder of the server's
 * data, which no sandbox may write or even see) and returns its path. The
 * name carries a hash of the content, so a generation starting while
 * another starts with a different map never reads the other's; maps of the
 * site older than a minute are removed (Deno reads one only as it starts).
 */
export function writeImportMap(
  configDir: string,
  site: string,
  map: ImportMap,
): string {
  const text = JSON.stringify(map, null, 2) + "\n";
  const hash = createHash("sha256").update(text).digest("hex").slice(0, 16);
  const name = `${site}.${hash}.json`;
  // Absolute: a sandbox runs in its site's folder.
  const file = resolve(configDir, name);
  Deno.mkdirSync(configDir, { recursive: true });
  try {
    if (Deno.readTextFileSync(file) === text) return file;
  } catch {
    // Not written yet.
  }
  const temp = `${file}.${crypto.randomUUID()}.tmp`;
  Deno.writeTextFileSync(temp, text);
  Deno.renameSync(temp, file);
  removeStaleMaps(configDir, site, name);
  return file;
}

function removeStaleMaps(configDir: string, site: string, keep: string): void {
  const own = new RegExp(`^${RegExp.escape(site)}\\.[0-9a-f]{16}\\.json$`);
  for (const entry of Deno.readDirSync(configDir)) {
    if (entry.name === keep || !own.test(entry.name)) continue;
    const path = join(configDir, entry.name);
    try {
      const mtime = Deno.statSync(path).mtime?.getTime() ?? 0;
      if (Date.now() - mtime > STALE_MAP_MS) Deno.removeSync(path);
    } catch {
      // Removed meanwhile.
    }
  }
}

/** What explains a site's load failure. */
export interface FailureContext {
  site: string;
  siteDir: string;
  /** The site's own map (what a bare specifier stands for). */
  map: ImportMap;
  /** The command that installs the site's dependencies. */
  command: string;
}

/** What Deno 2.9.6 says when `--frozen` finds the lockfile out of date. */
export const LOCKFILE_STALE = "The lockfile is out of date";

/**
 * The message for a load failure that the operator fixes by installing the
 * site's dependencies, or null for any other failure.
 * @param location `autorun/ar_x.ts:1:24`, as the worker located the error
 */
export function explainLoadFailure(
  message: string,
  location: string | null,
  context: FailureContext,
): string | null {
  if (message.includes(LOCKFILE_STALE)) {
    return `${
      join(context.siteDir, LOCK_FILE)
    } does not match what the site imports (its imports changed since the last install); run: ${context.command}`;
  }
  const named = notInstalled(message);
  if (named === undefined) return null;
  const written = location === null
    ? null
    : writtenAt(context.siteDir, location);
  const specifier = written !== null
    ? mappedSpecifier(written, context.map)
    : named;
  const what = specifier === null ? "A package it imports" : JSON.stringify(
    specifier,
  );
  return `${what} is not installed; run: ${context.command}`;
}

/** The largest file of a site read to find the specifier a failure names. */
const MAX_LOOKUP_BYTES = 1024 * 1024;

/**
 * The specifier written at `file:line:column` of the site's code, if any.
 * The location comes from the site's sandbox: only a file of the site, of a
 * bounded size, is read.
 */
function writtenAt(siteDir: string, location: string): string | null {
  const match = /^(.+):(\d+):(\d+)$/.exec(location);
  if (match === null) return null;
  const file = resolve(siteDir, match[1]!);
  if (!isInside(siteDir, file)) return null;
  try {
    const info = Deno.statSync(file);
    if (!info.isFile || info.size > MAX_LOOKUP_BYTES) return null;
    const code = Deno.readTextFileSync(file);
    return literalAt(code, Number(match[2]), Number(match[3]));
  } catch {
    return null;
  }
}
