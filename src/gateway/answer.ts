/**
 * What the gateway sends back: an {@linkcode Answer} (the response, the site
 * it is logged under, the body bytes sent), built from a status, headers and
 * a body, and the checks a site's reply headers pass first.
 *
 * @module
 */

import type { WireRequest } from "../protocol/messages.ts";
import { log, RepeatedWarning } from "../log.ts";
import { errorPage } from "./error_page.ts";
import { scopeCookieHeader, scopeSetCookie } from "./cookie_scope.ts";

/** A response with what the access log needs to know of it. */
export interface Answer {
  response: Response;
  /** The site the request is logged under. */
  site: string;
  /** Body bytes sent; null for a stream, whose length is not known. */
  bytes: number | null;
}

/** Response headers as the Response constructor takes them, cheaply. */
export type HeaderList = [string, string][];

/** One request on its way through the gateway. */
export interface RequestContext {
  wire: WireRequest;
  headers: Headers;
  accept: string | null;
  /**
   * Aborts when the client goes away. Made on first use: on `Deno.serve`,
   * `request.signal` costs a few µs, which only pages need.
   */
  clientGone: () => AbortSignal;
  /** Set once the site's Error hook has rendered for this request. */
  errorRendered?: boolean;
  /**
   * The site that owns the request's host, once routed (null: a host
   * shared by every site's hosts.any pages). Any other site answering gets
   * its cookies bound to it (cookie_scope.ts).
   */
  hostOwner?: string | null;
  /** The site `wire.headers` were made for. */
  headersFor?: string;
}

/** Answers an error for a request, through the owning site's `Error` hook when it has one. */
export type ErrorAnswer = (
  code: number,
  message: string,
  owner: string,
  ctx: RequestContext,
) => Promise<Answer>;

export const EMPTY = new Uint8Array(0);
export const SERVER_HEADER: [string, string] = ["server", "sandflare"];

/**
 * Headers a site may not set: the connection's, which the gateway owns, and
 * the file-handover ones a front proxy obeys (only the gateway may send
 * those, for files it has checked).
 */
const HOP_BY_HOP = new Set([
  "x-accel-redirect",
  "x-sendfile",
  "x-lighttpd-send-file",
  "x-accel-buffering",
  "x-accel-charset",
  "x-accel-expires",
  "x-accel-limit-rate",
  "connection",
  "content-length",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "server",
  "date",
]);

/** Statuses that carry no body (RFC 9110 §15.3.5, §15.3.6, §15.4.5). */
const NO_BODY = new Set([204, 205, 304]);
const TOKEN_REGEXP = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// deno-lint-ignore no-control-regex -- finding control characters is the point
const BAD_VALUE_REGEXP = /[\x00-\x08\x0a-\x1f\x7f]/;
// deno-lint-ignore no-control-regex -- the range starts at NUL
const WIDE_CHAR_REGEXP = /[^\u0000-\u00ff]/;

/** An answer with a body (none for HEAD, 204 and 304). */
export function send(
  status: number,
  headers: HeaderList,
  body: Uint8Array | string | ReadableStream<Uint8Array>,
  method: string,
  site: string,
): Answer {
  headers.push(SERVER_HEADER);
  if (body instanceof ReadableStream) {
    if (method !== "HEAD" && !NO_BODY.has(status)) {
      return {
        response: new Response(body, { status, headers }),
        site,
        bytes: null,
      };
    }
    void body.cancel().catch(() => {});
    return {
      response: new Response(null, { status, headers }),
      site,
      bytes: 0,
    };
  }
  const bytes = typeof body === "string" ? utf8Length(body) : body.length;
  if (method === "HEAD" || NO_BODY.has(status)) {
    if (method === "HEAD") headers.push(["content-length", String(bytes)]);
    return {
      response: new Response(null, { status, headers }),
      site,
      bytes: 0,
    };
  }
  return {
    response: new Response(body as BodyInit, { status, headers }),
    site,
    bytes,
  };
}

/**
 * Bodies smaller than this are sent as they are, not compressed: Deno's
 * HTTP engine compresses every compressible answer to a client that sends
 * `Accept-Encoding` (every browser), and for a small one that costs more
 * than it saves. Measured (issue 17): a browser's 404, a 304-byte page,
 * took 92.7 µs of the gateway's CPU compressed and 56.5 µs not.
 */
export const COMPRESS_MIN_BYTES = 1024;

/**
 * Marks an answer `Cache-Control: no-transform`, which keeps Deno from
 * compressing it (and tells caches on the way not to either).
 *
 * @param headers the answer's headers, changed in place
 */
export function notCompressed(headers: HeaderList): void {
  for (let i = 0; i < headers.length; i++) {
    const [name, value] = headers[i]!;
    if (name.toLowerCase() !== "cache-control") continue;
    if (!/(^|,)\s*no-transform\s*(,|$)/i.test(value)) {
      headers[i] = [name, `${value}, no-transform`];
    }
    return;
  }
  headers.push(["cache-control", "no-transform"]);
}

/** The gateway's own error page, in HTML or JSON as the client accepts. */
export function defaultError(
  code: number,
  message: string,
  request: { accept: string | null; method: string },
  site: string,
): Answer {
  const page = errorPage(code, message, request.accept);
  // Small: not worth compressing (see COMPRESS_MIN_BYTES).
  return send(
    code,
    [["content-type", page.contentType], ["cache-control", "no-transform"]],
    page.body,
    request.method,
    site,
  );
}

const failures = { loggedAt: 0, suppressed: 0 };

/** A failure of the gateway itself: logged with a reference, never shown. */
export function internalError(
  err: unknown,
  method: string,
  site: string,
): Answer {
  const ref = crypto.randomUUID().slice(0, 8);
  // One line with its stack every 10 s at most; the others are counted.
  const now = Date.now();
  if (now - failures.loggedAt < 10_000) {
    failures.suppressed++;
  } else {
    const more = failures.suppressed === 0
      ? ""
      : ` (and ${failures.suppressed} more since the last one logged)`;
    failures.loggedAt = now;
    failures.suppressed = 0;
    log.error(
      site === "root" ? null : site,
      `[ref ${ref}] Request failed in the gateway${more}: ${
        err instanceof Error ? err.stack ?? err.message : String(err)
      }`,
    );
  }
  return defaultError(
    500,
    `Internal Server Error (ref ${ref})`,
    { accept: null, method },
    site,
  );
}

/** A reply that cannot be sent: 502, and one log line (repeats summed up). */
export function refusedReply(
  site: string,
  why: string,
  ctx: RequestContext,
  warning: RepeatedWarning,
): Answer {
  warning.note(site, `${why}; answered 502 instead`);
  return defaultError(
    502,
    "The site sent a response that cannot be sent",
    { accept: ctx.accept, method: ctx.wire.method },
    site,
  );
}

/** As nginx logs it: the client closed its connection before the answer. */
export function clientGone(site: string): Answer {
  return { response: new Response(null, { status: 499 }), site, bytes: 0 };
}

/** Fills the request's header list for a site (once). */
export function withHeaders(
  ctx: RequestContext,
  site: string,
): RequestContext {
  if (ctx.headersFor !== site) {
    // On a host the site does not own it sees only its own cookies; on a
    // host another site owns (which let it answer what it does not), none
    // of the owner's credentials either.
    const bound = site !== ctx.hostOwner;
    const foreign = bound && ctx.hostOwner != null;
    const flat: WireRequest["headers"] = [];
    ctx.headers.forEach((value, name) => {
      if (foreign && CREDENTIALS.has(name)) return;
      if (name !== "cookie" || !bound) flat.push(name, value);
      else {
        const scoped = scopeCookieHeader(value, site);
        if (scoped !== "") flat.push(name, scoped);
      }
    });
    ctx.wire.headers = flat;
    ctx.headersFor = site;
  }
  return ctx;
}

/** Request headers that authenticate to a host's owner. */
const CREDENTIALS = new Set(["authorization", "proxy-authorization"]);

const removedHeaders = new RepeatedWarning(
  "A header that speaks for other sites was removed",
);
const removedDomains = new RepeatedWarning(
  "A cookie's Domain was removed: the site does not own every host under it",
);

/**
 * A site's reply headers as they may be sent ({@linkcode siteHeaders}),
 * with its `Set-Cookie` headers scoped to the request's host
 * (cookie_scope.ts); or why they cannot be sent.
 *
 * @param site the site replying, and the host patterns it owns
 */
export function replyHeaders(
  flat: string[],
  site: { name: string; owns: readonly string[] },
  ctx: RequestContext,
): HeaderList | string {
  const headers = siteHeaders(flat);
  if (typeof headers === "string") return headers;
  const scope = {
    bound: site.name === ctx.hostOwner ? null : site.name,
    owns: site.owns,
  };
  for (let i = headers.length - 1; i >= 0; i--) {
    const lower = headers[i]![0].toLowerCase();
    // Clear-Site-Data clears every site's cookies under the registrable
    // domain, and HSTS on a shared host speaks for its other sites too.
    if (
      lower === "clear-site-data" ||
      (lower === "strict-transport-security" && scope.bound !== null)
    ) {
      removedHeaders.note(site.name, `${headers[i]![0]} on ${ctx.wire.host}`);
      headers.splice(i, 1);
    }
  }
  for (const header of headers) {
    if (header[0].toLowerCase() !== "set-cookie") continue;
    const scoped = scopeSetCookie(header[1], scope);
    header[1] = scoped.value;
    if (scoped.removedDomain !== null) {
      removedDomains.note(
        site.name,
        `Domain=${scoped.removedDomain} on ${ctx.wire.host}`,
      );
    }
  }
  return headers;
}

/** Most headers a site's reply may have. */
export const MAX_REPLY_HEADERS = 100;
/** Most bytes of names and values a site's reply may have (as a request head). */
export const MAX_REPLY_HEADER_BYTES = 64 * 1024;

/**
 * A site's response headers, without those the gateway owns; or why they
 * cannot be sent: too many, too large, or a name or value HTTP does not
 * allow (RFC 9110 §5: a token; visible characters, spaces and tabs).
 */
export function siteHeaders(flat: string[]): HeaderList | string {
  if (flat.length > 2 * MAX_REPLY_HEADERS) {
    return `${flat.length >> 1} headers (at most ${MAX_REPLY_HEADERS})`;
  }
  const headers: HeaderList = [];
  let bytes = 0;
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const name = flat[i]!;
    const value = flat[i + 1]!;
    bytes += name.length + value.length;
    if (bytes > MAX_REPLY_HEADER_BYTES) {
      return `headers over ${MAX_REPLY_HEADER_BYTES} bytes`;
    }
    if (!TOKEN_REGEXP.test(name)) {
      return `the header name ${JSON.stringify(name.slice(0, 100))}`;
    }
    if (BAD_VALUE_REGEXP.test(value)) {
      return `a control character in the value of header ${
        JSON.stringify(name)
      }`;
    }
    // A header value is bytes: characters past U+00FF cannot be sent.
    if (WIDE_CHAR_REGEXP.test(value)) {
      return `a character beyond Latin-1 in the value of header ${
        JSON.stringify(name)
      } (encode it, e.g. RFC 8187 or percent-encoding)`;
    }
    if (HOP_BY_HOP.has(name.toLowerCase())) continue;
    headers.push([name, value]);
  }
  return headers;
}

/** Whether `headers` has `name` (lower-case). */
export function hasHeader(headers: HeaderList, name: string): boolean {
  return headers.some(([n]) => n.toLowerCase() === name);
}

/** Bytes of `text` in UTF-8, without encoding it. */
function utf8Length(text: string): number {
  let n = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c >= 0xd800 && c <= 0xdbff) {
      n += 2; // a surrogate pair: 2 UTF-16 units, 4 bytes
      i++;
    } else n += c < 0x800 ? 1 : 2;
  }
  return n;
}
