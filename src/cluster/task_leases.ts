/**
 * Scheduler tasks once per cluster: a site's tasks run on the node that
 * holds the site's lease in Redis, `tasks:SITE` = node id, which expires
 * {@linkcode LEASE_MS} after it was last renewed. Every node tries every
 * {@linkcode RENEW_MS} to renew the leases it holds and to take those nobody
 * holds, in one script for all its sites.
 *
 * A holder counts its lease as lost 2 s before Redis
 * could give it to another node, so two nodes never run a site's tasks at
 * once: while Redis is away every node pauses its tasks. When a holder
 * dies its leases expire and another node takes them within
 * LEASE_MS + RENEW_MS (6 s); one that stops releases them and another takes
 * them within RENEW_MS.
 *
 * @module
 */

import { log } from "../log.ts";
import type { RedisLink } from "./redis_link.ts";

/** How long a lease lives in Redis after its last renewal. */
export const LEASE_MS = 5000;
/** How often leases are renewed and free ones taken. */
export const RENEW_MS = 1000;
/** A holder stops this long before its lease could pass to another node. */
const SAFETY_MS = 2000;

/**
 * For each site (KEYS), renew the lease when this node (ARGV[1]) holds it,
 * or take it when nobody does. Returns 1 or 0 per site.
 */
const CLAIM_SCRIPT = `
local held = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('get', key)
  if owner == ARGV[1] then
    redis.call('pexpire', key, ARGV[2])
    held[i] = 1
  elseif owner == false then
    redis.call('set', key, ARGV[1], 'PX', ARGV[2])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
`;

/** Deletes the leases (KEYS) this node (ARGV[1]) holds. */
const RELEASE_SCRIPT = `
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then
    redis.call('del', key)
    n = n + 1
  end
end
return n
`;

/** Called when this node may start (true) or must pause (false) a site's tasks. */
export type LeaseChange = (site: string, run: boolean) => void;

/** The leases of one node. */
export class TaskLeases {
  readonly #link: RedisLink;
  readonly #onChange: LeaseChange;
  /** Sites with tasks on this node. */
  readonly #wanted = new Set<string>();
  /** Sites whose lease this node holds → until when it may run them. */
  readonly #held = new Map<string, number>();
  #timer: ReturnType<typeof setInterval> | null = null;
  #claiming = false;

  constructor(link: RedisLink, onChange: LeaseChange) {
    this.#link = link;
    this.#onChange = onChange;
  }

  /** Starts claiming every second. */
  start(): void {
    this.#timer ??= setInterval(() => void this.claim(), RENEW_MS);
  }

  /** Whether this node runs `site`'s tasks now. */
  holds(site: string): boolean {
    const until = this.#held.get(site);
    return until !== undefined && until > Date.now();
  }

  /** The sites whose tasks run on this node, for /stats. */
  get held(): string[] {
    return [...this.#held.keys()].filter((site) => this.holds(site)).sort();
  }

  /**
   * Declares whether `site` has tasks on this node. A site that no longer
   * has any releases its lease.
   * @returns whether they may run here now
   */
  want(site: string, wanted: boolean): boolean {
    if (wanted === this.#wanted.has(site)) return this.holds(site);
    if (wanted) {
      this.#wanted.add(site);
      void this.claim();
      return false;
    }
    this.#wanted.delete(site);
    if (this.#held.delete(site)) void this.#release([site]);
    return false;
  }

  /** Renews held leases and takes free ones; pauses those it lost. */
  async claim(): Promise<void> {
    if (this.#claiming) return;
    this.#claiming = true;
    const sites = [...this.#wanted];
    const askedAt = Date.now();
    try {
      this.#expire(askedAt);
      if (sites.length === 0) return;
      const reply = await this.#link.run((c) =>
        c.eval(CLAIM_SCRIPT, {
          keys: sites.map((site) => this.#key(site)),
          arguments: [this.#link.nodeId, String(LEASE_MS)],
        })
      );
      const held = Array.isArray(reply) ? reply : [];
      sites.forEach((site, i) => {
        if (!this.#wanted.has(site)) return;
        if (Number(held[i]) === 1) {
          const was = this.holds(site);
          // Counted from when it was asked: the reply may have been slow.
          this.#held.set(site, askedAt + LEASE_MS - SAFETY_MS);
          if (!was) {
            log.info(site, "Scheduler tasks run on this node");
            this.#onChange(site, true);
          }
        } else if (this.#held.delete(site)) {
          log.warn(site, "Scheduler tasks paused: another node holds them");
          this.#onChange(site, false);
        }
      });
    } catch {
      // Redis is away: leases run out on their own (#expire).
    } finally {
      this.#claiming = false;
    }
  }

  /** Pauses sites whose lease may have passed to another node. */
  #expire(now: number): void {
    for (const [site, until] of this.#held) {
      if (until > now) continue;
      this.#held.delete(site);
      log.warn(
        site,
        "Scheduler tasks paused: the lease could not be renewed " +
          "(the cluster store is away)",
      );
      this.#onChange(site, false);
    }
  }

  /** Stops claiming and hands every held lease back, for a clean stop. */
  async stop(): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    const held = [...this.#held.keys()];
    this.#held.clear();
    this.#wanted.clear();
    await this.#release(held);
  }

  async #release(sites: string[]): Promise<void> {
    if (sites.length === 0) return;
    try {
      await this.#link.run((c) =>
        c.eval(RELEASE_SCRIPT, {
          keys: sites.map((site) => this.#key(site)),
          arguments: [this.#link.nodeId],
        })
      );
    } catch {
      // It expires by itself.
    }
  }

  #key(site: string): string {
    return this.#link.key("tasks", encodeURIComponent(site));
  }
}
