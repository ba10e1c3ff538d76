/**
 * A haproxy config shipped in deploy/, made to run in a test: unprivileged,
 * in the foreground, on 127.0.0.1.
 *
 * @module
 */

import assert from "node:assert/strict";

/** `text` with `from` replaced once; fails when `from` is not there. */
export function replaceOnce(text: string, from: string, to: string): string {
  assert.ok(text.includes(from), `expected ${JSON.stringify(from)}`);
  return text.replace(from, to);
}

/**
 * A haproxy config from deploy/ made to run unprivileged in the foreground,
 * on 127.0.0.1:`port`. With `servers` (HOST:PORT each), the backend's
 * `server` lines are replaced by one line per address.
 */
export function localHaproxyConfig(
  cfg: string,
  port: number,
  servers?: string[],
): string {
  cfg = replaceOnce(
    cfg,
    "    log /dev/log local0\n",
    "    log stderr format raw local0\n",
  );
  // This machine's hard FD limit may be below what maxconn needs.
  const maxconn = /^ {4}maxconn \d+\n/m;
  assert.match(cfg, maxconn, "expected a global maxconn");
  cfg = cfg.replace(maxconn, "    maxconn 1000\n");
  cfg = cfg.replace(/ maxconn \d+$/m, " maxconn 500");
  for (
    const line of [
      "    chroot /var/lib/haproxy\n",
      "    user haproxy\n",
      "    group haproxy\n",
      "    daemon\n",
      "    bind :::80 v6only\n",
    ]
  ) cfg = replaceOnce(cfg, line, "");
  if (servers !== undefined) {
    const lines = /^ {4}server \S+ \S+.*\n/gm;
    assert.match(cfg, lines, "expected server lines");
    let first = true;
    cfg = cfg.replace(lines, () => {
      if (!first) return "";
      first = false;
      return servers.map((address, i) => `    server node${i + 1} ${address}\n`)
        .join("");
    });
  }
  return replaceOnce(cfg, "bind :80", `bind 127.0.0.1:${port}`);
}
