import assert from "node:assert/strict";
import { TestRedis } from "../../tests/helpers/redis.ts";
import { Cluster, type RelayedMessage } from "./cluster.ts";

Deno.test("Cluster.join() refuses a second live node with the same id, until the first leaves", async () => {
  const redis = await TestRedis.start();
  const options = { url: redis.url, prefix: "t:", nodeId: "web1:8080" };
  const first = await Cluster.join(options);
  try {
    await assert.rejects(Cluster.join(options), {
      message:
        'Another node of this cluster is running as "web1:8080"; give each node its own --node-id',
    });
    // Another prefix is another cluster.
    const other = await Cluster.join({ ...options, prefix: "u:" });
    await other.leave();
    await first.leave();
    const again = await Cluster.join(options);
    assert.deepEqual((await again.nodes()).map((n) => n.id), ["web1:8080"]);
    await again.leave();
  } finally {
    await first.leave();
    await redis.stop();
  }
});

Deno.test("Cluster.join() waits for the id of a node that died a moment ago", async () => {
  const redis = await TestRedis.start();
  try {
    // Its last heartbeat, 1.5 s from expiring.
    await redis.command("SET", "t:node:web1", "gone", "PX", "1500");
    const started = Date.now();
    const node = await Cluster.join({
      url: redis.url,
      prefix: "t:",
      nodeId: "web1",
    });
    assert.ok(Date.now() - started >= 1000);
    await node.leave();
  } finally {
    await redis.stop();
  }
});

Deno.test("Cluster.relay() reaches the other nodes, not itself, with the bytes intact", async () => {
  const redis = await TestRedis.start();
  const a = await Cluster.join({ url: redis.url, prefix: "t:", nodeId: "a" });
  const b = await Cluster.join({ url: redis.url, prefix: "t:", nodeId: "b" });
  try {
    const atA: RelayedMessage[] = [];
    const atB: [RelayedMessage, Uint8Array][] = [];
    a.onRelayed((msg) => atA.push(msg));
    b.onRelayed((msg, body) => atB.push([msg, body.slice()]));
    const msg: RelayedMessage = {
      op: "send",
      site: "chat",
      key: "*\0/ws\0",
      client: null,
      binary: true,
      code: 0,
      reason: "",
    };
    const body = Uint8Array.from({ length: 300 }, (_, i) => i % 256);
    for (let i = 0; i < 3; i++) a.relay({ ...msg, reason: String(i) }, body);
    const deadline = Date.now() + 5000;
    while (atB.length < 3 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.deepEqual(atB.map(([m]) => m.reason), ["0", "1", "2"]);
    assert.deepEqual(atB[0]![0], { ...msg, reason: "0" });
    assert.deepEqual(atB[0]![1], body);
    assert.equal(atA.length, 0);
  } finally {
    await a.leave();
    await b.leave();
    await redis.stop();
  }
});
