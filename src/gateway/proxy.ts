/**
 * Reverse-proxy trust (`--reverse-proxy`, `--trusted-reverse-proxies`) and
 * the client address behind a trusted proxy (`X-Real-IP`,
 * `X-Forwarded-For`). Pure functions: hostile header values give a
 * "malformed" result, never an exception.
 *
 * Addresses compare by value in one 128-bit space where an IPv4 address is
 * its IPv4-mapped IPv6 address (`::ffff:a.b.c.d`): `10.0.0.0/8` and
 * `::ffff:10.0.0.0/104` are the same network, `0.0.0.0/0` is every IPv4
 * address and `::/0` is every address.
 *
 * @module
 */

/** Whether an address (IPv4 or IPv6 text) belongs to a set. */
export type IpMatcher = (address: string) => boolean;

/** A parsed `--trusted-reverse-proxies` entry. */
export type TrustEntry =
  | { kind: "cidr"; matcher: IpMatcher }
  | { kind: "name"; name: string };

const ALL_ONES = (1n << 128n) - 1n;
const MAPPED_HIGH = 0xffffn;
const MAPPED_BASE = MAPPED_HIGH << 32n;
const MAX_ADDRESS_LENGTH = 100;
const V4_OCTET_REGEXP = /^(?:0|[1-9][0-9]{0,2})$/;
const V6_GROUP_REGEXP = /^[0-9a-fA-F]{1,4}$/;
const ZONE_REGEXP = /^[0-9A-Za-z._~-]+$/;
const PREFIX_REGEXP = /^(?:0|[1-9][0-9]{0,2})$/;
const LABEL_REGEXP = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const NUMERIC_REGEXP = /^[0-9]+$/;
const PORT_REGEXP = /^[0-9]{1,5}$/;

/** Parses dotted-decimal IPv4 (no leading zeros) to a number. */
function parseV4(text: string): number | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    if (!V4_OCTET_REGEXP.test(part)) return null;
    const octet = Number(part);
    if (octet > 255) return null;
    value = value * 256 + octet;
  }
  return value;
}

/** Parses the groups on one side of `::` into 16-bit numbers. */
function parseGroups(text: string, last: boolean): number[] | null {
  if (text === "") return [];
  const parts = text.split(":");
  const groups: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as string;
    if (last && i === parts.length - 1 && part.includes(".")) {
      const v4 = parseV4(part);
      if (v4 === null) return null;
      groups.push(Math.floor(v4 / 65536), v4 % 65536);
    } else if (V6_GROUP_REGEXP.test(part)) {
      groups.push(parseInt(part, 16));
    } else {
      return null;
    }
  }
  return groups;
}

/** Parses IPv6 text (no brackets, no zone) to a 128-bit value. */
function parseV6(text: string): bigint | null {
  const gap = text.indexOf("::");
  if (gap !== text.lastIndexOf("::")) return null;
  let groups: number[];
  if (gap < 0) {
    const all = parseGroups(text, true);
    if (all === null || all.length !== 8) return null;
    groups = all;
  } else {
    const head = parseGroups(text.slice(0, gap), false);
    const tail = parseGroups(text.slice(gap + 2), true);
    if (head === null || tail === null) return null;
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return null;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  }
  let value = 0n;
  for (const group of groups) value = (value << 16n) | BigInt(group);
  return value;
}

/**
 * Parses an address to its 128-bit value (IPv4 as IPv4-mapped IPv6).
 * Brackets around IPv6 and a zone id (`%eth0`) are accepted and dropped.
 */
function parseIp(text: string): bigint | null {
  if (text.length === 0 || text.length > MAX_ADDRESS_LENGTH) return null;
  let body = text;
  const bracketed = body.startsWith("[");
  if (bracketed) {
    if (!body.endsWith("]")) return null;
    body = body.slice(1, -1);
  }
  if (!body.includes(":")) {
    if (bracketed) return null;
    const v4 = parseV4(body);
    return v4 === null ? null : MAPPED_BASE | BigInt(v4);
  }
  const percent = body.indexOf("%");
  if (percent >= 0) {
    if (!ZONE_REGEXP.test(body.slice(percent + 1))) return null;
    body = body.slice(0, percent);
  }
  return parseV6(body);
}

function isMapped(value: bigint): boolean {
  return value >> 32n === MAPPED_HIGH;
}

/** Formats a value: dotted IPv4 when mapped, else RFC 5952 IPv6. */
function formatIp(value: bigint): string {
  if (isMapped(value)) {
    const v4 = Number(value & 0xffffffffn);
    return [v4 >>> 24, (v4 >>> 16) & 255, (v4 >>> 8) & 255, v4 & 255].join(".");
  }
  const groups: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) {
    groups.push(Number((value >> shift) & 0xffffn));
  }
  // The longest run of two or more zero groups (the first on a tie) is "::".
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j;
  }
  const hex = (list: number[]) => list.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${
    hex(groups.slice(bestStart + bestLength))
  }`;
}

/**
 * Normalizes an IP address to its canonical text: dotted decimal for IPv4
 * and IPv4-mapped IPv6, RFC 5952 (lower case, shortest) for other IPv6.
 * Brackets and a zone id are dropped; IPv4 octets with leading zeros (which
 * some stacks read as octal) are refused.
 *
 * @param text an address, such as an `X-Real-IP` value
 * @returns the canonical form, or `null` when `text` is not an IP address
 * @example
 * ```ts
 * import { normalizeIp } from "./proxy.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(normalizeIp("[0:0::1]"), "::1");
 * assert.equal(normalizeIp("::FFFF:127.0.0.1"), "127.0.0.1");
 * assert.equal(normalizeIp("fe80::1%eth0"), "fe80::1");
 * assert.equal(normalizeIp("127.0.0.01"), null);
 * assert.equal(normalizeIp("example.test"), null);
 * ```
 */
export function normalizeIp(text: string): string | null {
  const value = parseIp(text);
  return value === null ? null : formatIp(value);
}

/** A matcher for `network/prefix` in the 128-bit space. */
function cidrMatcher(network: bigint, prefix: number): IpMatcher {
  const mask = ALL_ONES ^ ((1n << BigInt(128 - prefix)) - 1n);
  const base = network & mask;
  return (address) => {
    const value = parseIp(address);
    return value !== null && (value & mask) === base;
  };
}

/** An RFC 1123 host name whose last label is not all digits. */
function parseHostName(text: string): string | null {
  const name = (text.endsWith(".") ? text.slice(0, -1) : text).toLowerCase();
  if (name.length === 0 || name.length > 253) return null;
  const labels = name.split(".");
  if (!labels.every((label) => LABEL_REGEXP.test(label))) return null;
  if (NUMERIC_REGEXP.test(labels[labels.length - 1] as string)) return null;
  return name;
}

/**
 * Parses one `--trusted-reverse-proxies` entry: an IP address, a CIDR
 * (`10.0.0.0/8`, `fd00::/8`, `::ffff:10.0.0.0/104`; host bits are ignored,
 * so `10.0.0.1/8` is `10.0.0.0/8`) or a host name, which the caller
 * resolves.
 *
 * @param entry one entry of the comma list
 * @returns a matcher for addresses and networks, the lower-cased name for
 *   host names, or `null` when the entry is neither
 * @example
 * ```ts
 * import { parseTrustEntry } from "./proxy.ts";
 * import assert from "node:assert/strict";
 *
 * const entry = parseTrustEntry("10.0.0.0/8");
 * assert.ok(entry?.kind === "cidr" && entry.matcher("::ffff:10.9.8.7"));
 * assert.deepEqual(parseTrustEntry("LocalHost"), { kind: "name", name: "localhost" });
 * assert.equal(parseTrustEntry("10.0.0.0/33"), null);
 * ```
 */
export function parseTrustEntry(entry: string): TrustEntry | null {
  const text = entry.trim();
  if (text.length > MAX_ADDRESS_LENGTH + 4) return null;
  const slash = text.indexOf("/");
  const address = slash < 0 ? text : text.slice(0, slash);
  const value = parseIp(address);
  if (value === null) {
    if (slash >= 0) return null;
    const name = parseHostName(text);
    return name === null ? null : { kind: "name", name };
  }
  if (address.includes("%")) return null;
  const v4 = !address.includes(":");
  if (slash < 0) return { kind: "cidr", matcher: cidrMatcher(value, 128) };
  const prefixText = text.slice(slash + 1);
  if (!PREFIX_REGEXP.test(prefixText)) return null;
  const prefix = Number(prefixText);
  if (prefix > (v4 ? 32 : 128)) return null;
  return {
    kind: "cidr",
    matcher: cidrMatcher(value, v4 ? 96 + prefix : prefix),
  };
}

/**
 * Combines matchers: an address matches when any of them matches it.
 *
 * @param matchers the matchers to try, in order
 * @returns one matcher (matching nothing when `matchers` is empty)
 * @example
 * ```ts
 * import { matchAny, parseTrustEntry, type IpMatcher } from "./proxy.ts";
 * import assert from "node:assert/strict";
 *
 * const matchers = ["127.0.0.0/8", "::1"].map((entry) => {
 *   const parsed = parseTrustEntry(entry);
 *   assert.ok(parsed?.kind === "cidr");
 *   return parsed.matcher;
 * }) satisfies IpMatcher[];
 * const local = matchAny(matchers);
 * assert.ok(local("127.0.0.1") && local("0:0::1") && local("[::ffff:127.1.2.3]"));
 * assert.ok(!local("10.0.0.1"));
 * ```
 */
export function matchAny(matchers: IpMatcher[]): IpMatcher {
  const list = [...matchers];
  return (address) => list.some((matcher) => matcher(address));
}

/** The client address of a request, or why there is none. */
export type ClientAddress =
  /** The client's canonical address. */
  | { kind: "ok"; peer: string }
  /** The peer is not a trusted proxy (the server answers 403). */
  | { kind: "untrusted" }
  /** The named header holds something that is not an address. */
  | { kind: "malformed"; header: string };

/** The forwarding headers of a request (`null` when absent). */
export interface ForwardedHeaders {
  /** `X-Real-IP`. */
  realIp: string | null;
  /** `X-Forwarded-For` (several headers joined with commas). */
  forwardedFor: string | null;
}

/** An `X-Forwarded-For` entry, also accepted with a port (as nginx does). */
function parseForwardedEntry(text: string): string | null {
  const plain = normalizeIp(text);
  if (plain !== null) return plain;
  const colon = text.lastIndexOf(":");
  if (colon < 0 || !PORT_REGEXP.test(text.slice(colon + 1))) return null;
  const host = text.slice(0, colon);
  // IPv6 with a port must be bracketed; IPv4 must not be.
  if (host.startsWith("[") || !host.includes(":")) return normalizeIp(host);
  return null;
}

/**
 * Finds the client address of a request that came through a reverse proxy.
 * The peer must be trusted. `X-Real-IP`, when present, must be one address.
 * Otherwise `X-Forwarded-For` is walked from the right, skipping trusted
 * proxies: the first untrusted entry is the client (entries left of it are
 * the client's own claims and are ignored), and when all are trusted the
 * left-most one is. A header that is present but holds no address is
 * malformed (it does not fall back to the peer).
 *
 * @param peer the address of the TCP peer
 * @param headers the request's `X-Real-IP` and `X-Forwarded-For`
 * @param trusted matches the trusted proxies
 * @returns the client's canonical address, `untrusted`, or `malformed` with
 *   the name of the offending header
 * @example
 * ```ts
 * import { clientAddress, parseTrustEntry } from "./proxy.ts";
 * import assert from "node:assert/strict";
 *
 * const entry = parseTrustEntry("10.0.0.0/8");
 * assert.ok(entry?.kind === "cidr");
 * const trusted = entry.matcher;
 * const forwardedFor = "6.6.6.6, 203.0.113.7, 10.0.0.2";
 * assert.deepEqual(
 *   clientAddress("10.0.0.1", { realIp: null, forwardedFor }, trusted),
 *   { kind: "ok", peer: "203.0.113.7" },
 * );
 * assert.deepEqual(
 *   clientAddress("192.0.2.1", { realIp: null, forwardedFor }, trusted),
 *   { kind: "untrusted" },
 * );
 * ```
 */
export function clientAddress(
  peer: string,
  headers: ForwardedHeaders,
  trusted: IpMatcher,
): ClientAddress {
  if (!trusted(peer)) return { kind: "untrusted" };
  const { realIp, forwardedFor } = headers;
  if (realIp !== null) {
    const address = normalizeIp(realIp.trim());
    return address === null
      ? { kind: "malformed", header: "X-Real-IP" }
      : { kind: "ok", peer: address };
  }
  if (forwardedFor === null) {
    return { kind: "ok", peer: normalizeIp(peer) ?? peer };
  }
  const malformed: ClientAddress = {
    kind: "malformed",
    header: "X-Forwarded-For",
  };
  let leftmost: string | null = null;
  let end = forwardedFor.length;
  while (end > 0) {
    const start = forwardedFor.lastIndexOf(",", end - 1);
    const item = forwardedFor.slice(start + 1, end).trim();
    end = start;
    if (item === "") continue;
    const address = parseForwardedEntry(item);
    if (address === null) return malformed;
    if (!trusted(address)) return { kind: "ok", peer: address };
    leftmost = address;
  }
  return leftmost === null ? malformed : { kind: "ok", peer: leftmost };
}

/**
 * The client's address of a request: the peer, or, behind trusted reverse
 * proxies, the address they forward.
 *
 * @param headers the request's headers
 * @param peer the address of the connection
 * @param trusted who may forward; null when not behind a proxy
 * @returns the address, or the refusal (status and message)
 */
export function requestPeer(
  headers: Headers,
  peer: string,
  trusted: IpMatcher | null,
): string | { status: 400 | 403; message: string } {
  if (trusted === null) return peer;
  const client = clientAddress(peer, {
    realIp: headers.get("x-real-ip"),
    forwardedFor: headers.get("x-forwarded-for"),
  }, trusted);
  switch (client.kind) {
    case "untrusted":
      return {
        status: 403,
        message: "Only trusted reverse proxies may connect to this server",
      };
    case "malformed":
      return {
        status: 400,
        message: `The ${client.header} header is not a valid address`,
      };
    default:
      return client.peer;
  }
}
