/**
 * The limits on what routing may cost, shared by the script API (which
 * refuses a pattern where it is written, naming the file and line) and the
 * router (which refuses a forged table, and bounds the work per request).
 *
 * @module
 */

/** Whether this process has V8's linear-time engine (the `l` flag). */
export const LINEAR_ENGINE: boolean = (() => {
  try {
    new RegExp("", "l");
    return true;
  } catch {
    return false;
  }
})();

/** Longest route pattern source, in characters. */
export const MAX_PATTERN_LENGTH = 256;

/** Most route patterns (`addPattern`) one site may register. */
export const MAX_PATTERNS_PER_SITE = 256;

/**
 * Most fetch handlers one site may mount (`host.mount`, a default export on
 * each of its hosts): the route table is rebuilt whenever a site reloads.
 */
export const MAX_MOUNTS_PER_SITE = 256;

/** Longest mount prefix, in characters. */
export const MAX_MOUNT_PREFIX_LENGTH = 1024;

/**
 * Most host patterns one site may register: an uncached Host header is
 * matched against every site's patterns.
 */
export const MAX_HOSTS_PER_SITE = 256;

/** Longest request path the gateway routes, in bytes; longer gets 414. */
export const MAX_PATH_BYTES = 8192;

/**
 * The work one site's patterns may cost per request, in units of the
 * linear-time engine (path length × the pattern's cost per character,
 * summed over the patterns tried; see `patternCost` in src/router/router.ts).
 * Patterns beyond it are not tried for that request. At most ~22 ns a unit
 * measured on a 2-core machine of 2026, so about 0.35 ms in the worst case
 * (review: 40,000 let 64 connections of costly requests push a neighbour's
 * p99 to 83 ms); ordinary patterns cost far less than their bound.
 */
export const PATTERN_WORK_PER_REQUEST = 16_000;

/**
 * Whether a mount prefix can match a request path: it starts with `/`, has
 * no `.` or `..` segment (the gateway removes them from paths) and is at
 * most {@linkcode MAX_MOUNT_PREFIX_LENGTH} characters.
 *
 * @example
 * ```ts
 * isMountPrefix("/api/"); // true
 * isMountPrefix("/a/../b"); // false
 * ```
 */
export function isMountPrefix(prefix: unknown): prefix is string {
  return typeof prefix === "string" && prefix.startsWith("/") &&
    prefix.length <= MAX_MOUNT_PREFIX_LENGTH &&
    !/(^|\/)\.\.?(\/|$)/.test(prefix);
}

/**
 * `/api/` and `/api` mount the same thing: `/api` and everything below it.
 *
 * @param prefix a path starting with `/`
 * @returns the prefix without its trailing slashes (`/` stays `/`)
 */
export function mountPrefix(prefix: string): string {
  const trimmed = prefix.replace(/\/+$/, "");
  return trimmed === "" ? "/" : trimmed;
}
