/**
 * The request object a page callback receives (`req`).
 *
 * @module
 */

import type { WireRequest } from "../protocol/messages.ts";

const decoder = new TextDecoder();

/** A request as a site sees it; `req` in the script API. */
export class PageRequest {
  /** The method, upper-case. */
  readonly method: string;
  /** Decoded, absolute, without `.`/`..` segments. */
  readonly path: string;
  /** The request target as received. */
  readonly fullUrl: string;
  /** The Host header without port, lower case. */
  readonly host: string;
  /** The client's address (from the proxy headers under `--reverse-proxy`). */
  readonly peer: string;
  /** When the gateway received the request, in ms since the epoch. */
  readonly startTime: number;
  readonly #wire: WireRequest;
  readonly #body: Uint8Array;
  #headers: Headers | null = null;
  #params: Record<string, string> | null = null;
  #cookies: Record<string, string> | null = null;

  constructor(wire: WireRequest, body: Uint8Array) {
    this.#wire = wire;
    this.#body = body;
    this.method = wire.method;
    this.path = wire.path;
    this.fullUrl = wire.fullUrl;
    this.host = wire.host;
    this.peer = wire.peer;
    this.startTime = wire.startTime;
  }

  /** The request headers. */
  get headers(): Headers {
    if (this.#headers === null) {
      const headers = new Headers();
      const list = this.#wire.headers;
      for (let i = 0; i + 1 < list.length; i += 2) {
        headers.append(list[i]!, list[i + 1]!);
      }
      this.#headers = headers;
    }
    return this.#headers;
  }

  /** The query parameters; for a repeated name, the last value. */
  get params(): Record<string, string> {
    if (this.#params === null) {
      this.#params = Object.fromEntries(new URLSearchParams(this.#wire.query));
    }
    return this.#params;
  }

  /** The cookies the client sent. */
  get cookies(): Record<string, string> {
    if (this.#cookies === null) {
      this.#cookies = parseCookies(this.headers.get("cookie") ?? "");
    }
    return this.#cookies;
  }

  /** Seconds since the request arrived. */
  totalTime(): number {
    return (Date.now() - this.startTime) / 1000;
  }

  /** The body as bytes. */
  bytes(): Promise<Uint8Array> {
    return Promise.resolve(this.#body);
  }

  /** The body as text (UTF-8). */
  text(): Promise<string> {
    return Promise.resolve(decoder.decode(this.#body));
  }

  /** The body parsed as JSON. */
  async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }

  /** Form fields of an urlencoded or multipart body (files by file name). */
  async postParams(): Promise<Record<string, string>> {
    const type = this.headers.get("content-type") ?? "";
    if (
      !/^(application\/x-www-form-urlencoded|multipart\/form-data)/i.test(type)
    ) {
      return {};
    }
    const form = await new Response(this.#body as BodyInit, {
      headers: { "content-type": type },
    }).formData();
    const fields: Record<string, string> = Object.create(null);
    for (const [name, value] of form) {
      fields[name] = typeof value === "string" ? value : value.name;
    }
    return fields;
  }

  /**
   * The request as a standard `Request`: the URL with the request's own
   * scheme and host (as routed), every header, and the body as a stream.
   * A new one each call (a body can be read once).
   */
  toRequest(): Request {
    const wire = this.#wire;
    // The authority the gateway routed by (an absolute-form target's wins
    // over Host), which it checked.
    const host = wire.authority || "localhost";
    // Joined as text: resolved against a base, a target such as
    // `//other.test/x` would change the host.
    const target = wire.fullUrl.startsWith("/") ? wire.fullUrl : wire.path;
    let url: URL;
    try {
      url = new URL(`${wire.scheme}://${host}${target}`);
    } catch {
      url = new URL(`${wire.scheme}://localhost${target}`);
    }
    const bodyless = wire.method === "GET" || wire.method === "HEAD";
    return new Request(url, {
      method: wire.method,
      headers: this.headers,
      body: bodyless ? null : this.#body as BodyInit,
    });
  }

  /** True for a request that upgraded its connection (websockets). */
  isUpgraded(): boolean {
    return this.#wire.upgraded;
  }
}

/**
 * Parses a `Cookie` header; the first value of a repeated name wins.
 *
 * @param header the header's value
 * @returns name → decoded value
 * @example
 * ```ts
 * parseCookies("a=1; b=x%20y"); // { a: "1", b: "x y" }
 * ```
 */
export function parseCookies(header: string): Record<string, string> {
  const cookies: Record<string, string> = Object.create(null);
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (name === "" || Object.hasOwn(cookies, name)) continue;
    let value = part.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) {
      value = value.slice(1, -1);
    }
    try {
      cookies[name] = decodeURIComponent(value);
    } catch {
      cookies[name] = value; // not percent-encoded: keep it as sent
    }
  }
  return cookies;
}
