/**
 * Content types by file extension: `/etc/mime.types` when present, else the
 * `mime-db` package; text types get `charset=utf-8`.
 *
 * @module
 */

import db from "mime-db";

/** extension (lower case, no dot) → content type */
export type MimeTable = Map<string, string>;

/** The table from mime-db. */
export function mimeDbTable(): MimeTable {
  const table: MimeTable = new Map();
  for (const [type, entry] of Object.entries(db as Record<string, unknown>)) {
    if (typeof entry !== "object" || entry === null) continue;
    const { extensions, source } = entry as {
      extensions?: unknown;
      source?: unknown;
    };
    if (!Array.isArray(extensions)) continue;
    for (const ext of extensions) {
      // mime-db lists some extensions under several types; prefer IANA's.
      if (typeof ext === "string" && (!table.has(ext) || source === "iana")) {
        table.set(ext, type);
      }
    }
  }
  return table;
}

/**
 * Parses the text of a `mime.types` file.
 *
 * @example
 * ```ts
 * parseMimeTypes("text/html html htm\n# comment").get("htm"); // "text/html"
 * ```
 */
export function parseMimeTypes(text: string): MimeTable {
  const table: MimeTable = new Map();
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) continue;
    const [type, ...exts] = trimmed.split(/\s+/);
    if (type === undefined || !type.includes("/")) continue;
    for (const ext of exts) table.set(ext.toLowerCase(), type.toLowerCase());
  }
  return table;
}

/** Loads `/etc/mime.types` over mime-db (the system file wins where it speaks). */
export async function loadMimeTable(
  file = "/etc/mime.types",
): Promise<MimeTable> {
  const table = mimeDbTable();
  try {
    for (const [ext, type] of parseMimeTypes(await Deno.readTextFile(file))) {
      table.set(ext, type);
    }
  } catch {
    // Missing or unreadable (a locked-down service): mime-db alone serves.
  }
  return table;
}

const TEXT_REGEXP =
  /^(text\/|application\/(javascript|json|xml|.*\+json|.*\+xml)$|image\/svg\+xml$)/;

/**
 * The Content-Type for a file name.
 *
 * @example
 * ```ts
 * contentTypeFor(new Map([["css", "text/css"]]), "a/b.CSS"); // "text/css; charset=utf-8"
 * ```
 */
export function contentTypeFor(table: MimeTable, name: string): string {
  const dot = name.lastIndexOf(".");
  const slash = name.lastIndexOf("/");
  const type = dot > slash
    ? table.get(name.slice(dot + 1).toLowerCase())
    : undefined;
  if (type === undefined) return "application/octet-stream";
  return TEXT_REGEXP.test(type) ? `${type}; charset=utf-8` : type;
}
