/**
 * The HTML templating helper of the script API (LuaFlare's templator, as a
 * tagged template): every interpolated value is escaped unless it is marked
 * `raw(...)`, arrays are joined, and `null`, `undefined` and `false` render
 * as nothing.
 *
 * @example
 * ```ts
 * import { html, raw } from "./html.ts";
 * const items = ["<a>", "b"];
 * String(html`<ul>${items.map((i) => html`<li>${i}</li>`)}</ul>${raw("<hr>")}`);
 * // "<ul><li>&lt;a&gt;</li><li>b</li></ul><hr>"
 * ```
 *
 * @module
 */

import { escapeHtml } from "../shared/escape.ts";

export { escapeHtml };

/** Markup that is inserted as is: made by `html` or marked with `raw`. */
export class SafeHtml {
  readonly #text: string;
  constructor(text: string) {
    this.#text = text;
  }
  /** The markup. */
  toString(): string {
    return this.#text;
  }
}

/**
 * Marks trusted markup so `html` inserts it unescaped.
 *
 * @example
 * ```ts
 * import { html, raw } from "./html.ts";
 * String(html`<div>${raw("<b>bold</b>")}</div>`); // "<div><b>bold</b></div>"
 * ```
 */
export function raw(markup: string): SafeHtml {
  return new SafeHtml(String(markup));
}

function render(value: unknown): string {
  if (value === null || value === undefined || value === false) return "";
  if (value instanceof SafeHtml) return value.toString();
  if (Array.isArray(value)) return value.map(render).join("");
  return escapeHtml(String(value));
}

/**
 * Builds HTML, escaping every interpolated value unless it is `SafeHtml`
 * (the result of `html` or `raw`). Pass the result to `res.append` or return
 * it from a page (it becomes a string with `String()` or a template literal).
 *
 * @example
 * ```ts
 * import { html } from "./html.ts";
 * String(html`<p title="${'"quoted"'}">${"<script>"}</p>`);
 * // '<p title="&quot;quoted&quot;">&lt;script&gt;</p>'
 * ```
 */
export function html(
  strings: TemplateStringsArray,
  ...values: unknown[]
): SafeHtml {
  let out = strings[0] ?? "";
  for (let i = 0; i < values.length; i++) {
    out += render(values[i]) + (strings[i + 1] ?? "");
  }
  return new SafeHtml(out);
}
