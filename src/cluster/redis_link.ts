/**
 * The node's link to the cluster's Redis: one connection for commands and
 * one for subscriptions (Redis gives a subscribed connection to nothing
 * else). Every command fails fast while Redis is away, and within
 * {@linkcode COMMAND_TIMEOUT_MS} when it hangs: nothing a request waits on
 * can hang on Redis. The link reconnects by itself with backoff and says so
 * in the log once when lost and once when back.
 *
 * The client is `@redis/client` (node-redis, the client Redis itself
 * maintains): promises first, pub/sub with binary messages, Lua scripts,
 * RESP3, and subscriptions restored after a reconnect. It is the core of the
 * `redis` package without the modules (search, JSON, …) Sandflare does not
 * use.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createClient } from "@redis/client";
import { log } from "../log.ts";
import { redactClusterUrl } from "./cluster_url.ts";
import { ClusterUnavailable } from "./errors.ts";

/** A command connection, as the stores and leases use it. */
export type RedisClient = ReturnType<typeof makeClient>;

/**
 * A connection that fails at once while away rather than queue (a request
 * must not wait for Redis to come back), tries once at start (an
 * unreachable Redis is an operator's error) and then reconnects forever.
 */
function makeClient(url: string, started: () => boolean) {
  return createClient({
    url,
    disableOfflineQueue: true,
    socket: {
      connectTimeout: CONNECT_TIMEOUT_MS,
      reconnectStrategy: (retries: number, cause: Error) =>
        started()
          ? Math.min(RECONNECT_MIN_MS * 2 ** retries, RECONNECT_MAX_MS)
          : cause,
    },
  });
}

/** How long any one command may take before it is reported failed. */
export const COMMAND_TIMEOUT_MS = 1000;
/** How long closing may wait for commands under way. */
const CLOSE_MS = 1000;
/** How long connecting may take at start. */
const CONNECT_TIMEOUT_MS = 2000;
/** Backoff between reconnection attempts: doubling from 100 ms to 2 s. */
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 2000;

export { ClusterUnavailable };

/** Options of {@linkcode RedisLink.connect}. */
export interface RedisLinkOptions {
  /** `redis://` or `rediss://` URL (checked by `checkClusterUrl`). */
  url: string;
  /** Prefix of every key and channel. */
  prefix: string;
  /** This node's name. */
  nodeId: string;
  /** Command timeout. @default {COMMAND_TIMEOUT_MS} */
  commandTimeoutMs?: number;
}

/** One node's connections to the cluster's Redis. */
export class RedisLink {
  readonly prefix: string;
  readonly nodeId: string;
  /** The URL as the log may show it. */
  readonly shown: string;
  readonly #commands: RedisClient;
  readonly #subscriber: RedisClient;
  /**
   * Publishes alone: a burst of large websocket sends does not hold up
   * session commands queued behind it.
   */
  readonly #publisher: RedisClient;
  readonly #timeoutMs: number;
  readonly #listeners = new Set<(up: boolean) => void>();
  /** Whether the last command timed out (Redis hangs rather than refuses). */
  #stalled = false;
  #probing: ReturnType<typeof setInterval> | null = null;
  #wasUp = true;
  #lostAt = 0;
  #closed = false;

  private constructor(
    options: RedisLinkOptions,
    commands: RedisClient,
    subscriber: RedisClient,
    publisher: RedisClient,
  ) {
    this.prefix = options.prefix;
    this.nodeId = options.nodeId;
    this.shown = redactClusterUrl(options.url);
    this.#timeoutMs = options.commandTimeoutMs ?? COMMAND_TIMEOUT_MS;
    this.#commands = commands;
    this.#subscriber = subscriber;
    this.#publisher = publisher;
  }

  /**
   * Connects the three connections (commands, publishing, subscriptions).
   * @throws {Error} with one line naming the URL (no password) and why
   */
  static async connect(options: RedisLinkOptions): Promise<RedisLink> {
    let started = false;
    const make = () => makeClient(options.url, () => started);
    const commands = make();
    const subscriber = make();
    const publisher = make();
    const clients = [commands, subscriber, publisher];
    // Listeners go on before connecting (node-redis 6.3.1 delivers no more
    // events to listeners added after an `off`). Errors before start are
    // thrown by connect(); later ones are logged as lost/back by the link.
    let link: RedisLink | null = null;
    for (const client of clients) {
      for (const event of ["ready", "end", "reconnecting", "error"]) {
        client.on(event, (err?: unknown) => {
          queueMicrotask(() => {
            if (link !== null) {
              link.#update(event === "error" ? err : undefined);
            }
          });
        });
      }
    }
    try {
      for (const client of clients) await client.connect();
      const pong = await commands.ping();
      if (pong !== "PONG") throw new Error(`PING answered ${String(pong)}`);
    } catch (err) {
      await Promise.allSettled(clients.map((client) => client.destroy()));
      throw new Error(
        `Cannot reach the cluster store ${redactClusterUrl(options.url)} ` +
          `(--cluster): ${describeError(err)}`,
      );
    }
    started = true;
    link = new RedisLink(options, commands, subscriber, publisher);
    return link;
  }

  /** Whether every connection is ready and commands are answered. */
  get up(): boolean {
    return !this.#closed && this.#commands.isReady &&
      this.#subscriber.isReady && this.#publisher.isReady && !this.#stalled;
  }

  /** Calls `listener` with the new state whenever the link is lost or back. */
  onChange(listener: (up: boolean) => void): void {
    this.#listeners.add(listener);
  }

  /** A key of this cluster: the prefix, then the parts. */
  key(...parts: string[]): string {
    return this.prefix + parts.join(":");
  }

  /**
   * Runs commands on the command connection, failing fast while Redis is
   * away and after the timeout when it does not answer.
   * @throws {ClusterUnavailable} when Redis is away or too slow
   */
  run<T>(
    fn: (client: RedisClient) => Promise<T>,
    probe = false,
  ): Promise<T> {
    return this.#runOn(this.#commands, fn, probe);
  }

  async #runOn<T>(
    client: RedisClient,
    fn: (client: RedisClient) => Promise<T>,
    probe = false,
  ): Promise<T> {
    // While it does not answer, only the probe waits for it: the rest fail
    // at once rather than each wait out the timeout.
    if (this.#closed || !client.isReady || (this.#stalled && !probe)) {
      throw new ClusterUnavailable("The cluster store is unavailable");
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      // Decided a turn later: after a pause of this process (a busy
      // machine), timers run before the replies that arrived meanwhile
      // are read, and those may well answer it.
      const expire = () => {
        this.#stalled = true;
        this.#update();
        this.#probe();
        reject(
          new ClusterUnavailable(
            `The cluster store did not answer within ${this.#timeoutMs} ms`,
          ),
        );
      };
      timer = setTimeout(() => timer = setTimeout(expire, 0), this.#timeoutMs);
    });
    try {
      const result = await Promise.race([fn(client), timeout]);
      if (this.#stalled) {
        this.#stalled = false;
        this.#update();
      }
      return result;
    } catch (err) {
      if (err instanceof ClusterUnavailable) throw err;
      if (!client.isReady) {
        throw new ClusterUnavailable(
          `The cluster store is unavailable: ${describeError(err)}`,
        );
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Subscribes to a channel; messages arrive as bytes. Subscriptions are
   * restored after a reconnect.
   */
  async subscribe(
    channel: string,
    listener: (message: Uint8Array) => void,
  ): Promise<void> {
    await this.#subscriber.subscribe(
      channel,
      // A Buffer: passed on as a plain Uint8Array over the same bytes.
      (message: Uint8Array) =>
        listener(
          new Uint8Array(
            message.buffer,
            message.byteOffset,
            message.byteLength,
          ),
        ),
      true,
    );
  }

  /**
   * Publishes bytes on a channel.
   * @returns how many subscribers (nodes) received it
   * @throws {ClusterUnavailable} when Redis is away or too slow
   */
  publish(channel: string, message: Uint8Array): Promise<number> {
    return this.#runOn(
      this.#publisher,
      (client) => client.publish(channel, toBuffer(message)),
    );
  }

  /** While commands time out: a PING every half second, until one answers. */
  #probe(): void {
    if (this.#probing !== null) return;
    this.#probing = setInterval(() => {
      if (this.#closed || !this.#stalled) {
        clearInterval(this.#probing!);
        this.#probing = null;
        return;
      }
      this.run((client) => client.ping(), true).catch(() => {});
    }, 500);
  }

  /**
   * Closes the connections: what is under way may finish for up to a
   * second (node-redis waits for every queued command, forever when Redis
   * does not answer), then they are cut.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#probing !== null) clearInterval(this.#probing);
    const clients = [this.#commands, this.#subscriber, this.#publisher];
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled(clients.map((client) => client.close())),
      new Promise((resolve) => timer = setTimeout(resolve, CLOSE_MS)),
    ]);
    clearTimeout(timer);
    for (const client of clients) {
      try {
        client.destroy();
      } catch {
        // Closed already.
      }
    }
  }

  /** Logs and announces a change between up and down. */
  #update(cause?: unknown): void {
    if (this.#closed) return;
    const up = this.up;
    if (up === this.#wasUp) return;
    this.#wasUp = up;
    if (!up) {
      this.#lostAt = Date.now();
      log.warn(
        null,
        `Cluster store ${this.shown} lost${
          cause === undefined
            ? this.#stalled ? ": it does not answer" : ""
            : `: ${describeError(cause)}`
        }; sessions fail and scheduler tasks pause until it is back; ` +
          "reconnecting",
      );
    } else {
      log.info(
        null,
        `Cluster store ${this.shown} is back after ${
          ((Date.now() - this.#lostAt) / 1000).toFixed(1)
        } s`,
      );
    }
    for (const listener of this.#listeners) listener(up);
  }
}

/** Bytes as the client's Buffer type, without copying. */
function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function describeError(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) {
    return describeError(err.errors[0]);
  }
  return err instanceof Error ? err.message : String(err);
}
