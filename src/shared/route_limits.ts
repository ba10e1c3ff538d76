/**
 * The limits on what routing may cost, shared by the script API (which
 * refuses a pattern where it is written, naming the file and line) and the
 * router (which refuses a forged table, and bounds the work per request).
 *
 * @module
 */

/** Longest route pattern source, in characters. */
export const MAX_PATTERN_LENGTH = 256;

/** Most route patterns (`addPattern`) one site may register. */
export const MAX_PATTERNS_PER_SITE = 256;

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
