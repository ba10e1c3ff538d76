/**
 * The operator's log: one line per request on stdout (access log), one clear
 * line per problem on stderr, each naming the site.
 *
 * @module
 */

import { escapeControl } from "./shared/escape.ts";

const encoder = new TextEncoder();

/** Where log lines go; replaceable in tests. */
export interface LogSink {
  out(line: string): void;
  err(line: string): void;
}

function writeLine(file: typeof Deno.stdout, line: string): void {
  const bytes = encoder.encode(line + "\n");
  let offset = 0;
  while (offset < bytes.length) {
    offset += file.writeSync(bytes.subarray(offset));
  }
}

/**
 * Access lines are many: they are gathered and written once per turn of the
 * event loop (one write instead of one per request), and at the latest when
 * 64 KiB have piled up. Problems on stderr are written at once.
 */
let pendingOut: string[] = [];
let pendingBytes = 0;
let flushScheduled = false;

function flushOut(): void {
  flushScheduled = false;
  if (pendingOut.length === 0) return;
  const text = pendingOut.join("\n");
  pendingOut = [];
  pendingBytes = 0;
  writeLine(Deno.stdout, text);
}

function queueOut(line: string): void {
  pendingOut.push(line);
  pendingBytes += line.length + 1;
  if (pendingBytes >= 64 * 1024) flushOut();
  else if (!flushScheduled) {
    flushScheduled = true;
    setTimeout(flushOut, 0);
  }
}

const defaultSink: LogSink = {
  out: queueOut,
  err: (line) => {
    flushOut(); // keep the two streams in order when both go to one place
    writeLine(Deno.stderr, line);
  },
};

/** Writes out the access lines gathered so far (call before exiting). */
export function flushLog(): void {
  flushOut();
}

let sink: LogSink = defaultSink;

/** Replaces the sink (tests); returns the previous one. */
export function setLogSink(next: LogSink): LogSink {
  const previous = sink;
  sink = next;
  return previous;
}

function stamp(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, "Z");
}

function line(level: string, site: string | null, message: string): string {
  const where = site === null ? "" : ` [${escapeControl(site)}]`;
  return `${stamp()} ${level}${where} ${escapeControl(message)}`;
}

/** The logger. */
export const log = {
  /** Something an operator may want to know. */
  info(site: string | null, message: string): void {
    sink.err(line("info", site, message));
  },
  /** Something is wrong but the server goes on. */
  warn(site: string | null, message: string): void {
    sink.err(line("warn", site, message));
  },
  /** Something failed. */
  error(site: string | null, message: string): void {
    sink.err(line("error", site, message));
  },
  /** A line a site's code wrote (console.log and friends). */
  site(site: string, message: string): void {
    sink.err(line("site", site, message));
  },
  /** One access-log line (already formatted). */
  access(text: string): void {
    sink.out(text);
  },
};

/**
 * A site's output, at most `perSecond` lines a second (a burst of twice
 * that); the rest is dropped and counted, so a chatty or hostile site
 * cannot flood the log or the gateway.
 */
export function siteOutput(
  site: string,
  perSecond = 200,
): (line: string) => void {
  let tokens = perSecond * 2;
  let last = Date.now();
  let dropped = 0;
  let report: ReturnType<typeof setTimeout> | null = null;
  return (text) => {
    const now = Date.now();
    tokens = Math.min(
      perSecond * 2,
      tokens + ((now - last) / 1000) * perSecond,
    );
    last = now;
    if (tokens >= 1) {
      tokens--;
      log.site(site, text);
      return;
    }
    dropped++;
    report ??= setTimeout(() => {
      log.warn(
        site,
        `Dropped ${dropped} line(s) of site output (over ${perSecond} lines a second)`,
      );
      dropped = 0;
      report = null;
    }, 1000);
  };
}

/**
 * A problem that can repeat many times a second (a client refused, a reply
 * refused): the first occurrence per site is logged at once, and the
 * repeats within the next `everyMs` as one summary line.
 */
export class RepeatedWarning {
  readonly #what: string;
  readonly #everyMs: number;
  #repeats = new Map<string, { count: number; last: string }>();

  constructor(what: string, everyMs = 10_000) {
    this.#what = what;
    this.#everyMs = everyMs;
  }

  /**
   * Notes one occurrence for `site`, with what sets it apart; occurrences
   * with another `key` are counted apart (by default one count per site).
   */
  note(site: string, detail: string, key: string = site): void {
    const known = this.#repeats.get(key);
    if (known !== undefined) {
      known.count++;
      known.last = detail;
      return;
    }
    log.warn(site, `${this.#what}: ${detail}`);
    this.#repeats.set(key, { count: 0, last: detail });
    const timer = setTimeout(() => {
      const repeated = this.#repeats.get(key);
      this.#repeats.delete(key);
      if (repeated !== undefined && repeated.count > 0) {
        log.warn(
          site,
          `${this.#what}: ${repeated.count} more in ${
            this.#everyMs / 1000
          } s (the last: ${repeated.last})`,
        );
      }
    }, this.#everyMs);
    Deno.unrefTimer(timer);
  }
}
