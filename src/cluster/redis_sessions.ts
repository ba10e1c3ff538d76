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
 * - `session-sizes:SITE` — the bytes of each of its sessions, and
 *   `session-bytes` — each site's total: a site's share of Redis's memory
 *   is capped ({@linkcode REDIS_SESSION_BYTES_PER_SITE});
 * - `session-sites` — the sites that have sessions, for the purge.
 *
 * A session and the site's count and bytes are checked and written in one
 * Lua script, so two nodes cannot both take the last place under a limit.
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

/**
 * Removes one session (a member of the site's index): its data, its index
 * entry and its bytes from the site's total. `remove(member)`, in Lua, for
 * the scripts below: KEYS[1] index, KEYS[2] sizes, KEYS[3] totals; ARGV[1]
 * the data keys' prefix, ARGV[2] the site.
 */
const REMOVE_LUA = `
local function remove(member)
  local size = tonumber(redis.call('hget', KEYS[2], member) or '0')
  redis.call('zrem', KEYS[1], member)
  redis.call('hdel', KEYS[2], member)
  redis.call('del', ARGV[1] .. member)
  if size > 0 then redis.call('hincrby', KEYS[3], ARGV[2], -size) end
end
`;

/**
 * Writes a session (ARGV[3] member, ARGV[4] value, ARGV[5] PXAT, ARGV[6]
 * expiry score, ARGV[7] now); refuses a new one when the site has
 * ARGV[8] live sessions (-1), and any that would take the site's bytes over
 * ARGV[9] (-2), once its expired sessions are removed. KEYS[4] is the set
 * of sites.
 */
const SET_SCRIPT = REMOVE_LUA + `
local member, value = ARGV[3], ARGV[4]
local dataKey = ARGV[1] .. member
local size = string.len(value)
local old = tonumber(redis.call('hget', KEYS[2], member) or '0')
local function total()
  return tonumber(redis.call('hget', KEYS[3], ARGV[2]) or '0') - old + size
end
local function reclaim()
  local expired = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[7], 'LIMIT', 0, 1000)
  for _, m in ipairs(expired) do
    if m ~= member then remove(m) end
  end
end
if redis.call('exists', dataKey) == 0 then
  if redis.call('zcount', KEYS[1], '(' .. ARGV[7], '+inf') >= tonumber(ARGV[8]) then
    return -1
  end
end
if total() > tonumber(ARGV[9]) then
  reclaim()
  if total() > tonumber(ARGV[9]) then return -2 end
end
redis.call('set', dataKey, value, 'PXAT', ARGV[5])
redis.call('zadd', KEYS[1], ARGV[6], member)
redis.call('hset', KEYS[2], member, size)
redis.call('hincrby', KEYS[3], ARGV[2], size - old)
redis.call('sadd', KEYS[4], ARGV[2])
return 1
`;

/** Removes one session (ARGV[3] member). */
const DELETE_SCRIPT = REMOVE_LUA + `
remove(ARGV[3])
return 1
`;

/**
 * Removes up to ARGV[4] sessions of one site expired at ARGV[3]; forgets
 * the site when it has none left (KEYS[4] the set of sites).
 */
const PURGE_SCRIPT = REMOVE_LUA + `
local members = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
for _, member in ipairs(members) do remove(member) end
if redis.call('zcard', KEYS[1]) == 0 then
  redis.call('srem', KEYS[4], ARGV[2])
  redis.call('hdel', KEYS[3], ARGV[2])
  redis.call('del', KEYS[2])
end
return #members
`;

/** Options of {@linkcode openRedisSessionStore}. */
export interface RedisSessionStoreOptions extends SessionStoreOptions {
  /**
   * Bytes of session data one site may keep in Redis, which holds it in
   * memory: with the defaults a site could otherwise hold 100,000 × 64 KiB.
   * @default {64 MiB}
   */
  maxBytesPerSite?: number;
}

/** The default of {@linkcode RedisSessionStoreOptions.maxBytesPerSite}. */
export const REDIS_SESSION_BYTES_PER_SITE = 64 * 1024 * 1024;

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
  options: RedisSessionStoreOptions = {},
): SessionStore {
  const { maxBytesPerSite = REDIS_SESSION_BYTES_PER_SITE, ...common } = options;
  if (!Number.isSafeInteger(maxBytesPerSite) || maxBytesPerSite < 1) {
    throw new RangeError(
      `Option "maxBytesPerSite" must be a positive integer, not ${
        String(maxBytesPerSite)
      }`,
    );
  }
  return new RedisSessionStore(
    link,
    resolveSessionStoreOptions(common),
    maxBytesPerSite,
  );
}

class RedisSessionStore implements SessionStore {
  readonly #link: RedisLink;
  readonly #limits: SessionStoreLimits;
  readonly #maxBytes: number;
  #closed = false;

  constructor(link: RedisLink, limits: SessionStoreLimits, maxBytes: number) {
    this.#link = link;
    this.#limits = limits;
    this.#maxBytes = maxBytes;
  }

  /**
   * The keys and first arguments every script takes: the site's index,
   * the sizes of its sessions, the totals of every site; the data keys'
   * prefix and the site.
   */
  #scriptKeys(site: string): { keys: string[]; arguments: string[] } {
    const encoded = encodeURIComponent(site);
    return {
      keys: [
        this.#link.key("sessions", encoded),
        this.#link.key("session-sizes", encoded),
        this.#link.key("session-bytes"),
        this.#link.key("session-sites"),
      ],
      arguments: [this.#dataPrefix(site), encoded],
    };
  }

  /** A session's member in its site's index: its name and id. */
  #member(name: string, id: string): string {
    return `${encodeURIComponent(name)}:${id}`;
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
    const dataKey = this.#dataPrefix(site) + this.#member(name, id);
    const stored = await this.#link.run((c) => c.get(dataKey));
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
    const { keys, arguments: head } = this.#scriptKeys(site);
    const member = this.#member(name, id);
    const written = await this.#link.run((c) =>
      c.eval(SET_SCRIPT, {
        keys,
        arguments: [
          ...head,
          member,
          `${expires} ${json}`,
          String(Math.ceil(expires)),
          String(expires),
          String(now),
          String(this.#limits.maxSessionsPerSite),
          String(this.#maxBytes),
        ],
      })
    );
    if (written === -1) {
      throw new SessionLimitError(
        sessionLimitMessage(site, this.#limits.maxSessionsPerSite),
      );
    }
    if (written === -2) {
      throw new SessionLimitError(
        `Site ${JSON.stringify(site)} already keeps ${
          inKiB(this.#maxBytes)
        } of sessions in the cluster store, its limit`,
      );
    }
    return json.length;
  }

  async delete(site: string, name: string, id: string): Promise<void> {
    this.#check(id);
    const { keys, arguments: head } = this.#scriptKeys(site);
    await this.#link.run((c) =>
      c.eval(DELETE_SCRIPT, {
        keys,
        arguments: [...head, this.#member(name, id)],
      })
    );
  }

  async purge(now: number = Date.now(), limit = Infinity): Promise<number> {
    if (this.#closed) throw new Error("Session store is closed");
    const sitesKey = this.#link.key("session-sites");
    const sites = await this.#link.run((c) => c.sMembers(sitesKey));
    let removed = 0;
    for (const encoded of sites) {
      if (removed >= limit) break;
      const { keys, arguments: head } = this.#scriptKeys(
        decodeURIComponent(encoded),
      );
      const left = Number.isFinite(limit) ? limit - removed : 1_000_000;
      const n = await this.#link.run((c) =>
        c.eval(PURGE_SCRIPT, {
          keys,
          arguments: [...head, String(now), String(left)],
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

/** Bytes as whole MiB or KiB, for a message. */
function inKiB(bytes: number): string {
  return bytes % (1024 * 1024) === 0
    ? `${bytes / 1024 / 1024} MiB`
    : `${Math.round(bytes / 1024)} KiB`;
}
