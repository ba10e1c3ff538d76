/**
 * The response object a page callback writes to (`res`), and the signal that
 * `res.halt()` throws.
 *
 * @module
 */

import type { WireReply } from "../protocol/messages.ts";
import type { SafeHtml } from "./html.ts";

/** Options of `res.setCookie`. */
export interface CookieOptions {
  path?: string;
  domain?: string;
  /** Seconds; 0 or less deletes the cookie. */
  maxAge?: number;
  httpOnly?: boolean;
  secure?: boolean;
  sameSite?: "Strict" | "Lax" | "None";
}

/** Options of `res.setFile`. */
export interface SetFileOptions {
  /** When the path is a folder, list it through the `ListDirectory` hook. */
  listDirectory?: boolean;
}

/** Thrown by `res.halt()`; ends the callback and renders the error page. */
export class HaltSignal extends Error {
  override name = "HaltSignal";
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

const TOKEN_REGEXP = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const BAD_VALUE_REGEXP = /[\0\r\n]/;
const encoder = new TextEncoder();

function checkHeader(name: string, value: string): void {
  if (!TOKEN_REGEXP.test(name)) {
    throw new TypeError(`Invalid header name ${JSON.stringify(name)}`);
  }
  if (BAD_VALUE_REGEXP.test(value)) {
    throw new TypeError(
      `Invalid value for header "${name}": it contains a NUL, CR or LF`,
    );
  }
}

/** The name of the cookie a `Set-Cookie` value sets. */
function cookieName(header: string): string {
  const eq = header.indexOf("=");
  return (eq < 0 ? header : header.slice(0, eq)).trim();
}

/** What a page callback builds; `res` in the script API. */
export class PageResponse {
  /** The status code to send. @default {200} */
  status = 200;
  #headers: [string, string][] = [];
  #chunks: Uint8Array[] = [];
  #size = 0;
  #file: { path: string; listDirectory: boolean } | null = null;
  #stream: ReadableStream<Uint8Array> | null = null;

  /** Appends text, markup from `html`, or bytes to the body. */
  append(data: string | Uint8Array | SafeHtml): void {
    const bytes = data instanceof Uint8Array
      ? data
      : encoder.encode(String(data));
    this.#chunks.push(bytes);
    this.#size += bytes.length;
  }

  /** Replaces the body. */
  setReply(data: string | Uint8Array | SafeHtml): void {
    this.clearContent();
    this.append(data);
  }

  /** Resets status, headers, body and any file answer. */
  clear(): void {
    this.status = 200;
    this.#headers = [];
    this.clearContent();
  }

  /** Empties the body (and drops a pending `setFile` or stream). */
  clearContent(): void {
    this.#chunks = [];
    this.#size = 0;
    this.#file = null;
    if (this.#stream !== null) void this.#stream.cancel().catch(() => {});
    this.#stream = null;
  }

  /**
   * Answers with a stream: each chunk reaches the client as the site
   * produces it (server-sent events, say), read only as fast as the client
   * takes them. Replaces any body written so far.
   */
  stream(body: ReadableStream<Uint8Array>): void {
    if (!(body instanceof ReadableStream)) {
      throw new TypeError("res.stream() takes a ReadableStream of Uint8Array");
    }
    this.clearContent();
    this.#stream = body;
  }

  /** The stream set by `stream()`, if any. */
  get streamBody(): ReadableStream<Uint8Array> | null {
    return this.#stream;
  }

  /**
   * Sets a header, replacing any earlier value of the same name; for
   * `Set-Cookie`, only the earlier cookie of the same name (as `setCookie`).
   */
  setHeader(name: string, value: string | number): void {
    const text = String(value);
    checkHeader(name, text);
    if (name.toLowerCase() === "set-cookie") {
      this.#replaceCookie(text);
      return;
    }
    this.removeHeader(name);
    this.#headers.push([name, text]);
  }

  /** Adds a `Set-Cookie` header, dropping an earlier one for the same cookie. */
  #replaceCookie(header: string): void {
    const name = cookieName(header);
    this.#headers = this.#headers.filter(([n, v]) =>
      n.toLowerCase() !== "set-cookie" || cookieName(v) !== name
    );
    this.#headers.push(["Set-Cookie", header]);
  }

  /** The `Set-Cookie` headers set so far. */
  get cookies(): string[] {
    return this.#headers.filter(([n]) => n.toLowerCase() === "set-cookie")
      .map(([, v]) => v);
  }

  /** Adds a value of a header, keeping those it has (`Set-Cookie`, say). */
  appendHeader(name: string, value: string): void {
    const text = String(value);
    checkHeader(name, text);
    this.#headers.push([name, text]);
  }

  /** Removes every value of a header. */
  removeHeader(name: string): void {
    const lower = name.toLowerCase();
    this.#headers = this.#headers.filter(([n]) => n.toLowerCase() !== lower);
  }

  /** The current value of a header, or null. */
  getHeader(name: string): string | null {
    const lower = name.toLowerCase();
    for (const [n, v] of this.#headers) if (n.toLowerCase() === lower) return v;
    return null;
  }

  /** Adds a `Set-Cookie` header. */
  setCookie(name: string, value: string, options: CookieOptions = {}): void {
    if (!TOKEN_REGEXP.test(name)) {
      throw new TypeError(`Invalid cookie name ${JSON.stringify(name)}`);
    }
    let cookie = `${name}=${encodeURIComponent(value)}`;
    if (options.path !== undefined) cookie += `; Path=${options.path}`;
    if (options.domain !== undefined) cookie += `; Domain=${options.domain}`;
    if (options.maxAge !== undefined) {
      cookie += `; Max-Age=${Math.max(0, Math.floor(options.maxAge))}`;
    }
    if (options.httpOnly) cookie += "; HttpOnly";
    if (options.secure) cookie += "; Secure";
    if (options.sameSite !== undefined) {
      cookie += `; SameSite=${options.sameSite}`;
    }
    checkHeader("Set-Cookie", cookie);
    // One Set-Cookie per cookie name: a later call replaces an earlier one.
    this.#replaceCookie(cookie);
  }

  /** Replaces the body with `value` as JSON and sets `Content-Type`. */
  json(value: unknown): void {
    this.setHeader("Content-Type", "application/json; charset=utf-8");
    this.setReply(JSON.stringify(value));
  }

  /**
   * Stops the callback and answers with the error page for `code`.
   * @throws {HaltSignal} always
   */
  halt(code: number, reason?: string): never {
    if (!Number.isInteger(code) || code < 400 || code > 599) {
      throw new RangeError(
        `halt() takes a status from 400 to 599, got ${code}`,
      );
    }
    throw new HaltSignal(code, reason ?? "");
  }

  /**
   * Answers with a file of the site; `path` is relative to the site folder.
   * The gateway checks that it stays inside the site before sending it.
   */
  setFile(path: string, options: SetFileOptions = {}): void {
    if (typeof path !== "string" || path.length === 0) {
      throw new TypeError("setFile() takes a path relative to the site folder");
    }
    this.clearContent();
    this.#file = { path, listDirectory: options.listDirectory ?? false };
  }

  /** The file set by `setFile`, if any. */
  get file(): { path: string; listDirectory: boolean } | null {
    return this.#file;
  }

  /** True when a body was written, or a file or stream was set. */
  get hasContent(): boolean {
    return this.#size > 0 || this.#file !== null || this.#stream !== null;
  }

  /**
   * The reply and body to send to the gateway (a stream's body is sent
   * apart). `defaultType`: add `Content-Type: text/html` when none is set.
   */
  toWire(defaultType = true): { reply: WireReply; body: Uint8Array } {
    const status = this.status;
    if (!Number.isInteger(status) || status < 200 || status > 599) {
      throw new RangeError(
        `res.status must be an integer from 200 to 599, got ${String(status)}`,
      );
    }
    const headers: string[] = [];
    let hasType = false;
    for (const [name, value] of this.#headers) {
      if (name.toLowerCase() === "content-type") hasType = true;
      headers.push(name, value);
    }
    if (this.#file !== null) {
      return {
        reply: {
          kind: "file",
          status: this.status,
          headers,
          path: this.#file.path,
          listDirectory: this.#file.listDirectory,
        },
        body: new Uint8Array(0),
      };
    }
    if (!hasType && defaultType) {
      headers.push("Content-Type", "text/html; charset=utf-8");
    }
    return {
      reply: { kind: "body", status: this.status, headers },
      body: this.#body(),
    };
  }

  #body(): Uint8Array {
    if (this.#chunks.length === 1) {
      const only = this.#chunks[0]!;
      // A standalone buffer can be transferred without a copy.
      if (only.byteOffset === 0 && only.byteLength === only.buffer.byteLength) {
        return only;
      }
    }
    const out = new Uint8Array(this.#size);
    let offset = 0;
    for (const chunk of this.#chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }
}
