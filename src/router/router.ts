/**
 * The merged routing table of every site: built once per change from the
 * registrations each site's sandbox reports, then queried per request to pick
 * the host (SPEC §4 step 2) and the page (step 3), or the 404/405/409 to send.
 *
 * @module
 */

import {
  isMountPrefix,
  MAX_HOSTS_PER_SITE,
  MAX_MOUNTS_PER_SITE,
  MAX_PATTERN_LENGTH,
  MAX_PATTERNS_PER_SITE,
  mountPrefix,
  PATTERN_WORK_PER_REQUEST,
} from "../shared/route_limits.ts";
import { compileHostPattern, normalizeHost } from "./host_pattern.ts";

/** The host pattern of `hosts.any`, the host shared by every site. */
export const ANY_HOST = "*";

/** A page as reported by a site's sandbox. */
export interface PageSpec {
  /** Page id within the site. */
  id: number;
  /** Host pattern the page was added to; {@linkcode ANY_HOST} = `hosts.any`. */
  host: string;
  /** Upper-case method, e.g. `"GET"`. */
  method: string;
  /** Exact path (give either `path` or `regex`). */
  path?: string;
  /** Pattern matched against the whole path (give either `path` or `regex`). */
  regex?: { source: string; flags: string };
  /**
   * A handler mounted under this path (`host.mount`, a default fetch
   * handler): it answers the prefix and everything below it, for every
   * method, wherever no exact or pattern page does. Its method is `*`.
   */
  prefix?: string;
  /**
   * A static file rather than a page (exact paths only). A site may have a
   * page and a file at one path; a request for it is a 409 naming both.
   */
  file?: boolean;
}

/** A host a site registered with `hosts.get(pattern, { noFallback })`. */
export interface HostSpec {
  pattern: string;
  noFallback: boolean;
}

/** A host pattern a site owns (from its site.json, within its grant). */
export interface OwnedHost {
  pattern: string;
  /**
   * The owner lets other sites' `hosts.any` pages answer the paths it does
   * not; otherwise only its own `hosts.any` pages and the root site's do.
   */
  fallback: boolean;
}

/** Everything one site registered. */
export interface SiteRoutes {
  site: string;
  /** Whether this is the built-in root site. */
  root: boolean;
  hosts: HostSpec[];
  pages: PageSpec[];
  /**
   * The named hosts the site owns: no other site ever gets a request for
   * them unless the owner opts in. @default {[]}
   */
  owns?: OwnedHost[];
}

/** Thrown by {@linkcode buildRouter} for bad input; names the site. */
export class RouteTableError extends Error {
  override name: string = "RouteTableError";
}

/** What {@linkcode Router.route} decided for a request. */
export type RouteResult =
  | {
    kind: "page";
    site: string;
    pageId: number;
    captures: string[];
    hostPattern: string;
    /** The site that owns the request's host; null for a shared host. */
    hostOwner: string | null;
    /** Sites whose patterns were not all tried (over their work budget). */
    overBudget?: string[];
  }
  | {
    kind: "error";
    status: 404 | 405 | 409;
    /** For the client: it names no site. */
    message: string;
    /** For the operator's log, when it says more than `message`. */
    detail?: string;
    owner: string;
    /** The site that owns the request's host; null for a shared host. */
    hostOwner: string | null;
    allow?: string[];
    /** Sites whose patterns were not all tried (over their work budget). */
    overBudget?: string[];
  };

/** A built routing table. */
export interface Router {
  /**
   * Routes a request. Never throws.
   *
   * @param hostHeader The `Host` header as received (`""` when missing).
   * @param path The decoded request path.
   * @param method The request method.
   */
  route(hostHeader: string, path: string, method: string): RouteResult;
}

/** Options of {@linkcode buildRouter}. */
export interface RouterOptions {
  /**
   * Site that owns errors without a site (host conflicts, `hosts.any`).
   * @default {the site with `root: true`, else "root"}
   */
  rootSite?: string;
  /**
   * Compiled patterns by `flags/source`, kept by the caller across builds so
   * that a rebuild compiles only new patterns. Filled as patterns compile.
   */
  compiled?: Map<string, CompiledPattern>;
  /**
   * Steps one site's patterns may cost per request.
   * @default {PATTERN_WORK_PER_REQUEST}
   */
  patternWork?: number;
  /**
   * Run route patterns on V8's linear-time engine. Only `testSite`, in a
   * process started without the engine's flag, turns it off.
   * @default {true}
   */
  linear?: boolean;
}

/** A route pattern as compiled once. */
export interface CompiledPattern {
  regex: RegExp;
  /** Literal text every matching path starts with, checked before `regex`. */
  prefix: string;
  /** Work units per character of input (see {@linkcode patternCost}). */
  cost: number;
}

/** The pattern work spent by each site on one request. */
interface Work {
  budget: number;
  spent: Map<string, number> | null;
  over: Set<string> | null;
}

/** Host-resolution cache entries kept before the cache is cleared. */
const HOST_CACHE_LIMIT = 10_000;
/** Longest path or method quoted in full in an error message. */
const MAX_QUOTED_LENGTH = 200;
const ALLOWED_FLAGS = new Set(["i", "m", "s", "u"]);
/** Characters that end a regex source's literal prefix. */
const SPECIAL_CHARS = new Set([..."^$.|?*+()[]{}"]);
const QUANTIFIERS = new Set([..."?*+{"]);
/** An escaped character that stands for itself (ASCII punctuation). */
const IDENTITY_ESCAPE_REGEXP = /^[!-/:-@[-`{-~]$/;
const METHOD_REGEXP = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

interface PageEntry {
  site: string;
  pageId: number;
  method: string;
  /** How error messages name the page: `GET "/x" (site a)`. */
  label: string;
  /** A static file, not a page. */
  file?: boolean;
}

interface PatternEntry extends PageEntry {
  pattern: CompiledPattern;
}

/** The pages of one host from one priority tier. */
interface Tier {
  /** path → method → pages (more than one only across sites on hosts.any). */
  exact: Map<string, Map<string, PageEntry[]>>;
  /** method → patterns, in site then registration order. */
  patterns: Map<string, PatternEntry[]>;
  allPatterns: PatternEntry[];
  /** Mounted handlers by prefix, without its trailing slash (more than one only across sites on hosts.any). */
  mounts: Map<string, PageEntry[]>;
}

interface Host {
  pattern: string;
  /** `null` for hosts.any. */
  site: string | null;
  noFallback: boolean;
  /** Other sites' hosts.any pages may answer what this host does not. */
  fallback: boolean;
  matches: (host: string) => boolean;
  /** Tried in order; on hosts.any the root site's pages come last. */
  tiers: Tier[];
}

type HostChoice = { host: Host } | { conflict: string; detail: string };

type Lookup =
  | { kind: "page"; page: PageEntry; captures: string[] }
  | { kind: "conflict"; pages: PageEntry[] }
  | { kind: "method"; allow: Set<string> }
  | { kind: "none" };

/**
 * Builds the routing table of all sites. Everything is validated and
 * compiled here; route patterns run on V8's linear-time engine (`l` flag,
 * enabled by `--v8-flags=--enable-experimental-regexp-engine`).
 *
 * @param sites Every loaded site's registrations.
 * @param options See {@linkcode RouterOptions}.
 * @returns An immutable {@linkcode Router}.
 * @throws {RouteTableError} For an invalid host pattern, page, regex or
 * method, or a site registering the same path and method twice on one host.
 *
 * @example Exact pages, 404 and 405
 * ```ts
 * import { buildRouter } from "./router.ts";
 * import assert from "node:assert/strict";
 *
 * const router = buildRouter([{
 *   site: "blog",
 *   root: false,
 *   hosts: [{ pattern: "blog.test", noFallback: true }],
 *   pages: [{ id: 0, host: "blog.test", method: "GET", path: "/" }],
 * }]);
 * assert.equal(router.route("Blog.test:8080", "/", "GET").kind, "page");
 * assert.equal(router.route("blog.test", "/", "HEAD").kind, "page");
 * const error = router.route("blog.test", "/", "POST");
 * assert.ok(error.kind === "error" && error.status === 405);
 * assert.deepEqual(error.allow, ["GET", "HEAD"]);
 * ```
 */
export function buildRouter(
  sites: SiteRoutes[],
  options: RouterOptions = {},
): Router {
  const rootSite = options.rootSite ??
    sites.find((site) => site.root)?.site ?? "root";
  const budget = options.patternWork ?? PATTERN_WORK_PER_REQUEST;
  const { hosts, owned, any, anyOf, rootOnly } = buildHosts(
    sites,
    options.compiled ?? new Map(),
    options.linear ?? true,
  );
  const cache = new Map<string, HostChoice | null>();

  function chooseHost(name: string): HostChoice | null {
    const cached = cache.get(name);
    if (cached !== undefined) return cached;
    const choice = resolveHost(hosts, owned, name);
    if (cache.size >= HOST_CACHE_LIMIT) cache.clear();
    cache.set(name, choice);
    return choice;
  }

  function route(hostHeader: string, rawPath: string, rawMethod: string) {
    // Coerce so that no input, however wrong its type, can make route() throw.
    const name = normalizeHost(String(hostHeader));
    const path = String(rawPath);
    const method = String(rawMethod);
    const choice = chooseHost(name);
    if (choice !== null && "conflict" in choice) {
      return {
        ...error(409, choice.conflict, rootSite, null),
        detail: choice.detail,
      };
    }
    const work: Work = { budget, spent: null, over: null };
    return withWork(routeOn(choice?.host, path, method, work), work);
  }

  function routeOn(
    named: Host | undefined,
    path: string,
    method: string,
    work: Work,
  ): RouteResult {
    if (named === undefined || named.site === null) {
      // A host no site owns: every site's hosts.any pages.
      const result = lookup(any, path, method, work);
      return answer(any, result, path, method, rootSite, null);
    }
    const owner = named.site;
    const result = lookup(named, path, method, work);
    if (result.kind !== "none" || named.noFallback) {
      return answer(named, result, path, method, owner, owner);
    }
    // What the owner's host does not answer goes to its own hosts.any
    // pages and the root site's, or to everyone's if it opted in.
    const shared = named.fallback ? any : anyOf.get(owner) ?? rootOnly;
    const fallback = lookup(shared, path, method, work);
    return answer(shared, fallback, path, method, owner, owner);
  }

  function answer(
    host: Host,
    result: Lookup,
    path: string,
    method: string,
    owner: string,
    hostOwner: string | null,
  ): RouteResult {
    switch (result.kind) {
      case "page":
        return page(host, result.page, result.captures, hostOwner);
      case "conflict":
        return {
          ...error(
            409,
            `More than one page answers "${quotable(path)}"`,
            owner,
            hostOwner,
          ),
          detail: pageConflictMessage(result.pages, path),
        };
      case "method":
        return methodNotAllowed(result.allow, path, method, owner, hostOwner);
      case "none":
        return notFound(path, owner, hostOwner);
      default:
        return assertNever(result);
    }
  }

  return { route };
}

/** Names the sites that ran out of pattern work on this request. */
function withWork(result: RouteResult, work: Work): RouteResult {
  if (work.over !== null) result.overBudget = [...work.over];
  return result;
}

interface BuiltHosts {
  /** Hosts that sites registered pages or options on. */
  hosts: Host[];
  /** Hosts sites own but registered nothing on (tried after `hosts`). */
  owned: Host[];
  /** hosts.any: every site's pages there, then the root site's. */
  any: Host;
  /** Per site: its own hosts.any pages, then the root site's. */
  anyOf: Map<string, Host>;
  /** The root site's hosts.any pages alone. */
  rootOnly: Host;
}

function buildHosts(
  sites: SiteRoutes[],
  compiled: Map<string, CompiledPattern>,
  linear: boolean,
): BuiltHosts {
  const any = newHost(ANY_HOST, null, false, () => true);
  const anyTiers = { site: newTier(), root: newTier() };
  const ownTiers = new Map<string, Tier>();
  const hosts: Host[] = [];
  const owned: Host[] = [];
  const seenSites = new Set<string>();
  for (const site of sites) {
    if (typeof site.site !== "string" || site.site === "") {
      throw new RouteTableError("A site has no name");
    }
    if (seenSites.has(site.site)) {
      throw new RouteTableError(`Site "${site.site}" is listed twice`);
    }
    seenSites.add(site.site);
    const siteHosts = collectSiteHosts(site);
    hosts.push(...siteHosts.values());
    owned.push(...ownedHosts(site, siteHosts));
    const own = newTier();
    if (!site.root) ownTiers.set(site.site, own);
    addPages(
      site,
      siteHosts,
      site.root ? [anyTiers.root] : [anyTiers.site, own],
      compiled,
      linear,
    );
  }
  const used = (tiers: Tier[]) =>
    tiers.filter((tier) =>
      tier.exact.size > 0 || tier.allPatterns.length > 0 ||
      tier.mounts.size > 0
    );
  any.tiers = used([anyTiers.site, anyTiers.root]);
  const rootOnly = newHost(ANY_HOST, null, false, () => true);
  rootOnly.tiers = used([anyTiers.root]);
  const anyOf = new Map<string, Host>();
  for (const [site, tier] of ownTiers) {
    const host = newHost(ANY_HOST, null, false, () => true);
    host.tiers = used([tier, anyTiers.root]);
    anyOf.set(site, host);
  }
  return { hosts, owned, any, anyOf, rootOnly };
}

/**
 * The hosts a site owns, as hosts with no pages of their own; and each of
 * its registered hosts learns whether its owner opted in to fallback (every
 * pattern of a comma list must have).
 */
function ownedHosts(site: SiteRoutes, registered: Map<string, Host>): Host[] {
  const owns = site.root ? [] : site.owns ?? [];
  const optedIn = new Set(
    owns.filter((o) => o.fallback).map((o) => hostKey(o.pattern)),
  );
  for (const host of registered.values()) {
    host.fallback = hostKey(host.pattern).split(",").every((part) =>
      optedIn.has(part)
    );
  }
  const out: Host[] = [];
  for (const { pattern, fallback } of owns) {
    const key = hostKey(pattern);
    if (key === ANY_HOST || key.includes(",")) continue;
    let matches: (host: string) => boolean;
    try {
      matches = compileHostPattern(pattern);
    } catch {
      throw new RouteTableError(
        `Site "${site.site}" owns invalid host pattern "${pattern}"`,
      );
    }
    const host = newHost(pattern, site.site, false, matches);
    host.fallback = fallback;
    out.push(host);
  }
  return out;
}

/** The hosts of one site, keyed by canonical pattern. */
function collectSiteHosts(site: SiteRoutes): Map<string, Host> {
  const hosts = new Map<string, Host>();
  const declare = (pattern: string, noFallback: boolean) => {
    const key = hostKey(pattern);
    if (key === ANY_HOST) return;
    const known = hosts.get(key);
    if (known !== undefined) {
      known.noFallback ||= noFallback;
      return;
    }
    let matches: (host: string) => boolean;
    try {
      matches = compileHostPattern(pattern);
    } catch {
      throw new RouteTableError(
        `Site "${site.site}" registers invalid host pattern "${pattern}"`,
      );
    }
    hosts.set(key, newHost(pattern, site.site, noFallback, matches));
  };
  for (const spec of site.hosts) declare(spec.pattern, spec.noFallback);
  for (const page of site.pages) declare(page.host, false);
  if (hosts.size > MAX_HOSTS_PER_SITE) {
    throw new RouteTableError(
      `Site "${site.site}" registers ${hosts.size} hosts; at most ${MAX_HOSTS_PER_SITE} are allowed`,
    );
  }
  return hosts;
}

function addPages(
  site: SiteRoutes,
  siteHosts: Map<string, Host>,
  anyTiers: Tier[],
  compiled: Map<string, CompiledPattern>,
  linear: boolean,
): void {
  const mounts = site.pages.filter((p) => p.prefix !== undefined).length;
  if (mounts > MAX_MOUNTS_PER_SITE) {
    throw new RouteTableError(
      `Site "${site.site}" mounts ${mounts} handlers; at most ${MAX_MOUNTS_PER_SITE} are allowed`,
    );
  }
  const patterns = site.pages.filter((p) => p.regex !== undefined).length;
  if (patterns > MAX_PATTERNS_PER_SITE) {
    throw new RouteTableError(
      `Site "${site.site}" registers ${patterns} route patterns; at most ${MAX_PATTERNS_PER_SITE} are allowed`,
    );
  }
  const ids = new Set<number>();
  for (const spec of site.pages) {
    const method = checkPage(site.site, spec);
    if (ids.has(spec.id)) {
      throw new RouteTableError(
        `Site "${site.site}" has two pages with id ${spec.id}`,
      );
    }
    ids.add(spec.id);
    const key = hostKey(spec.host);
    const host = key === ANY_HOST ? undefined : siteHosts.get(key);
    let tiers = anyTiers;
    if (host !== undefined) {
      host.tiers = [host.tiers[0] ?? newTier()];
      tiers = host.tiers;
    }
    for (const tier of tiers) {
      if (spec.prefix !== undefined) {
        addMount(tier, site.site, spec, spec.prefix);
      } else if (spec.regex !== undefined) {
        addPattern(tier, site.site, spec, method, compiled, linear);
      } else {
        addExact(tier, site.site, spec, method, spec.path ?? "");
      }
    }
  }
}

/** Validates a page and returns its method, upper-cased. */
function checkPage(site: string, spec: PageSpec): string {
  const what = `Page ${spec.id} of site "${site}"`;
  if (!Number.isInteger(spec.id)) {
    throw new RouteTableError(`A page of site "${site}" has id "${spec.id}"`);
  }
  if (typeof spec.method !== "string" || !METHOD_REGEXP.test(spec.method)) {
    throw new RouteTableError(`${what} has invalid method "${spec.method}"`);
  }
  if (typeof spec.host !== "string") {
    throw new RouteTableError(`${what} has no host`);
  }
  const hasPath = spec.path !== undefined;
  const kinds =
    [spec.path, spec.regex, spec.prefix].filter((v) => v !== undefined).length;
  if (kinds !== 1) {
    throw new RouteTableError(
      `${what} needs exactly one of path, regex and prefix`,
    );
  }
  if (spec.prefix !== undefined) {
    if (!isMountPrefix(spec.prefix)) {
      throw new RouteTableError(
        `${what} has prefix "${String(spec.prefix).slice(0, 100)}"`,
      );
    }
    if (spec.method !== ANY_METHOD) {
      throw new RouteTableError(
        `${what} is mounted under a prefix, so its method must be "*"`,
      );
    }
  }
  if (
    hasPath && (typeof spec.path !== "string" || !spec.path.startsWith("/"))
  ) {
    throw new RouteTableError(`${what} has path "${spec.path}"`);
  }
  return spec.method.toUpperCase();
}

function addExact(
  tier: Tier,
  site: string,
  spec: PageSpec,
  method: string,
  path: string,
): void {
  let methods = tier.exact.get(path);
  if (methods === undefined) {
    methods = new Map();
    tier.exact.set(path, methods);
  }
  const pages = methods.get(method) ?? [];
  const file = spec.file === true;
  if (pages.some((page) => page.site === site && page.file === file)) {
    throw new RouteTableError(
      `Site "${site}" registers ${method} "${path}" twice on host "${spec.host}"`,
    );
  }
  const label = file
    ? `static file "${path}" (site ${site})`
    : `${method} "${path}" (site ${site})`;
  pages.push({ site, pageId: spec.id, method, label, file });
  methods.set(method, pages);
}

/** The method of a mounted handler: it answers every method. */
export const ANY_METHOD = "*";

function addMount(
  tier: Tier,
  site: string,
  spec: PageSpec,
  raw: string,
): void {
  const prefix = mountPrefix(raw);
  const list = tier.mounts.get(prefix) ?? [];
  if (list.some((m) => m.site === site)) {
    throw new RouteTableError(
      `Site "${site}" mounts two handlers at "${prefix}" on host "${spec.host}"`,
    );
  }
  list.push({
    site,
    pageId: spec.id,
    method: ANY_METHOD,
    label: `handler mounted at "${prefix}" (site ${site})`,
  });
  tier.mounts.set(prefix, list);
}

function addPattern(
  tier: Tier,
  site: string,
  spec: PageSpec,
  method: string,
  compiled: Map<string, CompiledPattern>,
  linear: boolean,
): void {
  const regex = spec.regex!;
  const shown = `/${regex.source}/${regex.flags}`;
  const key = `${linear ? "" : "!"}${regex.flags}/${regex.source}`;
  let pattern = compiled.get(key);
  if (pattern === undefined) {
    pattern = {
      regex: compileRoutePattern(site, regex, shown, linear),
      prefix: literalPrefix(regex.source, regex.flags),
      cost: patternCost(regex.source),
    };
    compiled.set(key, pattern);
  }
  const entry: PatternEntry = {
    site,
    pageId: spec.id,
    method,
    label: `${method} ${shown} (site ${site})`,
    pattern,
  };
  const list = tier.patterns.get(method) ?? [];
  if (list.some((e) => e.site === site && e.label === entry.label)) {
    throw new RouteTableError(
      `Site "${site}" registers ${method} ${shown} twice on host "${spec.host}"`,
    );
  }
  tier.allPatterns.push(entry);
  list.push(entry);
  tier.patterns.set(method, list);
}

/**
 * Compiles `^(?:source)$` on the linear-time engine, after checking that the
 * source is a regular expression on its own (so it cannot break out of the
 * group) and that its flags are among i, m, s, u.
 */
function compileRoutePattern(
  site: string,
  regex: { source: string; flags: string },
  shown: string,
  linear = true,
): RegExp {
  const fail = (reason: string) =>
    new RouteTableError(`Site "${site}" has route pattern ${shown}: ${reason}`);
  const { source, flags } = regex;
  if (typeof source !== "string" || typeof flags !== "string") {
    throw fail("source and flags must be strings");
  }
  if (source.length > MAX_PATTERN_LENGTH) {
    throw fail(`longer than ${MAX_PATTERN_LENGTH} characters`);
  }
  for (const flag of flags) {
    if (!ALLOWED_FLAGS.has(flag)) {
      throw fail(`flag "${flag}" is not allowed (only i, m, s and u are)`);
    }
  }
  try {
    new RegExp(source, flags);
  } catch (err) {
    throw fail((err as Error).message);
  }
  try {
    return new RegExp(`^(?:${source})$`, linear ? flags + "l" : flags);
  } catch (err) {
    const message = (err as Error).message;
    if (message.startsWith("Invalid flags")) {
      throw fail(
        "the linear-time regex engine is off; run Deno with " +
          "--v8-flags=--enable-experimental-regexp-engine",
      );
    }
    throw fail(message);
  }
}

/**
 * The host of a name: the one registered host that matches, else the owner
 * of the name when one site owns it. A name owned by another site than the
 * registered host's (overlapping grants) is a conflict: no site takes a
 * host another owns by registering a wider pattern.
 */
function resolveHost(
  hosts: Host[],
  owned: Host[],
  name: string,
): HostChoice | null {
  const matching = hosts.filter((host) => host.matches(name));
  const [first] = matching;
  if (first === undefined) return resolveOwned(owned, name);
  if (matching.length > 1) return hostConflict(name, matching);
  const others = owned.filter((host) =>
    host.site !== first.site && host.matches(name)
  );
  if (others.length > 0) return hostConflict(name, [first, ...others]);
  return { host: first };
}

/** The owner of a host no site registered pages on, if any site owns it. */
function resolveOwned(owned: Host[], name: string): HostChoice | null {
  const matching = owned.filter((host) => host.matches(name));
  const [first] = matching;
  if (first === undefined) return null;
  const mine = matching.filter((host) => host.site === first.site);
  if (mine.length < matching.length) return hostConflict(name, matching);
  // A site that owns the name by two patterns falls back only if both say so.
  return {
    host: { ...first, fallback: mine.every((host) => host.fallback) },
  };
}

function hostConflict(name: string, matching: Host[]): HostChoice {
  const claims = matching
    .map((host) => `"${host.pattern}" (site ${host.site})`)
    .join(", ");
  return {
    conflict: `Host "${quotable(name)}" is claimed by more than one site`,
    detail: `Host "${quotable(name)}" is claimed by more than one host: ` +
      claims,
  };
}

function lookup(
  host: Host,
  path: string,
  method: string,
  work: Work,
): Lookup {
  let allow: Set<string> | undefined;
  for (const tier of host.tiers) {
    const found = lookupTier(tier, path, method, work);
    if (found !== null) return found;
    allow = allowedMethods(tier, path, allow ?? new Set(), work);
  }
  if (allow === undefined || allow.size === 0) return { kind: "none" };
  return { kind: "method", allow };
}

/** The page(s) for the method, trying HEAD then GET; `null` when none. */
function lookupTier(
  tier: Tier,
  path: string,
  method: string,
  work: Work,
): Lookup | null {
  const methods = tier.exact.get(path);
  const found = lookupMethod(tier, methods, path, method, work) ??
    (method === "HEAD" ? lookupMethod(tier, methods, path, "GET", work) : null);
  return found ?? lookupMount(tier, path);
}

/**
 * The handler mounted under the longest prefix of `path`, found by trying
 * the path and each of its ancestors (so the cost is the path's depth, not
 * the number of mounts); handlers of several sites at that prefix (on
 * hosts.any) are a conflict, as pages are.
 */
function lookupMount(tier: Tier, path: string): Lookup | null {
  if (tier.mounts.size === 0) return null;
  let prefix = path;
  while (true) {
    const found = tier.mounts.get(prefix);
    if (found !== undefined) return choose(found, []);
    if (prefix === "/") return null;
    const cut = prefix.lastIndexOf("/");
    prefix = cut <= 0 ? "/" : prefix.slice(0, cut);
  }
}

function lookupMethod(
  tier: Tier,
  methods: Map<string, PageEntry[]> | undefined,
  path: string,
  method: string,
  work: Work,
): Lookup | null {
  const exact = methods?.get(method);
  if (exact !== undefined) return choose(exact, []);
  const patterns = tier.patterns.get(method);
  if (patterns === undefined) return null;
  const pages: PageEntry[] = [];
  let captures: string[] = [];
  for (const pattern of patterns) {
    const match = matchWhole(pattern, path, work);
    if (match === null) continue;
    pages.push(pattern);
    captures = match.slice(1).map((capture) => capture ?? "");
  }
  return pages.length === 0 ? null : choose(pages, captures);
}

function choose(pages: PageEntry[], captures: string[]): Lookup {
  const [page] = pages;
  if (page !== undefined && pages.length === 1) {
    return { kind: "page", page, captures };
  }
  return { kind: "conflict", pages };
}

function allowedMethods(
  tier: Tier,
  path: string,
  allow: Set<string>,
  work: Work,
): Set<string> {
  for (const method of tier.exact.get(path)?.keys() ?? []) allow.add(method);
  for (const pattern of tier.allPatterns) {
    if (allow.has(pattern.method)) continue;
    if (matchWhole(pattern, path, work) !== null) allow.add(pattern.method);
  }
  return allow;
}

/**
 * Matches the whole path. The `m` flag lets `^`/`$` match at line breaks,
 * so the match must also span the path.
 */
function matchWhole(
  entry: PatternEntry,
  path: string,
  work: Work,
): RegExpExecArray | null {
  const { pattern, site } = entry;
  if (!path.startsWith(pattern.prefix)) return null;
  // The engine's work is bounded by path length × cost: a site whose
  // patterns would cost more on this request has the rest skipped.
  work.spent ??= new Map();
  const spent = (work.spent.get(site) ?? 0) +
    pattern.cost * (path.length + 1);
  if (spent > work.budget) {
    (work.over ??= new Set()).add(site);
    return null;
  }
  work.spent.set(site, spent);
  const match = pattern.regex.exec(path);
  if (match === null) return null;
  return match.index === 0 && match[0].length === path.length ? match : null;
}

/**
 * The literal text at the start of a (valid) regex source, e.g. `/user/` for
 * `^/user/(\d+)`; `""` when unsure. The linear engine is slow enough that
 * skipping patterns by prefix pays off.
 */
function literalPrefix(source: string, flags: string): string {
  if (flags.includes("i") || source.includes("|")) return "";
  let prefix = "";
  let index = source.startsWith("^") ? 1 : 0;
  while (index < source.length) {
    const char = source[index] ?? "";
    let literal: string;
    let next: number;
    if (char === "\\") {
      const escaped = source[index + 1] ?? "";
      if (!IDENTITY_ESCAPE_REGEXP.test(escaped)) break;
      literal = escaped;
      next = index + 2;
    } else if (SPECIAL_CHARS.has(char)) {
      break;
    } else {
      literal = char;
      next = index + 1;
    }
    if (QUANTIFIERS.has(source[next] ?? "")) break;
    prefix += literal;
    index = next;
  }
  return prefix;
}

/**
 * What a pattern costs V8's linear-time engine per character of input, in
 * work units. The engine (a Pike VM) steps every live thread for each
 * character; there are at most as many threads as bytecode instructions,
 * about one per character of the source once counted repetitions are
 * unrolled, and each capture group adds registers that every thread copies.
 * So the cost is the unrolled length × (1 + captures / 4). Measured on V8 15
 * (Deno 2.9.6), no pattern shape costs more than ~22 ns per unit: nested
 * quantified groups, empty alternatives, anchors, `.*x` chains, many
 * captures, counted repetitions (see router_test.ts).
 *
 * @example
 * ```ts
 * import { patternCost } from "./router.ts";
 * patternCost("/user/(\\d+)"); // 11 characters, 1 capture: 13.75 → 14
 * patternCost("(?:a*){3}"); // "(?:a*)" three times and its counter
 * ```
 */
export function patternCost(source: string): number {
  // Each open group holds the length of what it contains so far.
  const groups: number[] = [0];
  let last = 0;
  let captures = 0;
  let i = 0;
  while (i < source.length) {
    const c = source[i]!;
    let atom: number;
    if (c === "\\") {
      atom = escapeLength(source, i);
      i += atom;
    } else if (c === "[") {
      const end = classEnd(source, i);
      atom = end - i;
      i = end;
    } else if (c === "(") {
      const open = /^\(\?(?:<[^=!>][^>]*>|[:=!]|<[=!])?/.exec(source.slice(i));
      const length = open?.[0].length ?? 1;
      if (length === 1 || source[i + 2] === "<") captures++;
      groups.push(length);
      i += length;
      continue;
    } else if (c === ")") {
      atom = (groups.length > 1 ? groups.pop()! : 0) + 1;
      i++;
    } else if (c === "{") {
      const counted = /^\{(\d+)(?:,(\d*))?\}/.exec(source.slice(i));
      if (counted !== null) {
        const low = Number(counted[1]);
        const high = counted[2] === undefined
          ? low
          : counted[2] === ""
          ? low + 1
          : Number(counted[2]);
        const times = Math.max(low, high, 1);
        groups[groups.length - 1]! += last * (times - 1) + counted[0].length;
        last *= times;
        i += counted[0].length;
        continue;
      }
      atom = 1;
      i++;
    } else {
      atom = 1;
      i++;
    }
    groups[groups.length - 1]! += atom;
    last = atom;
  }
  const length = groups.reduce((a, b) => a + b, 0);
  return Math.ceil(Math.max(1, length) * (1 + captures / 4));
}

/** Length of the escape at `i` (`\\d`, `\\u{…}`, `\\p{…}`, `\\k<…>`). */
function escapeLength(source: string, i: number): number {
  const next = source[i + 1];
  const close = next === "k" ? ">" : "}";
  if (
    (next === "u" || next === "p" || next === "P" || next === "k") &&
    (source[i + 2] === "{" || source[i + 2] === "<")
  ) {
    const end = source.indexOf(close, i + 3);
    return end < 0 ? source.length - i : end - i + 1;
  }
  return Math.min(2, source.length - i);
}

/** The index just past the class `[…]` starting at `i`. */
function classEnd(source: string, i: number): number {
  let j = i + 1;
  while (j < source.length && source[j] !== "]") {
    j += source[j] === "\\" ? 2 : 1;
  }
  return j + 1;
}

function newTier(): Tier {
  return {
    exact: new Map(),
    patterns: new Map(),
    allPatterns: [],
    mounts: new Map(),
  };
}

function newHost(
  pattern: string,
  site: string | null,
  noFallback: boolean,
  matches: (host: string) => boolean,
): Host {
  return { pattern, site, noFallback, fallback: false, matches, tiers: [] };
}

/** Identity of a pattern: case and spaces around commas do not count. */
function hostKey(pattern: string): string {
  return pattern.split(",").map((item) => item.trim().toLowerCase()).join(",");
}

function page(
  host: Host,
  entry: PageEntry,
  captures: string[],
  hostOwner: string | null,
): RouteResult {
  return {
    kind: "page",
    site: entry.site,
    pageId: entry.pageId,
    captures,
    hostPattern: host.pattern,
    hostOwner,
  };
}

function error(
  status: 404 | 409,
  message: string,
  owner: string,
  hostOwner: string | null,
): Extract<RouteResult, { kind: "error" }> {
  return { kind: "error", status, message, owner, hostOwner };
}

function notFound(
  path: string,
  owner: string,
  hostOwner: string | null,
): RouteResult {
  return error(404, `No page at "${quotable(path)}"`, owner, hostOwner);
}

function methodNotAllowed(
  methods: Set<string>,
  path: string,
  method: string,
  owner: string,
  hostOwner: string | null,
): RouteResult {
  if (methods.has("GET")) methods.add("HEAD");
  return {
    kind: "error",
    status: 405,
    message: `Method "${quotable(method)}" is not allowed on "${
      quotable(path)
    }"`,
    owner,
    hostOwner,
    allow: [...methods].sort(),
  };
}

function pageConflictMessage(pages: PageEntry[], path: string): string {
  const names = pages.map((page) => page.label).join(", ");
  return `Path "${quotable(path)}" is claimed by more than one page: ${names}`;
}

/** Shortens a request-supplied value for an error message. */
function quotable(value: string): string {
  return value.length <= MAX_QUOTED_LENGTH
    ? value
    : `${value.slice(0, MAX_QUOTED_LENGTH)}…`;
}

function assertNever(value: never): never {
  throw new TypeError(`Unexpected lookup result ${JSON.stringify(value)}`);
}

/**
 * Conflicts visible in the tables themselves: one host pattern registered by
 * two sites, or one exact path and method on one host pattern registered by
 * two sites (the root site yields, so it conflicts with nobody). Requests
 * that hit them get a 409; operators are told at load.
 *
 * @param sites every site's routes
 * @returns one message per conflict
 * @example
 * ```ts
 * const a = { site: "a", root: false, hosts: [], pages: [{ id: 0, host: "*", method: "GET", path: "/x" }] };
 * findConflicts([a, { ...a, site: "b" }]); // ['GET "/x" on host "*" is registered by sites a and b: requests for it get 409']
 * ```
 */
export function findConflicts(sites: readonly SiteRoutes[]): string[] {
  const owners = new Map<string, Set<string>>();
  const note = (key: string, site: string) => {
    const set = owners.get(key) ?? new Set<string>();
    set.add(site);
    owners.set(key, set);
  };
  for (const s of sites) {
    if (s.root) continue;
    for (const h of s.hosts) {
      if (h.pattern !== ANY_HOST) {
        note(`host\0${h.pattern.toLowerCase()}`, s.site);
      }
    }
    for (const p of s.pages) {
      if (p.path !== undefined) {
        note(`page\0${p.host.toLowerCase()}\0${p.method}\0${p.path}`, s.site);
      } else if (p.prefix !== undefined) {
        note(
          `mount\0${p.host.toLowerCase()}\0\0${mountPrefix(p.prefix)}`,
          s.site,
        );
      }
    }
  }
  const messages: string[] = [];
  for (const [key, set] of owners) {
    if (set.size < 2) continue;
    const names = [...set].sort();
    const list = `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
    const [kind, host, method, path] = key.split("\0");
    messages.push(
      kind === "host"
        ? `Host "${host}" is registered by sites ${list}: requests for it get 409`
        : kind === "mount"
        ? `A handler at "${path}" on host "${host}" is mounted by sites ${list}: requests for it get 409`
        : `${method} "${path}" on host "${host}" is registered by sites ${list}: requests for it get 409`,
    );
  }
  return messages;
}
