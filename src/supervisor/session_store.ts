/**
 * Session storage the gateway keeps on the sites' behalf. Sessions are keyed
 * by (site, cookie name, id), so one site never sees another's sessions, even
 * with the same name and id.
 *
 * Every store sits behind the small, asynchronous {@linkcode SessionStore}
 * interface, so a deployment can swap in an external store (one over the
 * network answers later). Two come with Sandflare: a SQLite file
 * ({@linkcode openSqliteSessionStore}), which survives a restart, and a map in
 * memory ({@linkcode createMemorySessionStore}), which does not. Both store
 * the data as JSON text and hand back a fresh copy whose objects have no
 * prototype, so a `"__proto__"` key is an ordinary key.
 *
 * Another implementation reuses the checks and encoding of these two, so all
 * behave alike: {@linkcode resolveSessionStoreOptions},
 * {@linkcode checkSessionId}, {@linkcode checkSessionStoreOpen},
 * {@linkcode encodeSessionRecord}, {@linkcode decodeSessionRecord} and
 * {@linkcode sessionLimitMessage}.
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
 * Every method answers with a promise, and reports every failure by
 * rejecting it, never by throwing: a store may be across the network. After
 * `close()`, every other method rejects with an `Error` whose message says
 * the store is closed.
 *
 * @example
 * ```ts
 * import {
 *   createMemorySessionStore,
 *   newSessionId,
 *   type SessionStore,
 * } from "./session_store.ts";
 * import assert from "node:assert/strict";
 *
 * const store: SessionStore = createMemorySessionStore();
 * const id = newSessionId();
 * await store.set("blog", "sid", id, { data: { n: 1 }, expires: Date.now() + 60_000 });
 * assert.equal((await store.get("blog", "sid", id))?.data.n, 1);
 * await store.close();
 * ```
 */
export interface SessionStore {
  /**
   * The live (not expired) session, or null.
   *
   * Rejects with a `TypeError` when `id` is not a session id.
   */
  get(site: string, name: string, id: string): Promise<SessionRecord | null>;
  /**
   * The live session's data as the JSON text it is stored as, or null: for
   * a caller that only passes it on (the gateway to a site), unparsed.
   *
   * Rejects with a `TypeError` when `id` is not a session id.
   */
  getJson(
    site: string,
    name: string,
    id: string,
  ): Promise<EncodedSessionRecord | null>;
  /**
   * Creates or replaces a session. A record that has already expired
   * removes the session instead.
   *
   * Rejects with a `TypeError` when `id` is not a session id, `data` is not
   * a plain JSON object or `expires` is not a finite number, and with a
   * {@linkcode SessionLimitError} when a limit is hit; the session is then
   * left as it was.
   *
   * @returns the bytes stored (the data's JSON), 0 when it removed the session
   */
  set(
    site: string,
    name: string,
    id: string,
    record: SessionRecord,
  ): Promise<number>;
  /**
   * Removes a session, if there is one.
   *
   * Rejects with a `TypeError` when `id` is not a session id.
   */
  delete(site: string, name: string, id: string): Promise<void>;
  /**
   * Removes expired sessions, at most `limit` of them (a caller that must
   * not stall calls it again until it removes fewer); resolves to how many.
   */
  purge(now?: number, limit?: number): Promise<number>;
  /** Live sessions of a site (for /stats). */
  count(site: string): Promise<number>;
  /**
   * Releases the store; it cannot be used afterwards. Closing a closed
   * store does nothing.
   */
  close(): Promise<void>;
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
 * await assert.rejects(store.set("blog", "sid", newSessionId(), record), SessionLimitError);
 * await store.close();
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

/**
 * {@linkcode SessionStoreOptions} with every default applied, as
 * {@linkcode resolveSessionStoreOptions} returns them.
 *
 * @example
 * ```ts
 * import type { SessionStoreLimits } from "./session_store.ts";
 *
 * const limits: SessionStoreLimits = { maxDataBytes: 65536, maxSessionsPerSite: 100_000 };
 * ```
 */
export interface SessionStoreLimits {
  /** Largest session data, as UTF-8 bytes of its JSON. */
  maxDataBytes: number;
  /** Most live sessions one site may have. */
  maxSessionsPerSite: number;
}

/**
 * A session as a store keeps it: its data as JSON text, and its expiry.
 *
 * @example
 * ```ts
 * import type { EncodedSessionRecord } from "./session_store.ts";
 *
 * const stored: EncodedSessionRecord = { json: '{"user":"ada"}', expires: Date.now() + 60_000 };
 * ```
 */
export interface EncodedSessionRecord {
  /** The data, as `JSON.stringify` wrote it. */
  json: string;
  /** When the session expires, in milliseconds since the epoch. */
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
 * @throws {RangeError} when an option is not a positive integer (opening is
 * synchronous: it throws, it does not reject)
 * @example
 * ```ts
 * import { newSessionId, openSqliteSessionStore } from "./session_store.ts";
 * import assert from "node:assert/strict";
 *
 * const dir = Deno.makeTempDirSync();
 * const store = openSqliteSessionStore(`${dir}/data/sessions.db`);
 * const id = newSessionId();
 * await store.set("blog", "sid", id, { data: { user: "ada" }, expires: Date.now() + 60_000 });
 * assert.equal((await store.get("blog", "sid", id))?.data.user, "ada");
 * await store.close();
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function openSqliteSessionStore(
  file: string,
  options: SessionStoreOptions = {},
): SessionStore {
  const limits = resolveSessionStoreOptions(options);
  mkdirSync(dirname(file), { recursive: true });
  const db = new DatabaseSync(file);
  try {
    createSchema(db, file);
    return new PromisedSessionStore(new SqliteSessionStore(db, limits));
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
 * await store.set("blog", "sid", id, { data: { n: 1 }, expires: Date.now() + 60_000 });
 * assert.equal(await store.count("blog"), 1);
 * assert.equal(await store.get("shop", "sid", id), null);
 * await store.close();
 * ```
 */
export function createMemorySessionStore(
  options: SessionStoreOptions = {},
): SessionStore {
  return new PromisedSessionStore(
    new MemorySessionStore(resolveSessionStoreOptions(options)),
  );
}

/**
 * Applies the defaults to a store's options and checks them.
 *
 * @param options limits, as a caller gave them
 * @returns every limit
 * @throws {RangeError} when an option is not a positive integer
 * @example
 * ```ts
 * import { resolveSessionStoreOptions } from "./session_store.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(resolveSessionStoreOptions({ maxDataBytes: 1024 }), {
 *   maxDataBytes: 1024,
 *   maxSessionsPerSite: 100_000,
 * });
 * assert.throws(() => resolveSessionStoreOptions({ maxDataBytes: 0 }), RangeError);
 * ```
 */
export function resolveSessionStoreOptions(
  options: SessionStoreOptions = {},
): SessionStoreLimits {
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

/**
 * Checks that `id` is a session id (see {@linkcode isSessionId}).
 *
 * @param id the id a caller gave
 * @throws {TypeError} when it is not, naming (the start of) what it is
 * @example
 * ```ts
 * import { checkSessionId, newSessionId } from "./session_store.ts";
 * import assert from "node:assert/strict";
 *
 * checkSessionId(newSessionId());
 * assert.throws(() => checkSessionId("not an id"), TypeError);
 * ```
 */
export function checkSessionId(id: string): void {
  if (isSessionId(id)) return;
  const shown = typeof id === "string"
    ? JSON.stringify(id.slice(0, 40))
    : typeof id;
  throw new TypeError(
    `Session id ${shown} is not valid: expected 32 lower-case hex characters`,
  );
}

/**
 * Checks that a store is still open: every method but `close()` calls it
 * first.
 *
 * @param closed whether the store's `close()` was called
 * @throws {Error} "Session store is closed" when `closed` is true
 * @example
 * ```ts
 * import { checkSessionStoreOpen } from "./session_store.ts";
 * import assert from "node:assert/strict";
 *
 * checkSessionStoreOpen(false);
 * assert.throws(() => checkSessionStoreOpen(true), /closed/);
 * ```
 */
export function checkSessionStoreOpen(closed: boolean): void {
  if (closed) throw new Error("Session store is closed");
}

/**
 * Validates a record for `set` and turns its data into JSON.
 *
 * @param record the record a caller gave
 * @param limits the store's limits (only `maxDataBytes` is checked here)
 * @returns the data's JSON and the expiry
 * @throws {TypeError} when `data` is not a plain JSON object or `expires` is
 * not a finite number
 * @throws {SessionLimitError} when the JSON is over `maxDataBytes`
 * @example
 * ```ts
 * import {
 *   encodeSessionRecord,
 *   resolveSessionStoreOptions,
 * } from "./session_store.ts";
 * import assert from "node:assert/strict";
 *
 * const limits = resolveSessionStoreOptions();
 * const encoded = encodeSessionRecord({ data: { n: 1 }, expires: 5 }, limits);
 * assert.deepEqual(encoded, { json: '{"n":1}', expires: 5 });
 * assert.throws(
 *   () => encodeSessionRecord({ data: { when: new Date() }, expires: 5 }, limits),
 *   TypeError,
 * );
 * ```
 */
export function encodeSessionRecord(
  record: SessionRecord,
  limits: SessionStoreLimits,
): EncodedSessionRecord {
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
 *
 * @param found a stored session, or null
 * @returns the session, or null when `found` is null
 * @throws {SyntaxError} when the JSON is not valid
 * @throws {TypeError} when the JSON is not an object
 * @example
 * ```ts
 * import { decodeSessionRecord } from "./session_store.ts";
 * import assert from "node:assert/strict";
 *
 * const record = decodeSessionRecord({ json: '{"__proto__":{"x":1}}', expires: 5 });
 * assert.equal(Object.getPrototypeOf(record?.data), null);
 * assert.ok(Object.hasOwn(record?.data ?? {}, "__proto__"));
 * assert.equal(decodeSessionRecord(null), null);
 * ```
 */
export function decodeSessionRecord(
  found: EncodedSessionRecord | null,
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

/**
 * A {@linkcode SessionStore} whose methods answer at once: the two built-in
 * stores, written synchronously and handed out wrapped in a
 * {@linkcode PromisedSessionStore}.
 */
type SyncSessionStore = {
  [K in keyof SessionStore]: (
    ...args: Parameters<SessionStore[K]>
  ) => Awaited<ReturnType<SessionStore[K]>>;
};

/**
 * A synchronous store behind the asynchronous interface: each call runs at
 * once, as it did, and what it throws becomes the promise's rejection.
 */
class PromisedSessionStore implements SessionStore {
  readonly #store: SyncSessionStore;

  constructor(store: SyncSessionStore) {
    this.#store = store;
  }

  get(site: string, name: string, id: string): Promise<SessionRecord | null> {
    return settle(() => this.#store.get(site, name, id));
  }

  getJson(
    site: string,
    name: string,
    id: string,
  ): Promise<EncodedSessionRecord | null> {
    return settle(() => this.#store.getJson(site, name, id));
  }

  set(
    site: string,
    name: string,
    id: string,
    record: SessionRecord,
  ): Promise<number> {
    return settle(() => this.#store.set(site, name, id, record));
  }

  delete(site: string, name: string, id: string): Promise<void> {
    return settle(() => this.#store.delete(site, name, id));
  }

  purge(now?: number, limit?: number): Promise<number> {
    return settle(() => this.#store.purge(now, limit));
  }

  count(site: string): Promise<number> {
    return settle(() => this.#store.count(site));
  }

  close(): Promise<void> {
    return settle(() => this.#store.close());
  }
}

/** Runs `fn` now: its result, or what it throws as a rejection. */
function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err);
  }
}

class MemorySessionStore implements SyncSessionStore {
  readonly #limits: SessionStoreLimits;
  /** site → (id + name) → record; the id has a fixed length. */
  readonly #sites = new Map<string, Map<string, EncodedSessionRecord>>();
  #closed = false;

  constructor(limits: SessionStoreLimits) {
    this.#limits = limits;
  }

  get(site: string, name: string, id: string): SessionRecord | null {
    return decodeSessionRecord(this.getJson(site, name, id));
  }

  getJson(
    site: string,
    name: string,
    id: string,
  ): EncodedSessionRecord | null {
    checkSessionStoreOpen(this.#closed);
    checkSessionId(id);
    const stored = this.#sites.get(site)?.get(id + name);
    if (stored === undefined) return null;
    if (stored.expires <= Date.now()) {
      this.#remove(site, id + name);
      return null;
    }
    return { json: stored.json, expires: stored.expires };
  }

  set(site: string, name: string, id: string, record: SessionRecord): number {
    checkSessionStoreOpen(this.#closed);
    checkSessionId(id);
    const encoded = encodeSessionRecord(record, this.#limits);
    const now = Date.now();
    if (encoded.expires <= now) {
      this.#remove(site, id + name);
      return 0;
    }
    const sessions = this.#sites.get(site) ??
      new Map<string, EncodedSessionRecord>();
    const existing = sessions.get(id + name);
    if (existing === undefined || existing.expires <= now) {
      this.#checkRoom(site, sessions, now);
    }
    sessions.set(id + name, encoded);
    this.#sites.set(site, sessions);
    return encoded.json.length;
  }

  delete(site: string, name: string, id: string): void {
    checkSessionStoreOpen(this.#closed);
    checkSessionId(id);
    this.#remove(site, id + name);
  }

  purge(now: number = Date.now(), limit = Infinity): number {
    checkSessionStoreOpen(this.#closed);
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
    checkSessionStoreOpen(this.#closed);
    return countLive(this.#sites.get(site), Date.now());
  }

  close(): void {
    this.#closed = true;
    this.#sites.clear();
  }

  #checkRoom(
    site: string,
    sessions: Map<string, EncodedSessionRecord>,
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
  sessions: Map<string, EncodedSessionRecord> | undefined,
  now: number,
): number {
  let live = 0;
  for (const stored of sessions?.values() ?? []) {
    if (stored.expires > now) live++;
  }
  return live;
}

/**
 * The message of the {@linkcode SessionLimitError} of a site that has
 * `maxSessionsPerSite` live sessions and wants one more.
 *
 * @param site the site
 * @param max its `maxSessionsPerSite` limit
 * @returns the message
 * @example
 * ```ts
 * import { sessionLimitMessage } from "./session_store.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(
 *   sessionLimitMessage("blog", 2),
 *   'Site "blog" already has 2 live sessions, the maxSessionsPerSite limit',
 * );
 * ```
 */
export function sessionLimitMessage(site: string, max: number): string {
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

class SqliteSessionStore implements SyncSessionStore {
  readonly #db: DatabaseSync;
  readonly #limits: SessionStoreLimits;
  readonly #sql: Statements;
  /** Rows (live or not yet purged) per site, counted once at open. */
  readonly #rows = new Map<string, number>();
  #closed = false;

  constructor(db: DatabaseSync, limits: SessionStoreLimits) {
    this.#db = db;
    this.#limits = limits;
    const entries = Object.entries(SQL).map(([k, sql]) => [k, db.prepare(sql)]);
    this.#sql = Object.fromEntries(entries) as Statements;
    for (const row of this.#sql.rowsPerSite.all()) {
      this.#rows.set(String(row.site), numberColumn(row, "n"));
    }
  }

  get(site: string, name: string, id: string): SessionRecord | null {
    return decodeSessionRecord(this.getJson(site, name, id));
  }

  getJson(
    site: string,
    name: string,
    id: string,
  ): EncodedSessionRecord | null {
    checkSessionStoreOpen(this.#closed);
    checkSessionId(id);
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
    checkSessionStoreOpen(this.#closed);
    checkSessionId(id);
    const { json, expires } = encodeSessionRecord(record, this.#limits);
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
    checkSessionStoreOpen(this.#closed);
    checkSessionId(id);
    this.#forget(site, Number(this.#sql.delete.run(site, name, id).changes));
  }

  purge(now: number = Date.now(), limit = -1): number {
    checkSessionStoreOpen(this.#closed);
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
    checkSessionStoreOpen(this.#closed);
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
