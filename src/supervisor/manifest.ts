/**
 * A site's manifest, `sites/NAME/site.json` (SPEC §2): the host patterns it
 * may register, the Deno permissions its workers get, and its pool size,
 * time limit and memory limit.
 *
 * Parsing is strict: an unknown field, a permission a site cannot have or a
 * path that leaves the site folder fails the site's load with a message that
 * names the file and the field. Symbolic links that lead out of the site
 * folder are the loader's concern, since this module does no I/O.
 *
 * @module
 */
import { isIP } from "node:net";
import { isAbsolute, relative, resolve, win32 } from "node:path";
import { MAX_WORKERS } from "../protocol/messages.ts";
import { isInside } from "./paths.ts";

/**
 * The longest `requestTimeout`, in seconds. A page that runs holds a place
 * in its site's queue, its client's connection and its worker's attention;
 * five minutes is room for a slow report, and longer work belongs in a
 * scheduler task or a streamed reply (nginx waits 60 s for a backend by
 * default, Cloudflare 100 s).
 */
export const MAX_REQUEST_TIMEOUT = 300;

/** The Deno permissions of a site's workers, beyond reading its folder. */
export interface SitePermissions {
  /** Absolute paths the site may read, inside its folder. */
  read: string[];
  /** Absolute paths the site may write, inside its folder. */
  write: string[];
  /** Hosts the site may connect to: `host`, `host:port`, `[::1]:80`. */
  net: string[];
  /** Environment variables the site may read: all, none or these. */
  env: boolean | string[];
}

/** A parsed and validated `site.json`. */
export interface SiteManifest {
  /** Host patterns the site may register, lower case. */
  hosts: string[];
  /**
   * Hosts of `hosts` whose owner lets other sites' `hosts.any` pages answer
   * the paths it does not (`{"host": "…", "fallback": true}`).
   */
  fallback: string[];
  /** What the site's workers may do. */
  permissions: SitePermissions;
  /** Size of the worker pool, or `null` for `--threads`. */
  workers: number | null;
  /** Seconds a page callback may run, or `null` for `--request-timeout`. */
  requestTimeout: number | null;
  /** The most memory of the site's sandbox process, in MiB. */
  memory: number;
  /** The most its writable folders may hold, in MiB. */
  disk: number;
  /**
   * The file of the site's Deno KV store (`Deno.openKv(path)`), inside a
   * folder it may write, or null: without it `Deno.openKv` is not defined.
   */
  kv: string | null;
}

/**
 * A `site.json` that cannot be used. The message names the file, the field
 * and what is valid.
 *
 * @example Catch a manifest error
 * ```ts
 * import { ManifestError, parseManifest } from "./manifest.ts";
 * import assert from "node:assert/strict";
 *
 * assert.throws(
 *   () => parseManifest('{"workers": 0}', { file: "site.json", siteDir: "/s" }),
 *   ManifestError,
 * );
 * ```
 */
export class ManifestError extends Error {
  override name = "ManifestError";
}

/** Where the manifest comes from. */
export interface ParseManifestOptions {
  /** The manifest's path as shown in messages, such as `sites/blog/site.json`. */
  file: string;
  /** The site folder that relative paths are resolved against. */
  siteDir: string;
  /**
   * Put before field names in messages: `sites.blog.` for a site's entry in
   * the grants file. @default {""}
   */
  prefix?: string;
}

/** A file and the path of the object being parsed in it, for messages. */
interface Where {
  file: string;
  prefix: string;
}

function whereOf(options: ParseManifestOptions): Where {
  return { file: options.file, prefix: options.prefix ?? "" };
}

/** Heap limit of a site's sandbox process when `site.json` sets none, in MiB. */
export const DEFAULT_MEMORY_MIB = 256;

/** A site's disk quota when its site.json does not set one, in MiB. */
export const DEFAULT_DISK_MIB = 100;

const FIELDS = [
  "hosts",
  "permissions",
  "workers",
  "requestTimeout",
  "memory",
  "disk",
  "kv",
] as const;
const PERMISSIONS = ["read", "write", "net", "env"] as const;
const FORBIDDEN_PERMISSIONS = ["run", "ffi", "sys", "import", "hrtime", "all"];

const LIMITS = {
  workers: { min: 1, max: MAX_WORKERS },
  requestTimeout: { max: MAX_REQUEST_TIMEOUT },
  memory: { min: 64, max: 65536 },
  disk: { min: 1, max: 1024 * 1024 },
} as const;

const HOST_LABEL_REGEXP = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;
const ENV_NAME_REGEXP = /^[A-Za-z_][A-Za-z0-9_]*$/;
const HOST_PATTERN_HELP = 'must be a host pattern: "*", "example.test", ' +
  '"*.example.test", "~.example.test" or "+.example.test"';
const HOST_OBJECT_HELP =
  'must be a host pattern, or {"host": "example.test", "fallback": true} to ' +
  "let other sites' hosts.any pages answer the paths this site does not";
const NET_HELP = "must be a host name or IP address with an optional port, " +
  'such as "api.example.com:443", "10.0.0.1" or "[::1]:80" (IPv4 in dotted ' +
  "decimal)";

/**
 * Parses and validates the text of a `site.json`.
 *
 * @param text The file's text, or `null` when the site has no `site.json`:
 * then it may register no host and gets no permission beyond reading its
 * folder (which the caller always adds).
 * @param options The file name for messages and the site folder.
 * @returns The manifest, with read and write paths made absolute.
 * @throws {ManifestError} When the text is not valid JSON or a field is
 * unknown or invalid.
 *
 * @example Parse a manifest
 * ```ts
 * import { parseManifest } from "./manifest.ts";
 * import assert from "node:assert/strict";
 *
 * const manifest = parseManifest(
 *   '{"hosts": ["Blog.Test"], "permissions": {"read": ["data"]}, "workers": 2}',
 *   { file: "sites/blog/site.json", siteDir: "/srv/sites/blog" },
 * );
 * assert.deepEqual(manifest.hosts, ["blog.test"]);
 * assert.deepEqual(manifest.permissions.read, ["/srv/sites/blog/data"]);
 * assert.equal(manifest.workers, 2);
 * assert.equal(manifest.memory, 256);
 * ```
 */
export function parseManifest(
  text: string | null,
  options: ParseManifestOptions,
): SiteManifest {
  const file = whereOf(options);
  if (text === null) return defaultManifest();
  const data = parseJson(text, file);
  if (!isObject(data)) {
    throw new ManifestError(
      `${file.file}: expected a JSON object with the fields ${
        list(FIELDS)
      }, got ${show(data)}`,
    );
  }
  checkKeys(data, file);
  const hosts = parseHosts(data.hosts, file);
  const permissions = parsePermissions(data.permissions, options);
  return {
    hosts: hosts.patterns,
    fallback: hosts.fallback,
    permissions,
    kv: parseKv(data.kv, permissions.write, options),
    workers: parseWorkers(data.workers, file),
    requestTimeout: parseRequestTimeout(data.requestTimeout, file),
    memory: parseMib("memory", data.memory, file),
    disk: parseMib("disk", data.disk, file),
  };
}

function defaultManifest(): SiteManifest {
  return {
    hosts: [],
    fallback: [],
    permissions: { read: [], write: [], net: [], env: false },
    workers: null,
    requestTimeout: null,
    memory: DEFAULT_MEMORY_MIB,
    disk: DEFAULT_DISK_MIB,
    kv: null,
  };
}

/**
 * The `kv` file: a path inside one of the folders the site may write, so
 * the store counts against its disk quota and needs no other permission.
 */
function parseKv(
  value: unknown,
  writable: string[],
  options: ParseManifestOptions,
): string | null {
  if (value === undefined || value === null) return null;
  const file = whereOf(options);
  const path = resolveSitePath(value, resolve(options.siteDir), file, "kv");
  // The file itself, not a folder it may write.
  const inside = writable.some((folder) =>
    folder !== path && isInside(folder, path)
  );
  if (!inside) {
    throw fieldError(
      file,
      "kv",
      'must be a file inside a folder of "permissions.write", such as ' +
        '"data/site.kv" with {"permissions": {"write": ["data"]}}',
      value,
    );
  }
  return path;
}

function parseJson(text: string, file: Where): unknown {
  const source = text.replace(/^\uFEFF/, "");
  try {
    return JSON.parse(source);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    throw new ManifestError(
      `${file.file}: invalid JSON${describeSyntaxError(err.message, source)}`,
      { cause: err },
    );
  }
}

/** Turns V8's JSON error into " at line L, column C: what is wrong". */
function describeSyntaxError(message: string, source: string): string {
  const located =
    /^(.*) in JSON at position (\d+)(?: \(line (\d+) column (\d+)\))?$/s
      .exec(message);
  if (located !== null) {
    const [, reason = "", position = "0", line, column] = located;
    const where = line !== undefined && column !== undefined
      ? { line, column }
      : lineAndColumn(source, Number(position));
    return ` at line ${where.line}, column ${where.column}: ${
      lowerFirst(reason)
    }`;
  }
  if (/end of JSON input/i.test(message)) {
    const end = lineAndColumn(source, source.length);
    return ` at line ${end.line}, column ${end.column}: unexpected end of file`;
  }
  const reason = /^(Unexpected token '.*?'),/s.exec(message)?.[1] ?? message;
  return `: ${lowerFirst(reason)}`;
}

function lineAndColumn(
  source: string,
  position: number,
): { line: number; column: number } {
  const before = source.slice(0, position).split("\n");
  return { line: before.length, column: (before.at(-1)?.length ?? 0) + 1 };
}

function lowerFirst(text: string): string {
  return text.charAt(0).toLowerCase() + text.slice(1);
}

function checkKeys(data: Record<string, unknown>, file: Where): void {
  for (const key of Object.keys(data)) {
    if ((FIELDS as readonly string[]).includes(key)) continue;
    throw new ManifestError(
      `${file.file}: unknown field ${
        JSON.stringify(file.prefix + key)
      }; valid fields are ${list(FIELDS)}${suggest(key, FIELDS)}`,
    );
  }
}

function parseHosts(
  value: unknown,
  file: Where,
): { patterns: string[]; fallback: string[] } {
  if (value === undefined) return { patterns: [], fallback: [] };
  if (!Array.isArray(value)) {
    throw fieldError(
      file,
      "hosts",
      'must be an array of host patterns such as ["example.test", "*.example.test"]',
      value,
    );
  }
  const patterns = new Set<string>();
  const fallback = new Set<string>();
  value.forEach((entry, index) => {
    const field = `hosts[${index}]`;
    if (!isObject(entry)) {
      patterns.add(parseHostPattern(entry, file, field));
      return;
    }
    for (const key of Object.keys(entry)) {
      if (key !== "host" && key !== "fallback") {
        throw fieldError(file, field, HOST_OBJECT_HELP, entry);
      }
    }
    const pattern = parseHostPattern(entry.host, file, `${field}.host`);
    if (entry.fallback !== undefined && typeof entry.fallback !== "boolean") {
      throw fieldError(
        file,
        `${field}.fallback`,
        "must be true or false",
        entry.fallback,
      );
    }
    if (pattern === "*" && entry.fallback !== undefined) {
      throw fieldError(
        file,
        `${field}.fallback`,
        'is for named hosts; "*" is already shared by every site on it',
        entry.fallback,
      );
    }
    patterns.add(pattern);
    if (entry.fallback === true) fallback.add(pattern);
  });
  return { patterns: [...patterns], fallback: [...fallback] };
}

function parseHostPattern(entry: unknown, file: Where, field: string): string {
  if (typeof entry !== "string") {
    throw fieldError(file, field, HOST_PATTERN_HELP, entry);
  }
  if (entry.includes(",")) {
    throw fieldError(
      file,
      field,
      "must be one host pattern; put each pattern of a comma list in its own entry",
      entry,
    );
  }
  const pattern = entry.toLowerCase().replace(/(?<=[a-z0-9])\.$/, "");
  if (pattern === "*") return pattern;
  const prefixed = /^[*~+]\./.test(pattern);
  const name = prefixed ? pattern.slice(2) : pattern;
  if (isHostName(name) || (!prefixed && isIP(name) === 4)) return pattern;
  const hint = entry.includes(":")
    ? " (patterns match every port, so leave the port out)"
    : "";
  throw fieldError(file, field, HOST_PATTERN_HELP + hint, entry);
}

/** Whether `text` is an RFC 1123 host name whose last label is not numeric. */
function isHostName(text: string): boolean {
  const labels = text.split(".");
  return text.length > 0 && text.length <= 253 &&
    labels.every((label) => HOST_LABEL_REGEXP.test(label)) &&
    !/^\d+$/.test(labels.at(-1) ?? "");
}

function parsePermissions(
  value: unknown,
  options: ParseManifestOptions,
): SitePermissions {
  const file = whereOf(options);
  if (value === undefined) return defaultManifest().permissions;
  if (!isObject(value)) {
    throw fieldError(
      file,
      "permissions",
      'must be an object such as {"read": ["data"], "net": ["api.example.com:443"]}',
      value,
    );
  }
  for (const key of Object.keys(value)) checkPermissionName(key, file);
  return {
    read: parsePaths(value.read, "read", options),
    write: parsePaths(value.write, "write", options),
    net: parseNet(value.net, file),
    env: parseEnv(value.env, file),
  };
}

function checkPermissionName(key: string, file: Where): void {
  if ((PERMISSIONS as readonly string[]).includes(key)) return;
  if (FORBIDDEN_PERMISSIONS.includes(key)) {
    throw new ManifestError(
      `${file.file}: "${file.prefix}permissions.${key}" cannot be granted to a site; sites may ` +
        `only ask for ${list(PERMISSIONS)}`,
    );
  }
  throw new ManifestError(
    `${file.file}: unknown permission ${
      JSON.stringify(key)
    } in "${file.prefix}permissions"; valid permissions are ${
      list(PERMISSIONS)
    }${suggest(key, PERMISSIONS)}`,
  );
}

function parsePaths(
  value: unknown,
  name: "read" | "write",
  options: ParseManifestOptions,
): string[] {
  const file = whereOf(options);
  const field = `permissions.${name}`;
  if (value === undefined || value === false) return [];
  if (!Array.isArray(value)) {
    const whole = value === true
      ? "; a site cannot be given the whole file system"
      : "";
    throw fieldError(
      file,
      field,
      `must be an array of paths inside the site folder, such as ["data"]${whole}`,
      value,
    );
  }
  const root = resolve(options.siteDir);
  const paths = value.map((entry, index) => {
    const path = resolveSitePath(entry, root, file, `${field}[${index}]`);
    const over = name === "write" ? loaderPathUnder(root, path) : null;
    if (over !== null) {
      throw fieldError(
        file,
        `${field}[${index}]`,
        `must not cover ${over}, which the loader reads (a site may not ` +
          'rewrite its own manifest or code); use a folder such as "data"',
        entry,
      );
    }
    return path;
  });
  return [...new Set(paths)];
}

/**
 * What the loader reads in a site folder: writing there would let a site
 * change its own request or code behind the operator's back.
 */
export const LOADER_PATHS: readonly string[] = [
  "site.json",
  "deno.json",
  "deno.jsonc",
  // The versions its packages are held to (written by `cli install`).
  "deno.lock",
  "package.json",
  "autorun",
  "node_modules",
];

/**
 * The loader's path a writable `path` would cover (the folder itself, a
 * file the loader reads, or a folder of code, or something inside one), or
 * null when there is none.
 */
export function loaderPathUnder(root: string, path: string): string | null {
  if (path === root) return "the whole site folder";
  for (const name of LOADER_PATHS) {
    const loaded = resolve(root, name);
    if (isInside(loaded, path) || !relative(path, loaded).startsWith("..")) {
      return JSON.stringify(name);
    }
  }
  return null;
}

function resolveSitePath(
  entry: unknown,
  root: string,
  file: Where,
  field: string,
): string {
  if (typeof entry !== "string" || entry === "" || entry.includes("\0")) {
    throw fieldError(
      file,
      field,
      'must be a path relative to the site folder, such as "data"',
      entry,
    );
  }
  // Deno's --allow-* flags take comma-separated lists: a comma would smuggle
  // in a second path.
  if (entry.includes(",")) {
    throw fieldError(
      file,
      field,
      "must not contain a comma (rename the folder)",
      entry,
    );
  }
  if (isAbsolute(entry) || win32.isAbsolute(entry)) {
    throw fieldError(
      file,
      field,
      "must be a path relative to the site folder, not an absolute path",
      entry,
    );
  }
  const path = resolve(root, entry);
  if (!isInside(root, path)) {
    throw fieldError(
      file,
      field,
      "must be a path inside the site folder; it may not leave it with ..",
      entry,
    );
  }
  return path;
}

function parseNet(value: unknown, file: Where): string[] {
  const field = "permissions.net";
  if (value === undefined || value === false) return [];
  if (!Array.isArray(value)) {
    const whole = value === true
      ? "; a site cannot be given the whole network"
      : "";
    throw fieldError(
      file,
      field,
      `must be an array of hosts such as ["api.example.com:443"]${whole}`,
      value,
    );
  }
  const hosts = value.map((entry, index) => {
    const host = typeof entry === "string" ? normalizeNetHost(entry) : null;
    if (host === null) {
      throw fieldError(file, `${field}[${index}]`, NET_HELP, entry);
    }
    return host;
  });
  return [...new Set(hosts)];
}

/** `host`, `host:port`, IPv4, `[IPv6]` or `[IPv6]:port`, or null. */
function normalizeNetHost(entry: string): string | null {
  if (isIP(entry) === 6) return `[${entry.toLowerCase()}]`;
  const bracketed = /^\[([^\]]*)\](?::([^:]*))?$/.exec(entry);
  const [, host = "", port] = bracketed ?? /^([^:]*)(?::(.*))?$/.exec(entry) ??
    [];
  const valid = bracketed !== null
    ? isIP(host) === 6
    : isIP(host) === 4 || isHostName(host);
  if (!valid || (port !== undefined && !isPort(port))) return null;
  const name = canonicalHost(bracketed !== null ? `[${host}]` : host);
  if (name === null) return null;
  return `${name}${port === undefined ? "" : `:${Number(port)}`}`;
}

/**
 * A host as URLs (and Deno's permissions) read it, or null when that is not
 * how it is written: `0x7f000001` and `0x7f.0.0.1` are 127.0.0.1 to a URL,
 * so they would hide an address from the checks made on it.
 */
function canonicalHost(host: string): string | null {
  let parsed: string;
  try {
    parsed = new URL(`http://${host}/`).hostname;
  } catch {
    return null;
  }
  const lower = host.toLowerCase();
  if (lower.startsWith("[")) return parsed; // IPv6, written its short way
  return parsed === lower ? lower : null;
}

function isPort(text: string): boolean {
  return /^\d{1,5}$/.test(text) && Number(text) >= 1 &&
    Number(text) <= 65535;
}

function parseEnv(value: unknown, file: Where): boolean | string[] {
  if (value === undefined) return false;
  if (typeof value === "boolean") return value;
  if (!Array.isArray(value)) {
    throw fieldError(
      file,
      "permissions.env",
      'must be true, false or an array of variable names such as ["API_KEY"]',
      value,
    );
  }
  const names = value.map((entry, index) => {
    if (typeof entry === "string" && ENV_NAME_REGEXP.test(entry)) return entry;
    throw fieldError(
      file,
      `permissions.env[${index}]`,
      'must be an environment variable name such as "API_KEY"',
      entry,
    );
  });
  return names.length === 0 ? false : [...new Set(names)];
}

function parseWorkers(value: unknown, file: Where): number | null {
  if (value === undefined || value === null) return null;
  const { min, max } = LIMITS.workers;
  if (!isIntegerIn(value, min, max)) {
    throw fieldError(
      file,
      "workers",
      `must be an integer from ${min} to ${max}`,
      value,
    );
  }
  return value;
}

function parseRequestTimeout(value: unknown, file: Where): number | null {
  if (value === undefined || value === null) return null;
  const { max } = LIMITS.requestTimeout;
  if (typeof value !== "number" || !(value > 0 && value <= max)) {
    throw fieldError(
      file,
      "requestTimeout",
      `must be a number of seconds greater than 0 and at most ${max}`,
      value,
    );
  }
  return value;
}

/** A size in MiB: `memory` or `disk`, the default when absent. */
function parseMib(
  field: "memory" | "disk",
  value: unknown,
  file: Where,
): number {
  if (value === undefined || value === null) {
    return field === "memory" ? DEFAULT_MEMORY_MIB : DEFAULT_DISK_MIB;
  }
  const { min, max } = LIMITS[field];
  if (!isIntegerIn(value, min, max)) {
    throw fieldError(
      file,
      field,
      `must be an integer number of MiB from ${min} to ${max}`,
      value,
    );
  }
  return value;
}

function isIntegerIn(
  value: unknown,
  min: number,
  max: number,
): value is number {
  return typeof value === "number" && Number.isInteger(value) &&
    value >= min && value <= max;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function fieldError(
  file: Where,
  field: string,
  must: string,
  value: unknown,
): ManifestError {
  return new ManifestError(
    `${file.file}: "${file.prefix}${field}" ${must}, got ${show(value)}`,
  );
}

/** A JSON value as written, shortened to one readable line. */
function show(value: unknown): string {
  const text = typeof value === "number" && !Number.isFinite(value)
    ? String(value)
    : JSON.stringify(value) ?? String(value);
  if (text.length <= 60) return text;
  return typeof value === "string"
    ? JSON.stringify(`${value.slice(0, 50)}…`)
    : `${text.slice(0, 59)}…`;
}

/** `"a", "b" and "c"` */
function list(names: readonly string[]): string {
  const quoted = names.map((name) => JSON.stringify(name));
  return quoted.length < 2
    ? quoted.join("")
    : `${quoted.slice(0, -1).join(", ")} and ${quoted.at(-1)}`;
}

/** ` (did you mean "x"?)` for a near miss among `valid`, else "". */
function suggest(name: string, valid: readonly string[]): string {
  const lower = name.toLowerCase();
  const match = valid.find((candidate) => candidate.toLowerCase() === lower) ??
    valid.find((candidate) => distance(lower, candidate.toLowerCase()) <= 2);
  return match === undefined ? "" : ` (did you mean ${JSON.stringify(match)}?)`;
}

/** Levenshtein distance between two short strings. */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, index) => index);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) +
        (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(
        Math.min(
          (previous[j] ?? 0) + 1,
          (current[j - 1] ?? 0) + 1,
          substitution,
        ),
      );
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}
