/**
 * Watching a folder for changes, with bursts (an editor's save, a `git
 * checkout`) debounced into one call.
 *
 * @module
 */

import { dirname, join } from "node:path";
import { log } from "../log.ts";

/** Options of {@linkcode watchFolder}. */
export interface WatchOptions {
  /** Watch sub-folders too. @default {true} */
  recursive?: boolean;
  /** Quiet time before `onChange` runs. @default {30} */
  debounceMs?: number;
  /** Paths whose changes do not count. */
  ignore?: (path: string) => boolean;
  /** Runs once per burst of changes that count. */
  onChange: (paths: string[]) => void;
  /** Names the watcher in log lines. */
  site: string | null;
}

/** A running watch; `close()` stops it. */
export interface Watch {
  close(): void;
}

/**
 * Watches `dir`, reacting to every kind of event (create, modify, remove,
 * rename) — editors save in many ways.
 */
export function watchFolder(
  dir: string | string[],
  options: WatchOptions,
): Watch {
  const { recursive = true, debounceMs = 10, ignore = () => false } = options;
  let watcher: Deno.FsWatcher;
  try {
    watcher = Deno.watchFs(dir, { recursive });
  } catch (err) {
    log.warn(
      options.site,
      `Cannot watch ${dir} for changes: ${(err as Error).message}`,
    );
    return { close() {} };
  }
  let timer: ReturnType<typeof setTimeout> | null = null;
  let pending: string[] = [];
  let closed = false;
  (async () => {
    try {
      for await (const event of watcher) {
        const paths = event.paths.filter((p) => !ignore(p));
        if (paths.length === 0) continue;
        pending.push(...paths);
        if (timer !== null) clearTimeout(timer);
        timer = setTimeout(() => {
          timer = null;
          const batch = pending;
          pending = [];
          if (!closed) options.onChange(batch);
        }, debounceMs);
      }
    } catch (err) {
      if (!closed) {
        log.warn(
          options.site,
          `Stopped watching ${dir}: ${(err as Error).message}`,
        );
      }
    }
  })();
  return {
    close() {
      closed = true;
      if (timer !== null) clearTimeout(timer);
      try {
        watcher.close();
      } catch {
        // Already closed.
      }
    },
  };
}

/**
 * Watches the folder `dir` and everything in it except the folders `skip`
 * (absolute paths), which are never watched at all: a site's writable
 * folders may hold any number of sub-folders, and each watched one costs
 * an inotify watch of the machine's (8,192 on many systems). Folders on the
 * way to a skipped one are watched alone (not recursively); one made there
 * later is added.
 */
export function watchFolderExcept(
  dir: string,
  skip: string[],
  options: WatchOptions,
): Watch {
  if (skip.length === 0) return watchFolder(dir, options);
  const ignore = options.ignore ?? (() => false);
  const above = (folder: string) =>
    skip.some((s) => s.startsWith(`${folder}/`));
  let watches: Watch[] = [];
  let watched = new Set<string>();
  let closed = false;
  const start = () => {
    const flat: string[] = [];
    const deep: string[] = [];
    const visit = (folder: string) => {
      if (!above(folder)) {
        deep.push(folder);
        return;
      }
      flat.push(folder);
      try {
        for (const entry of Deno.readDirSync(folder)) {
          const child = join(folder, entry.name);
          if (entry.isDirectory && !skip.includes(child)) visit(child);
        }
      } catch {
        // Gone meanwhile.
      }
    };
    visit(dir);
    watched = new Set([...flat, ...deep]);
    const flatSet = new Set(flat);
    watches = [];
    if (deep.length > 0) watches.push(watchFolder(deep, options));
    watches.push(watchFolder(flat, {
      ...options,
      recursive: false,
      ignore: () => false,
      onChange: (all) => {
        // Deno 2.9.6 reports what happens deeper too, to a watch that is
        // not recursive: those are the deep watch's (counted twice, a save
        // in autorun/ reloaded a site with a writable folder twice).
        const paths = all.filter((p) => flatSet.has(dirname(p)));
        // A folder made beside the skipped ones is watched from now on.
        const made = paths.some((p) => {
          if (watched.has(p) || skip.includes(p)) return false;
          try {
            return Deno.statSync(p).isDirectory;
          } catch {
            return false;
          }
        });
        if (made && !closed) {
          for (const w of watches) w.close();
          start();
        }
        const counted = paths.filter((p) => !ignore(p));
        if (counted.length > 0) options.onChange(counted);
      },
    }));
  };
  start();
  return {
    close() {
      closed = true;
      for (const w of watches) w.close();
    },
  };
}
