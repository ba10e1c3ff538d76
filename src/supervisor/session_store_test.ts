/**
 * Tests of the session stores. {@linkcode runSessionStoreSuite} is the
 * contract every {@linkcode SessionStore} must pass; another store's test
 * file imports it and runs it against that store. This file's own tests run
 * only when it is the test module being run, not when it is imported.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  createMemorySessionStore,
  isSessionId,
  newSessionId,
  openSqliteSessionStore,
  SessionLimitError,
  type SessionStore,
  type SessionStoreOptions,
} from "./session_store.ts";

const HOUR = 3_600_000;
const ID_A = "0123456789abcdef0123456789abcdef";
const ID_B = "fedcba9876543210fedcba9876543210";

/**
 * Opens a new, empty store for one test case. It must throw (not reject) a
 * `RangeError` for a bad option, as `resolveSessionStoreOptions` does:
 * check the options before anything asynchronous.
 */
export type SessionStoreOpener = (
  options?: SessionStoreOptions,
) => SessionStore | Promise<SessionStore>;

interface StoreCase {
  name: string;
  options?: SessionStoreOptions;
  run(store: SessionStore): Promise<void>;
}

/**
 * Whether this file is the test module being run: its own tests are
 * registered only then, not in another store's test file that imports
 * {@linkcode runSessionStoreSuite}.
 */
const OWN_TESTS = Deno.mainModule === import.meta.url;

/** `Deno.test`, for this file's own tests (see {@linkcode OWN_TESTS}). */
function test(
  name: string,
  fn: (t: Deno.TestContext) => void | Promise<void>,
): void {
  if (OWN_TESTS) Deno.test(name, fn);
}

function later(ms = HOUR): number {
  return Date.now() + ms;
}

/** Compares data regardless of prototypes (stores return null-prototype objects). */
function assertData(actual: unknown, expected: unknown): void {
  assert.deepEqual(JSON.parse(JSON.stringify(actual)), expected);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const BAD_IDS = [
  "",
  "0123456789ABCDEF0123456789ABCDEF",
  "0123456789abcdef0123456789abcde",
  "0123456789abcdef0123456789abcdef0",
  "0123456789abcdeg0123456789abcdef",
  " 0123456789abcdef0123456789abcde",
  "0123456789abcdef0123456789abcdef\n",
  "０123456789abcdef0123456789abcde",
  "' OR 1=1 --                     ",
];

const NOT_PLAIN_DATA: [string, unknown][] = [
  ["null", null],
  ["an array", [1, 2]],
  ["a string", "text"],
  ["a number", 1],
  ["a Date", new Date(0)],
  ["a Map", new Map()],
  ["a class instance", new (class Point {})()],
  ["a boxed string", new String("x")],
  ["a nested Date", { when: new Date(0) }],
  ["a nested Map in an array", { list: [new Map()] }],
  ["an undefined value", { a: undefined }],
  ["undefined in an array", { a: [undefined] }],
  ["a function", { f: () => 1 }],
  ["a symbol", { s: Symbol("s") }],
  ["NaN", { n: NaN }],
  ["Infinity", { n: Infinity }],
  ["a bigint", { n: 1n }],
  ["a toJSON method", { v: { toJSON: () => "x" } }],
];

/** The suite every SessionStore implementation must pass. */
const STORE_CASES: StoreCase[] = [
  {
    name: "get() of an unknown session is null",
    async run(store) {
      assert.equal(await store.get("blog", "sid", ID_A), null);
    },
  },
  {
    name: "set() then get() returns the data and expiry",
    async run(store) {
      const data = {
        user: "ada",
        n: 1.5,
        ok: true,
        none: null,
        list: [1, "two", { three: 3 }],
        nested: { text: "héllo ✓ 😀", empty: {} },
      };
      const expires = later();
      await store.set("blog", "sid", ID_A, { data, expires });
      const got = await store.get("blog", "sid", ID_A);
      assert.ok(got);
      assertData(got.data, data);
      assert.equal(got.expires, expires);
    },
  },
  {
    name: "set() replaces a session",
    async run(store) {
      await store.set("blog", "sid", ID_A, {
        data: { n: 1 },
        expires: later(),
      });
      const expires = later(2 * HOUR);
      await store.set("blog", "sid", ID_A, { data: { m: 2 }, expires });
      const got = await store.get("blog", "sid", ID_A);
      assertData(got?.data, { m: 2 });
      assert.equal(got?.expires, expires);
      assert.equal(await store.count("blog"), 1);
    },
  },
  {
    name: "delete() removes a session and ignores unknown ones",
    async run(store) {
      await store.set("blog", "sid", ID_A, { data: {}, expires: later() });
      await store.delete("blog", "sid", ID_B);
      await store.delete("shop", "sid", ID_A);
      assert.notEqual(await store.get("blog", "sid", ID_A), null);
      await store.delete("blog", "sid", ID_A);
      assert.equal(await store.get("blog", "sid", ID_A), null);
      assert.equal(await store.count("blog"), 0);
    },
  },
  {
    name: "sites never see each other's sessions",
    async run(store) {
      await store.set("blog", "sid", ID_A, {
        data: { site: "blog" },
        expires: later(),
      });
      await store.set("shop", "sid", ID_A, {
        data: { site: "shop" },
        expires: later(),
      });
      assertData((await store.get("blog", "sid", ID_A))?.data, {
        site: "blog",
      });
      assertData((await store.get("shop", "sid", ID_A))?.data, {
        site: "shop",
      });
      assert.equal(await store.get("wiki", "sid", ID_A), null);
      await store.delete("blog", "sid", ID_A);
      assert.notEqual(await store.get("shop", "sid", ID_A), null);
    },
  },
  {
    name: "names keep sessions apart within a site",
    async run(store) {
      await store.set("blog", "a", ID_A, {
        data: { name: "a" },
        expires: later(),
      });
      await store.set("blog", "b", ID_A, {
        data: { name: "b" },
        expires: later(),
      });
      assertData((await store.get("blog", "a", ID_A))?.data, { name: "a" });
      assertData((await store.get("blog", "b", ID_A))?.data, { name: "b" });
      assert.equal(await store.count("blog"), 2);
    },
  },
  {
    name: "keys with quotes, separators and Unicode are kept exactly",
    async run(store) {
      const sites = [
        "it's",
        'a"b',
        "x\0y",
        "ü.test",
        "'; DROP TABLE sessions;",
      ];
      for (const site of sites) {
        await store.set(site, site, ID_A, { data: { site }, expires: later() });
      }
      for (const site of sites) {
        assertData((await store.get(site, site, ID_A))?.data, { site });
        assert.equal(await store.count(site), 1);
      }
      assert.equal(await store.get("it", "'s", ID_A), null);
    },
  },
  {
    name: "get() of an expired session is null and count() skips it",
    async run(store) {
      await store.set("blog", "sid", ID_A, { data: {}, expires: later(40) });
      await store.set("blog", "sid", ID_B, { data: {}, expires: later() });
      await delay(80);
      assert.equal(await store.get("blog", "sid", ID_A), null);
      assert.equal(await store.count("blog"), 1);
      assert.notEqual(await store.get("blog", "sid", ID_B), null);
    },
  },
  {
    name: "set() of an already expired record removes the session",
    async run(store) {
      await store.set("blog", "sid", ID_A, {
        data: { n: 1 },
        expires: later(),
      });
      assert.equal(
        await store.set("blog", "sid", ID_A, {
          data: { n: 2 },
          expires: Date.now() - 1,
        }),
        0,
      );
      assert.equal(await store.get("blog", "sid", ID_A), null);
      assert.equal(
        await store.set("blog", "sid", ID_B, { data: {}, expires: 0 }),
        0,
      );
      assert.equal(await store.count("blog"), 0);
    },
  },
  {
    name: "data is copied in and out",
    async run(store) {
      const data = { list: [1], inner: { n: 1 } };
      await store.set("blog", "sid", ID_A, { data, expires: later() });
      data.list.push(2);
      data.inner.n = 2;
      const first = await store.get("blog", "sid", ID_A);
      assertData(first?.data, { list: [1], inner: { n: 1 } });
      (first?.data.list as number[]).push(3);
      assertData((await store.get("blog", "sid", ID_A))?.data, {
        list: [1],
        inner: { n: 1 },
      });
    },
  },
  {
    name: "purge() removes at most its limit, so a caller can spread the work",
    async run(store) {
      for (let i = 0; i < 5; i++) {
        await store.set("blog", "sid", newSessionId(), {
          data: {},
          expires: Date.now() + 1000,
        });
      }
      const later = Date.now() + 2000;
      assert.equal(await store.purge(later, 2), 2);
      assert.equal(await store.purge(later, 2), 2);
      assert.equal(await store.purge(later, 2), 1);
      assert.equal(await store.purge(later), 0);
    },
  },
  {
    name: "getJson() gives the stored JSON unparsed, and nothing once expired",
    async run(store) {
      await store.set("blog", "sid", ID_A, {
        data: { n: 1 },
        expires: later(),
      });
      const found = await store.getJson("blog", "sid", ID_A);
      assert.deepEqual(JSON.parse(found?.json ?? "null"), { n: 1 });
      assert.equal(await store.getJson("other", "sid", ID_A), null);
      await store.set("blog", "sid", ID_A, {
        data: {},
        expires: Date.now() - 1,
      });
      assert.equal(await store.getJson("blog", "sid", ID_A), null);
    },
  },
  {
    name: 'a "__proto__" key is an ordinary key and pollutes nothing',
    async run(store) {
      const data = JSON.parse(
        '{"__proto__": {"polluted": true}, "inner": {"__proto__": {"polluted": 1}}, "list": [{"__proto__": {"polluted": 2}}]}',
      );
      await store.set("blog", "sid", ID_A, { data, expires: later() });
      const got = (await store.get("blog", "sid", ID_A))?.data;
      assert.ok(got);
      assert.equal(Object.getPrototypeOf(got), null);
      assert.ok(Object.hasOwn(got, "__proto__"));
      assertData(Object.getOwnPropertyDescriptor(got, "__proto__")?.value, {
        polluted: true,
      });
      const inner = got.inner as Record<string, unknown>;
      assert.equal(Object.getPrototypeOf(inner), null);
      assert.ok(Object.hasOwn(inner, "__proto__"));
      const item = (got.list as Record<string, unknown>[])[0];
      assert.ok(item && Object.hasOwn(item, "__proto__"));
      assert.equal(Object.getPrototypeOf(item), null);
      assert.equal(got.polluted, undefined);
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
      const merged: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(got)) merged[k] = v;
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
    },
  },
  {
    name: "a null-prototype object is plain data",
    async run(store) {
      const data: Record<string, unknown> = Object.create(null);
      data.n = 1;
      await store.set("blog", "sid", ID_A, { data, expires: later() });
      assertData((await store.get("blog", "sid", ID_A))?.data, { n: 1 });
    },
  },
  {
    name:
      "invalid ids reject with TypeError in get(), getJson(), set() and delete()",
    async run(store) {
      for (const id of BAD_IDS) {
        const record = { data: {}, expires: later() };
        await assert.rejects(store.get("blog", "sid", id), TypeError, id);
        await assert.rejects(store.getJson("blog", "sid", id), TypeError, id);
        await assert.rejects(
          store.set("blog", "sid", id, record),
          TypeError,
          id,
        );
        await assert.rejects(store.delete("blog", "sid", id), TypeError, id);
      }
      assert.equal(await store.count("blog"), 0);
    },
  },
  {
    name: "set() refuses data that is not a plain JSON object",
    async run(store) {
      for (const [what, data] of NOT_PLAIN_DATA) {
        const record = {
          data: data as Record<string, unknown>,
          expires: later(),
        };
        await assert.rejects(
          store.set("blog", "sid", ID_A, record),
          TypeError,
          what,
        );
      }
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      await assert.rejects(
        store.set("blog", "sid", ID_A, { data: cyclic, expires: later() }),
        TypeError,
      );
      assert.equal(await store.get("blog", "sid", ID_A), null);
    },
  },
  {
    name: "the TypeError for bad data names the key",
    async run(store) {
      const record = { data: { when: new Date(0) }, expires: later() };
      await assert.rejects(store.set("blog", "sid", ID_A, record), {
        name: "TypeError",
        message: 'Session data is not plain JSON: key "when" holds a Date',
      });
    },
  },
  {
    name: "set() refuses an expiry that is not a finite number",
    async run(store) {
      for (
        const expires of [NaN, Infinity, -Infinity, "1" as unknown as number]
      ) {
        await assert.rejects(
          store.set("blog", "sid", ID_A, { data: {}, expires }),
          TypeError,
          String(expires),
        );
      }
    },
  },
  {
    name: "maxDataBytes counts UTF-8 bytes of the JSON",
    options: { maxDataBytes: 20 },
    async run(store) {
      // {"t":"..."} is 8 bytes plus the text.
      await store.set("blog", "sid", ID_A, {
        data: { t: "x".repeat(12) },
        expires: later(),
      });
      await store.set("blog", "sid", ID_A, {
        data: { t: "é".repeat(6) },
        expires: later(),
      });
      await assert.rejects(
        store.set("blog", "sid", ID_A, {
          data: { t: "x".repeat(13) },
          expires: later(),
        }),
        { name: "SessionLimitError", message: /maxDataBytes limit of 20/ },
      );
      await assert.rejects(
        store.set("blog", "sid", ID_B, {
          data: { t: "x".repeat(5) + "é".repeat(4) },
          expires: later(),
        }),
        SessionLimitError,
      );
      assertData((await store.get("blog", "sid", ID_A))?.data, {
        t: "é".repeat(6),
      });
      assert.equal(await store.get("blog", "sid", ID_B), null);
    },
  },
  {
    name: "maxDataBytes defaults to 64 KiB",
    async run(store) {
      const fits = { t: "x".repeat(64 * 1024 - 8) };
      await store.set("blog", "sid", ID_A, { data: fits, expires: later() });
      const over = { t: "x".repeat(64 * 1024 - 7) };
      await assert.rejects(
        store.set("blog", "sid", ID_A, { data: over, expires: later() }),
        { name: "SessionLimitError", message: /maxDataBytes limit of 65536/ },
      );
    },
  },
  {
    name: "maxSessionsPerSite limits live sessions of each site",
    options: { maxSessionsPerSite: 2 },
    async run(store) {
      const ids = [newSessionId(), newSessionId(), newSessionId()] as const;
      await store.set("blog", "sid", ids[0], { data: {}, expires: later() });
      await store.set("blog", "other", ids[1], { data: {}, expires: later() });
      await assert.rejects(
        store.set("blog", "sid", ids[2], { data: {}, expires: later() }),
        {
          name: "SessionLimitError",
          message:
            /"blog" already has 2 live sessions, the maxSessionsPerSite limit/,
        },
      );
      await store.set("blog", "sid", ids[0], {
        data: { again: true },
        expires: later(),
      });
      await store.set("shop", "sid", ids[2], { data: {}, expires: later() });
      assert.equal(await store.get("blog", "sid", ids[2]), null);
      assert.equal(await store.count("blog"), 2);
      await store.delete("blog", "other", ids[1]);
      await store.set("blog", "sid", ids[2], { data: {}, expires: later() });
      assert.equal(await store.count("blog"), 2);
    },
  },
  {
    name: "expired sessions do not count toward maxSessionsPerSite",
    options: { maxSessionsPerSite: 1 },
    async run(store) {
      await store.set("blog", "sid", ID_A, { data: {}, expires: later(40) });
      await delay(80);
      await store.set("blog", "sid", ID_B, { data: {}, expires: later() });
      assert.equal(await store.count("blog"), 1);
    },
  },
  {
    name: "purge() removes sessions expired at the given time",
    async run(store) {
      const now = Date.now();
      await store.set("blog", "sid", ID_A, { data: {}, expires: now + HOUR });
      await store.set("shop", "sid", ID_A, { data: {}, expires: now + HOUR });
      await store.set("blog", "sid", ID_B, {
        data: {},
        expires: now + 2 * HOUR,
      });
      assert.equal(await store.purge(now), 0);
      assert.equal(await store.purge(now + HOUR - 1), 0);
      assert.equal(await store.purge(now + HOUR), 2);
      assert.equal(await store.get("blog", "sid", ID_A), null);
      assert.equal(await store.get("shop", "sid", ID_A), null);
      assert.notEqual(await store.get("blog", "sid", ID_B), null);
      assert.equal(await store.count("blog"), 1);
      assert.equal(await store.purge(now + 3 * HOUR), 1);
      assert.equal(await store.purge(now + 3 * HOUR), 0);
      assert.equal(await store.count("blog"), 0);
    },
  },
  {
    name: "purge() defaults to the current time",
    async run(store) {
      await store.set("blog", "sid", ID_A, { data: {}, expires: later(40) });
      await store.set("blog", "sid", ID_B, { data: {}, expires: later() });
      await delay(80);
      assert.equal(await store.purge(), 1);
      assert.equal(await store.count("blog"), 1);
    },
  },
  {
    name: "count() counts live sessions of one site",
    async run(store) {
      assert.equal(await store.count("blog"), 0);
      for (let i = 0; i < 5; i++) {
        await store.set("blog", "sid", newSessionId(), {
          data: { i },
          expires: later(),
        });
      }
      await store.set("shop", "sid", ID_A, { data: {}, expires: later() });
      assert.equal(await store.count("blog"), 5);
      assert.equal(await store.count("shop"), 1);
      assert.equal(await store.count("wiki"), 0);
    },
  },
  {
    name: "methods reject after close(), and close() may be repeated",
    async run(store) {
      await store.close();
      await store.close();
      await assert.rejects(store.get("blog", "sid", ID_A), /closed/);
      await assert.rejects(store.getJson("blog", "sid", ID_A), /closed/);
      await assert.rejects(
        store.set("blog", "sid", ID_A, { data: {}, expires: later() }),
        /closed/,
      );
      await assert.rejects(store.delete("blog", "sid", ID_A), /closed/);
      await assert.rejects(store.purge(), /closed/);
      await assert.rejects(store.count("blog"), /closed/);
    },
  },
];

const BAD_OPTIONS: [keyof SessionStoreOptions, number][] = [
  ["maxDataBytes", 0],
  ["maxDataBytes", -1],
  ["maxDataBytes", 1.5],
  ["maxDataBytes", NaN],
  ["maxSessionsPerSite", 0],
  ["maxSessionsPerSite", Infinity],
];

/**
 * Runs the contract every {@linkcode SessionStore} must pass, one step per
 * case, each against a new store from `open` (closed after the step).
 *
 * @param t the test whose steps the cases are
 * @param open opens a new, empty store with the given options
 * @example
 * ```ts
 * import { createMemorySessionStore } from "./session_store.ts";
 * import { runSessionStoreSuite } from "./session_store_test.ts";
 *
 * Deno.test("my store passes the store suite", async (t) => {
 *   await runSessionStoreSuite(t, createMemorySessionStore);
 * });
 * ```
 */
export async function runSessionStoreSuite(
  t: Deno.TestContext,
  open: SessionStoreOpener,
): Promise<void> {
  for (const { name, options, run } of STORE_CASES) {
    await t.step(name, async () => {
      const store = await open(options);
      try {
        await run(store);
      } finally {
        await store.close();
      }
    });
  }
  for (const [option, value] of BAD_OPTIONS) {
    await t.step(`refuses ${option} ${value}`, async () => {
      const opened: (SessionStore | Promise<SessionStore>)[] = [];
      try {
        assert.throws(() => opened.push(open({ [option]: value })), {
          name: "RangeError",
          message:
            `Option "${option}" must be a positive integer, not ${value}`,
        });
      } finally {
        // A store opened in spite of the bad option is closed.
        for (const store of opened) {
          await Promise.resolve(store).then((s) => s.close(), () => {});
        }
      }
    });
  }
}

test("createMemorySessionStore() passes the store suite", async (t) => {
  await runSessionStoreSuite(t, createMemorySessionStore);
});

test("openSqliteSessionStore() passes the store suite", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "sandflare_sessions_" });
  let n = 0;
  try {
    await runSessionStoreSuite(
      t,
      (options) => openSqliteSessionStore(join(dir, `${n++}.db`), options),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

test("openSqliteSessionStore() keeps sessions across a restart", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "sandflare_sessions_" });
  const file = join(dir, "nested", "folder", "sessions.db");
  try {
    await t.step("creates the parent folder and uses WAL", async () => {
      await openSqliteSessionStore(file).close();
      assert.ok(Deno.statSync(file).isFile);
      const db = new DatabaseSync(file);
      try {
        assert.deepEqual({ ...db.prepare("PRAGMA journal_mode").get() }, {
          journal_mode: "wal",
        });
      } finally {
        db.close();
      }
    });
    await t.step("a closed and reopened store has the session", async () => {
      const expires = later();
      const first = openSqliteSessionStore(file);
      await first.set("blog", "sid", ID_A, {
        data: { user: "ada", n: [1, 2] },
        expires,
      });
      await first.set("shop", "sid", ID_A, { data: { user: "bob" }, expires });
      await first.close();
      const second = openSqliteSessionStore(file);
      try {
        const got = await second.get("blog", "sid", ID_A);
        assertData(got?.data, { user: "ada", n: [1, 2] });
        assert.equal(got?.expires, expires);
        assertData((await second.get("shop", "sid", ID_A))?.data, {
          user: "bob",
        });
        assert.equal(await second.count("blog"), 1);
      } finally {
        await second.close();
      }
    });
    await t.step(
      "limits apply to sessions stored before the restart",
      async () => {
        const store = openSqliteSessionStore(file, { maxSessionsPerSite: 1 });
        try {
          await assert.rejects(
            store.set("blog", "sid", ID_B, { data: {}, expires: later() }),
            SessionLimitError,
          );
        } finally {
          await store.close();
        }
      },
    );
    await t.step("refuses a file with an unknown schema version", () => {
      const db = new DatabaseSync(file);
      db.exec("PRAGMA user_version = 99");
      db.close();
      assert.throws(() => openSqliteSessionStore(file), /schema version 99/);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

test("newSessionId() makes 32 lower-case hex characters", () => {
  const ids = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const id = newSessionId();
    assert.match(id, /^[0-9a-f]{32}$/);
    assert.ok(isSessionId(id));
    ids.add(id);
  }
  assert.equal(ids.size, 1000);
});

test("isSessionId() accepts exactly 32 lower-case hex characters", async (t) => {
  const cases: [string, boolean][] = [
    [ID_A, true],
    [ID_B, true],
    ["0".repeat(32), true],
    ...BAD_IDS.map((id): [string, boolean] => [id, false]),
  ];
  for (const [text, expected] of cases) {
    await t.step(JSON.stringify(text), () => {
      assert.equal(isSessionId(text), expected);
    });
  }
});

test("SessionLimitError is an Error named SessionLimitError", () => {
  const err = new SessionLimitError("limit");
  assert.ok(err instanceof Error);
  assert.equal(err.name, "SessionLimitError");
});

test("openSqliteSessionStore() checks room for a new session without counting the site's sessions", async () => {
  const dir = await Deno.makeTempDir();
  const store = openSqliteSessionStore(join(dir, "count.db"));
  const record = { data: { n: 1 }, expires: Date.now() + 60_000 };
  const timeNew = async (n: number) => {
    const started = performance.now();
    for (let i = 0; i < n; i++) {
      await store.set("busy", "session", newSessionId(), record);
    }
    return performance.now() - started;
  };
  try {
    const early = await timeNew(1000);
    await timeNew(40_000);
    const late = await timeNew(1000);
    // With a COUNT per new session, the last thousand cost 40× the first
    // (filling 100,000 took minutes); measured in one test on one machine,
    // the two are compared, not timed.
    assert.ok(
      late < early * 5,
      `1,000 new sessions: ${early.toFixed(0)} ms at first, ${
        late.toFixed(0)
      } ms after 41,000`,
    );
    assert.equal(await store.count("busy"), 42_000);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

test("openSqliteSessionStore() counts rows across a restart, a purge and the limit", async () => {
  const dir = await Deno.makeTempDir();
  const file = join(dir, "rows.db");
  try {
    const first = openSqliteSessionStore(file, { maxSessionsPerSite: 3 });
    const soon = { data: {}, expires: Date.now() + 200 };
    await first.set("a", "s", newSessionId(), soon);
    await first.set("a", "s", newSessionId(), soon);
    await first.close();
    const second = openSqliteSessionStore(file, { maxSessionsPerSite: 3 });
    const later = { data: {}, expires: Date.now() + 60_000 };
    await second.set("a", "s", newSessionId(), later); // 3 rows: at the limit
    await assert.rejects(
      second.set("a", "s", newSessionId(), later),
      SessionLimitError,
    );
    await new Promise((r) => setTimeout(r, 250));
    // The two expired rows make room (removed when the limit is reached).
    await second.set("a", "s", newSessionId(), later);
    await second.set("a", "s", newSessionId(), later);
    await assert.rejects(
      second.set("a", "s", newSessionId(), later),
      SessionLimitError,
    );
    assert.equal(await second.purge(), 0);
    await second.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
