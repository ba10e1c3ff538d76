/**
 * The operator's grants: what each site may have, in a file the sites cannot
 * write (`sandflare.json` beside the sites folder, or `--grants=PATH`). A
 * site's `site.json` is only its request; a site asking for more than its
 * grant is not loaded, and a site gets what it asks for, never more.
 *
 * ```json
 * {
 *   "sites": {
 *     "blog": {
 *       "hosts": ["blog.example", "*.blog.example"],
 *       "permissions": { "write": ["data"], "net": ["api.example.com:443"], "env": ["API_KEY"] },
 *       "workers": 2, "memory": 256, "requestTimeout": 10
 *     }
 *   },
 *   "unlisted": { "permissions": { "write": [] } }
 * }
 * ```
 *
 * A site not listed gets `unlisted`, by default {@linkcode DEFAULT_GRANT}:
 * its own folder read-only and a writable `data/`, no host, no network, no
 * environment. A field left out of a grant takes its default.
 *
 * @module
 */

import { isIP } from "node:net";
import { lookup } from "node:dns/promises";
import { relative, resolve } from "node:path";
import { hostPatternCovers } from "../router/host_pattern.ts";
import {
  DEFAULT_DISK_MIB,
  DEFAULT_MEMORY_MIB,
  ManifestError,
  parseManifest,
  type SiteManifest,
} from "./manifest.ts";

/** What the operator lets one site have. Paths are relative to its folder. */
export interface SiteGrant {
  /** Host patterns the site may ask for (`*` is hosts.any). */
  hosts: string[];
  /** Hosts whose paths other sites' hosts.any pages may answer. */
  fallback: string[];
  permissions: {
    read: string[];
    write: string[];
    net: string[];
    /** Names only: a grant never passes the server's whole environment. */
    env: string[];
  };
  /** The most the site may ask for. */
  workers: number;
  requestTimeout: number;
  memory: number;
  disk: number;
}

/** The grants in force. */
export interface Grants {
  /** The grants file, or null when every site gets what it asks for. */
  file: string | null;
  sites: ReadonlyMap<string, SiteGrant>;
  /** The grant of a site the file does not list. */
  unlisted: SiteGrant;
}

/** The grant of a site nobody listed: safe to give to a stranger. */
export const DEFAULT_GRANT: SiteGrant = Object.freeze({
  hosts: [],
  fallback: [],
  permissions: { read: ["."], write: ["data"], net: [], env: [] },
  workers: 2,
  requestTimeout: 60,
  memory: DEFAULT_MEMORY_MIB,
  disk: DEFAULT_DISK_MIB,
});

/** The file name looked for beside the sites folder. */
export const GRANTS_FILE_NAME = "sandflare.json";

/** The address the server listens on, which no site may reach unasked. */
export interface ServerAddress {
  /** The bound address: `0.0.0.0`, `::`, `127.0.0.1`, … */
  hostname: string;
  port: number;
}

/** A grants file that cannot be used: names the file, the field and why. */
export class GrantsError extends Error {
  override name = "GrantsError";
}

const TOP_FIELDS = ["sites", "unlisted"];
const GRANT_FIELDS = [
  "hosts",
  "permissions",
  "workers",
  "requestTimeout",
  "memory",
  "disk",
];
const SITE_NAME_REGEXP = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Relative paths in grants are parsed against this stand-in folder. */
const VIRTUAL_SITE = "/site";

/** Grants for `--grant-requests`: every site gets what it asks for. */
export function requestedGrants(): Grants {
  return { file: null, sites: new Map(), unlisted: DEFAULT_GRANT };
}

/**
 * Reads the grants file; a missing file means every site is unlisted.
 * @throws {GrantsError} for a file that exists but cannot be used
 */
export async function readGrants(file: string): Promise<Grants> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      return { file, sites: new Map(), unlisted: DEFAULT_GRANT };
    }
    throw new GrantsError(`${file}: cannot read it: ${(err as Error).message}`);
  }
  return parseGrants(text, file);
}

/**
 * Parses the text of a grants file.
 * @throws {GrantsError} naming the file and the field
 *
 * @example
 * ```ts
 * import { parseGrants } from "./grants.ts";
 * import assert from "node:assert/strict";
 *
 * const grants = parseGrants(
 *   '{"sites": {"blog": {"hosts": ["blog.test"], "permissions": {"env": ["TZ"]}}}}',
 *   "sandflare.json",
 * );
 * assert.deepEqual(grants.sites.get("blog")?.hosts, ["blog.test"]);
 * assert.deepEqual(grants.sites.get("blog")?.permissions.write, ["data"]);
 * ```
 */
export function parseGrants(text: string, file: string): Grants {
  let data: unknown;
  try {
    data = JSON.parse(text.replace(/^\uFEFF/, ""));
  } catch (err) {
    // The manifest parser words JSON errors with line and column.
    try {
      parseManifest(text, { file, siteDir: VIRTUAL_SITE });
    } catch (located) {
      if (located instanceof ManifestError) {
        throw new GrantsError(located.message);
      }
    }
    throw new GrantsError(`${file}: invalid JSON: ${(err as Error).message}`);
  }
  if (!isObject(data)) {
    throw new GrantsError(
      `${file}: expected a JSON object with "sites" (site name → grant) and optionally "unlisted"`,
    );
  }
  for (const key of Object.keys(data)) {
    if (!TOP_FIELDS.includes(key)) {
      throw new GrantsError(
        `${file}: unknown field ${
          JSON.stringify(key)
        }; valid fields are "sites" and "unlisted"`,
      );
    }
  }
  const sites = new Map<string, SiteGrant>();
  if (data.sites !== undefined) {
    if (!isObject(data.sites)) {
      throw new GrantsError(
        `${file}: "sites" must be an object of site name → grant, such as {"blog": {"hosts": ["blog.example"]}}`,
      );
    }
    for (const [name, value] of Object.entries(data.sites)) {
      if (!SITE_NAME_REGEXP.test(name)) {
        throw new GrantsError(
          `${file}: "sites.${name}" is not a site folder name (letters, digits, ".", "_" or "-", at most 64)`,
        );
      }
      sites.set(name, parseGrant(value, file, `sites.${name}.`));
    }
  }
  const unlisted = data.unlisted === undefined
    ? DEFAULT_GRANT
    : parseGrant(data.unlisted, file, "unlisted.");
  return { file, sites, unlisted };
}

function parseGrant(value: unknown, file: string, prefix: string): SiteGrant {
  if (!isObject(value)) {
    throw new GrantsError(
      `${file}: "${prefix.slice(0, -1)}" must be an object with any of ${
        GRANT_FIELDS.join(", ")
      }`,
    );
  }
  if ("kv" in value) {
    throw new GrantsError(
      `${file}: "${prefix}kv" is not granted: a site's KV store lives in a ` +
        'folder it may write; grant that folder in "permissions.write"',
    );
  }
  let parsed: SiteManifest;
  try {
    parsed = parseManifest(JSON.stringify(value), {
      file,
      siteDir: VIRTUAL_SITE,
      prefix,
    });
  } catch (err) {
    if (err instanceof ManifestError) throw new GrantsError(err.message);
    throw err;
  }
  const given = isObject(value.permissions) ? value.permissions : {};
  const env = parsed.permissions.env;
  if (env === true) {
    throw new GrantsError(
      `${file}: "${prefix}permissions.env" must list the variable names, such as ["API_KEY"]; a site is never given the server's whole environment`,
    );
  }
  const relativePaths = (paths: string[]) =>
    paths.map((p) => relative(VIRTUAL_SITE, p) || ".");
  const defaults = DEFAULT_GRANT.permissions;
  return {
    hosts: parsed.hosts,
    fallback: parsed.fallback,
    permissions: {
      read: "read" in given ? relativePaths(parsed.permissions.read) : [
        ...defaults.read,
      ],
      write: "write" in given ? relativePaths(parsed.permissions.write) : [
        ...defaults.write,
      ],
      net: parsed.permissions.net,
      env: env === false ? [] : env,
    },
    workers: parsed.workers ?? DEFAULT_GRANT.workers,
    requestTimeout: parsed.requestTimeout ?? DEFAULT_GRANT.requestTimeout,
    memory: "memory" in value ? parsed.memory : DEFAULT_GRANT.memory,
    disk: "disk" in value ? parsed.disk : DEFAULT_GRANT.disk,
  };
}

/** The grant of one site: its entry, or the grant of unlisted sites. */
export function grantOf(grants: Grants, site: string): SiteGrant {
  return grants.sites.get(site) ?? grants.unlisted;
}

/** What a site gets, or why it is not loaded. */
export type GrantDecision =
  | { ok: true; manifest: SiteManifest }
  | { ok: false; problems: string[] };

/** Where a site's request is judged. */
export interface GrantContext {
  /** The site folder (its real path): grants' paths are relative to it. */
  siteDir: string;
  /** The server's own address, when it is known. */
  server: ServerAddress | null;
  /** When true, the grant is the request itself (`--grant-requests`). */
  requested: boolean;
  /**
   * The addresses each host name of the request resolves to (through the
   * system resolver, so /etc/hosts counts), where known.
   */
  resolved?: ReadonlyMap<string, readonly string[]>;
}

/**
 * Judges a site's request (its parsed site.json) against its grant. The
 * site gets its request, with `env: true` turned into the names granted;
 * any part beyond the grant is a problem, each named with what was granted.
 *
 * The narrowing rules hold whatever the grant says: an `env` of `true`
 * means the names granted; a net entry that reaches this server (loopback,
 * 0.0.0.0 or its own address, on its port or on every port) must be written
 * out in the grant as the site writes it.
 */
export function judgeRequest(
  request: SiteManifest,
  grant: SiteGrant,
  context: GrantContext,
): GrantDecision {
  const problems: string[] = [];
  const root = resolve(context.siteDir);
  const show = (items: readonly string[]) =>
    items.length === 0
      ? "none"
      : items.map((item) => JSON.stringify(item)).join(", ");
  const granted = context.requested ? grantOfRequest(request, root) : grant;

  const hosts = request.hosts.filter((h) =>
    !granted.hosts.some((g) => hostPatternCovers(g, h))
  );
  if (hosts.length > 0) {
    problems.push(`hosts ${show(hosts)} (granted: ${show(granted.hosts)})`);
  }
  for (const kind of ["read", "write"] as const) {
    const allowed = granted.permissions[kind].map((p) => resolve(root, p));
    const over = request.permissions[kind].filter((path) =>
      !allowed.some((g) => isWithin(g, path))
    );
    if (over.length > 0) {
      problems.push(
        `permissions.${kind} ${
          show(over.map((p) => relative(root, p) || "."))
        } (granted: ${show(granted.permissions[kind])})`,
      );
    }
  }
  const net = request.permissions.net.filter((entry) =>
    !granted.permissions.net.some((g) => netCovers(g, entry))
  );
  if (net.length > 0) {
    problems.push(
      `permissions.net ${show(net)} (granted: ${
        show(granted.permissions.net)
      })`,
    );
  }
  if (context.server !== null) {
    const own = ownHosts(context.server);
    for (const entry of request.permissions.net) {
      // Only the operator's grants file can give this, written out as is.
      const writtenOut = !context.requested &&
        grant.permissions.net.includes(entry);
      const reaches = netReachesServer(
        entry,
        context.server,
        context.resolved,
        own,
      );
      if (!writtenOut && reaches) {
        problems.push(
          `permissions.net ${
            JSON.stringify(entry)
          } reaches this server itself (port ${context.server.port}); only the operator can grant that, by writing ${
            JSON.stringify(entry)
          } in the grants file`,
        );
      }
    }
  }
  const env = request.permissions.env === true
    ? [...granted.permissions.env]
    : request.permissions.env === false
    ? []
    : request.permissions.env;
  const envOver = env.filter((name) => !granted.permissions.env.includes(name));
  if (envOver.length > 0) {
    problems.push(
      `permissions.env ${show(envOver)} (granted: ${
        show(granted.permissions.env)
      })`,
    );
  }
  for (
    const field of ["workers", "requestTimeout", "memory", "disk"] as const
  ) {
    // No memory or disk asked for is the default, lowered to the grant below.
    const asked =
      (field === "memory" && request.memory === DEFAULT_MEMORY_MIB) ||
        (field === "disk" && request.disk === DEFAULT_DISK_MIB)
        ? null
        : request[field];
    if (asked !== null && asked > granted[field]) {
      problems.push(`${field} ${asked} (granted: at most ${granted[field]})`);
    }
  }
  if (problems.length > 0) return { ok: false, problems };
  const fallback = new Set(request.fallback);
  for (const host of request.hosts) {
    if (granted.fallback.includes(host)) fallback.add(host);
  }
  return {
    ok: true,
    manifest: {
      ...request,
      fallback: [...fallback],
      permissions: {
        ...request.permissions,
        env: env.length === 0 ? false : [...new Set(env)],
      },
      memory: Math.min(request.memory, granted.memory),
      disk: Math.min(request.disk, granted.disk),
    },
  };
}

/** The grant that gives exactly a request (paths relative to `root`). */
export function grantOfRequest(request: SiteManifest, root: string): SiteGrant {
  const rel = (paths: string[]) => paths.map((p) => relative(root, p) || ".");
  return {
    hosts: [...request.hosts],
    fallback: [...request.fallback],
    permissions: {
      read: [".", ...rel(request.permissions.read)],
      write: rel(request.permissions.write),
      net: [...request.permissions.net],
      // A request for "all" is the names the operator lists: none here.
      env: Array.isArray(request.permissions.env)
        ? [...request.permissions.env]
        : [],
    },
    workers: request.workers ?? DEFAULT_GRANT.workers,
    requestTimeout: request.requestTimeout ?? DEFAULT_GRANT.requestTimeout,
    memory: request.memory,
    disk: request.disk,
  };
}

/**
 * A request as the JSON of a grant, as `cli grant` writes it: exactly what
 * the site asks for. `env: true` keeps the names `previous` granted.
 */
export function grantJson(
  request: SiteManifest,
  root: string,
  previous: SiteGrant | null,
): Record<string, unknown> {
  const grant = grantOfRequest(request, root);
  const out: Record<string, unknown> = {
    hosts: grant.hosts.map((host) =>
      grant.fallback.includes(host) ? { host, fallback: true } : host
    ),
    permissions: {
      read: grant.permissions.read.filter((p) => p !== "."),
      write: grant.permissions.write,
      net: grant.permissions.net,
      env: request.permissions.env === true
        ? previous?.permissions.env ?? []
        : grant.permissions.env,
    },
  };
  if (request.workers !== null) out.workers = request.workers;
  if (request.requestTimeout !== null) {
    out.requestTimeout = request.requestTimeout;
  }
  if (request.memory !== DEFAULT_MEMORY_MIB) out.memory = request.memory;
  if (request.disk !== DEFAULT_DISK_MIB) out.disk = request.disk;
  return out;
}

/**
 * Writes one site's grant into the grants file, keeping everything else in
 * it; the file is replaced whole (write aside, then rename).
 */
export async function writeGrant(
  file: string,
  site: string,
  grant: Record<string, unknown>,
): Promise<void> {
  let data: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(await Deno.readTextFile(file));
    if (isObject(parsed)) data = parsed;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const sites = isObject(data.sites) ? data.sites : {};
  sites[site] = grant;
  data.sites = sites;
  // Through a link to the file it names, with the mode it had.
  const target = await Deno.realPath(file).catch(() => file);
  const mode = (await Deno.stat(target).catch(() => null))?.mode ?? 0o644;
  const aside = `${target}.${Deno.pid}.tmp`;
  await Deno.writeTextFile(aside, JSON.stringify(data, null, 2) + "\n", {
    mode: mode & 0o777,
  });
  await Deno.chmod(aside, mode & 0o777);
  await Deno.rename(aside, target);
}

/** Whether `path` is `dir` or inside it (both absolute). */
function isWithin(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  return rel === "" || (!rel.startsWith("..") && !rel.startsWith("/"));
}

/** `host` or `host:port` (IPv6 bracketed) as host and port. */
function splitNet(entry: string): { host: string; port: number | null } {
  const bracketed = /^(\[[^\]]*\])(?::(\d+))?$/.exec(entry);
  if (bracketed !== null) {
    return {
      host: bracketed[1]!,
      port: bracketed[2] === undefined ? null : Number(bracketed[2]),
    };
  }
  const [host = "", port] = entry.split(":");
  return { host, port: port === undefined ? null : Number(port) };
}

/** Whether the net grant `granted` covers the requested `entry`. */
function netCovers(granted: string, entry: string): boolean {
  const g = splitNet(granted);
  const r = splitNet(entry);
  return g.host === r.host && (g.port === null || g.port === r.port);
}

/** The names and addresses by which a site could reach this machine. */
function ownHosts(server: ServerAddress): (host: string) => boolean {
  const names = new Set([
    "localhost",
    "0.0.0.0",
    "[::]",
    "[::1]",
    bracket(server.hostname),
  ]);
  try {
    names.add(Deno.hostname().toLowerCase());
  } catch {
    // No hostname: the addresses still count.
  }
  if (server.hostname === "0.0.0.0" || server.hostname === "::") {
    try {
      for (const i of Deno.networkInterfaces()) names.add(bracket(i.address));
    } catch {
      // Without --allow-sys the loopback rules still hold.
    }
  }
  const own = (host: string): boolean =>
    names.has(host) || host.startsWith("127.") || host === "localhost." ||
    host.endsWith(".localhost");
  return (host) => {
    const mapped = mappedIPv4(host);
    return own(host) || (mapped !== null && own(mapped));
  };
}

/** The IPv4 address of an IPv4-mapped IPv6 literal (`[::ffff:7f00:1]`). */
function mappedIPv4(host: string): string | null {
  const match =
    /^\[::ffff:(?:([0-9a-f]{1,4}):([0-9a-f]{1,4})|(\d+\.\d+\.\d+\.\d+))\]$/
      .exec(host);
  if (match === null) return null;
  if (match[3] !== undefined) return match[3];
  const high = parseInt(match[1]!, 16);
  const low = parseInt(match[2]!, 16);
  return [high >> 8, high & 255, low >> 8, low & 255].join(".");
}

/**
 * What the host names of a request's net entries resolve to, through the
 * system resolver (so /etc/hosts aliases of loopback count); a name that
 * does not resolve within a second is left out.
 */
export async function resolveNetHosts(
  entries: readonly string[],
): Promise<Map<string, string[]>> {
  const resolved = new Map<string, string[]>();
  await Promise.all(entries.map(async (entry) => {
    const { host } = splitNet(entry);
    if (host.startsWith("[") || isIP(host) !== 0 || resolved.has(host)) return;
    resolved.set(host, []);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const addresses = await Promise.race([
      lookup(host, { all: true }).then((list) => list.map((a) => a.address)),
      new Promise<string[]>((r) => timer = setTimeout(() => r([]), 1000)),
    ]).catch(() => []);
    clearTimeout(timer);
    resolved.set(host, addresses);
  }));
  return resolved;
}

function bracket(address: string): string {
  return isIP(address) === 6 ? `[${address.toLowerCase()}]` : address;
}

/**
 * Whether a net entry would reach the server: its host is loopback,
 * 0.0.0.0, localhost or one of the server's addresses (or resolves to one),
 * on the server's port or on every port.
 */
export function netReachesServer(
  entry: string,
  server: ServerAddress,
  resolved?: ReadonlyMap<string, readonly string[]>,
  own: (host: string) => boolean = ownHosts(server),
): boolean {
  const { host, port } = splitNet(entry);
  const suffix = port === null ? "" : `:${port}`;
  return [host, ...(resolved?.get(host) ?? []).map(bracket)].some((h) =>
    reachesServer(`${h}${suffix}`, server.port, own)
  );
}

function reachesServer(
  entry: string,
  port: number,
  own: (host: string) => boolean,
): boolean {
  const { host, port: entryPort } = splitNet(entry);
  return own(host) && (entryPort === null || entryPort === port);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
