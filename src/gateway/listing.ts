/**
 * The default directory listing (when a site's `ListDirectory` hook does not
 * answer): escaped HTML, folders first, then files, sorted by name, with
 * sizes and dates.
 *
 * @module
 */

import { join } from "node:path";
import { escapeHtml } from "../shared/escape.ts";
import { isInside } from "../supervisor/paths.ts";

/** One entry of a listing. */
export interface ListingEntry {
  name: string;
  directory: boolean;
  size: number;
  /** ms since the epoch, or null when unknown. */
  modified: number | null;
}

/**
 * A size for people: bytes below 1 KiB, else KiB, MiB or GiB with one decimal.
 *
 * @example
 * ```ts
 * humanSize(1536); // "1.5 KiB"
 * ```
 */
export function humanSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/**
 * Renders a listing of `title` (the path shown to the user).
 *
 * @example
 * ```ts
 * renderListing("/files/", [{ name: "a<b>.txt", directory: false, size: 3, modified: 0 }]);
 * ```
 */
export function renderListing(title: string, entries: ListingEntry[]): string {
  const sorted = [...entries].sort((a, b) =>
    a.directory !== b.directory
      ? (a.directory ? -1 : 1)
      : a.name < b.name
      ? -1
      : a.name > b.name
      ? 1
      : 0
  );
  const rows = sorted.map((e) => {
    const href = encodeURIComponent(e.name) + (e.directory ? "/" : "");
    const name = escapeHtml(e.name) + (e.directory ? "/" : "");
    const size = e.directory ? "—" : humanSize(e.size);
    const date = e.modified === null
      ? ""
      : new Date(e.modified).toISOString().replace("T", " ").slice(0, 16);
    return `<tr><td><a href="${
      escapeHtml(href)
    }">${name}</a></td><td>${size}</td><td>${date}</td></tr>`;
  });
  const heading = escapeHtml(title);
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Index of ${heading}</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem}table{border-collapse:collapse;width:100%}td{padding:.2rem .6rem;border-bottom:1px solid #eee}td:nth-child(2),td:nth-child(3){color:#666;white-space:nowrap}</style>
</head>
<body>
<h1>Index of ${heading}</h1>
<table>
<tr><td><a href="../">../</a></td><td></td><td></td></tr>
${rows.join("\n")}
</table>
</body>
</html>
`;
}

/**
 * The entries of folder `dir` that may be listed: those whose real path stays
 * inside `boundary` (the site folder).
 */
export async function readListing(
  dir: string,
  boundary: string,
): Promise<ListingEntry[]> {
  const entries: ListingEntry[] = [];
  for await (const e of Deno.readDir(dir)) {
    const info = await Deno.stat(join(dir, e.name)).catch(() => null);
    if (info === null) continue;
    const real = await Deno.realPath(join(dir, e.name)).catch(() => "");
    if (!isInside(boundary, real)) continue;
    entries.push({
      name: e.name,
      directory: info.isDirectory,
      size: info.size,
      modified: info.mtime?.getTime() ?? null,
    });
  }
  return entries;
}
