/**
 * Turning a request target into the path a site sees: decoded, absolute,
 * without `.` and `..` segments, and refused when it cannot be that.
 *
 * @module
 */

import { MAX_PATH_BYTES } from "../shared/route_limits.ts";

/** A parsed request target. */
export interface Target {
  /** Decoded path without dot segments. */
  path: string;
  /** The query without `?`. */
  query: string;
  /** The target as received (path and query). */
  raw: string;
  /** The URL's scheme: what a site's fetch handler sees. */
  scheme: "http" | "https";
}

/** Why a target is refused: the message goes to the client with a 400. */
export class TargetError extends Error {
  override name = "TargetError";
}

/**
 * Parses the path and query of a request URL.
 *
 * @param url the request URL (absolute, as `Request.url` gives it)
 * @returns the target
 * @throws {TargetError} on bad percent-encoding or a NUL byte
 * @example
 * ```ts
 * parseTarget("http://a.test/x/%2e%2e/y%20z?q=1").path; // "/y z"
 * ```
 */
export function parseTarget(url: string): Target {
  const raw = requestTarget(url);
  const hash = raw.indexOf("#");
  const noHash = hash < 0 ? raw : raw.slice(0, hash);
  const q = noHash.indexOf("?");
  const rawPath = q < 0 ? noHash : noHash.slice(0, q);
  const query = q < 0 ? "" : noHash.slice(q + 1);
  let decoded: string;
  try {
    decoded = decodeURIComponent(rawPath);
  } catch {
    throw new TargetError("The path has invalid percent-encoding");
  }
  if (decoded.includes("\0")) {
    throw new TargetError("The path contains a NUL byte");
  }
  return {
    path: removeDotSegments(decoded),
    query,
    raw: noHash,
    scheme: url.startsWith("https:") ? "https" : "http",
  };
}

/**
 * The request target of an absolute URL: its path and query, as received.
 *
 * @example
 * ```ts
 * requestTarget("http://a.test:8080/x?y=1"); // "/x?y=1"
 * ```
 */
export function requestTarget(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  return start < 0 ? "/" : url.slice(start);
}

/**
 * Resolves `.` and `..` segments and collapses repeated slashes.
 *
 * @example
 * ```ts
 * removeDotSegments("/a/../../b//c/."); // "/b/c/"
 * ```
 */
export function removeDotSegments(path: string): string {
  const out: string[] = [];
  const segments = path.split("/");
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    const last = i === segments.length - 1;
    if (s === "..") {
      out.pop();
      if (last) out.push("");
    } else if (s === ".") {
      if (last) out.push("");
    } else if (s === "") {
      if (last && i > 0) out.push("");
    } else {
      out.push(s);
    }
  }
  return "/" + out.join("/");
}

/** The request target, or why it is refused: 400, or 414 for a path too long. */
export function readTarget(
  url: string,
): Target | { status: 400 | 414; message: string } {
  let target: Target;
  try {
    target = parseTarget(url);
  } catch (err) {
    if (err instanceof TargetError) {
      return { status: 400, message: err.message };
    }
    throw err;
  }
  const query = target.raw.indexOf("?");
  const pathBytes = query < 0 ? target.raw.length : query;
  if (pathBytes > MAX_PATH_BYTES) {
    return {
      status: 414,
      message: `The path is longer than ${MAX_PATH_BYTES} bytes`,
    };
  }
  return target;
}

/**
 * A `Host` header as RFC 9110 §7.2 has it: a registered name or an IP
 * address (IPv6 in brackets), and an optional port; no `/`, `?`, `#`, `@`
 * or spaces.
 */
const HOST_REGEXP =
  /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+;=%]+)(?::[0-9]*)?$/;

/**
 * The host a request is for (RFC 9112 §3.2): the authority of its URL, which
 * Deno takes from an absolute-form target (that wins over `Host`), from
 * HTTP/2's `:authority`, or else from `Host`. Refused (400): more than one
 * `Host` (Deno joins them with a comma), and an HTTP/1 request without one.
 * An HTTP/2 request has no `Host`: over TLS, a missing `Host` is taken as
 * HTTP/2, so there an HTTP/1.1 request without one is routed by the
 * address it was sent to instead.
 *
 * @example
 * ```ts
 * import { requestHost } from "./request_target.ts";
 * const request = new Request("http://a.test/x", { headers: { host: "b.test" } });
 * requestHost(request); // "a.test" (as for GET http://a.test/x, Host: b.test)
 * ```
 */
export function requestHost(
  request: Request,
): string | { status: 400; message: string } {
  const header = request.headers.get("host");
  const url = request.url;
  if (header === null) {
    if (!url.startsWith("https:")) {
      return { status: 400, message: "The request has no Host header" };
    }
  } else if (header.includes(",")) {
    return {
      status: 400,
      message: "The request has more than one Host header",
    };
  } else if (!HOST_REGEXP.test(header)) {
    // Deno builds the URL from it: "a.test/?" would make the path "/".
    return {
      status: 400,
      message: "The Host header is not a host name or address",
    };
  }
  const start = url.indexOf("//") + 2;
  const end = url.indexOf("/", start);
  const authority = url.slice(start, end < 0 ? url.length : end);
  if (authority.includes("@")) {
    return { status: 400, message: "The request's host has user information" };
  }
  return authority;
}
