/**
 * A site's own import map: the `imports` and `scopes` of its `deno.json`,
 * checked and made absolute, merged with the runtime's (`deno.sandbox.jsonc`)
 * into the import map its sandbox runs with. Pure: text in, data out.
 *
 * What a site may map, and what it may not:
 * - keys and targets are made absolute (relative ones against the site
 *   folder), and a `file:` key, scope or target must stay inside the site
 *   folder: a map entry is not mapped again, so one that led to the runtime's
 *   modules would pass around `deno.sandbox.jsonc`'s protection;
 * - targets are `npm:`, `jsr:`, `https:`, `http:`, `node:` or such files;
 * - `"sandflare"` and `"sandflare/…"` are the server's: a site's entries for
 *   them are left out (`cli init` writes them for editors and `deno check`);
 * - `node:worker_threads` may not be mapped, nor be a target (the runtime
 *   maps it to a module without Workers);
 * - the runtime's entries win over the site's on the same key.
 *
 * Every other field of `deno.json` is ignored, except `importMap`, which is
 * refused (its entries would be silently missing).
 *
 * @module
 */

import {
  parse as parseJsonc,
  type ParseError,
  printParseErrorCode,
} from "jsonc-parser";
import { isInside } from "./paths.ts";
import { fileURLToPath } from "node:url";

/** Specifier → specifier, as in an import map. */
export type SpecifierMap = Record<string, string>;

/** An import map: absolute keys (or bare ones) and absolute targets. */
export interface ImportMap {
  imports: SpecifierMap;
  scopes: Record<string, SpecifierMap>;
}

/** A site's `deno.json` that cannot be used; the message names file and field. */
export class DependencyError extends Error {
  override name = "DependencyError";
}

/** Where a site's `deno.json` comes from. */
export interface SiteConfigSource {
  /** The file, as shown in messages. */
  file: string;
  /** The real path of the site folder, which relative entries resolve against. */
  siteDir: string;
}

/** The most entries a site's `imports` and `scopes` may have together. */
export const MAX_MAP_ENTRIES = 1000;

const SERVER_SPECIFIER_REGEXP = /^sandflare(\/|$)/;
const WORKER_THREADS_REGEXP = /^(node:)?worker_threads$/;
const URL_LIKE_REGEXP = /^(\/|\.\/|\.\.\/)/;
const SCHEME_REGEXP = /^[a-z][a-z0-9+.-]*:/i;
const TARGET_SCHEMES = ["npm:", "jsr:", "https:", "http:", "node:", "file:"];
const VALID_TARGETS =
  "npm:, jsr:, https: or node: specifiers, or a path inside the site folder";
const EXAMPLE = '{"marked": "npm:marked@15.0.12", "@lib/": "./lib/"}';

/**
 * Reads a site's `deno.json` (or `deno.jsonc`): its `imports` and `scopes`,
 * absolute, without the entries that are the server's.
 * @throws {DependencyError} naming the file, the field and what is valid
 *
 * @example Relative entries resolve in the site folder
 * ```ts
 * import { parseSiteConfig } from "./import_map.ts";
 * import assert from "node:assert/strict";
 *
 * const map = parseSiteConfig(
 *   '{"imports": {"@lib/": "./lib/", "sandflare": "../x.ts"}}',
 *   { file: "sites/md/deno.json", siteDir: "/srv/sites/md" },
 * );
 * assert.deepEqual(map.imports, { "@lib/": "file:///srv/sites/md/lib/" });
 * ```
 */
export function parseSiteConfig(
  text: string,
  source: SiteConfigSource,
): ImportMap {
  const { file } = source;
  const errors: ParseError[] = [];
  let data: unknown;
  try {
    data = parseJsonc(text, errors, { allowTrailingComma: true });
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    throw new DependencyError(
      `${file}: nested too deeply to read; a site's deno.json maps specifiers, such as {"imports": ${EXAMPLE}}`,
    );
  }
  const [error] = errors;
  if (error !== undefined) {
    const { line, column } = positionOf(text, error.offset);
    throw new DependencyError(
      `${file}:${line}:${column}: ${
        printParseErrorCode(error.error)
      }; a site's deno.json must be JSON (comments and trailing commas allowed)`,
    );
  }
  if (!isObject(data)) {
    throw new DependencyError(
      `${file}: expected a JSON object such as {"imports": ${EXAMPLE}}`,
    );
  }
  if (data.importMap !== undefined) {
    throw new DependencyError(
      `${file}: "importMap" is not supported for a site; write its entries under "imports" and "scopes" in the file itself`,
    );
  }
  const base = folderUrl(source.siteDir);
  const entries = { count: 0 };
  const imports = data.imports === undefined
    ? {}
    : checkMap(data.imports, '"imports"', source, base, entries);
  const scopes: Record<string, SpecifierMap> = {};
  if (data.scopes !== undefined) {
    if (!isObject(data.scopes)) {
      throw new DependencyError(
        `${file}: "scopes" must be an object of URL prefixes to maps, such as {"./vendor/": ${EXAMPLE}}`,
      );
    }
    for (const [prefix, map] of Object.entries(data.scopes)) {
      const field = `"scopes".${JSON.stringify(prefix)}`;
      // A scope is always a URL prefix, read against the site folder.
      const scope = scopeUrl(prefix, base);
      if (scope === null) {
        throw new DependencyError(
          `${file}: ${field} is not a URL prefix; use a path such as "./vendor/" or a URL`,
        );
      }
      checkInside(scope, field, source);
      scopes[scope] = checkMap(map, field, source, base, entries);
    }
  }
  return { imports, scopes };
}

function checkMap(
  value: unknown,
  field: string,
  source: SiteConfigSource,
  base: string,
  entries: { count: number },
): SpecifierMap {
  const { file } = source;
  if (!isObject(value)) {
    throw new DependencyError(
      `${file}: ${field} must be an object of specifiers to specifiers, such as ${EXAMPLE}`,
    );
  }
  const out: SpecifierMap = {};
  for (const [key, target] of Object.entries(value)) {
    const where = `${field}.${JSON.stringify(key)}`;
    if (typeof target !== "string" || target === "") {
      throw new DependencyError(
        `${file}: ${where} must be a specifier string (${VALID_TARGETS}), got ${
          JSON.stringify(target)
        }`,
      );
    }
    if (key === "") {
      throw new DependencyError(
        `${file}: ${field} has an empty specifier; write the one it maps, such as "marked"`,
      );
    }
    // The server's own: cli init writes them for editors and deno check.
    if (SERVER_SPECIFIER_REGEXP.test(key)) continue;
    if (WORKER_THREADS_REGEXP.test(key)) {
      throw new DependencyError(
        `${file}: ${where}: node:worker_threads cannot be remapped by a site`,
      );
    }
    // An import map's top-level entries apply to every module of the
    // sandbox, the runtime's own too: a site remapping node:os would run
    // its code in the sandbox's host thread.
    if (SCHEME_REGEXP.test(key) && !/^(file|https?):/i.test(key)) {
      throw new DependencyError(
        `${file}: ${where}: a site may map bare names (such as "marked"), https: URLs and paths in its folder, not ${
          key.slice(0, key.indexOf(":") + 1)
        } specifiers`,
      );
    }
    if (++entries.count > MAX_MAP_ENTRIES) {
      throw new DependencyError(
        `${file}: more than ${MAX_MAP_ENTRIES} entries under "imports" and "scopes"; a site may map at most ${MAX_MAP_ENTRIES}`,
      );
    }
    if (key.endsWith("/") && !target.endsWith("/")) {
      throw new DependencyError(
        `${file}: ${where} ends with "/", so its target must too (such as "./lib/"), got ${
          JSON.stringify(target)
        }`,
      );
    }
    const resolved = absolute(key, base);
    checkInside(resolved, where, source);
    out[resolved] = checkTarget(target, where, source, base);
  }
  // As in a deno.json, a package's entry maps its subpaths too ("hono"
  // gives "hono/cookie"), unless the site maps them itself.
  for (const [key, target] of Object.entries(out)) {
    const subpaths = packageSubpaths(key, target);
    if (subpaths !== null && out[`${key}/`] === undefined) {
      out[`${key}/`] = subpaths;
    }
  }
  return out;
}

/**
 * The target of `key/` for a bare key mapped to a whole npm: or jsr:
 * package, as Deno reads a deno.json; null for anything else.
 *
 * @example
 * ```ts
 * packageSubpaths("hono", "npm:hono@4.13.19"); // "npm:/hono@4.13.19/"
 * ```
 */
export function packageSubpaths(key: string, target: string): string | null {
  if (key.endsWith("/") || SCHEME_REGEXP.test(key)) return null;
  const match = /^(npm|jsr):\/?((?:@[^/]+\/)?[^/@]+(?:@[^/]+)?)$/.exec(target);
  return match === null ? null : `${match[1]}:/${match[2]}/`;
}

function checkTarget(
  target: string,
  where: string,
  source: SiteConfigSource,
  base: string,
): string {
  const { file } = source;
  if (!URL_LIKE_REGEXP.test(target) && !SCHEME_REGEXP.test(target)) {
    throw new DependencyError(
      `${file}: ${where} maps to ${
        JSON.stringify(target)
      }, which is neither a URL nor a path; use ${VALID_TARGETS}`,
    );
  }
  const resolved = absolute(target, base);
  if (!TARGET_SCHEMES.some((scheme) => resolved.startsWith(scheme))) {
    throw new DependencyError(
      `${file}: ${where} maps to ${
        JSON.stringify(target)
      }; use ${VALID_TARGETS}`,
    );
  }
  if (WORKER_THREADS_REGEXP.test(resolved)) {
    throw new DependencyError(
      `${file}: ${where}: node:worker_threads is not available to sites; a site runs Workers with new Worker()`,
    );
  }
  // A package's subpath stays in the package (Deno's graph refuses one that
  // climbs out today; this does not rely on it).
  if (
    /^(npm|jsr):/.test(resolved) && /(^|\/)\.\.?(\/|$)/.test(resolved.slice(4))
  ) {
    throw new DependencyError(
      `${file}: ${where} maps to ${
        JSON.stringify(target)
      }, a package path with a "." or ".." segment; name the package and a path inside it`,
    );
  }
  checkInside(resolved, where, source);
  return resolved;
}

/** A `file:` key or target must stay inside the site folder. */
function checkInside(
  specifier: string,
  where: string,
  source: SiteConfigSource,
): void {
  if (!specifier.startsWith("file:")) return;
  let path: string;
  try {
    path = fileURLToPath(specifier);
  } catch {
    path = "";
  }
  if (path === "" || !isInside(source.siteDir, path)) {
    throw new DependencyError(
      `${source.file}: ${where} leads to ${specifier}, outside the site folder; an entry may point at ${VALID_TARGETS}`,
    );
  }
}

/** A key or target made absolute: relative ones against `base`; bare ones as they are. */
function absolute(specifier: string, base: string): string {
  if (URL_LIKE_REGEXP.test(specifier)) return new URL(specifier, base).href;
  if (/^(https?|file):/i.test(specifier)) {
    try {
      return new URL(specifier).href;
    } catch {
      return specifier;
    }
  }
  return specifier;
}

function scopeUrl(prefix: string, base: string): string | null {
  try {
    return new URL(prefix, base).href;
  } catch {
    return null;
  }
}

/** The `file:` URL of a folder, with its trailing slash. */
export function folderUrl(dir: string): string {
  const url = new URL("file:///");
  url.pathname = dir.endsWith("/") ? dir : `${dir}/`;
  return url.href;
}

/**
 * The runtime's import map (`deno.sandbox.jsonc`, given as parsed JSON),
 * every entry made absolute against the file's own URL, so that it means
 * the same from any other place.
 * @throws {DependencyError} when the file is not an import map
 */
export function absoluteRuntimeMap(
  config: unknown,
  fileUrl: string,
): ImportMap {
  if (!isObject(config)) {
    throw new DependencyError(`${fileUrl}: expected a JSON object`);
  }
  const make = (value: unknown): SpecifierMap => {
    const out: SpecifierMap = {};
    if (!isObject(value)) return out;
    for (const [key, target] of Object.entries(value)) {
      if (typeof target !== "string") continue;
      out[absolute(key, fileUrl)] = absolute(target, fileUrl);
    }
    return out;
  };
  const scopes: Record<string, SpecifierMap> = {};
  if (isObject(config.scopes)) {
    for (const [prefix, map] of Object.entries(config.scopes)) {
      scopes[absolute(prefix, fileUrl)] = make(map);
    }
  }
  return { imports: make(config.imports), scopes };
}

/** Parses the text of a JSONC file such as `deno.sandbox.jsonc`. */
export function parseJsoncText(text: string, file: string): unknown {
  const errors: ParseError[] = [];
  const data: unknown = parseJsonc(text, errors, { allowTrailingComma: true });
  const [error] = errors;
  if (error !== undefined) {
    const { line, column } = positionOf(text, error.offset);
    throw new DependencyError(
      `${file}:${line}:${column}: ${printParseErrorCode(error.error)}`,
    );
  }
  return data;
}

/**
 * The import map a site's sandbox runs with: the site's entries, then the
 * runtime's, which win on the same key (and in the same scope).
 *
 * @example The runtime wins
 * ```ts
 * import { mergeImportMaps } from "./import_map.ts";
 * import assert from "node:assert/strict";
 *
 * const map = mergeImportMaps(
 *   { imports: { a: "npm:a@1", b: "npm:b@1" }, scopes: {} },
 *   { imports: { b: "file:///runtime/b.ts" }, scopes: {} },
 * );
 * assert.deepEqual(map.imports, { a: "npm:a@1", b: "file:///runtime/b.ts" });
 * ```
 */
export function mergeImportMaps(
  site: ImportMap,
  runtime: ImportMap,
): ImportMap {
  const scopes: Record<string, SpecifierMap> = { ...site.scopes };
  for (const [prefix, map] of Object.entries(runtime.scopes)) {
    scopes[prefix] = { ...scopes[prefix], ...map };
  }
  return {
    imports: sorted({ ...site.imports, ...runtime.imports }),
    scopes: Object.fromEntries(
      Object.keys(scopes).sort().map((k) => [k, sorted(scopes[k]!)]),
    ),
  };
}

function sorted(map: SpecifierMap): SpecifierMap {
  return Object.fromEntries(
    Object.entries(map).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  );
}

/**
 * The packages and modules a map names, for `deno install --entrypoint`:
 * `npm:` and `jsr:` targets (a prefix entry as its package), and remote
 * modules that are not prefixes.
 *
 * @example
 * ```ts
 * import { installTargets } from "./import_map.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(
 *   installTargets({
 *     imports: { marked: "npm:marked@15.0.12", "preact/": "npm:preact@10/" },
 *     scopes: {},
 *   }),
 *   ["npm:marked@15.0.12", "npm:preact@10"],
 * );
 * ```
 */
export function installTargets(map: ImportMap): string[] {
  const targets = new Set<string>();
  const all = [map.imports, ...Object.values(map.scopes)];
  for (const target of all.flatMap((m) => Object.values(m))) {
    if (/^(npm|jsr):/.test(target)) targets.add(target.replace(/\/+$/, ""));
    else if (/^https?:/.test(target) && !target.endsWith("/")) {
      targets.add(target);
    }
  }
  return [...targets];
}

/** What a specifier written in a site's code stands for, by its map. */
export function mappedSpecifier(written: string, map: ImportMap): string {
  if (/^(npm|jsr|https?):/.test(written)) return written;
  const exact = map.imports[written];
  if (exact !== undefined) return exact;
  let best = "";
  for (const key of Object.keys(map.imports)) {
    if (
      key.endsWith("/") && written.startsWith(key) && key.length > best.length
    ) {
      best = key;
    }
  }
  return best === ""
    ? written
    : map.imports[best]! + written.slice(best.length);
}

/**
 * Deno's errors for a module that is not in the sandbox's cache (it runs
 * with `--cached-only`), or that it may not fetch (`--no-npm`,
 * `--no-remote`), as a worker reports their first line. Each gives the
 * specifier when the message names it.
 */
const NOT_INSTALLED: readonly [
  RegExp,
  (m: RegExpMatchArray) => string | null,
][] = [
  // The package's metadata is cached, not this version.
  [/^Failed caching npm package '([^']+)'/, (m) => `npm:${m[1]}`],
  // Nothing of the package is cached.
  [/^Failed loading \S+ for package "([^"]+)"/, (m) => `npm:${m[1]}`],
  [/^JSR package manifest for '([^']+)' failed to load/, (m) => `jsr:${m[1]}`],
  [/^Specifier not found in cache: "([^"]+)", --cached-only/, (m) => m[1]!],
  [/^npm specifiers were requested; but --no-npm is specified/, () => null],
  [
    /^A remote specifier was requested: "([^"]+)", but --no-remote/,
    (m) => m[1]!,
  ],
  [/^npm package not found in cache: "([^"]+)"/, (m) => `npm:${m[1]}`],
];

/**
 * Whether a load failure is a module that is not installed; then the
 * specifier Deno names (`null` when it names none), else `undefined`.
 *
 * @example
 * ```ts
 * import { notInstalled } from "./import_map.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   notInstalled(`Failed loading https://registry.npmjs.org/marked for package "marked"`),
 *   "npm:marked",
 * );
 * assert.equal(notInstalled("SyntaxError: Unexpected token"), undefined);
 * ```
 */
export function notInstalled(message: string): string | null | undefined {
  const text = message.replace(/^(TypeError|Error): /, "");
  for (const [pattern, name] of NOT_INSTALLED) {
    const match = pattern.exec(text);
    if (match !== null) return name(match);
  }
  return undefined;
}

/**
 * The string literal starting at a 1-based column of a line of code, or
 * null when there is none.
 */
export function literalAt(
  code: string,
  line: number,
  column: number,
): string | null {
  const text = code.split("\n")[line - 1];
  if (text === undefined) return null;
  const quote = text[column - 1];
  if (quote !== '"' && quote !== "'" && quote !== "`") return null;
  const end = text.indexOf(quote, column);
  return end < 0 ? null : text.slice(column, end);
}

function positionOf(text: string, offset: number): {
  line: number;
  column: number;
} {
  const before = text.slice(0, offset).split("\n");
  return { line: before.length, column: (before.at(-1)?.length ?? 0) + 1 };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
