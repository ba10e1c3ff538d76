/**
 * What each site registered when it last loaded, kept on disk beside the
 * server's other data. With `--idle-stop`, a site whose files, site.json
 * and grant are as they were when its pages were kept starts asleep with
 * them: no sandbox until its first request. This is what lets a server with
 * a thousand sites be ready at once, and start none of them until asked.
 *
 * The key is a digest of everything that decides what a site registers and
 * that the gateway can see: its definition (site.json as granted, its
 * scripts), the name, size and time of every file in its folder outside its
 * writable ones (for the root site: its autorun/ and static/), and the
 * runtime that loads it. What a site registers from
 * its writable folders, its environment, the network or the clock is not
 * in the key; when such a site wakes with other pages, the requests routed
 * against the kept ones are matched again by pattern (site_runner.ts).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join, relative, resolve } from "node:path";
import { parseWireRoutes, type WireRoutes } from "../protocol/messages.ts";
import { isInside } from "./paths.ts";
import type { SiteDefinition } from "./sites.ts";

/** Past this many entries in its folder, a site is not kept (always loaded). */
const MAX_ENTRIES = 20_000;

/** Changes when the format of a kept table does. */
const FORMAT = 1;

const RUNTIME = ["src/sandbox/", "src/protocol/"];

let runtimeStamp: Promise<string> | null = null;

/** Names, sizes and times of the runtime's files, once per server. */
function runtime(projectDir: string): Promise<string> {
  runtimeStamp ??= (async () => {
    const parts = [Deno.version.deno];
    for (const dir of RUNTIME) {
      const names: string[] = [];
      for await (const e of Deno.readDir(join(projectDir, dir))) {
        if (e.isFile) names.push(e.name);
      }
      for (const name of names.sort()) {
        const info = await Deno.stat(join(projectDir, dir, name));
        parts.push(`${dir}${name}:${info.size}:${info.mtime?.getTime()}`);
      }
    }
    return parts.join("\n");
  })();
  return runtimeStamp;
}

/**
 * Lists the folders `dirs` below, skipping `skip` (absolute paths): one line
 * per entry (a missing folder is one line too).
 * @returns null when there are more than MAX_ENTRIES
 */
async function listing(
  dirs: string[],
  skip: string[],
): Promise<string[] | null> {
  const lines: string[] = [];
  const walk = async (dir: string, at: string): Promise<boolean> => {
    const entries: Deno.DirEntry[] = [];
    try {
      for await (const e of Deno.readDir(at)) entries.push(e);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      lines.push(`${at}\tmissing`);
      return true;
    }
    entries.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    for (const e of entries) {
      const path = join(at, e.name);
      if (skip.some((s) => isInside(s, path))) continue;
      if (lines.length >= MAX_ENTRIES) return false;
      const info = await Deno.lstat(path);
      const kind = e.isSymlink
        ? `-> ${await Deno.readLink(path)}`
        : e.isDirectory
        ? "dir"
        : `${info.size}`;
      lines.push(`${relative(dir, path)}\t${kind}\t${info.mtime?.getTime()}`);
      if (e.isDirectory && !await walk(dir, path)) return false;
    }
    return true;
  };
  for (const dir of dirs) {
    lines.push(dir);
    if (!await walk(dir, dir)) return null;
  }
  return lines;
}

/**
 * The key of a site as it is now, or null when it cannot be kept (too many
 * files, or its folder cannot be read).
 * @param extra what else decides its sandbox (its workers, its write access)
 */
export async function siteKey(
  def: SiteDefinition,
  projectDir: string,
  extra: unknown,
): Promise<string | null> {
  const skip = def.manifest.permissions.write.map((w) => resolve(def.dir, w));
  let files: string[] | null;
  try {
    // What it reads of its own: its folder (the root site: its autorun/
    // and static/ only).
    files = await listing(def.baseRead, skip);
  } catch {
    return null;
  }
  if (files === null) return null;
  const text = JSON.stringify({
    format: FORMAT,
    runtime: await runtime(projectDir),
    def,
    extra,
    files,
  });
  // As the import maps of sites with dependencies are named (./dependencies.ts).
  return createHash("sha256").update(text).digest("hex");
}

function fileOf(dir: string, site: string): string {
  return join(dir, `${encodeURIComponent(site)}.json`);
}

/** The pages kept for `site` under `key`, or null (none, or another key). */
export async function readKeptRoutes(
  dir: string,
  site: string,
  key: string,
): Promise<WireRoutes | null> {
  let value: unknown;
  try {
    value = JSON.parse(await Deno.readTextFile(fileOf(dir, site)));
  } catch {
    return null;
  }
  if (
    typeof value !== "object" || value === null ||
    (value as { key?: unknown }).key !== key
  ) {
    return null;
  }
  return parseWireRoutes((value as { routes?: unknown }).routes);
}

/** Keeps what `site` registered under `key` (written whole, then renamed). */
export async function keepRoutes(
  dir: string,
  site: string,
  key: string,
  routes: WireRoutes,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const file = fileOf(dir, site);
  const temporary = `${file}.${crypto.randomUUID()}.tmp`;
  await Deno.writeTextFile(temporary, JSON.stringify({ key, routes }));
  await Deno.rename(temporary, file);
}

/** Forgets what was kept for `site` (its folder was removed). */
export async function forgetRoutes(dir: string, site: string): Promise<void> {
  await Deno.remove(fileOf(dir, site)).catch(() => {});
}
