/**
 * Sending a file a site asked for with `res.setFile`: the gateway resolves
 * the path against the site folder and refuses anything whose real path
 * leaves it, whatever the sandbox said.
 *
 * @module
 */

import { resolve } from "node:path";
import { isInside } from "../supervisor/paths.ts";

/** Where a requested file is, or why it is not served. */
export type FileLookup =
  | { kind: "file"; path: string; info: Deno.FileInfo }
  | { kind: "directory"; path: string }
  | { kind: "refused"; status: 403 | 404; message: string };

/**
 * Resolves `requested` (relative to `siteDir`) to a real path inside it.
 *
 * @param siteDir the real path of the site folder
 * @param requested what the site passed to `setFile`
 * @returns the file, the folder, or why not
 */
export async function lookupSiteFile(
  siteDir: string,
  requested: string,
): Promise<FileLookup> {
  if (requested.includes("\0")) {
    return {
      kind: "refused",
      status: 403,
      message: "The file path contains a NUL byte",
    };
  }
  const lexical = resolve(siteDir, requested.replace(/^\/+/, ""));
  if (!isInside(siteDir, lexical)) {
    return {
      kind: "refused",
      status: 403,
      message: "The file is outside the site folder",
    };
  }
  let real: string;
  try {
    real = await Deno.realPath(lexical);
  } catch {
    return { kind: "refused", status: 404, message: "No such file" };
  }
  if (!isInside(siteDir, real)) {
    return {
      kind: "refused",
      status: 403,
      message: "The file is outside the site folder",
    };
  }
  const info = await Deno.stat(real);
  if (info.isDirectory) return { kind: "directory", path: real };
  if (!info.isFile) {
    return { kind: "refused", status: 403, message: "Not a regular file" };
  }
  return { kind: "file", path: real, info };
}

/**
 * `X-Accel-Redirect` for a file: the prefix and the real path joined with
 * one slash, each segment percent-encoded.
 */
export function accelPath(prefix: string, path: string): string {
  const encoded = path.split("/").filter((s) => s !== "").map(
    encodeURIComponent,
  ).join("/");
  return `${prefix.replace(/\/+$/, "")}/${encoded}`;
}
