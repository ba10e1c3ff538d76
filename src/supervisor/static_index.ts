/**
 * The static files of a site: `static/HOST/…` folders, indexed at load so
 * they are routed like pages (a file is an exact GET page of host HOST).
 * Only files found by the scan are ever served, so no request path can
 * reach outside these folders.
 *
 * @module
 */

import { join } from "node:path";
import { isValidHostPattern } from "../router/host_pattern.ts";
import type { HostSpec, PageSpec } from "../router/router.ts";

/** One servable file. */
export interface StaticEntry {
  /** Negative, so it never collides with a page id. */
  id: number;
  /** The host pattern (the folder name under `static/`). */
  host: string;
  /** The URL path, e.g. `/css/site.css`, or `/docs/` for `docs/index.html`. */
  path: string;
  /** Absolute path of the file. */
  file: string;
}

/** A site's static index. */
export interface StaticIndex {
  entries: Map<number, StaticEntry>;
  hosts: HostSpec[];
  pages: PageSpec[];
}

/** Options of {@linkcode scanStatic}. */
export interface ScanOptions {
  /** Stop indexing past this many files. @default {100000} */
  maxFiles?: number;
}

/** A static folder that cannot be served, named in the site's load error. */
export class StaticError extends Error {
  override name = "StaticError";
}

/** An empty index. */
export function emptyStaticIndex(): StaticIndex {
  return { entries: new Map(), hosts: [], pages: [] };
}

/**
 * Indexes `staticDir` (a site's `static/`); a missing folder is an empty index.
 * @throws {StaticError} for a folder name that is not a host pattern, or too many files
 */
export async function scanStatic(
  staticDir: string,
  options: ScanOptions = {},
): Promise<StaticIndex> {
  const max = options.maxFiles ?? 100_000;
  const index = emptyStaticIndex();
  let hostDirs: Deno.DirEntry[];
  try {
    hostDirs = await Array.fromAsync(Deno.readDir(staticDir));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return index;
    throw err;
  }
  hostDirs.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const hostDir of hostDirs) {
    if (!hostDir.isDirectory) continue;
    const host = hostDir.name.toLowerCase();
    if (!isValidHostPattern(host)) {
      throw new StaticError(
        `Folder static/${hostDir.name} is not a host pattern: name it "*" (any host), "example.test", "*.example.test", "~.example.test" or "+.example.test"`,
      );
    }
    index.hosts.push({ pattern: host, noFallback: false });
    const add = (path: string, file: string) => {
      if (index.entries.size >= max) {
        throw new StaticError(
          `More than ${max} static files; keep fewer under static/`,
        );
      }
      const id = -(index.entries.size + 1);
      index.entries.set(id, { id, host, path, file });
      index.pages.push({ id, host, method: "GET", path, file: true });
    };
    await walk(join(staticDir, hostDir.name), "/", add);
  }
  return index;
}

async function walk(
  dir: string,
  urlPrefix: string,
  add: (path: string, file: string) => void,
): Promise<void> {
  const entries = await Array.fromAsync(Deno.readDir(dir));
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const file = join(dir, entry.name);
    if (entry.isDirectory) {
      await walk(file, `${urlPrefix}${entry.name}/`, add);
      continue;
    }
    if (entry.isSymlink) {
      // Links are followed to files only (folder links could loop); the
      // site's load already refused links that leave the site.
      const info = await Deno.stat(file).catch(() => null);
      if (info === null || !info.isFile) continue;
    } else if (!entry.isFile) {
      continue;
    }
    add(`${urlPrefix}${entry.name}`, file);
    if (entry.name === "index.html") add(urlPrefix, file);
  }
}
