/**
 * Path containment, as every check that a site stays in its folder decides
 * it.
 *
 * @module
 */

import { isAbsolute, relative, sep } from "node:path";

/**
 * True when `path` is `dir` or inside it (both absolute, normalized).
 *
 * @example
 * ```ts
 * isInside("/srv/site", "/srv/site/..hidden"); // true: a name inside
 * isInside("/srv/site", "/srv/other"); // false
 * ```
 */
export function isInside(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  // "..hidden" is a name inside; only a ".." segment leads out.
  return rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
}
