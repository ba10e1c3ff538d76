/**
 * What the gateway reads per request: one immutable snapshot of the served
 * sites (their runners and static files) and the routers built from them.
 * The supervisor builds a new snapshot aside whenever anything changes and
 * swaps it in whole, so a request routes against one consistent table.
 *
 * @module
 */

import { join } from "node:path";
import type { WireRoutes, WireSocket } from "../protocol/messages.ts";
import {
  ANY_HOST,
  buildRouter,
  type CompiledPattern,
  findConflicts,
  type PageSpec,
  type Router,
  RouteTableError,
  type SiteRoutes,
} from "../router/router.ts";
import { checkHostClaims } from "./claims.ts";
import { OPERATOR_PATHS } from "../shared/operator_paths.ts";
import type { SiteRunner } from "./site_runner.ts";
import { ROOT_SITE, type SiteDefinition } from "./sites.ts";
import type { StaticIndex } from "./static_index.ts";

/** One site as it is served: its runner and its indexed static files. */
export interface ServedSite {
  readonly name: string;
  readonly runner: SiteRunner;
  readonly files: StaticIndex;
}

/** The served sites and their routers, replaced whole on every change. */
export interface Snapshot {
  /** Pages and static files of every site. */
  readonly router: Router;
  /**
   * Websocket endpoints, in a router of their own (over the same hosts), so
   * a plain GET never meets them and an upgrade never meets a page.
   */
  readonly sockets: Router;
  readonly sites: ReadonlyMap<string, ServedSite>;
  /** Path conflicts between sites, one message each. */
  readonly conflicts: readonly string[];
}

/** Websocket endpoints are routed as pages with ids from here on. */
export const WS_PAGE_BASE = 1_000_000_000;

/** A snapshot with no sites. */
export function emptySnapshot(): Snapshot {
  return {
    router: buildRouter([]),
    sockets: buildRouter([]),
    sites: new Map(),
    conflicts: [],
  };
}

/** Where a registration answers: its host and its path or pattern. */
export function socketPlace(reg: WireSocket): string {
  const where = reg.regex === undefined
    ? reg.path
    : `/${reg.regex.source}/${reg.regex.flags}`;
  return `${reg.host}\0${where}`;
}

/** What identifies a websocket channel across a site's generations. */
export function socketKey(reg: WireSocket): string {
  return `${socketPlace(reg)}\0${reg.protocol ?? ""}`;
}

/** A site's routes with its static files, as the router takes them. */
function siteTable(
  def: SiteDefinition,
  routes: WireRoutes,
  files: StaticIndex,
): SiteRoutes {
  const hosts = [...routes.hosts];
  for (const h of files.hosts) {
    if (!hosts.some((x) => x.pattern === h.pattern)) hosts.push(h);
  }
  const { manifest } = def;
  return {
    site: def.name,
    root: def.root,
    hosts,
    pages: [...routes.pages, ...files.pages],
    owns: def.root ? [] : manifest.hosts.filter((h) => h !== ANY_HOST).map((
      pattern,
    ) => ({ pattern, fallback: manifest.fallback.includes(pattern) })),
  };
}

/** One pseudo-page per websocket host and path, for the websocket router. */
function socketPages(routes: WireRoutes): PageSpec[] {
  const pages: PageSpec[] = [];
  const seen = new Set<string>();
  for (const reg of routes.websockets) {
    const key = socketPlace(reg);
    if (seen.has(key)) continue;
    seen.add(key);
    pages.push({
      id: WS_PAGE_BASE + reg.id,
      host: reg.host,
      method: "GET",
      ...(reg.regex !== undefined
        ? { regex: reg.regex }
        : { path: reg.path ?? "" }),
    });
  }
  return pages;
}

/**
 * Checks a site's registrations before it serves.
 * @returns a message when they are refused, null when they are fine
 */
export function checkRoutes(
  def: SiteDefinition,
  routes: WireRoutes,
  files: StaticIndex,
  compiled: Map<string, CompiledPattern> = new Map(),
): string | null {
  const table = siteTable(def, routes, files);
  // Every host the site touches counts: declared hosts, the host of each
  // page and of each websocket (a forged table could name others).
  const touched = [
    ...table.hosts,
    ...table.pages.map((p) => ({ pattern: p.host, noFallback: false })),
    ...routes.websockets.map((w) => ({ pattern: w.host, noFallback: false })),
  ];
  const claim = checkHostClaims(
    { hosts: touched },
    def.manifest.hosts,
    { root: def.root, file: join(def.dir, "site.json") },
  );
  if (claim !== null) return claim;
  try {
    buildRouter([table], { compiled });
    buildRouter([{ ...table, pages: socketPages(routes) }], { compiled });
  } catch (err) {
    if (err instanceof RouteTableError) return err.message;
    throw err;
  }
  return null;
}

/** Forgets compiled patterns no served site uses any more. */
export function pruneCompiled(
  compiled: Map<string, CompiledPattern>,
  sites: Iterable<ServedSite>,
): void {
  const used = new Set<string>();
  for (const { runner } of sites) {
    for (const page of runner.routes?.pages ?? []) {
      if (page.regex !== undefined) {
        used.add(`${page.regex.flags}/${page.regex.source}`);
      }
    }
  }
  for (const key of compiled.keys()) if (!used.has(key)) compiled.delete(key);
}

/**
 * Builds a snapshot from the served sites. A site whose table would not
 * build is left out (and reported through `onLeftOut`), so one bad table
 * can never take the router, and every other site, down with it.
 */
export function buildSnapshot(
  sites: Iterable<ServedSite>,
  onLeftOut: (site: string, message: string) => void,
  compiled: Map<string, CompiledPattern> = new Map(),
): Snapshot {
  const all = new Map<string, ServedSite>();
  const tables: SiteRoutes[] = [];
  const socketTables: SiteRoutes[] = [];
  for (const site of sites) {
    all.set(site.name, site);
    const { routes, def } = site.runner;
    if (routes === null) continue;
    const table = siteTable(def, routes, site.files);
    const sockets = { ...table, pages: socketPages(routes) };
    try {
      buildRouter([table], { compiled });
      buildRouter([sockets], { compiled });
    } catch (err) {
      onLeftOut(site.name, err instanceof Error ? err.message : String(err));
      continue;
    }
    tables.push(table);
    socketTables.push(sockets);
  }
  return {
    router: buildRouter(tables, { rootSite: ROOT_SITE, compiled }),
    sockets: buildRouter(socketTables, { rootSite: ROOT_SITE, compiled }),
    sites: all,
    conflicts: [...findConflicts(tables), ...shadowedOperatorPaths(tables)],
  };
}

/** Pages a site put on an operator's path, which are never served. */
function shadowedOperatorPaths(tables: readonly SiteRoutes[]): string[] {
  const messages: string[] = [];
  for (const table of tables) {
    for (const page of table.pages) {
      if (page.path !== undefined && OPERATOR_PATHS.includes(page.path)) {
        messages.push(
          `${page.method} "${page.path}" of site ${table.site} is never served: the gateway answers ${page.path} on every host, for the operator`,
        );
      }
    }
  }
  return messages;
}
