/**
 * The access-log line: common log format plus duration and site.
 *
 * @module
 */

import { escapeControl } from "../shared/escape.ts";
import { MONTH_NAMES as MONTHS } from "./conditional.ts";

function pad(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/**
 * A date as the common log format writes it, in UTC.
 *
 * @example
 * ```ts
 * clfDate(new Date(0)); // "01/Jan/1970:00:00:00 +0000"
 * ```
 */
export function clfDate(date: Date): string {
  // Many requests share a second: format each second once.
  const second = Math.floor(date.getTime() / 1000);
  if (second === lastSecond) return lastText;
  lastSecond = second;
  return lastText = `${pad(date.getUTCDate())}/${
    MONTHS[date.getUTCMonth()]
  }/${date.getUTCFullYear()}:${pad(date.getUTCHours())}:${
    pad(date.getUTCMinutes())
  }:${pad(date.getUTCSeconds())} +0000`;
}

let lastSecond = -1;
let lastText = "";

/** One request as logged. */
export interface AccessEntry {
  peer: string;
  time: Date;
  method: string;
  target: string;
  status: number;
  /** Body bytes, or null when not known (a stream). */
  bytes: number | null;
  ms: number;
  site: string;
}

/**
 * Formats one access-log line. Control characters and quotes in the target
 * are escaped so a request cannot forge log lines.
 *
 * @example
 * ```ts
 * accessLine({ peer: "127.0.0.1", time: new Date(0), method: "GET", target: "/",
 *   status: 200, bytes: 5, ms: 1.5, site: "root" });
 * // '127.0.0.1 - - [01/Jan/1970:00:00:00 +0000] "GET / HTTP/1.1" 200 5 1.5ms root'
 * ```
 */
export function accessLine(e: AccessEntry): string {
  const target = e.target.length > 2048
    ? `${e.target.slice(0, 2048)}…`
    : e.target;
  return `${e.peer} - - [${clfDate(e.time)}] "${e.method} ${
    sanitize(target)
  } HTTP/1.1" ${e.status} ${e.bytes ?? "-"} ${e.ms.toFixed(1)}ms ${
    escapeControl(e.site)
  }`;
}

function sanitize(text: string): string {
  return text.replace(
    // deno-lint-ignore no-control-regex -- escaping control characters is the point
    /[\x00-\x1f\x7f-\x9f"\\\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => {
      const code = c.charCodeAt(0);
      return code <= 0xff
        ? `\\x${code.toString(16).padStart(2, "0")}`
        : `\\u${code.toString(16).padStart(4, "0")}`;
    },
  );
}
