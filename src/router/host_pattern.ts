/**
 * Host patterns: normalizing a `Host` header and matching it against the
 * patterns sites register with `hosts.get(pattern)`.
 *
 * | pattern          | matches                                         |
 * | ---------------- | ----------------------------------------------- |
 * | `*`              | any host                                        |
 * | `example.test`   | exactly `example.test`                          |
 * | `*.example.test` | `example.test` and every subdomain, any depth   |
 * | `~.example.test` | every subdomain, any depth, not `example.test`  |
 * | `+.example.test` | exactly one label below `example.test`          |
 * | `a.test, b.test` | any item of the comma list                      |
 *
 * Exact items may also be IPv4 literals (`127.0.0.1`) or bracketed IPv6
 * literals (`[::1]`). Matching ignores case; {@linkcode normalizeHost} strips
 * the port and a trailing dot from the header first.
 *
 * @module
 */

/** The pattern that matches every host (`hosts.any`). */
const ANY_PATTERN = "*";

const LABEL_REGEXP = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const DIGITS_REGEXP = /^[0-9]+$/;
const IPV4_REGEXP =
  /^(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}$/;
/** One or more host labels, as found in front of a wildcard's root. */
const HOST_LABELS_REGEXP = /^[a-z0-9-]+(?:\.[a-z0-9-]+)*$/;
const HOST_LABEL_REGEXP = /^[a-z0-9-]+$/;
const HEX_GROUP_REGEXP = /^[0-9a-f]{1,4}$/;
const MAX_NAME_LENGTH = 253;

/** A predicate over a normalized host name. */
type HostMatcher = (host: string) => boolean;

/**
 * Normalizes a `Host` header value for matching: lower-case, without the
 * port, without one trailing dot. Bracketed IPv6 literals keep their brackets
 * and are written in canonical form (`[0:0::1]:8080` → `[::1]`).
 *
 * @param hostHeader The `Host` header as received (may be empty or garbage).
 * @returns The normalized host; `""` stays `""`.
 *
 * @example Strip the port and a trailing dot
 * ```ts
 * import { normalizeHost } from "./host_pattern.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(normalizeHost("Example.TEST.:8080"), "example.test");
 * assert.equal(normalizeHost("[::1]:8080"), "[::1]");
 * ```
 */
export function normalizeHost(hostHeader: string): string {
  let host = hostHeader.trim().toLowerCase();
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    if (end === -1) return host;
    const literal = host.slice(0, end + 1);
    return canonicalIPv6Literal(literal) ?? literal;
  }
  const colon = host.indexOf(":");
  // One colon separates the port; more than one is an unbracketed IPv6
  // address, which is not a valid Host and is left alone (it matches nothing).
  if (colon !== -1 && host.indexOf(":", colon + 1) === -1) {
    host = host.slice(0, colon);
  }
  if (host.endsWith(".")) host = host.slice(0, -1);
  return host;
}

/**
 * Tells whether `pattern` is a valid host pattern: `*`, an exact name, IPv4
 * or bracketed IPv6 literal, `*.name`, `~.name`, `+.name`, or a comma list of
 * those (spaces around commas allowed; `*` only on its own). Labels are
 * `[a-z0-9-]` (any case), 1 to 63 characters, not starting or ending with a
 * hyphen; a name may end with one dot.
 *
 * @param pattern The pattern as a site wrote it.
 * @returns `true` when {@linkcode compileHostPattern} accepts it.
 *
 * @example Valid and invalid patterns
 * ```ts
 * import { isValidHostPattern } from "./host_pattern.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(isValidHostPattern("example.test, *.example.org"));
 * assert.ok(!isValidHostPattern("*.*.example.test"));
 * ```
 */
export function isValidHostPattern(pattern: string): boolean {
  return parseHostPattern(pattern) !== null;
}

/**
 * Compiles a host pattern into a predicate over normalized hosts (see
 * {@linkcode normalizeHost}). The predicate also lower-cases its argument,
 * so matching ignores case either way.
 *
 * @param pattern A pattern accepted by {@linkcode isValidHostPattern}.
 * @returns A function telling whether a normalized host matches `pattern`.
 * @throws {TypeError} When `pattern` is not a valid host pattern.
 *
 * @example Subdomain wildcards
 * ```ts
 * import { compileHostPattern } from "./host_pattern.ts";
 * import assert from "node:assert/strict";
 *
 * const matches = compileHostPattern("+.example.test");
 * assert.ok(matches("blog.example.test"));
 * assert.ok(!matches("example.test"));
 * assert.ok(!matches("a.blog.example.test"));
 * ```
 */
export function compileHostPattern(pattern: string): HostMatcher {
  const items = parseHostPattern(pattern);
  if (items === null) {
    throw new TypeError(`Invalid host pattern "${pattern}"`);
  }
  if (items.length === 1 && items[0] === ANY_PATTERN) return () => true;
  const matchers = items.map(compileItem);
  const [only] = matchers;
  if (only !== undefined && matchers.length === 1) {
    return (host) => only(prepareHost(host));
  }
  return (host) => {
    const prepared = prepareHost(host);
    return matchers.some((matches) => matches(prepared));
  };
}

/**
 * Splits and validates a pattern into lower-case items (without the optional
 * trailing dot), or returns `null` when the pattern is invalid.
 */
function parseHostPattern(pattern: string): string[] | null {
  if (typeof pattern !== "string") return null;
  const trimmed = pattern.trim();
  if (trimmed === ANY_PATTERN) return [ANY_PATTERN];
  const items: string[] = [];
  for (const raw of trimmed.split(",")) {
    const item = parseItem(raw.trim().toLowerCase());
    if (item === null) return null;
    items.push(item);
  }
  return items;
}

function parseItem(item: string): string | null {
  const wildcard = item.slice(0, 2);
  if (wildcard === "*." || wildcard === "~." || wildcard === "+.") {
    const root = stripTrailingDot(item.slice(2));
    return isDomainName(root) ? wildcard + root : null;
  }
  if (item.startsWith("[")) return canonicalIPv6Literal(item);
  const name = stripTrailingDot(item);
  return isDomainName(name) || IPV4_REGEXP.test(name) ? name : null;
}

function stripTrailingDot(name: string): string {
  return name.endsWith(".") ? name.slice(0, -1) : name;
}

/** A DNS name (not an IP literal): the last label may not be all digits. */
function isDomainName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) return false;
  const labels = name.split(".");
  const last = labels[labels.length - 1] ?? "";
  if (DIGITS_REGEXP.test(last)) return false;
  return labels.every((label) => LABEL_REGEXP.test(label));
}

function compileItem(item: string): HostMatcher {
  const kind = item.slice(0, 2);
  const root = item.slice(2);
  const dotRoot = "." + root;
  switch (kind) {
    case "*.":
      return (host) => host === root || isBelow(host, dotRoot, false);
    case "~.":
      return (host) => isBelow(host, dotRoot, false);
    case "+.":
      return (host) => isBelow(host, dotRoot, true);
    default:
      return (host) => host === item;
  }
}

/**
 * Tells whether `host` is `labels + dotRoot` where `labels` is one or more
 * well-formed labels (exactly one when `single`).
 */
function isBelow(host: string, dotRoot: string, single: boolean): boolean {
  if (host.length <= dotRoot.length || !host.endsWith(dotRoot)) return false;
  const prefix = host.slice(0, host.length - dotRoot.length);
  return (single ? HOST_LABEL_REGEXP : HOST_LABELS_REGEXP).test(prefix);
}

/** Lower-cases a host and canonicalizes a bracketed IPv6 literal. */
function prepareHost(host: string): string {
  const lower = host.toLowerCase();
  if (!lower.startsWith("[")) return lower;
  return canonicalIPv6Literal(lower) ?? lower;
}

/**
 * Parses `[address]` and returns it in the form URL serializers use (lower
 * case, no leading zeros, the first longest run of two or more zero groups
 * compressed, embedded IPv4 written as hex), or `null` when invalid.
 */
function canonicalIPv6Literal(literal: string): string | null {
  if (!literal.startsWith("[") || !literal.endsWith("]")) return null;
  const groups = parseIPv6(literal.slice(1, -1).toLowerCase());
  return groups === null ? null : `[${formatIPv6(groups)}]`;
}

function parseIPv6(address: string): number[] | null {
  const halves = address.split("::");
  if (halves.length > 2) return null;
  const head = parseGroups(halves[0] ?? "", halves.length === 1);
  const tail = halves.length === 2 ? parseGroups(halves[1] ?? "", true) : [];
  if (head === null || tail === null) return null;
  if (halves.length === 1) return head.length === 8 ? head : null;
  const missing = 8 - head.length - tail.length;
  if (missing < 1) return null;
  return [...head, ...new Array<number>(missing).fill(0), ...tail];
}

/** Parses colon-separated hex groups; the last may be an IPv4 literal. */
function parseGroups(part: string, ipv4AllowedLast: boolean): number[] | null {
  if (part === "") return [];
  const groups: number[] = [];
  const fields = part.split(":");
  for (const [index, field] of fields.entries()) {
    if (HEX_GROUP_REGEXP.test(field)) {
      groups.push(parseInt(field, 16));
    } else if (
      ipv4AllowedLast && index === fields.length - 1 && IPV4_REGEXP.test(field)
    ) {
      const [a = 0, b = 0, c = 0, d = 0] = field.split(".").map(Number);
      groups.push((a << 8) | b, (c << 8) | d);
    } else {
      return null;
    }
  }
  return groups;
}

function formatIPv6(groups: number[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < groups.length;) {
    let end = start;
    while (end < groups.length && groups[end] === 0) end++;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end === start ? start + 1 : end;
  }
  const hex = groups.map((group) => group.toString(16));
  if (bestStart === -1) return hex.join(":");
  const before = hex.slice(0, bestStart).join(":");
  const after = hex.slice(bestStart + bestLength).join(":");
  return `${before}::${after}`;
}

/**
 * Whether every host that `requested` matches is matched by `granted`: one
 * pattern each, no comma lists. `*` (hosts.any) covers only `*`, and only
 * `*` covers it: a grant of `*` never gives a named host.
 *
 * @example
 * ```ts
 * import { hostPatternCovers } from "./host_pattern.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(hostPatternCovers("*.example.test", "blog.example.test"));
 * assert.ok(hostPatternCovers("~.example.test", "+.example.test"));
 * assert.ok(!hostPatternCovers("~.example.test", "example.test"));
 * assert.ok(!hostPatternCovers("*", "example.test"));
 * ```
 */
export function hostPatternCovers(granted: string, requested: string): boolean {
  const g = splitPattern(granted);
  const r = splitPattern(requested);
  if (g.kind === "*" || r.kind === "*") return g.kind === r.kind;
  // Is `name` `root` or below it (`strict`: below only; `depth1`: one label)?
  const under = (name: string, root: string, strict: boolean) =>
    name.endsWith(`.${root}`) || (!strict && name === root);
  if (r.kind === "exact") {
    switch (g.kind) {
      case "exact":
        return g.root === r.root;
      case "*.":
        return under(r.root, g.root, false);
      case "~.":
        return under(r.root, g.root, true);
      case "+.":
        return under(r.root, g.root, true) &&
          !r.root.slice(0, -g.root.length - 1).includes(".");
    }
  }
  switch (g.kind) {
    case "exact":
      return false;
    case "+.":
      return r.kind === "+." && r.root === g.root;
    case "~.":
      return under(r.root, g.root, r.kind === "*.");
    case "*.":
      return under(r.root, g.root, false);
  }
}

function splitPattern(
  pattern: string,
): { kind: "*" | "exact" | "*." | "~." | "+."; root: string } {
  const p = pattern.trim().toLowerCase();
  if (p === ANY_PATTERN) return { kind: "*", root: "" };
  const prefix = p.slice(0, 2);
  if (prefix === "*." || prefix === "~." || prefix === "+.") {
    return { kind: prefix, root: p.slice(2) };
  }
  return { kind: "exact", root: p };
}
