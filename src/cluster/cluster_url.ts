/**
 * The `--cluster` URL: which Redis a cluster of nodes shares, and how it is
 * shown in logs and errors (never with its password).
 *
 * @module
 */

/** What a valid `--cluster` URL looks like, for error messages. */
export const CLUSTER_URL_SYNTAX =
  "expected redis://HOST:PORT[/DB] or rediss://… (TLS), with an optional " +
  "password as redis://:PASSWORD@HOST:PORT";

/**
 * Checks a `--cluster` URL and returns it normalized.
 *
 * @param text the URL as given
 * @returns the URL, unchanged but for the default port made explicit
 * @throws {RangeError} naming what is wrong, without the password
 * @example
 * ```ts
 * import { checkClusterUrl } from "./cluster_url.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(checkClusterUrl("redis://10.0.0.5/2"), "redis://10.0.0.5:6379/2");
 * assert.throws(() => checkClusterUrl("http://10.0.0.5"), RangeError);
 * ```
 */
export function checkClusterUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new RangeError(CLUSTER_URL_SYNTAX);
  }
  if (url.protocol !== "redis:" && url.protocol !== "rediss:") {
    throw new RangeError(
      `the scheme must be redis: or rediss:, not ${url.protocol}; ${CLUSTER_URL_SYNTAX}`,
    );
  }
  if (url.hostname === "") {
    throw new RangeError(`the URL names no host; ${CLUSTER_URL_SYNTAX}`);
  }
  if (url.search !== "" || url.hash !== "") {
    throw new RangeError(
      `the URL may not have a query or fragment; ${CLUSTER_URL_SYNTAX}`,
    );
  }
  if (url.pathname !== "" && url.pathname !== "/") {
    const db = url.pathname.slice(1);
    if (!/^\d{1,5}$/.test(db)) {
      throw new RangeError(
        `the path must be a database number such as /0, not ${
          JSON.stringify(url.pathname)
        }`,
      );
    }
  }
  if (url.port === "") url.port = "6379";
  return url.href.replace(/\/$/, "");
}

/**
 * The URL as logs and errors may show it: any password replaced by `***`.
 * Text that is not a URL is not shown at all.
 *
 * @param text a `--cluster` URL, valid or not
 * @returns what may be shown
 * @example
 * ```ts
 * import { redactClusterUrl } from "./cluster_url.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   redactClusterUrl("redis://:s3cret@10.0.0.5:6379"),
 *   "redis://:***@10.0.0.5:6379",
 * );
 * ```
 */
export function redactClusterUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return "(not a URL)";
  }
  if (url.password !== "") url.password = "***";
  return url.href.replace(/\/$/, "");
}

/** The environment variable that may hold the cluster's Redis password. */
export const CLUSTER_PASSWORD_ENV = "SANDFLARE_CLUSTER_PASSWORD";

/**
 * The URL with the password from {@linkcode CLUSTER_PASSWORD_ENV} when it
 * has none of its own: a password in the environment is not on the
 * process's command line for every local user to read.
 *
 * @param url a checked `--cluster` URL
 * @param password the variable's value, if set
 * @returns the URL to connect to
 * @example
 * ```ts
 * import { withClusterPassword } from "./cluster_url.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   withClusterPassword("redis://10.0.0.5:6379", "p@ss"),
 *   "redis://:p%40ss@10.0.0.5:6379",
 * );
 * ```
 */
export function withClusterPassword(
  url: string,
  password: string | undefined,
): string {
  const parsed = new URL(url);
  if (password === undefined || password === "" || parsed.password !== "") {
    return url;
  }
  parsed.password = encodeURIComponent(password);
  return parsed.href.replace(/\/$/, "");
}

/** What a valid `--node-id` or `--cluster-prefix` is, for error messages. */
export const NODE_ID_SYNTAX =
  "expected 1 to 100 letters, digits and . _ : - (such as web1:8080)";
export const CLUSTER_PREFIX_SYNTAX =
  "expected 1 to 64 printable ASCII characters without spaces, such as sandflare:";

/**
 * Checks a `--node-id`.
 *
 * @throws {RangeError} when it is not one
 */
export function checkNodeId(text: string): string {
  if (/^[A-Za-z0-9._:-]{1,100}$/.test(text)) return text;
  throw new RangeError(NODE_ID_SYNTAX);
}

/**
 * Checks a `--cluster-prefix`.
 *
 * @throws {RangeError} when it is not one
 */
export function checkClusterPrefix(text: string): string {
  if (/^[\x21-\x7e]{1,64}$/.test(text)) return text;
  throw new RangeError(CLUSTER_PREFIX_SYNTAX);
}
