/**
 * What every site registered and may do, as `sandflare sites` shows it.
 *
 * @module
 */

import { join } from "node:path";
import { ROOT_SITE } from "./sites.ts";
import type { Snapshot } from "./snapshot.ts";
import { grantOf, type Grants, type SiteGrant } from "./grants.ts";

/** A site as `sandflare sites` shows it. */
export interface SiteDescription {
  name: string;
  root: boolean;
  dir: string;
  loaded: boolean;
  problem: string | null;
  hosts: string[];
  pages: { method: string; host: string; route: string }[];
  staticFiles: number;
  websockets: { host: string; path: string; protocol: string | null }[];
  permissions: {
    read: string[];
    write: string[];
    net: string[];
    env: boolean | string[];
  } | null;
  workers: number | null;
  memory: number | null;
  /** Its disk quota in MiB (null when not loaded). */
  disk: number | null;
  /** Its Deno KV file, when it asked for one. */
  kv: string | null;
  /** What the operator grants it (null for the root site). */
  granted: SiteGrant | null;
  /** Whether the grants file lists it (false: it gets the unlisted grant). */
  listed: boolean;
  /** Scripts in its autorun/ that are not run (not `ar_*.ts`). */
  notRun: string[];
}

/** How `sites` shows a route pattern: `~ SOURCE (flags F)`. */
function patternLabel(regex: { source: string; flags: string }): string {
  return `~ ${regex.source}${
    regex.flags === "" ? "" : ` (flags ${regex.flags})`
  }`;
}

/** The served sites, then those that did not load; the root site first. */
export function describeSites(
  snapshot: Snapshot,
  notLoaded: ReadonlyMap<string, string>,
  folders: { projectDir: string; sitesDir: string },
  grants: Grants,
  notRun: ReadonlyMap<string, string[]> = new Map(),
): SiteDescription[] {
  const granted = (name: string) =>
    name === ROOT_SITE || grants.file === null
      ? { granted: null, listed: false }
      : { granted: grantOf(grants, name), listed: grants.sites.has(name) };
  const out: SiteDescription[] = [];
  for (const { runner, files } of snapshot.sites.values()) {
    const { routes, def } = runner;
    const { permissions } = def.manifest;
    out.push({
      name: runner.name,
      root: def.root,
      dir: def.dir,
      loaded: true,
      problem: null,
      hosts: [
        ...new Set(
          [...(routes?.hosts ?? []), ...files.hosts].map((h) => h.pattern),
        ),
      ],
      pages: (routes?.pages ?? []).map((p) => ({
        method: p.method,
        host: p.host,
        route: p.path ??
          (p.prefix !== undefined
            ? `${p.prefix === "/" ? "" : p.prefix}/… (fetch handler)`
            : patternLabel(p.regex!)),
      })),
      staticFiles: files.entries.size,
      websockets: (routes?.websockets ?? []).map((w) => ({
        host: w.host,
        path: w.path ?? patternLabel(w.regex!),
        protocol: w.protocol,
      })),
      permissions: {
        read: [...def.baseRead, ...permissions.read],
        write: permissions.write,
        net: permissions.net,
        env: permissions.env,
      },
      workers: runner.workersOf(def),
      memory: def.manifest.memory,
      disk: def.manifest.disk,
      kv: def.manifest.kv,
      ...granted(runner.name),
      notRun: def.skipped,
    });
  }
  for (const [name, problem] of notLoaded) {
    if (snapshot.sites.has(name)) continue;
    out.push({
      name,
      root: name === ROOT_SITE,
      dir: name === ROOT_SITE
        ? folders.projectDir
        : join(folders.sitesDir, name),
      loaded: false,
      problem,
      hosts: [],
      pages: [],
      staticFiles: 0,
      websockets: [],
      permissions: null,
      workers: null,
      memory: null,
      disk: null,
      kv: null,
      ...granted(name),
      notRun: notRun.get(name) ?? [],
    });
  }
  return out.sort(byRootThenName);
}

function byRootThenName(a: SiteDescription, b: SiteDescription): number {
  if (a.root !== b.root) return a.root ? -1 : 1;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}
