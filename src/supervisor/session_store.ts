/**
 * Session storage the gateway keeps on the sites' behalf. Sessions are keyed
 * by (site, cookie name, id), so one site never sees another's sessions, even
 * with the same name and id.
 *
 * Every store sits behind the small {@linkcode SessionStore} interface, so a
 * deployment can swap in an external store. Two come with Sandflare: a SQLite
 * file ({@linkcode openSqliteSessionStore}), which survives a restart, and a
 * map in memory ({@linkcode createMemorySessionStore}), which does not. Both
 * store the data as JSON text and hand back a fresh copy whose objects have
 * no prototype, so a `"__proto__"` key is an ordinary key.
 *
 * @module
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { DatabaseSync, type StatementSync } from "node:sqlite";

/**
 * One session: its data and when it expires.
 *
 * @example
 * ```ts
 * import type { SessionRecord } from "./session_store.ts";
 *
 * const record: SessionRecord = {
 *   data: { user: "ada" },
 *   expires: Date.now() + 3_600_000,
 * };
 * ```
 */
export interface SessionRecord {
  /** A plain JSON object. */
  data: Record<string, unknown>;
  /** When the session expires, in milliseconds since the epoch. */
  expires: number;
}

/**
 * Where sessions live. A session is live while `expires` is later than now.
 *
 * @example
 * ```ts
 * import {
 *   createMemorySessionStore,
 *   type SessionStore,
 * } from "./session_store.ts";
 *
 * const store: SessionStore = createMemorySessionStore();
 * store.close();
 * ```
 */
export interface SessionStore {
  /**
   * The live (not expired) session, or null.
   *
   * @throws {TypeError} when `id` is not a session id
   */
  get(site: string, name: string, id: string): SessionRecord | null;
  /**
   * The live session's data as the JSON text it is stored as, or null: for
   * a caller that only passes it on (the gateway to a site), unparsed.
   *
   * @throws {TypeError} when `id` is not a session id
   */
  getJson(
    site: string,
    name: string,
    id: string,
  ): { json: string; expires: number } | null;
  /**
   * Creates or replaces a session. A record that has already expired
   * removes the session instead.
   *
   * @throws {TypeError} when `id` is not a session id, `data` is not a plain
   * JSON object or `expires` is not a finite number
   * @throws {SessionLimitError} when a limit is hit
   * @returns the bytes stored (the data's JSON), 0 when it removed the session
   */
  set(site: string, name: string, id: string, record: SessionRecord): number;
  /**
   * Removes a session, if there is one.
   *
   * @throws {TypeError} when `id` is not a session id
   */
  delete(site: string, name: string, id: string): void;
  /**
   * Removes expired sessions, at most `limit` of them (a caller that must
   * not stall calls it again until it removes fewer); returns how many.
   */
  purge(now?: number, limit?: number): number;
  /** Live sessions of a site (for /stats). */
  count(site: string): number;
  /** Releases the store; it cannot be used afterwards. */
  close(): void;
}

/**
 * A session store limit was hit. The message names the limit and its value.
 *
 * @example
 * ```ts
 * import {
 *   createMemorySessionStore,
 *   newSessionId,
 *   SessionLimitError,
 * } from "./session_store.ts";
 * import assert from "node:assert/strict";
 *
 * const store = createMemorySessionStore({ maxDataBytes: 16 });
 * const record = { data: { text: "too long for the limit" }, expires: Date.now() + 1000 };
 * assert.throws(() => store.set("blog", "sid", newSessionId(), record), SessionLimitError);
 * store.close();
 * ```
 */
export class SessionLimitError extends Error {
  override name = "SessionLimitError";
}

/**
 * Limits of a session store.
 *
 * @example
 * ```ts
 * import type { SessionStoreOptions } from "./session_store.ts";
 *
 * const options: SessionStoreOptions = { maxDataBytes: 4096, maxSessionsPerSite: 1000 };
 * ```
 */
export interface SessionStoreOptions {
  /** Largest session data, as UTF-8 bytes of its JSON. @default {65536} */
  maxDataBytes?: number;
  /** Most live sessions one site may have. @default {100000} */
  maxSessionsPerSite?: number;
}

/** {@linkcode SessionStoreOptions} with every default applied. */
interface Limits {
  maxDataBytes: number;
  maxSessionsPerSite: number;
}

/** A validated record, ready to store. */
interface EncodedRecord {
  json: string;
  expires: number;
}

const SESSION_ID_REGEXP = /^[0-9a-f]{32}$/;
const SCHEMA_VERSION = 1;
const ENCODER = new TextEncoder();

/**
 * A new session id: 128 random bits from `crypto.getRandomValues`, as 32
 * lower-case hex characters.
 *
 * @returns the id
 * @example
 * ```ts
 * import { isSessionId, newSessionId } from "./session_store.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(isSessionId(newSessionId()));
 * ```
 */
export function newSessionId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Whether `text` has the form of a session id: exactly 32 lower-case hex
 * characters.
 *
 * @param text a candidate, such as a cookie value
 * @returns true when it is a session id
 * @example
 * ```ts
 * import { isSessionId } from "./session_store.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isSessionId("0123456789abcdef0123456789abcdef"), true);
 * assert.equal(isSessionId("0123456789ABCDEF0123456789ABCDEF"), false);
 * ```
 */
export function isSessionId(text: string): boolean {
  return typeof text === "string" && SESSION_ID_REGEXP.test(text);
}

/**
 * Opens (or creates) a SQLite session store. Creates the parent folder and
 * the schema and uses WAL mode. Sessions survive a restart.
 *
 * @param file path of the database file
 * @param options limits
 * @returns the store; call `close()` when done
 * @throws {RangeError} when an option is not a positive integer
 * @example
 * ```ts
 * import { newSessionId, openSqliteSessionStore } from "./session_store.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = Deno.makeTempDirSync();
 * const store = openSqliteSessionStore(`${dir}/data/sessions.db`);
 * const id = newSessionId();
 * store.set("blog", "sid", id, { data: { user: "ada" }, expires: Date.now() + 60_000 });
 * assert.equal(store.get("blog", "sid", id)?.data.user, "ada");
 * store.close();
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function openSqliteSessionStore(
  file: string,
  options: SessionStoreOptions = {},
): SessionStore {
  const limits = resolveOptions(options);
  mkdirSync(dirname(file), { recursive: true });
  const db = new DatabaseSync(file);
  try {
    createSchema(db, file);
    return new SqliteSessionStore(db, limits);
  } catch (err) {
    db.close();
    throw err;
  }
}

/**
 * Creates a session store in memory. Sessions are lost when the process
 * ends; for tests and single-process development.
 *
 * @param options limits
 * @returns the store
 * @throws {RangeError} when an option is not a positive integer
 * @example
 * ```ts
 * import { createMemorySessionStore, newSessionId } from "./session_store.ts";
 * import assert from "node:assert/strict";
 *
 * const store = createMemorySessionStore({ maxSessionsPerSite: 10 });
 * const id = newSessionId();
 * store.set("blog", "sid", id, { data: { n: 1 }, expires: Date.now() + 60_000 });
 * assert.equal(store.count("blog"), 1);
 * assert.equal(store.get("shop", "sid", id), null);
 * store.close();
 * ```
 */
export function createMemorySessionStore(
  options: SessionStoreOptions = {},
): SessionStore {
  return new MemorySessionStore(resolveOptions(options));
}

function resolveOptions(options: SessionStoreOptions): Limits {
  const { maxDataBytes = 64 * 1024, maxSessionsPerSite = 100_000 } = options;
  checkPositiveInteger("maxDataBytes", maxDataBytes);
  checkPositiveInteger("maxSessionsPerSite", maxSessionsPerSite);
  return { maxDataBytes, maxSessionsPerSite };
}

function checkPositiveInteger(option: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(
      `Option "${option}" must be a positive integer, not ${String(value)}`,
    );
  }
}

function checkId(id: string): void {
  if (isSessionId(id)) return;
  const shown = typeof id === "string"
    ? JSON.stringify(id.slice(0, 40))
    : typeof id;
  throw new TypeError(
    `Session id ${shown} is not valid: expected 32 lower-case hex characters`,
  );
}

function checkOpen(closed: boolean): void {
  if (closed) throw new Error("Session store is closed");
}

/** Validates a record for `set` and turns its data into JSON. */
function encodeRecord(record: SessionRecord, limits: Limits): EncodedRecord {
  const { data, expires } = record;
  if (typeof expires !== "number" || !Number.isFinite(expires)) {
    throw new TypeError(
      `Session expiry must be a finite number of milliseconds, not ${
        describe(expires)
      }`,
    );
  }
  if (!isPlainObject(data)) {
    throw new TypeError(
      `Session data must be a plain object, not ${describe(data)}`,
    );
  }
  const json = JSON.stringify(data, checkJsonValue);
  const bytes = ENCODER.encode(json).byteLength;
  if (bytes > limits.maxDataBytes) {
    throw new SessionLimitError(
      `Session data is ${bytes} bytes of JSON, over the maxDataBytes limit of ${limits.maxDataBytes}`,
    );
  }
  return { json, expires };
}

/**
 * A `JSON.stringify` replacer that refuses what JSON would change or drop:
 * `undefined`, functions, symbols, non-finite numbers, and objects that are
 * not plain (such as a `Date`, `Map` or class instance).
 */
function checkJsonValue(this: unknown, key: string, value: unknown): unknown {
  const original = (this as Record<string, unknown>)[key];
  const plain = value === null || typeof value === "string" ||
    typeof value === "boolean" ||
    (typeof value === "number" && Number.isFinite(value)) ||
    Array.isArray(value) || isPlainObject(value);
  if (plain && Object.is(original, value)) return value;
  throw new TypeError(
    `Session data is not plain JSON: key ${JSON.stringify(key)} holds ${
      describe(original)
    }`,
  );
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return false;
  }
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function describe(value: unknown): string {
  switch (typeof value) {
    case "object": {
      if (value === null) return "null";
      if (Array.isArray(value)) return "an array";
      const proto: { constructor?: { name?: unknown } } | null = Object
        .getPrototypeOf(value);
      const name = proto?.constructor?.name;
      return typeof name === "string" && name !== ""
        ? `a ${name}`
        : "an object";
    }
    case "function":
      return "a function";
    case "undefined":
      return "undefined";
    case "string":
      return "a string";
    case "number":
    case "bigint":
    case "boolean":
    case "symbol":
      return `${typeof value} ${String(value)}`;
  }
}

/**
 * Parses stored JSON into objects without a prototype, so a `"__proto__"`
 * key stays an ordinary key whatever the caller later does with the data.
 */
function decodeRecord(
  found: { json: string; expires: number } | null,
): SessionRecord | null {
  return found === null
    ? null
    : { data: decodeData(found.json), expires: found.expires };
}

function decodeData(json: string): Record<string, unknown> {
  const data: unknown = JSON.parse(json, toNullPrototype);
  if (!isPlainObject(data)) {
    throw new TypeError(`Stored session data is ${describe(data)}`);
  }
  return data;
}

function toNullPrototype(_key: string, value: unknown): unknown {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return value;
  }
  const copy: Record<string, unknown> = Object.create(null);
  for (const [key, item] of Object.entries(value)) copy[key] = item;
  return copy;
}

class MemorySessionStore implements SessionStore {
  readonly #limits: Limits;
  /** site → (id + name) → record; the id has a fixed length. */
  readonly #sites = new Map<string, Map<string, EncodedRecord>>();
  #closed = false;

  constructor(limits: Limits) {
    this.#limits = limits;
  }

  get(site: string, name: string, id: string): SessionRecord | null {
    return decodeRecord(this.getJson(site, name, id));
  }

  getJson(
    site: string,
    name: string,
    id: string,
  ): { json: string; expires: number } | null {
    checkOpen(this.#closed);
    checkId(id);
    const stored = this.#sites.get(site)?.get(id + name);
    if (stored === undefined) return null;
    if (stored.expires <= Date.now()) {
      this.#remove(site, id + name);
      return null;
    }
    return { json: stored.json, expires: stored.expires };
  }

  set(site: string, name: string, id: string, record: SessionRecord): number {
    checkOpen(this.#closed);
    checkId(id);
    const encoded = encodeRecord(record, this.#limits);
    const now = Date.now();
    if (encoded.expires <= now) {
      this.#remove(site, id + name);
      return 0;
    }
    const sessions = this.#sites.get(site) ?? new Map<string, EncodedRecord>();
    const existing = sessions.get(id + name);
    if (existing === undefined || existing.expires <= now) {
      this.#checkRoom(site, sessions, now);
    }
    sessions.set(id + name, encoded);
    this.#sites.set(site, sessions);
    return encoded.json.length;
  }

  delete(site: string, name: string, id: string): void {
    checkOpen(this.#closed);
    checkId(id);
    this.#remove(site, id + name);
  }

  purge(now: number = Date.now(), limit = Infinity): number {
    checkOpen(this.#closed);
    let removed = 0;
    for (const [site, sessions] of this.#sites) {
      for (const [key, stored] of sessions) {
        if (removed >= limit) break;
        if (stored.expires > now) continue;
        sessions.delete(key);
        removed++;
      }
      if (sessions.size === 0) this.#sites.delete(site);
    }
    return removed;
  }

  count(site: string): number {
    checkOpen(this.#closed);
    return countLive(this.#sites.get(site), Date.now());
  }

  close(): void {
    this.#closed = true;
    this.#sites.clear();
  }

  #checkRoom(
    site: string,
    sessions: Map<string, EncodedRecord>,
    now: number,
  ): void {
    const max = this.#limits.maxSessionsPerSite;
    if (sessions.size < max || countLive(sessions, now) < max) return;
    throw new SessionLimitError(sessionLimitMessage(site, max));
  }

  #remove(site: string, key: string): void {
    const sessions = this.#sites.get(site);
    if (sessions === undefined) return;
    sessions.delete(key);
    if (sessions.size === 0) this.#sites.delete(site);
  }
}

function countLive(
  sessions: Map<string, EncodedRecord> | undefined,
  now: number,
): number {
  let live = 0;
  for (const stored of sessions?.values() ?? []) {
    if (stored.expires > now) live++;
  }
  return live;
}

function sessionLimitMessage(site: string, max: number): string {
  return `Site ${
    JSON.stringify(site)
  } already has ${max} live sessions, the maxSessionsPerSite limit`;
}

/** Creates the schema of a new file, or checks the version of an old one. */
function createSchema(db: DatabaseSync, file: string): void {
  db.exec("PRAGMA journal_mode = WAL");
  db.exec("PRAGMA synchronous = NORMAL");
  db.exec("PRAGMA busy_timeout = 5000");
  const version = numberColumn(
    db.prepare("PRAGMA user_version").get(),
    "user_version",
  );
  if (version === SCHEMA_VERSION) return;
  if (version !== 0) {
    throw new Error(
      `Session store ${
        JSON.stringify(file)
      } has schema version ${version}, but this Sandflare knows version ${SCHEMA_VERSION}`,
    );
  }
  db.exec(`
    BEGIN IMMEDIATE;
    CREATE TABLE IF NOT EXISTS sessions (
      site TEXT NOT NULL,
      name TEXT NOT NULL,
      id TEXT NOT NULL,
      data TEXT NOT NULL,
      expires REAL NOT NULL,
      PRIMARY KEY (site, name, id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS sessions_site_expires ON sessions (site, expires);
    CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires);
    PRAGMA user_version = ${SCHEMA_VERSION};
    COMMIT;
  `);
}

/** Reads a number column of a row, or throws when the row is not as expected. */
function numberColumn(
  row: Record<string, unknown> | undefined,
  column: string,
): number {
  const value = row?.[column];
  if (typeof value !== "number") {
    throw new Error(`Session store row has no number column "${column}"`);
  }
  return value;
}

const SQL = {
  select:
    "SELECT data, expires FROM sessions WHERE site = ? AND name = ? AND id = ?",
  deleteIfExpired:
    "DELETE FROM sessions WHERE site = ? AND name = ? AND id = ? AND expires <= ?",
  exists: "SELECT 1 FROM sessions WHERE site = ? AND name = ? AND id = ?",
  rowsPerSite: "SELECT site, COUNT(*) AS n FROM sessions GROUP BY site",
  purgeSite: "DELETE FROM sessions WHERE site = ? AND expires <= ?",
  upsert: "INSERT INTO sessions (site, name, id, data, expires) " +
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (site, name, id) " +
    "DO UPDATE SET data = excluded.data, expires = excluded.expires",
  delete: "DELETE FROM sessions WHERE site = ? AND name = ? AND id = ?",
  purge: "DELETE FROM sessions WHERE (site, name, id) IN " +
    "(SELECT site, name, id FROM sessions WHERE expires <= ? LIMIT ?) " +
    "RETURNING site",
  count: "SELECT COUNT(*) AS n FROM sessions WHERE site = ? AND expires > ?",
  begin: "BEGIN IMMEDIATE",
  commit: "COMMIT",
  rollback: "ROLLBACK",
} as const;

type Statements = Record<keyof typeof SQL, StatementSync>;

class SqliteSessionStore implements SessionStore {
  readonly #db: DatabaseSync;
  readonly #limits: Limits;
  readonly #sql: Statements;
  /** Rows (live or not yet purged) per site, counted once at open. */
  readonly #rows = new Map<string, number>();
  #closed = false;

  constructor(db: DatabaseSync, limits: Limits) {
    this.#db = db;
    this.#limits = limits;
    const entries = Object.entries(SQL).map(([k, sql]) => [k, db.prepare(sql)]);
    this.#sql = Object.fromEntries(entries) as Statements;
    for (const row of this.#sql.rowsPerSite.all()) {
      this.#rows.set(String(row.site), numberColumn(row, "n"));
    }
  }

  get(site: string, name: string, id: string): SessionRecord | null {
    return decodeRecord(this.getJson(site, name, id));
  }

  getJson(
    site: string,
    name: string,
    id: string,
  ): { json: string; expires: number } | null {
    checkOpen(this.#closed);
    checkId(id);
    const row = this.#sql.select.get(site, name, id);
    if (row === undefined) return null;
    const expires = numberColumn(row, "expires");
    const now = Date.now();
    if (expires <= now) {
      this.#forget(
        site,
        Number(this.#sql.deleteIfExpired.run(site, name, id, now).changes),
      );
      return null;
    }
    if (typeof row.data !== "string") {
      throw new Error('Session store row has no text column "data"');
    }
    return { json: row.data, expires };
  }

  set(site: string, name: string, id: string, record: SessionRecord): number {
    checkOpen(this.#closed);
    checkId(id);
    const { json, expires } = encodeRecord(record, this.#limits);
    const now = Date.now();
    if (expires <= now) {
      this.delete(site, name, id);
      return 0;
    }
    this.#transaction(() => {
      if (this.#sql.exists.get(site, name, id) === undefined) {
        this.#checkRoom(site, now);
        this.#rows.set(site, (this.#rows.get(site) ?? 0) + 1);
      }
      this.#sql.upsert.run(site, name, id, json, expires);
    });
    return json.length;
  }

  delete(site: string, name: string, id: string): void {
    checkOpen(this.#closed);
    checkId(id);
    this.#forget(site, Number(this.#sql.delete.run(site, name, id).changes));
  }

  purge(now: number = Date.now(), limit = -1): number {
    checkOpen(this.#closed);
    const removed = this.#sql.purge.all(
      now,
      Number.isFinite(limit) ? limit : -1,
    );
    for (const row of removed) this.#forget(String(row.site), 1);
    return removed.length;
  }

  /** Counts `n` rows of `site` out. */
  #forget(site: string, n: number): void {
    if (n === 0) return;
    const left = (this.#rows.get(site) ?? n) - n;
    if (left > 0) this.#rows.set(site, left);
    else this.#rows.delete(site);
  }

  count(site: string): number {
    checkOpen(this.#closed);
    return numberColumn(this.#sql.count.get(site, Date.now()), "n");
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#db.close();
  }

  /**
   * O(1) while the site is under its limit: rows are counted in memory. At
   * the limit, its expired rows are removed (an index range) and it is
   * counted again.
   */
  #checkRoom(site: string, now: number): void {
    const max = this.#limits.maxSessionsPerSite;
    if ((this.#rows.get(site) ?? 0) < max) return;
    const expired = Number(this.#sql.purgeSite.run(site, now).changes);
    this.#forget(site, expired);
    if ((this.#rows.get(site) ?? 0) >= max) {
      throw new SessionLimitError(sessionLimitMessage(site, max));
    }
  }

  #transaction(body: () => void): void {
    this.#sql.begin.run();
    try {
      body();
    } catch (err) {
      this.#sql.rollback.run();
      throw err;
    }
    this.#sql.commit.run();
  }
}
