/**
 * Sessions in the cluster's Redis, behind the same {@linkcode SessionStore}
 * interface and limits as the SQLite and memory stores, so every node reads
 * what any node wrote.
 *
 * Layout, under the cluster's prefix (site and name URI-encoded, so no
 * site's keys can run into another's):
 * - `session:SITE:NAME:ID` — `EXPIRES JSON`, expiring itself at EXPIRES
 *   (`PXAT`, the session's own expiry);
 * - `sessions:SITE` — a sorted set of `NAME:ID` by expiry: the site's count
 *   and its purge;
 * - `session-sites` — the sites that have sessions, for the purge.
 *
 * A new session and the site's count are checked and written in one Lua
 * script, so two nodes cannot both take the last place under the limit.
 *
 * @module
 */

import {
  checkSessionId,
  decodeSessionRecord,
  encodeSessionRecord,
  resolveSessionStoreOptions,
  SessionLimitError,
  sessionLimitMessage,
  type SessionRecord,
  type SessionStore,
  type SessionStoreLimits,
  type SessionStoreOptions,
} from "../supervisor/session_store.ts";
import type { RedisLink } from "./redis_link.ts";

/** Writes a session; refuses a new one when the site is at its limit. */
const SET_SCRIPT = `
local isNew = redis.call('exists', KEYS[1]) == 0
if isNew then
  local live = redis.call('zcount', KEYS[2], '(' .. ARGV[4], '+inf')
  if live >= tonumber(ARGV[5]) then
    return -1
  end
end
redis.call('set', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
redis.call('zadd', KEYS[2], ARGV[6], ARGV[3])
redis.call('sadd', KEYS[3], ARGV[7])
return 1
`;

/**
 * Removes up to ARGV[2] sessions of one site expired at ARGV[1]; forgets
 * the site when it has none left.
 */
const PURGE_SCRIPT = `
local members = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(members) do
  redis.call('zrem', KEYS[1], member)
  redis.call('del', ARGV[3] .. member)
end
if redis.call('zcard', KEYS[1]) == 0 then
  redis.call('srem', KEYS[2], ARGV[4])
end
return #members
`;

/**
 * Opens a session store in the cluster's Redis. Closing it leaves the link
 * open (the cluster owns it).
 *
 * @param link the cluster's link
 * @param options limits, as for the other stores
 * @returns the store
 * @throws {RangeError} when an option is not a positive integer
 */
export function openRedisSessionStore(
  link: RedisLink,
  options: SessionStoreOptions = {},
): SessionStore {
  return new RedisSessionStore(link, resolveSessionStoreOptions(options));
}

class RedisSessionStore implements SessionStore {
  readonly #link: RedisLink;
  readonly #limits: SessionStoreLimits;
  #closed = false;

  constructor(link: RedisLink, limits: SessionStoreLimits) {
    this.#link = link;
    this.#limits = limits;
  }

  /** The data key of a session, and its member in the site's index. */
  #keys(site: string, name: string, id: string) {
    const member = `${encodeURIComponent(name)}:${id}`;
    return {
      data: this.#dataPrefix(site) + member,
      index: this.#link.key("sessions", encodeURIComponent(site)),
      member,
    };
  }

  #dataPrefix(site: string): string {
    return this.#link.key("session", encodeURIComponent(site), "");
  }

  #check(id: string): void {
    if (this.#closed) throw new Error("Session store is closed");
    checkSessionId(id);
  }

  async get(
    site: string,
    name: string,
    id: string,
  ): Promise<SessionRecord | null> {
    return decodeSessionRecord(await this.getJson(site, name, id));
  }

  async getJson(
    site: string,
    name: string,
    id: string,
  ): Promise<{ json: string; expires: number } | null> {
    this.#check(id);
    const keys = this.#keys(site, name, id);
    const stored = await this.#link.run((c) => c.get(keys.data));
    if (typeof stored !== "string") return null;
    const space = stored.indexOf(" ");
    const expires = Number(stored.slice(0, space));
    if (space < 1 || !Number.isFinite(expires)) {
      throw new Error("Session store value is not EXPIRES JSON");
    }
    if (expires <= Date.now()) {
      await this.delete(site, name, id);
      return null;
    }
    return { json: stored.slice(space + 1), expires };
  }

  async set(
    site: string,
    name: string,
    id: string,
    record: SessionRecord,
  ): Promise<number> {
    this.#check(id);
    const { json, expires } = encodeSessionRecord(record, this.#limits);
    const now = Date.now();
    if (expires <= now) {
      await this.delete(site, name, id);
      return 0;
    }
    const keys = this.#keys(site, name, id);
    const written = await this.#link.run((c) =>
      c.eval(SET_SCRIPT, {
        keys: [keys.data, keys.index, this.#link.key("session-sites")],
        arguments: [
          `${expires} ${json}`,
          String(Math.ceil(expires)),
          keys.member,
          String(now),
          String(this.#limits.maxSessionsPerSite),
          String(expires),
          encodeURIComponent(site),
        ],
      })
    );
    if (written === -1) {
      throw new SessionLimitError(
        sessionLimitMessage(site, this.#limits.maxSessionsPerSite),
      );
    }
    return json.length;
  }

  async delete(site: string, name: string, id: string): Promise<void> {
    this.#check(id);
    const keys = this.#keys(site, name, id);
    await this.#link.run((c) =>
      c.multi().del(keys.data).zRem(keys.index, keys.member).exec()
    );
  }

  async purge(now: number = Date.now(), limit = Infinity): Promise<number> {
    if (this.#closed) throw new Error("Session store is closed");
    const sitesKey = this.#link.key("session-sites");
    const sites = await this.#link.run((c) => c.sMembers(sitesKey));
    let removed = 0;
    for (const encoded of sites) {
      if (removed >= limit) break;
      const site = decodeURIComponent(encoded);
      const left = Number.isFinite(limit) ? limit - removed : 1_000_000;
      const n = await this.#link.run((c) =>
        c.eval(PURGE_SCRIPT, {
          keys: [this.#link.key("sessions", encoded), sitesKey],
          arguments: [
            String(now),
            String(left),
            this.#dataPrefix(site),
            encoded,
          ],
        })
      );
      removed += Number(n);
    }
    return removed;
  }

  async count(site: string): Promise<number> {
    if (this.#closed) throw new Error("Session store is closed");
    const index = this.#link.key("sessions", encodeURIComponent(site));
    return await this.#link.run((c) =>
      c.zCount(index, `(${Date.now()}`, "+inf")
    );
  }

  close(): Promise<void> {
    this.#closed = true;
    return Promise.resolve();
  }
}
