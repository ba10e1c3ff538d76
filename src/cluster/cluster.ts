/**
 * One node of a cluster: its link to the shared Redis, its name there, the
 * nodes it sees, and the bus that carries websocket sends to the others.
 *
 * Keys and channels, under the cluster's prefix:
 * - `node:ID` — the node's instance token, expiring 5 s after its last
 *   heartbeat: a second process started with a live node's id is refused;
 * - `nodes` — a sorted set of node ids by their last heartbeat (/stats);
 * - `ws` — the channel of websocket sends and closes between nodes;
 * - sessions (`redis_sessions.ts`) and task leases (`task_leases.ts`).
 *
 * @module
 */

import { log, RepeatedWarning } from "../log.ts";
import { Budget } from "../shared/budget.ts";
import type {
  SessionStore,
  SessionStoreOptions,
} from "../supervisor/session_store.ts";
import { RedisLink } from "./redis_link.ts";
import { openRedisSessionStore } from "./redis_sessions.ts";
import { type LeaseChange, TaskLeases } from "./task_leases.ts";

/** How often a node says it is alive. */
const HEARTBEAT_MS = 1000;
/** A node is gone when it has not said so for this long. */
const NODE_TTL_MS = 5000;
/** Nodes seen within this long are listed on /stats. */
const RECENT_MS = 60_000;
/** Bytes of websocket sends on their way to Redis at once; beyond, dropped. */
const RELAY_BYTES_MAX = 32 * 1024 * 1024;
/**
 * Bytes a second one site may send to the other nodes (bursts of twice
 * that). Every node receives all of it, and Redis drops a subscriber that
 * falls 32 MiB behind (its output buffer limit), losing every site's sends
 * to it: one site must not be able to push a node that lags a moment there.
 */
export const RELAY_BYTES_PER_SECOND = 4 * 1024 * 1024;
/** What a relayed message costs besides its bytes, as the budget counts it. */
const RELAY_OVERHEAD = 1024;

/** Options of {@linkcode Cluster.join}. */
export interface ClusterOptions {
  /** The `--cluster` URL. */
  url: string;
  /** `--cluster-prefix`. */
  prefix: string;
  /** This node's id. */
  nodeId: string;
}

/** A websocket send or close that another node's clients may be part of. */
export interface RelayedMessage {
  op: "send" | "close";
  site: string;
  /** The channel's key (host, path and protocol of its registration). */
  key: string;
  /** One client, or null for every client of the channel. */
  client: string | null;
  binary: boolean;
  code: number;
  reason: string;
}

/** A node seen recently, for /stats. */
export interface SeenNode {
  id: string;
  /** Milliseconds since its last heartbeat. */
  lastSeenMs: number;
}

const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();

/** This node's part in a cluster. */
export class Cluster {
  readonly link: RedisLink;
  readonly nodeId: string;
  readonly #token = crypto.randomUUID();
  #heartbeat: ReturnType<typeof setInterval> | null = null;
  #leases: TaskLeases | null = null;
  #onRelayed: ((msg: RelayedMessage, body: Uint8Array) => void) | null = null;
  #relaying = 0;
  #relayWarned = false;
  readonly #backlog = new RepeatedWarning(
    "Websocket sends to other nodes dropped",
  );
  readonly #budgets = new Map<string, Budget>();
  #left = false;

  private constructor(link: RedisLink) {
    this.link = link;
    this.nodeId = link.nodeId;
    link.onChange((up) => {
      if (up) this.#relayWarned = false;
    });
  }

  /**
   * Connects to the cluster's Redis and takes this node's id.
   * @throws {Error} one line: Redis cannot be reached, or the id is taken
   */
  static async join(options: ClusterOptions): Promise<Cluster> {
    const link = await RedisLink.connect(options);
    const cluster = new Cluster(link);
    try {
      // A node that died a moment ago (restarted by systemd, say) holds
      // its id until its last heartbeat expires: waited for, once.
      const take = () =>
        link.run((c) =>
          c.set(link.key("node", options.nodeId), cluster.#token, {
            NX: true,
            PX: NODE_TTL_MS,
          })
        );
      let taken = await take();
      if (taken === null) {
        log.info(
          null,
          `Cluster: node id ${
            JSON.stringify(options.nodeId)
          } is held; waiting up to ${NODE_TTL_MS / 1000} s for it to expire`,
        );
        const deadline = Date.now() + NODE_TTL_MS + 500;
        while (taken === null && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 250));
          taken = await take();
        }
      }
      if (taken === null) {
        throw new Error(
          `Another node of this cluster is running as ${
            JSON.stringify(options.nodeId)
          }; give each node its own --node-id`,
        );
      }
      await cluster.#beat();
      await link.subscribe(
        link.key("ws"),
        (message) => cluster.#fromBus(message),
      );
    } catch (err) {
      await link.close();
      throw err;
    }
    cluster.#heartbeat = setInterval(() => void cluster.#beat(), HEARTBEAT_MS);
    log.info(
      null,
      `Cluster: node ${JSON.stringify(options.nodeId)} of ${link.shown} ` +
        `(keys ${JSON.stringify(options.prefix)}…)`,
    );
    return cluster;
  }

  /** Whether the cluster's store answers. */
  get healthy(): boolean {
    return this.link.up;
  }

  /** A session store in the cluster's Redis. */
  sessionStore(options?: SessionStoreOptions): SessionStore {
    return openRedisSessionStore(this.link, options);
  }

  /** The task leases of this node; `onChange` starts and pauses tasks. */
  leases(onChange: LeaseChange): TaskLeases {
    this.#leases ??= new TaskLeases(this.link, onChange);
    this.#leases.start();
    return this.#leases;
  }

  /** Nodes seen in the last minute (this one included), newest first. */
  async nodes(): Promise<SeenNode[]> {
    const now = Date.now();
    const seen = await this.link.run((c) =>
      c.zRangeByScoreWithScores(this.link.key("nodes"), now - RECENT_MS, "+inf")
    );
    return seen
      .map(({ value, score }) => ({
        id: String(value),
        lastSeenMs: Math.max(0, now - score),
      }))
      .sort((a, b) => a.lastSeenMs - b.lastSeenMs);
  }

  /** Says this node is alive; forgets nodes not seen for an hour. */
  async #beat(): Promise<void> {
    const now = Date.now();
    try {
      await this.link.run((c) =>
        c.multi()
          .set(this.link.key("node", this.nodeId), this.#token, {
            PX: NODE_TTL_MS,
          })
          .zAdd(this.link.key("nodes"), { score: now, value: this.nodeId })
          .zRemRangeByScore(this.link.key("nodes"), "-inf", now - 3_600_000)
          .exec()
      );
    } catch {
      // The link logs the loss; the next beat tries again.
    }
  }

  /** Where websocket sends from other nodes go. */
  onRelayed(handler: (msg: RelayedMessage, body: Uint8Array) => void): void {
    this.#onRelayed = handler;
  }

  /**
   * Passes a websocket send or close on to the other nodes. While Redis is
   * away it reaches nobody else, and the log says so once.
   */
  relay(msg: RelayedMessage, body: Uint8Array): void {
    if (this.#left) return;
    if (!this.link.up) {
      this.#warnRelay();
      return;
    }
    const cost = body.length + RELAY_OVERHEAD;
    if (this.#relaying + cost > RELAY_BYTES_MAX) {
      this.#backlog.note(
        msg.site,
        `over ${RELAY_BYTES_MAX / 1024 / 1024} MiB wait for the cluster store`,
      );
      return;
    }
    let budget = this.#budgets.get(msg.site);
    if (budget === undefined) {
      budget = new Budget({ perSecond: RELAY_BYTES_PER_SECOND });
      this.#budgets.set(msg.site, budget);
    }
    if (!budget.take(cost)) {
      this.#backlog.note(
        msg.site,
        `over ${
          RELAY_BYTES_PER_SECOND / 1024 / 1024
        } MiB a second from this site (its sends reach this node's clients)`,
      );
      return;
    }
    const head = ENCODER.encode(JSON.stringify({ ...msg, node: this.nodeId }));
    const frame = new Uint8Array(4 + head.length + body.length);
    new DataView(frame.buffer).setUint32(0, head.length);
    frame.set(head, 4);
    frame.set(body, 4 + head.length);
    this.#relaying += cost;
    this.link.publish(this.link.key("ws"), frame)
      .catch(() => this.#warnRelay())
      .finally(() => this.#relaying -= cost);
  }

  #warnRelay(): void {
    if (this.#relayWarned) return;
    this.#relayWarned = true;
    log.warn(
      null,
      "Websocket sends reach only this node's clients until the cluster " +
        "store is back",
    );
  }

  /** A send or close published by a node (this one's own are skipped). */
  #fromBus(frame: Uint8Array): void {
    const handler = this.#onRelayed;
    if (handler === null || frame.length < 4) return;
    const headLength = new DataView(
      frame.buffer,
      frame.byteOffset,
      frame.byteLength,
    ).getUint32(0);
    let head: unknown;
    try {
      head = JSON.parse(DECODER.decode(frame.subarray(4, 4 + headLength)));
    } catch {
      return;
    }
    if (!isRelayed(head) || head.node === this.nodeId) return;
    const { node: _node, ...msg } = head;
    handler(msg, frame.subarray(4 + headLength));
  }

  /** Leaves the cluster: leases handed back, the node's id freed. */
  async leave(): Promise<void> {
    if (this.#left) return;
    this.#left = true;
    if (this.#heartbeat !== null) clearInterval(this.#heartbeat);
    await this.#leases?.stop();
    try {
      await this.link.run((c) =>
        c.multi()
          .del(this.link.key("node", this.nodeId))
          .zRem(this.link.key("nodes"), this.nodeId)
          .exec()
      );
    } catch {
      // It expires by itself.
    }
    await this.link.close();
  }
}

function isRelayed(
  value: unknown,
): value is RelayedMessage & { node: string } {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return (v.op === "send" || v.op === "close") &&
    typeof v.site === "string" && typeof v.key === "string" &&
    (v.client === null || typeof v.client === "string") &&
    typeof v.binary === "boolean" && typeof v.node === "string" &&
    typeof v.code === "number" && typeof v.reason === "string";
}
