/**
 * Host claims: a site may register only the host patterns its site.json
 * lists (the root site may register any).
 *
 * @module
 */

import { isValidHostPattern } from "../router/host_pattern.ts";
import type { WireRoutes } from "../protocol/messages.ts";

/**
 * The problem with a site's registered hosts, or null when all are allowed.
 *
 * @param routes what the site registered
 * @param allowed `hosts` of its site.json (lower case)
 * @param options `root`: may register anything; `file`: the site.json path for messages
 * @returns a message naming the pattern and the file, or null
 * @example
 * ```ts
 * checkHostClaims({ hosts: [{ pattern: "a.test", noFallback: false }] },
 *   ["a.test"], { root: false, file: "sites/a/site.json" }); // null
 * ```
 */
export function checkHostClaims(
  routes: Pick<WireRoutes, "hosts">,
  allowed: readonly string[],
  options: { root: boolean; file: string },
): string | null {
  for (const { pattern } of routes.hosts) {
    if (!isValidHostPattern(pattern)) {
      return `Host pattern ${
        JSON.stringify(pattern)
      } is not valid: use "example.test", "*.example.test", "~.example.test", "+.example.test" or "*"`;
    }
    if (options.root) continue;
    for (const part of pattern.split(",").map((p) => p.trim())) {
      if (!allowed.includes(part)) {
        const what = part === "*"
          ? "hosts.any"
          : `host ${JSON.stringify(part)}`;
        return `The site registered ${what}, which ${options.file} does not list in "hosts" (it lists ${
          allowed.length === 0
            ? "none"
            : allowed.map((a) => JSON.stringify(a)).join(", ")
        }); to allow it, add ${JSON.stringify(part)} to "hosts" there`;
      }
    }
  }
  return null;
}
