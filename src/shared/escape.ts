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

/**
 * Characters a terminal acts on rather than shows: C0 controls but tab,
 * DEL, C1 controls (8-bit CSI and OSC among them), the Unicode line and
 * paragraph separators, the bidirectional marks and overrides that reorder
 * what is shown, and the interlinear annotation marks.
 */
const CONTROL_REGEXP =
  // deno-lint-ignore no-control-regex -- finding control characters is the point
  /[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufff9-\ufffb]/g;

/**
 * Escapes text for an operator's terminal or log: every character in
 * {@linkcode CONTROL_REGEXP} becomes a visible escape (`\n`, `\x1b`,
 * `\u202e`), so one line stays one line and nothing a site or a client sent
 * can move the cursor, set the clipboard (OSC 52) or forge a line.
 *
 * @example
 * ```ts
 * import { escapeControl } from "./escape.ts";
 * escapeControl("a\nb\x1b]52;c;AAAA\x07"); // "a\\nb\\x1b]52;c;AAAA\\x07"
 * ```
 */
export function escapeControl(text: string): string {
  return text.replace(CONTROL_REGEXP, controlEscape);
}

function controlEscape(c: string): string {
  if (c === "\n") return "\\n";
  const code = c.charCodeAt(0);
  return code <= 0xff
    ? `\\x${code.toString(16).padStart(2, "0")}`
    : `\\u${code.toString(16).padStart(4, "0")}`;
}

/** What {@linkcode CONTROL_REGEXP} finds that `JSON.stringify` leaves raw. */
const RAW_IN_JSON_REGEXP =
  /[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufff9-\ufffb]/g;

/**
 * JSON for a terminal: `JSON.stringify`, with the characters it leaves raw
 * that a terminal acts on (C1 controls, DEL, separators, bidi overrides)
 * written as `\u` escapes. It parses back to the same value.
 *
 * @example
 * ```ts
 * import { safeJson } from "./escape.ts";
 * safeJson({ a: "\u009b31m" }); // '{"a":"\\u009b31m"}'
 * ```
 */
export function safeJson(value: unknown, indent?: number): string {
  return JSON.stringify(value, null, indent).replace(
    RAW_IN_JSON_REGEXP,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
