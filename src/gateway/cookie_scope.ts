/**
 * Cookies stay with their site. On a host a site owns, its cookies pass as
 * they are, but a `Domain=` wider than the hosts it owns is removed. On a
 * host it shares with other sites (a host nobody owns, served by every
 * site's `hosts.any` pages, or an owner's host that opted in to fallback),
 * a site's cookies are bound to it by name: it sets `name`, the browser
 * keeps `sf~SITE~name`, and the site is handed back only the cookies bound
 * to it, by their plain names. No site can read, or overwrite, another's.
 *
 * @module
 */

import { hostPatternCovers } from "../router/host_pattern.ts";

/** Browser-enforced prefixes that must stay at the front of a name. */
const SECURE_PREFIXES = ["__Host-", "__Secure-"];

/** What is bound to `site` on shared hosts starts with this. */
export function cookiePrefix(site: string): string {
  return `sf~${site}~`;
}

function splitSecure(name: string): [string, string] {
  for (const prefix of SECURE_PREFIXES) {
    if (name.startsWith(prefix)) return [prefix, name.slice(prefix.length)];
  }
  return ["", name];
}

/**
 * The `Cookie` header a site sees on a host it shares: its own cookies, by
 * their plain names; `""` when it has none.
 *
 * @example
 * ```ts
 * import { scopeCookieHeader } from "./cookie_scope.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   scopeCookieHeader("session=x; sf~a~session=1; sf~b~session=2", "a"),
 *   "session=1",
 * );
 * ```
 */
export function scopeCookieHeader(header: string, site: string): string {
  const prefix = cookiePrefix(site);
  const kept: string[] = [];
  for (const part of header.split(";")) {
    const pair = part.trim();
    const eq = pair.indexOf("=");
    const [secure, name] = splitSecure(eq < 0 ? pair : pair.slice(0, eq));
    if (!name.startsWith(prefix)) continue;
    kept.push(
      secure + name.slice(prefix.length) + (eq < 0 ? "" : pair.slice(eq)),
    );
  }
  return kept.join("; ");
}

/** How one site's `Set-Cookie` headers are rewritten for one request. */
export interface CookieScope {
  /** The site, when the host is shared: names are bound to it. */
  bound: string | null;
  /** The host patterns the site owns (for `Domain=`). */
  owns: readonly string[];
}

/**
 * A `Set-Cookie` value as it may be sent, and the `Domain` removed from it
 * (null when none was).
 *
 * @example
 * ```ts
 * import { scopeSetCookie } from "./cookie_scope.ts";
 * import assert from "node:assert/strict";
 *
 * const owner = { bound: null, owns: ["*.a.test"] };
 * assert.equal(scopeSetCookie("x=1; Domain=a.test", owner).value, "x=1; Domain=a.test");
 * assert.equal(scopeSetCookie("x=1; Domain=test", owner).value, "x=1");
 * const shared = { bound: "a", owns: [] };
 * assert.equal(scopeSetCookie("__Host-x=1; Path=/", shared).value, "__Host-sf~a~x=1; Path=/");
 * ```
 */
export function scopeSetCookie(
  value: string,
  scope: CookieScope,
): { value: string; removedDomain: string | null } {
  const parts = value.split(";");
  let pair = parts[0] ?? "";
  if (scope.bound !== null) {
    const lead = pair.length - pair.trimStart().length;
    const [secure, name] = splitSecure(pair.trimStart());
    pair = pair.slice(0, lead) + secure + cookiePrefix(scope.bound) + name;
  }
  let removedDomain: string | null = null;
  const kept = [pair];
  for (const attribute of parts.slice(1)) {
    const eq = attribute.indexOf("=");
    const key = (eq < 0 ? attribute : attribute.slice(0, eq)).trim();
    if (key.toLowerCase() === "domain") {
      const domain = attribute.slice(eq + 1).trim().replace(/^\./, "")
        .toLowerCase();
      // A Domain cookie goes to the domain and every name below it: the
      // site must own all of them, and on a shared host it owns none.
      if (
        scope.bound !== null ||
        !scope.owns.some((p) => hostPatternCovers(p, `*.${domain}`))
      ) {
        removedDomain = domain;
        continue;
      }
    }
    kept.push(attribute);
  }
  return { value: kept.join(";"), removedDomain };
}
