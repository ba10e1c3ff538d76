/**
 * HTTP conditional requests and byte ranges for static files (RFC 9110
 * §13 and §14): `Range`, `Content-Range`, entity tags, HTTP dates and the
 * order in which `If-None-Match`, `If-Modified-Since` and `If-Range` are
 * evaluated. Pure functions: hostile header values give a "malformed" or
 * "ignore" result, never an exception.
 *
 * @module
 */

/** What a `Range` header asks for, given the size of the file. */
export type RangeResult =
  /** No `Range`, or one that is ignored (several ranges, other unit, bad syntax). */
  | { kind: "full" }
  /** An inclusive byte range, already clamped to the file. */
  | { kind: "partial"; start: number; end: number }
  /** Valid syntax, but no byte of it is in the file (416). */
  | { kind: "unsatisfiable" };

const FULL: RangeResult = { kind: "full" };
const UNSATISFIABLE: RangeResult = { kind: "unsatisfiable" };
const DIGITS_REGEXP = /^[0-9]+$/;
const BYTES_REGEXP = /^bytes$/i;

/**
 * Parses a `Range` header for a file of `size` bytes. Only a single range in
 * the `bytes` unit is served; anything else means the whole file.
 *
 * @param header the `Range` header value, or `null` when absent
 * @param size the size of the file in bytes
 * @returns `full` to ignore the header, `partial` with an inclusive range, or
 *   `unsatisfiable` for a 416
 * @example Single ranges, suffixes and what is ignored
 * ```ts
 * import { parseRange } from "./conditional.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseRange("bytes=0-99", 1000), { kind: "partial", start: 0, end: 99 });
 * assert.deepEqual(parseRange("bytes=-500", 1000), { kind: "partial", start: 500, end: 999 });
 * assert.deepEqual(parseRange("bytes=900-2000", 1000), { kind: "partial", start: 900, end: 999 });
 * assert.deepEqual(parseRange("bytes=1000-", 1000), { kind: "unsatisfiable" });
 * assert.deepEqual(parseRange("bytes=0-1,5-6", 1000), { kind: "full" });
 * ```
 */
export function parseRange(header: string | null, size: number): RangeResult {
  if (header === null || !Number.isSafeInteger(size) || size < 0) return FULL;
  const eq = header.indexOf("=");
  if (eq < 0 || !BYTES_REGEXP.test(header.slice(0, eq).trim())) return FULL;
  const specs = header.slice(eq + 1).split(",").map((s) => s.trim())
    .filter((s) => s !== "");
  if (specs.length !== 1) return FULL;
  const spec = specs[0] as string;
  const dash = spec.indexOf("-");
  if (dash < 0) return FULL;
  const first = parseDigits(spec.slice(0, dash).trim());
  const last = parseDigits(spec.slice(dash + 1).trim());
  if (first === null || last === null) return FULL;
  if (first === "") {
    // A suffix: the last `last` bytes.
    if (last === "") return FULL;
    if (last === 0 || size === 0) return UNSATISFIABLE;
    return { kind: "partial", start: Math.max(0, size - last), end: size - 1 };
  }
  if (last !== "" && first > last) return FULL;
  if (first >= size) return UNSATISFIABLE;
  const end = last === "" ? size - 1 : Math.min(last, size - 1);
  return { kind: "partial", start: first, end };
}

/** `""` for no digits, a safe integer, or `null` for anything else. */
function parseDigits(text: string): number | "" | null {
  if (text === "") return "";
  if (!DIGITS_REGEXP.test(text)) return null;
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : null;
}

/**
 * Formats the `Content-Range` of a 206 answer.
 *
 * @param start the first byte sent
 * @param end the last byte sent (inclusive)
 * @param size the size of the whole file
 * @returns the header value
 * @example
 * ```ts
 * import { contentRange } from "./conditional.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(contentRange(0, 99, 1000), "bytes 0-99/1000");
 * ```
 */
export function contentRange(start: number, end: number, size: number): string {
  return `bytes ${start}-${end}/${size}`;
}

/**
 * Formats the `Content-Range` of a 416 answer: `bytes`, an asterisk, a
 * slash and the size.
 *
 * @param size the size of the whole file
 * @returns the header value
 * @example
 * ```ts
 * import { unsatisfiedRange } from "./conditional.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(unsatisfiedRange(1000), "bytes *" + "/1000");
 * ```
 */
export function unsatisfiedRange(size: number): string {
  return `bytes */${size}`;
}

/**
 * Makes a strong ETag from a content digest: the unpadded base64url of its
 * first 16 bytes, in double quotes.
 *
 * @param digest a digest of the file's content (such as SHA-256)
 * @returns the quoted entity tag
 * @throws {RangeError} when the digest is empty
 * @example
 * ```ts
 * import { makeEtag } from "./conditional.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(makeEtag(new Uint8Array(32)), '"AAAAAAAAAAAAAAAAAAAAAA"');
 * ```
 */
export function makeEtag(digest: Uint8Array): string {
  if (digest.length === 0) {
    throw new RangeError("Cannot make an ETag of an empty digest");
  }
  let binary = "";
  for (const byte of digest.subarray(0, 16)) {
    binary += String.fromCharCode(byte);
  }
  const base64url = btoa(binary).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");
  return `"${base64url}"`;
}

/** One parsed entity tag: `W/"x"` is `{ weak: true, opaque: "x" }`. */
interface EntityTag {
  weak: boolean;
  opaque: string;
}

function isEtagChar(code: number): boolean {
  // etagc = %x21 / %x23-7E / obs-text
  return code === 0x21 || (code >= 0x23 && code <= 0x7e) ||
    (code >= 0x80 && code <= 0xff);
}

function isOws(code: number): boolean {
  return code === 0x20 || code === 0x09;
}

/** Scans an entity tag at `at`; `null` when there is none. */
function scanEtag(
  text: string,
  at: number,
): { tag: EntityTag; next: number } | null {
  let i = at;
  const weak = text.startsWith("W/", i);
  if (weak) i += 2;
  if (text.charCodeAt(i) !== 0x22) return null;
  const open = ++i;
  while (i < text.length && isEtagChar(text.charCodeAt(i))) i++;
  if (text.charCodeAt(i) !== 0x22) return null;
  return { tag: { weak, opaque: text.slice(open, i) }, next: i + 1 };
}

/** Parses `#entity-tag` (empty elements allowed); `null` when malformed. */
function parseEtagList(text: string): EntityTag[] | null {
  const tags: EntityTag[] = [];
  let i = 0;
  while (i < text.length) {
    const code = text.charCodeAt(i);
    if (isOws(code) || code === 0x2c) {
      i++;
      continue;
    }
    const scanned = scanEtag(text, i);
    if (scanned === null) return null;
    tags.push(scanned.tag);
    i = scanned.next;
    while (i < text.length && isOws(text.charCodeAt(i))) i++;
    if (i < text.length && text.charCodeAt(i) !== 0x2c) return null;
  }
  return tags;
}

/** Parses exactly one entity tag (surrounding whitespace allowed). */
function parseEtag(text: string): EntityTag | null {
  const trimmed = text.trim();
  const scanned = scanEtag(trimmed, 0);
  return scanned !== null && scanned.next === trimmed.length
    ? scanned.tag
    : null;
}

/**
 * Whether an `If-None-Match` value matches `etag` by weak comparison
 * (`W/"x"` matches `"x"`). `*` matches any ETag; a malformed value matches
 * nothing.
 *
 * @param ifNoneMatch the `If-None-Match` header value
 * @param etag the current entity tag of the file
 * @returns `true` when one of the listed tags matches
 * @example
 * ```ts
 * import { etagMatchesWeak } from "./conditional.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(etagMatchesWeak('"a", W/"b"', '"b"'));
 * assert.ok(etagMatchesWeak("*", '"b"'));
 * assert.ok(!etagMatchesWeak('"a", b', '"a"'));
 * ```
 */
export function etagMatchesWeak(ifNoneMatch: string, etag: string): boolean {
  if (ifNoneMatch.trim() === "*") return true;
  const current = parseEtag(etag);
  if (current === null) return false;
  const tags = parseEtagList(ifNoneMatch);
  if (tags === null) return false;
  return tags.some((tag) => tag.opaque === current.opaque);
}

/**
 * Whether an `If-Range` entity tag matches `etag` by strong comparison: both
 * must be strong and equal.
 *
 * @param tag the entity tag the client sent
 * @param etag the current entity tag of the file
 * @returns `true` when both are strong and identical
 * @example
 * ```ts
 * import { etagMatchesStrong } from "./conditional.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(etagMatchesStrong('"a"', '"a"'));
 * assert.ok(!etagMatchesStrong('W/"a"', '"a"'));
 * ```
 */
export function etagMatchesStrong(tag: string, etag: string): boolean {
  const sent = parseEtag(tag);
  const current = parseEtag(etag);
  return sent !== null && current !== null && !sent.weak && !current.weak &&
    sent.opaque === current.opaque;
}

const DAY_NAMES = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"] as const;
/** English month abbreviations, as HTTP and log dates write them. */
export const MONTH_NAMES = [
  "Jan",
  "Feb",
  "Mar",
  "Apr",
  "May",
  "Jun",
  "Jul",
  "Aug",
  "Sep",
  "Oct",
  "Nov",
  "Dec",
] as const;
const MONTH = "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)";
const TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})";
/** `Sun, 06 Nov 1994 08:49:37 GMT` */
const IMF_FIXDATE_REGEXP = new RegExp(
  `^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) ${MONTH} ([0-9]{4}) ${TIME} GMT$`,
);
/** `Sunday, 06-Nov-94 08:49:37 GMT` */
const RFC850_DATE_REGEXP = new RegExp(
  "^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), " +
    `([0-9]{2})-${MONTH}-([0-9]{2}) ${TIME} GMT$`,
);
/** `Sun Nov  6 08:49:37 1994` */
const ASCTIME_DATE_REGEXP = new RegExp(
  `^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ${MONTH} {1,2}([0-9]{1,2}) ${TIME} ([0-9]{4})$`,
);
const MAX_DATE_LENGTH = 64;

/**
 * Parses an HTTP-date in any of its three forms (IMF-fixdate, RFC 850,
 * asctime). A two-digit RFC 850 year means 1970–2069, as in nginx. The
 * weekday name is checked for syntax only.
 *
 * @param text the header value, or `null` when absent
 * @returns milliseconds since the epoch, or `null` when it is not a valid date
 * @example
 * ```ts
 * import { parseHttpDate } from "./conditional.ts";
 * import assert from "node:assert/strict";
 *
 * const ms = Date.UTC(1994, 10, 6, 8, 49, 37);
 * assert.equal(parseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT"), ms);
 * assert.equal(parseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT"), ms);
 * assert.equal(parseHttpDate("Sun Nov  6 08:49:37 1994"), ms);
 * assert.equal(parseHttpDate("yesterday"), null);
 * ```
 */
export function parseHttpDate(text: string | null): number | null {
  if (text === null || text.length > MAX_DATE_LENGTH) return null;
  const value = text.trim();
  let m = IMF_FIXDATE_REGEXP.exec(value);
  if (m !== null) return dateFrom(m[3], m[2], m[1], m[4], m[5], m[6]);
  m = RFC850_DATE_REGEXP.exec(value);
  if (m !== null) {
    const yy = Number(m[3]);
    const year = String(yy < 70 ? 2000 + yy : 1900 + yy);
    return dateFrom(year, m[2], m[1], m[4], m[5], m[6]);
  }
  m = ASCTIME_DATE_REGEXP.exec(value);
  if (m !== null) return dateFrom(m[6], m[1], m[2], m[3], m[4], m[5]);
  return null;
}

/** Builds a UTC date from matched parts, `null` when out of range. */
function dateFrom(
  yearText: string | undefined,
  monthText: string | undefined,
  dayText: string | undefined,
  hourText: string | undefined,
  minuteText: string | undefined,
  secondText: string | undefined,
): number | null {
  const year = Number(yearText);
  const month = MONTH_NAMES.indexOf(monthText as typeof MONTH_NAMES[number]);
  const day = Number(dayText);
  const hour = Number(hourText);
  const minute = Number(minuteText);
  const second = Number(secondText);
  if (month < 0 || day < 1 || hour > 23 || minute > 59 || second > 59) {
    return null;
  }
  const date = new Date(0);
  date.setUTCFullYear(year, month, day);
  date.setUTCHours(hour, minute, second, 0);
  // Day 31 of a 30-day month rolls over into the next month.
  if (date.getUTCDate() !== day) return null;
  return date.getTime();
}

/**
 * Formats a time as an IMF-fixdate (fractions of a second are dropped).
 *
 * @param ms milliseconds since the epoch
 * @returns the HTTP-date, such as `Thu, 26 Nov 2026 10:26:30 GMT`
 * @throws {RangeError} when the time is not a date with a year 0–9999
 * @example
 * ```ts
 * import { formatHttpDate } from "./conditional.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   formatHttpDate(Date.UTC(2026, 10, 26, 10, 26, 30, 999)),
 *   "Thu, 26 Nov 2026 10:26:30 GMT",
 * );
 * ```
 */
export function formatHttpDate(ms: number): string {
  const date = new Date(ms);
  const year = date.getUTCFullYear();
  if (Number.isNaN(year) || year < 0 || year > 9999) {
    throw new RangeError(`Cannot format "${ms}" as an HTTP-date`);
  }
  const pad = (n: number, width = 2) => String(n).padStart(width, "0");
  return `${DAY_NAMES[date.getUTCDay()]}, ${pad(date.getUTCDate())} ` +
    `${MONTH_NAMES[date.getUTCMonth()]} ${pad(year, 4)} ` +
    `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:` +
    `${pad(date.getUTCSeconds())} GMT`;
}

/** The request headers and file facts a conditional decision needs. */
export interface ConditionalInput {
  /** The request method (`GET`, `HEAD`, …). */
  method: string;
  /** `If-None-Match`, or `null` when absent. */
  ifNoneMatch: string | null;
  /** `If-Modified-Since`, or `null` when absent. */
  ifModifiedSince: string | null;
  /** `If-Range`, or `null` when absent. */
  ifRange: string | null;
  /** `Range`, or `null` when absent. */
  range: string | null;
  /** The file's strong ETag, or `null` when it has none. */
  etag: string | null;
  /** The file's modification time in ms (whole seconds), or `null`. */
  lastModified: number | null;
  /** The file's size in bytes. */
  size: number;
}

/** How to answer a request for a file. */
export type ConditionalDecision =
  | { status: 200 }
  | { status: 304 }
  | { status: 206; start: number; end: number }
  | { status: 416 };

/**
 * Decides between 200, 304, 206 and 416 in the order of RFC 9110 §13.2.2:
 * `If-None-Match` (when present, `If-Modified-Since` is ignored), else
 * `If-Modified-Since` (GET and HEAD only), then `Range` for GET, unless an
 * `If-Range` does not match. An `If-None-Match` of only whitespace counts as
 * absent. Last-Modified is compared at one-second resolution.
 *
 * @param input the request's conditional headers and the file's validators
 * @returns the status, with the byte range for a 206
 * @example
 * ```ts
 * import { decideConditional } from "./conditional.ts";
 * import assert from "node:assert/strict";
 *
 * const file = {
 *   method: "GET",
 *   ifNoneMatch: null,
 *   ifModifiedSince: null,
 *   ifRange: null,
 *   range: null,
 *   etag: '"abc"',
 *   lastModified: Date.UTC(2026, 0, 1),
 *   size: 1000,
 * };
 * assert.deepEqual(decideConditional({ ...file, ifNoneMatch: '"abc"' }), { status: 304 });
 * assert.deepEqual(
 *   decideConditional({ ...file, range: "bytes=0-9" }),
 *   { status: 206, start: 0, end: 9 },
 * );
 * assert.deepEqual(
 *   decideConditional({ ...file, range: "bytes=0-9", ifRange: '"old"' }),
 *   { status: 200 },
 * );
 * ```
 */
export function decideConditional(
  input: ConditionalInput,
): ConditionalDecision {
  const { method, ifNoneMatch, ifModifiedSince, etag, lastModified } = input;
  const safe = method === "GET" || method === "HEAD";
  if (ifNoneMatch !== null && ifNoneMatch.trim() !== "") {
    if (safe && noneMatchHits(ifNoneMatch, etag)) return { status: 304 };
  } else if (ifModifiedSince !== null && safe && lastModified !== null) {
    const since = parseHttpDate(ifModifiedSince);
    if (since !== null && wholeSeconds(lastModified) <= since) {
      return { status: 304 };
    }
  }
  if (method !== "GET" || input.range === null) return { status: 200 };
  if (
    input.ifRange !== null && !ifRangeHits(input.ifRange, etag, lastModified)
  ) {
    return { status: 200 };
  }
  const range = parseRange(input.range, input.size);
  switch (range.kind) {
    case "full":
      return { status: 200 };
    case "partial":
      return { status: 206, start: range.start, end: range.end };
    case "unsatisfiable":
      return { status: 416 };
    default:
      return range satisfies never;
  }
}

function noneMatchHits(ifNoneMatch: string, etag: string | null): boolean {
  if (etag === null) return ifNoneMatch.trim() === "*";
  return etagMatchesWeak(ifNoneMatch, etag);
}

function ifRangeHits(
  ifRange: string,
  etag: string | null,
  lastModified: number | null,
): boolean {
  const value = ifRange.trim();
  if (value.startsWith('"') || value.startsWith("W/")) {
    return etag !== null && etagMatchesStrong(value, etag);
  }
  const date = parseHttpDate(value);
  return date !== null && lastModified !== null &&
    wholeSeconds(lastModified) === date;
}

function wholeSeconds(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
}
