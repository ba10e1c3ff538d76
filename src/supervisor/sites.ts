/**
 * Finding the sites to run: the root site (`autorun/`) and every folder of
 * `--sites-dir`, each checked before any of its code runs.
 *
 * @module
 */

import { join, relative, resolve, sep } from "node:path";
import {
  LOADER_PATHS,
  loaderPathUnder,
  ManifestError,
  parseManifest,
  type SiteManifest,
} from "./manifest.ts";
import { readSiteDependencies, type SiteDependencies } from "./dependencies.ts";
import { isInside } from "./paths.ts";
import { DependencyError } from "./import_map.ts";
import {
  grantOf,
  type Grants,
  judgeRequest,
  resolveNetHosts,
  type ServerAddress,
  type SiteGrant,
} from "./grants.ts";

/** A site ready to be started. */
export interface SiteDefinition {
  name: string;
  /** Real path of the site folder; `setFile` and permissions are relative to it. */
  dir: string;
  /** The built-in root site (may register any host). */
  root: boolean;
  /** What the site gets: its request (site.json), within its grant. */
  manifest: SiteManifest;
  /** What the operator granted it (null for the root site). */
  grant: SiteGrant | null;
  /** Folders the site's workers may always read (its own folder for a site). */
  baseRead: string[];
  /** file: URLs of `autorun/ar_*.ts`, in file-name order. */
  scripts: string[];
  /** Scripts in `autorun/` that are not run (not `ar_*.ts`), relative to `dir`. */
  skipped: string[];
  /** Its own dependencies (deno.json, deno.lock); null when it has none. */
  deps: SiteDependencies | null;
}

/** A site that cannot be started, and why. */
export class SiteError extends Error {
  override name = "SiteError";
  readonly site: string;
  constructor(site: string, message: string) {
    super(message);
    this.site = site;
  }
}

/** The built-in root site's name in logs and on /stats. */
export const ROOT_SITE = "root";
const NAME_REGEXP = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const SCRIPT_REGEXP = /^ar_.*\.ts$/;
/** Files in autorun/ that look like scripts: those not run are warned about. */
const CODE_REGEXP = /\.(ts|tsx|mts|cts|js|jsx|mjs|cjs)$/;

/** The rule of which files in `autorun/` run, as messages state it. */
export const AUTORUN_RULE =
  "only autorun/ar_*.ts files run at load; a module they import belongs outside autorun/";
const MAX_CHECKED_ENTRIES = 20_000;

/** The autorun scripts of a folder as file: URLs, in file-name order. */
export async function listScripts(autorunDir: string): Promise<string[]> {
  return (await readAutorun(autorunDir)).scripts;
}

/**
 * The autorun scripts of a folder as file: URLs, in file-name order, and
 * the names of the files there that look like code but are not run.
 */
export async function readAutorun(
  autorunDir: string,
): Promise<{ scripts: string[]; skipped: string[] }> {
  const names: string[] = [];
  const skipped: string[] = [];
  try {
    for await (const entry of Deno.readDir(autorunDir)) {
      if (entry.isDirectory) continue;
      if (SCRIPT_REGEXP.test(entry.name)) names.push(entry.name);
      else if (CODE_REGEXP.test(entry.name)) skipped.push(entry.name);
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { scripts: [], skipped };
    throw err;
  }
  names.sort();
  return {
    scripts: names.map((n) => new URL(`file://${join(autorunDir, n)}`).href),
    skipped: skipped.sort(),
  };
}

/**
 * Fails when a symlink under `dir` leads outside `boundary`.
 * @throws {SiteError}
 */
export async function checkSymlinks(
  site: string,
  dir: string,
  boundary: string,
): Promise<void> {
  let seen = 0;
  const walk = async (folder: string): Promise<void> => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(folder));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      throw err;
    }
    for (const entry of entries) {
      if (++seen > MAX_CHECKED_ENTRIES) {
        throw new SiteError(
          site,
          `More than ${MAX_CHECKED_ENTRIES} files to check for symlinks in ${dir}; keep a site's folder smaller`,
        );
      }
      const path = join(folder, entry.name);
      if (entry.isSymlink) {
        const target = await realTarget(path);
        if (!isInside(boundary, target)) {
          throw new SiteError(
            site,
            `Symlink ${
              relative(boundary, path)
            } leads out of the site folder (to ${target}); remove it or copy the file in`,
          );
        }
      } else if (entry.isDirectory) {
        await walk(path);
      }
    }
  };
  await walk(dir);
}

async function realTarget(link: string): Promise<string> {
  try {
    return await Deno.realPath(link);
  } catch {
    // Dangling: judge by where it points.
    return resolve(join(link, ".."), await Deno.readLink(link));
  }
}

/**
 * A site's request: its `site.json` (`file`) parsed, or the defaults when
 * it has none.
 * @throws {ManifestError} naming the file and the field
 */
export async function readManifest(
  file: string,
  dir: string,
): Promise<SiteManifest> {
  let text: string | null;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    text = null;
  }
  return parseManifest(text, { file, siteDir: dir });
}

/** What a site's request is judged against. */
export interface GrantSource {
  grants: Grants;
  /** The server's own address, once it listens. */
  server: ServerAddress | null;
}

/**
 * Loads one site folder's definition, its request judged against its grant.
 * @throws {SiteError} naming the site, the file and what is wrong
 */
export async function defineSite(
  name: string,
  folder: string,
  source: GrantSource,
): Promise<SiteDefinition> {
  if (!NAME_REGEXP.test(name)) {
    throw new SiteError(
      name,
      `Site folder name ${
        JSON.stringify(name)
      } is not valid: use letters, digits, ".", "_" or "-" (at most 64)`,
    );
  }
  if (name === ROOT_SITE) {
    throw new SiteError(
      name,
      `Site folder "${ROOT_SITE}" clashes with the built-in root site; rename it`,
    );
  }
  const dir = await Deno.realPath(folder);
  await checkSymlinks(name, dir, dir);
  let request: SiteManifest;
  const file = join(dir, "site.json");
  try {
    request = await readManifest(file, dir);
  } catch (err) {
    if (err instanceof ManifestError) throw new SiteError(name, err.message);
    throw err;
  }
  const { grants } = source;
  const grant = grantOf(grants, name);
  const decision = judgeRequest(request, grant, {
    siteDir: dir,
    server: source.server,
    requested: grants.file === null,
    resolved: await resolveNetHosts(request.permissions.net),
  });
  if (!decision.ok) {
    const from = grants.file === null
      ? "it may have"
      : grants.sites.has(name)
      ? `${grants.file} grants it`
      : `${grants.file} grants a site it does not list`;
    throw new SiteError(
      name,
      `${file} asks for more than ${from}: ${
        decision.problems.join("; ")
      }. To grant what it asks: deno task cli grant ${name}`,
    );
  }
  await checkWritable(name, dir, decision.manifest.permissions.write);
  const { scripts, skipped } = await readAutorun(join(dir, "autorun"));
  let deps: SiteDependencies | null;
  try {
    deps = await readSiteDependencies(dir);
  } catch (err) {
    if (err instanceof DependencyError) throw new SiteError(name, err.message);
    throw err;
  }
  return {
    name,
    dir,
    root: false,
    manifest: decision.manifest,
    // With --grant-requests there is no grant: the request is all.
    grant: grants.file === null ? null : grant,
    baseRead: [dir],
    scripts,
    skipped: skipped.map((n) => `autorun/${n}`),
    deps,
  };
}

/**
 * A writable path must not reach what the loader reads by another way: a
 * link inside the folder (`data -> .`), or a file the loader reads that is
 * hard-linked (so writing its twin would rewrite it).
 * @throws {SiteError}
 */
async function checkWritable(
  site: string,
  dir: string,
  writable: readonly string[],
): Promise<void> {
  for (const path of writable) {
    const real = await Deno.realPath(path).catch(() => path);
    const over = loaderPathUnder(dir, real);
    if (over !== null) {
      throw new SiteError(
        site,
        `The writable path ${
          relative(dir, path)
        } leads to ${over} (through a link), which the loader reads; a site may not rewrite its own manifest or code`,
      );
    }
  }
  if (writable.length === 0) return;
  let seen = 0;
  // A link inside a writable folder to what the loader reads.
  const inWritable = [...writable];
  while (inWritable.length > 0) {
    const path = inWritable.pop()!;
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(path));
    } catch {
      continue;
    }
    for (const entry of entries) {
      if (++seen > MAX_CHECKED_ENTRIES) break;
      const child = join(path, entry.name);
      if (entry.isDirectory) inWritable.push(child);
      if (!entry.isSymlink) continue;
      const over = loaderPathUnder(dir, await realTarget(child));
      if (over !== null) {
        throw new SiteError(
          site,
          `${
            relative(dir, child)
          } is a link to ${over}, which the loader reads, inside a writable folder; a site may not rewrite its own manifest or code`,
        );
      }
    }
  }
  const loaded: string[] = LOADER_PATHS.map((name) => join(dir, name));
  while (loaded.length > 0) {
    const path = loaded.pop()!;
    let info: Deno.FileInfo;
    try {
      info = await Deno.lstat(path);
    } catch {
      continue;
    }
    if (info.isDirectory) {
      if (path.endsWith(`${sep}node_modules`)) continue; // not hard-linked by us
      for await (const entry of Deno.readDir(path)) {
        if (++seen > MAX_CHECKED_ENTRIES) break;
        loaded.push(join(path, entry.name));
      }
    } else if (info.isFile && (info.nlink ?? 1) > 1) {
      throw new SiteError(
        site,
        `${
          relative(dir, path)
        } is hard-linked (${info.nlink} names): with a writable folder the site could rewrite it through another name; copy it instead`,
      );
    }
  }
}

/** The root site: `autorun/` and `static/` of the project. */
export async function defineRootSite(
  projectDir: string,
): Promise<SiteDefinition> {
  const dir = await Deno.realPath(projectDir);
  const autorun = join(dir, "autorun");
  await checkSymlinks(ROOT_SITE, autorun, dir);
  const manifest = parseManifest(null, {
    file: join(dir, "site.json"),
    siteDir: dir,
  });
  const { scripts, skipped } = await readAutorun(autorun);
  return {
    name: ROOT_SITE,
    dir,
    root: true,
    manifest,
    grant: null,
    baseRead: [autorun, join(dir, "static")],
    scripts,
    skipped: skipped.map((n) => `autorun/${n}`),
    // The root site's modules are the server's: deno.sandbox.jsonc.
    deps: null,
  };
}

/** A non-hidden entry of the sites folder, with its stat or why it has none. */
interface SitesEntry {
  name: string;
  folder: string;
  info: Deno.FileInfo | Error;
}

/** The non-hidden entries of `sitesDir`, sorted by name (none if it is missing). */
async function listSitesDir(sitesDir: string): Promise<SitesEntry[]> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(sitesDir));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  const names = entries.map((e) => e.name).filter((n) => !n.startsWith("."))
    .sort();
  return await Promise.all(names.map(async (name) => {
    const folder = join(sitesDir, name);
    const info = await Deno.stat(folder).catch((err: Error) => err);
    return { name, folder, info };
  }));
}

/**
 * Every site folder of `sitesDir` (folders and links to folders), with the
 * problems of those that cannot be defined, and the names of the folders.
 */
export async function discoverSites(
  sitesDir: string,
  source: GrantSource,
): Promise<{ sites: SiteDefinition[]; errors: SiteError[]; names: string[] }> {
  const sites: SiteDefinition[] = [];
  const errors: SiteError[] = [];
  const names: string[] = [];
  for (const { name, folder, info } of await listSitesDir(sitesDir)) {
    if (info instanceof Error) {
      // A link to nothing: worth saying, since it was probably mounted.
      errors.push(new SiteError(name, info.message));
      continue;
    }
    if (!info.isDirectory) continue;
    names.push(name);
    try {
      sites.push(await defineSite(name, folder, source));
    } catch (err) {
      errors.push(
        err instanceof SiteError
          ? err
          : new SiteError(name, (err as Error).message),
      );
    }
  }
  return { sites, errors, names };
}

/** Names of the site folders in `sitesDir` (folders and links to folders). */
export async function siteFolderNames(sitesDir: string): Promise<string[]> {
  return (await listSitesDir(sitesDir))
    .filter((e) => !(e.info instanceof Error) && e.info.isDirectory)
    .map((e) => e.name);
}
