/**
 * `sandflare install`: install sites' dependencies into the caches a server
 * reads them from.
 *
 * @module
 */

import { join, resolve } from "node:path";
import { escapeControl } from "../shared/escape.ts";
import { readSiteDependencies } from "../supervisor/dependencies.ts";
import { DependencyError } from "../supervisor/import_map.ts";
import { type InstallResult, installSite } from "../supervisor/install.ts";
import { ManifestError, parseManifest } from "../supervisor/manifest.ts";
import {
  readAutorun,
  ROOT_SITE,
  siteFolderNames,
} from "../supervisor/sites.ts";
import { PROJECT_DIR } from "./listen.ts";
import type { ListenOptions } from "./options.ts";

const NAME_REGEXP = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const NAME_RULE =
  'letters, digits, ".", "_" or "-", starting with a letter or digit, at most 64, not "root"';
const MIB = 1024 * 1024;

function print(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(escapeControl(text) + "\n"));
}

/**
 * `install [SITE…]`: installs the dependencies of the sites named (every
 * site of --sites-dir when none is) into their caches under --data-dir,
 * one line per site.
 * @returns 0 when every site installed (or had nothing to), 1 otherwise
 */
export async function installSitesCommand(
  names: string[],
  options: ListenOptions,
): Promise<number> {
  const sites = names.length > 0
    ? names
    : await siteFolderNames(options.sitesDir);
  if (sites.length === 0) {
    print(`No site folder in ${options.sitesDir}: nothing to install`);
    return 0;
  }
  let failed = false;
  for (const name of sites) {
    const result = await installOne(name, options);
    if (result.kind === "failed") failed = true;
    print(`${name}: ${describeResult(result)}`);
  }
  return failed ? 1 : 0;
}

function describeResult(result: InstallResult): string {
  switch (result.kind) {
    case "installed":
      return `installed ${result.packages} package(s)${
        result.modules > 0 ? ` and ${result.modules} remote module(s)` : ""
      }; its cache holds ${Math.ceil(result.bytes / MIB)} MiB`;
    case "nothing":
      return "nothing to install";
    case "failed":
      return `failed: ${result.reason}`;
    default:
      return result satisfies never;
  }
}

async function installOne(
  name: string,
  options: ListenOptions,
): Promise<InstallResult> {
  if (!NAME_REGEXP.test(name) || name === ROOT_SITE) {
    return {
      kind: "failed",
      reason: `${JSON.stringify(name)} is not a site name (${NAME_RULE})`,
    };
  }
  const folder = join(options.sitesDir, name);
  let dir: string;
  try {
    dir = await Deno.realPath(folder);
    if (!(await Deno.stat(dir)).isDirectory) throw new Error("not a folder");
  } catch {
    return { kind: "failed", reason: `there is no site folder ${folder}` };
  }
  try {
    const manifestFile = join(dir, "site.json");
    const text = await Deno.readTextFile(manifestFile).catch((err) => {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    });
    const request = parseManifest(text, { file: manifestFile, siteDir: dir });
    const dataDir = resolve(options.dataDir);
    return await installSite({
      site: name,
      siteDir: dir,
      scripts: (await readAutorun(join(dir, "autorun"))).scripts,
      deps: await readSiteDependencies(dir),
      projectDir: PROJECT_DIR,
      // As the server has them (src/cli/listen.ts).
      cacheDir: join(dataDir, "site-cache", name),
      configDir: join(dataDir, "site-config"),
      quotaMiB: request.disk,
      // A running server sees the lockfile change and loads the site.
      touchLock: true,
    });
  } catch (err) {
    if (err instanceof ManifestError || err instanceof DependencyError) {
      return { kind: "failed", reason: err.message };
    }
    throw err;
  }
}
