/**
 * What a site's writable folders hold, as its disk quota counts it: the
 * bytes each file takes on disk (a sparse file counts what it uses), and at
 * least 4 KiB for every file, folder and link, so that a million empty
 * files cost as much as 4 GiB of data would.
 *
 * @module
 */

import { join } from "node:path";

/** The least a file, folder or link counts. */
export const ENTRY_BYTES = 4096;

/** A measure of some folders. */
export interface DiskUsage {
  bytes: number;
  /** The walk stopped early because `bytes` already passed the bound. */
  over: boolean;
}

function costOf(info: Deno.FileInfo): number {
  const used = info.blocks === null ? info.size : info.blocks * 512;
  return Math.max(ENTRY_BYTES, used);
}

/**
 * Adds up `folders` (absolute paths; nested ones are counted once), stopping
 * as soon as the total passes `bound`: a folder over its quota costs no more
 * to measure than one at it. Missing folders count nothing.
 */
export async function measureDisk(
  folders: string[],
  bound: number,
): Promise<DiskUsage> {
  const roots = [...new Set(folders)].sort().filter((dir, i, all) =>
    !all.slice(0, i).some((outer) => dir.startsWith(`${outer}/`))
  );
  let bytes = 0;
  const pending: string[] = [];
  for (const root of roots) {
    try {
      const info = await Deno.lstat(root);
      bytes += costOf(info);
      if (info.isDirectory) pending.push(root);
    } catch {
      // Not made yet.
    }
  }
  while (pending.length > 0 && bytes <= bound) {
    const dir = pending.pop()!;
    try {
      for await (const entry of Deno.readDir(dir)) {
        const path = join(dir, entry.name);
        try {
          const info = await Deno.lstat(path);
          bytes += costOf(info);
          if (info.isDirectory) pending.push(path);
        } catch {
          // Removed meanwhile.
        }
        if (bytes > bound) break;
      }
    } catch {
      // Removed meanwhile.
    }
  }
  return { bytes, over: bytes > bound };
}
