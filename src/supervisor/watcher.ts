/**
 * Watching a folder for changes, with bursts (an editor's save, a `git
 * checkout`) debounced into one call.
 *
 * @module
 */

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
export function watchFolder(dir: string, options: WatchOptions): Watch {
  const { recursive = true, debounceMs = 30, ignore = () => false } = options;
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
