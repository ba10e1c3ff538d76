/**
 * The default error page: HTML with the code, reason phrase and escaped
 * message, or JSON for clients that accept JSON but not HTML.
 *
 * @module
 */

import { STATUS_CODES } from "node:http";
import { escapeHtml } from "../shared/escape.ts";

const STYLE =
  "body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}h1{font-weight:600}";

/** A rendered error page. */
export interface ErrorPage {
  contentType: string;
  body: string;
}

/**
 * The reason phrase of a status code.
 *
 * @example
 * ```ts
 * reasonPhrase(404); // "Not Found"
 * ```
 */
export function reasonPhrase(code: number): string {
  return STATUS_CODES[code] ?? "Error";
}

/**
 * True when the client takes JSON and not HTML, judged from `Accept`.
 *
 * @example
 * ```ts
 * wantsJson("application/json"); // true
 * wantsJson("text/html,application/json"); // false
 * ```
 */
export function wantsJson(accept: string | null): boolean {
  if (accept === null) return false;
  let json = false;
  let html = false;
  for (const part of accept.split(",")) {
    const [type = "", ...params] = part.trim().toLowerCase().split(";");
    const q = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
    if (q !== undefined && Number(q.slice(2)) === 0) continue;
    const t = type.trim();
    if (t === "application/json" || t.endsWith("+json")) json = true;
    if (t === "text/html" || t === "application/xhtml+xml") html = true;
  }
  return json && !html;
}

/**
 * Renders the default error page.
 *
 * @param code the status code
 * @param message the detail; escaped, never a stack trace
 * @param accept the request's `Accept` header
 * @example
 * ```ts
 * errorPage(404, 'No page at "/x"', null).contentType; // "text/html; charset=utf-8"
 * ```
 */
export function errorPage(
  code: number,
  message: string,
  accept: string | null,
): ErrorPage {
  const reason = reasonPhrase(code);
  if (wantsJson(accept)) {
    return {
      contentType: "application/json; charset=utf-8",
      body: JSON.stringify({ error: { code, reason, message } }),
    };
  }
  const title = `${code} ${escapeHtml(reason)}`;
  const detail = message === "" ? "" : `<p>${escapeHtml(message)}</p>`;
  // Small on purpose: error pages are the most frequent answer under attack.
  return {
    contentType: "text/html; charset=utf-8",
    body:
      `<!DOCTYPE html><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${title}</title><style>${STYLE}</style><h1>${title}</h1>${detail}\n`,
  };
}
