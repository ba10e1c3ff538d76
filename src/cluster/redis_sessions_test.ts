import assert from "node:assert/strict";
import { TestRedis } from "../../tests/helpers/redis.ts";
import { runSessionStoreSuite } from "../supervisor/session_store_test.ts";
import {
  newSessionId,
  resolveSessionStoreOptions,
  SessionLimitError,
} from "../supervisor/session_store.ts";
import { ClusterUnavailable, RedisLink } from "./redis_link.ts";
import { openRedisSessionStore } from "./redis_sessions.ts";

const HOUR = 3_600_000;

Deno.test("openRedisSessionStore() passes the store suite", async (t) => {
  const redis = await TestRedis.start();
  const links: RedisLink[] = [];
  try {
    let n = 0;
    // A prefix per case: each starts from an empty store. Options are
    // checked before connecting: a bad one throws, as the suite expects.
    await runSessionStoreSuite(t, (options) => {
      resolveSessionStoreOptions(options ?? {});
      const prefix = `case${n++}:`;
      return RedisLink.connect({ url: redis.url, prefix, nodeId: "test" })
        .then((link) => {
          links.push(link);
          return openRedisSessionStore(link, options);
        });
    });
  } finally {
    await Promise.all(links.map((link) => link.close()));
    await redis.stop();
  }
});

Deno.test("two links to one Redis share sessions; prefixes keep clusters apart", async () => {
  const redis = await TestRedis.start();
  const url = redis.url;
  const a = await RedisLink.connect({ url, prefix: "one:", nodeId: "a" });
  const b = await RedisLink.connect({ url, prefix: "one:", nodeId: "b" });
  const other = await RedisLink.connect({ url, prefix: "two:", nodeId: "a" });
  try {
    const id = newSessionId();
    const record = { data: { user: "ada" }, expires: Date.now() + HOUR };
    await openRedisSessionStore(a).set("blog", "sid", id, record);
    const read = await openRedisSessionStore(b).get("blog", "sid", id);
    assert.equal(read?.data.user, "ada");
    assert.equal(
      await openRedisSessionStore(other).get("blog", "sid", id),
      null,
    );
    // The key expires in Redis with the session.
    const ttl = await redis.command(
      "PTTL",
      `one:session:blog:sid:${id}`,
    );
    const ms = Number(/^:(\d+)/.exec(ttl)?.[1]);
    assert.ok(ms > HOUR - 60_000 && ms <= HOUR, ttl);
  } finally {
    await Promise.all([a.close(), b.close(), other.close()]);
    await redis.stop();
  }
});

Deno.test("the per-site limit holds across nodes", async () => {
  const redis = await TestRedis.start();
  const url = redis.url;
  const a = await RedisLink.connect({ url, prefix: "p:", nodeId: "a" });
  const b = await RedisLink.connect({ url, prefix: "p:", nodeId: "b" });
  try {
    const limits = { maxSessionsPerSite: 3 };
    const onA = openRedisSessionStore(a, limits);
    const onB = openRedisSessionStore(b, limits);
    const record = { data: {}, expires: Date.now() + HOUR };
    // Six at once from two nodes: exactly three fit.
    const results = await Promise.allSettled(
      Array.from(
        { length: 6 },
        (_, i) =>
          (i % 2 ? onA : onB).set("blog", "sid", newSessionId(), record),
      ),
    );
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 3);
    assert.equal(await onA.count("blog"), 3);
  } finally {
    await Promise.all([a.close(), b.close()]);
    await redis.stop();
  }
});

Deno.test("a site's sessions are capped in bytes, across nodes; expired and deleted ones free their bytes", async () => {
  const redis = await TestRedis.start();
  const url = redis.url;
  const a = await RedisLink.connect({ url, prefix: "b:", nodeId: "a" });
  const b = await RedisLink.connect({ url, prefix: "b:", nodeId: "b" });
  try {
    const limits = { maxBytesPerSite: 200 * 1024 };
    const onA = openRedisSessionStore(a, limits);
    const onB = openRedisSessionStore(b, limits);
    const record = (expires = Date.now() + HOUR) => ({
      data: { text: "x".repeat(60 * 1024) },
      expires,
    });
    const ids = [newSessionId(), newSessionId(), newSessionId()];
    await onA.set("blog", "sid", ids[0]!, record());
    await onB.set("blog", "sid", ids[1]!, record());
    await onA.set("blog", "sid", ids[2]!, record());
    await assert.rejects(
      onB.set("blog", "sid", newSessionId(), record()),
      {
        name: "SessionLimitError",
        message:
          'Site "blog" already keeps 200 KiB of sessions in the cluster store, its limit',
      },
    );
    // Another site has its own share; rewriting a session costs no more.
    await onB.set("shop", "sid", newSessionId(), record());
    await onB.set("blog", "sid", ids[0]!, record());
    await onA.delete("blog", "sid", ids[0]!);
    await onB.set("blog", "sid", newSessionId(), record());
    // One about to expire: its bytes go back once it has.
    await onA.delete("blog", "sid", ids[1]!);
    await onA.set("blog", "sid", ids[1]!, record(Date.now() + 50));
    await new Promise((r) => setTimeout(r, 100));
    await onB.set("blog", "sid", newSessionId(), record());
    assert.equal(await onA.count("blog"), 3);
    await assert.rejects(
      onA.set("blog", "sid", newSessionId(), record()),
      SessionLimitError,
    );
    assert.throws(
      () => openRedisSessionStore(a, { maxBytesPerSite: 0 }),
      RangeError,
    );
  } finally {
    await Promise.all([a.close(), b.close()]);
    await redis.stop();
  }
});

Deno.test("with Redis away or frozen, store calls fail within a second", async () => {
  const redis = await TestRedis.start();
  const link = await RedisLink.connect({
    url: redis.url,
    prefix: "f:",
    nodeId: "a",
  });
  const store = openRedisSessionStore(link);
  const id = newSessionId();
  const record = { data: { n: 1 }, expires: Date.now() + HOUR };
  try {
    await store.set("blog", "sid", id, record);
    redis.freeze();
    let started = performance.now();
    await assert.rejects(store.get("blog", "sid", id), ClusterUnavailable);
    // A second and some for a busy machine; without the timeout it hangs.
    assert.ok(performance.now() - started < 2500);
    assert.equal(link.up, false);
    redis.thaw();
    await waitFor(() => link.up);
    assert.equal((await store.get("blog", "sid", id))?.data.n, 1);

    await redis.stop();
    await waitFor(() => !link.up);
    started = performance.now();
    await assert.rejects(
      store.set("blog", "sid", id, record),
      ClusterUnavailable,
    );
    assert.ok(performance.now() - started < 500);
    await redis.restart();
    await waitFor(() => link.up, 15_000);
    assert.equal(await store.set("blog", "sid", id, record), 7);
  } finally {
    await link.close();
    await redis.stop();
  }
});

Deno.test("RedisLink.connect() to nothing fails with one line naming the URL, not its password", async () => {
  const redis = await TestRedis.start();
  const port = redis.port;
  await redis.stop();
  await assert.rejects(
    RedisLink.connect({
      url: `redis://:hunter2@127.0.0.1:${port}`,
      prefix: "x:",
      nodeId: "a",
    }),
    (err: Error) => {
      assert.match(
        err.message,
        new RegExp(
          `^Cannot reach the cluster store redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port} \\(--cluster\\): .*ECONNREFUSED`,
        ),
      );
      assert.doesNotMatch(err.message, /hunter2|\n/);
      return true;
    },
  );
});

async function waitFor(check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("Timed out waiting");
    await new Promise((r) => setTimeout(r, 50));
  }
}
