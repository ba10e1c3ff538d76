/**
 * Escaping shared by the gateway (error pages, listings, /stats) and the
 * sandbox's script API (`html`): both layers may import `src/shared/`, which
 * imports nothing and does no I/O.
 *
 * @module
 */

const HTML_ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/**
 * Escapes text for HTML content and quoted attributes.
 *
 * @example
 * ```ts
 * import { escapeHtml } from "./escape.ts";
 * escapeHtml(`<"a" & 'b'>`); // "&lt;&quot;a&quot; &amp; &#39;b&#39;&gt;"
 * ```
 */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}
