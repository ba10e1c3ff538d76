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
 * on 127.0.0.1:`port`. With `servers` (HOST:PORT each, as many as the
 * shipped config has nodes), the nodes' addresses are replaced by these.
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
    // Each address of the shipped server lines, in order of first use, is
    // replaced by the next of `servers` (a node's backup line goes along).
    const shipped = [
      ...new Set(
        [...cfg.matchAll(/^ {4}server \S+ (\S+)/gm)].map((m) => m[1]!),
      ),
    ];
    assert.equal(shipped.length, servers.length, "one address per node");
    shipped.forEach((address, i) => {
      cfg = cfg.replaceAll(` ${address}`, ` ${servers[i]}`);
    });
  }
  return replaceOnce(cfg, "bind :80", `bind 127.0.0.1:${port}`);
}
