/**
 * Websocket clients live in the gateway: each is bound to the generation of
 * the site that accepted it (its events go there), while any generation of
 * that site can send to it or to every client of the same channel.
 *
 * In a cluster, a site's send also goes to the other nodes (a channel's
 * clients on every node, a client held by another node), and theirs come
 * here through {@linkcode WebSocketHub.fromCluster}. A channel is named
 * across nodes by its key (host, path and protocol), which every generation
 * and node agree on.
 *
 * @module
 */

import { RepeatedWarning } from "../log.ts";
import { Budget } from "../shared/budget.ts";
import type { SiteMessage } from "../supervisor/sandbox_process.ts";
import type { SandboxProcess } from "../supervisor/sandbox_process.ts";
import type { RelayedMessage } from "../cluster/cluster.ts";
import { socketKey } from "../supervisor/snapshot.ts";
import type { WireRequest } from "../protocol/messages.ts";

/** Options of {@linkcode WebSocketHub}. */
export interface HubOptions {
  /** Largest message accepted from a client; larger closes it with 1009. */
  maxMessage: number;
  /**
   * Unsent bytes allowed per client; beyond, the slow client is closed
   * (1008). Also the bytes of client messages that may wait for the site:
   * beyond, a client sending more is closed (1008).
   */
  maxBuffer: number;
  /** Messages a second one client may send (bursts of twice that). */
  maxRate: number;
  /** Passes sends and closes on to the other nodes of the cluster. */
  relay?: (msg: RelayedMessage, body: Uint8Array) => void;
}

/** The channel key of a generation's channel number, or null. */
function keyOf(generation: SandboxProcess, channel: number): string | null {
  const reg = generation.routes?.websockets[channel];
  return reg === undefined ? null : socketKey(reg);
}

/** Bytes all of one site's websocket clients may have queued. */
export const SITE_WEBSOCKET_BYTES = 32 * 1024 * 1024;
/** Bytes all websocket clients of every site may have queued. */
export const GATEWAY_WEBSOCKET_BYTES = 256 * 1024 * 1024;
/**
 * What a queued message costs besides its payload (measured on Deno 2.9.6:
 * about 1 KiB each; `bufferedAmount` counts payload only).
 */
const MESSAGE_OVERHEAD = 1024;
/** A message small enough to go to a client that keeps up, whatever is held. */
const SMALL_MESSAGE = 64 * 1024;

/** One connected client. */
interface HubClient {
  id: string;
  site: string;
  key: string;
  channel: number;
  generation: SandboxProcess;
  socket: WebSocket;
  peer: string;
  open: boolean;
  /** What it may still send; null once it was refused. */
  budget: Budget | null;
  /** Messages sent to it since its buffer was last seen empty. */
  queuedMessages: number;
  /**
   * What it holds in the gateway, estimated: payload plus overhead per
   * message. It stays counted once closed, until the connection is gone
   * (Deno 2.9.6 cannot abort a websocket that does not read its close).
   */
  held: number;
}

/** What `accept` needs to know about a new client. */
export interface AcceptInfo {
  site: string;
  /** Host, path and protocol of the registration: the same in every generation. */
  key: string;
  channel: number;
  generation: SandboxProcess;
  /** The upgrade request, handed to the site once (not kept). */
  req: WireRequest;
  /** The captures of a pattern registration. */
  captures: string[];
}

const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();
const EMPTY = new Uint8Array(0);

function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The gateway's websocket clients. */
export class WebSocketHub {
  #options: HubOptions;
  #clients = new Map<string, HubClient>();
  #byChannel = new Map<string, Set<HubClient>>();
  #refusals = new RepeatedWarning("Closed websocket client(s)");
  #slow = new RepeatedWarning("Closed slow websocket client(s)");
  #held = new Map<string, { bytes: number; at: number }>();
  /** Clients closed for not reading, until their connection is gone. */
  #closing = new Set<HubClient>();

  constructor(options: HubOptions) {
    this.#options = options;
  }

  /** Open clients of every site. */
  get size(): number {
    return this.#clients.size;
  }

  /** Open clients of a site. */
  count(site: string): number {
    let n = 0;
    for (const c of this.#clients.values()) if (c.site === site) n++;
    return n;
  }

  /**
   * Whether a new client of `generation` may connect, handing the site a
   * request of `bytes`: not while the site has more than the
   * `maxBuffer` of client events waiting (a flood of handshakes would pile
   * them up in the gateway, each with its request).
   */
  admits(generation: SandboxProcess, bytes: number): boolean {
    return generation.backlog + bytes <= this.#options.maxBuffer;
  }

  /** Takes over an upgraded socket. */
  accept(socket: WebSocket, info: AcceptInfo): void {
    socket.binaryType = "arraybuffer";
    const { req, captures, ...where } = info;
    // Handed to the site once, then not kept for the socket's lifetime.
    let opening: { req: WireRequest; captures: string[] } | null = {
      req,
      captures,
    };
    const client: HubClient = {
      id: randomId(),
      ...where,
      peer: req.peer,
      socket,
      open: false,
      budget: new Budget({ perSecond: this.#options.maxRate }),
      queuedMessages: 0,
      held: 0,
    };
    socket.onopen = () => {
      client.open = true;
      this.#clients.set(client.id, client);
      const group = `${client.site}\0${client.key}`;
      let set = this.#byChannel.get(group);
      if (set === undefined) this.#byChannel.set(group, set = new Set());
      set.add(client);
      client.generation.countClient(1);
      if (opening === null) return;
      client.generation.post({
        t: "wsOpen",
        channel: client.channel,
        client: client.id,
        ...opening,
      });
      opening = null;
    };
    socket.onmessage = (event) => this.#fromClient(client, event.data);
    socket.onclose = (event) => this.#closed(client, event.code, event.reason);
    socket.onerror = () => {
      // A close event follows.
    };
  }

  #fromClient(client: HubClient, data: unknown): void {
    // Refused clients cost one comparison per message until they are gone.
    if (client.budget === null) return;
    if (!client.budget.take()) {
      this.#refuse(
        client,
        1008,
        `Too many messages (over ${this.#options.maxRate} a second)`,
      );
      return;
    }
    const binary = typeof data !== "string";
    const bytes = binary
      ? new Uint8Array(data instanceof ArrayBuffer ? data : new ArrayBuffer(0))
      : ENCODER.encode(data as string);
    if (bytes.length > this.#options.maxMessage) {
      this.#refuse(
        client,
        1009,
        `Message larger than ${this.#options.maxMessage} bytes`,
      );
      return;
    }
    if (client.generation.backlog + bytes.length > this.#options.maxBuffer) {
      this.#refuse(
        client,
        1008,
        "Too many messages: the site is not keeping up",
      );
      return;
    }
    client.generation.post({
      t: "wsMessage",
      channel: client.channel,
      client: client.id,
      binary,
    }, bytes);
  }

  /** Closes a client that sent what it may not; its later messages are dropped. */
  #refuse(client: HubClient, code: number, reason: string): void {
    client.budget = null;
    this.#refusals.note(client.site, `${reason} (${client.peer})`);
    try {
      client.socket.close(code, reason);
    } catch {
      // Already closing.
    }
  }

  #closed(client: HubClient, code: number, reason: string): void {
    this.#closing.delete(client);
    if (!client.open) return;
    client.open = false;
    this.#clients.delete(client.id);
    this.#byChannel.get(`${client.site}\0${client.key}`)?.delete(client);
    client.generation.countClient(-1);
    client.generation.post({
      t: "wsClose",
      channel: client.channel,
      client: client.id,
      code,
      reason,
    });
  }

  /**
   * A site's `send` or `close`: only its own channels' clients are reachable.
   * @returns how many clients it reached (what it cost)
   */
  fromSite(
    site: string,
    generation: SandboxProcess,
    msg: Extract<SiteMessage, { t: "wsSend" | "wsClose" }>,
    body: Uint8Array,
  ): number {
    const key = keyOf(generation, msg.channel);
    if (key === null) return 0;
    const relay = this.#options.relay;
    if (msg.t === "wsClose") {
      const client = this.#clients.get(msg.client);
      if (client !== undefined) {
        if (client.site === site && client.key === key) {
          client.socket.close(msg.code, msg.reason);
        }
      } else {
        relay?.({
          op: "close",
          site,
          key,
          client: msg.client,
          binary: false,
          code: msg.code,
          reason: msg.reason,
        }, EMPTY);
      }
      return 1;
    }
    const out = {
      op: "send" as const,
      site,
      key,
      client: msg.client,
      binary: msg.binary,
      code: 0,
      reason: "",
    };
    // A client held here is sent to here; any other may be another node's.
    if (msg.client !== null && !this.#clients.has(msg.client)) {
      relay?.(out, body);
      return 1;
    }
    if (msg.client === null) relay?.(out, body);
    return this.#deliver(out, body) + (relay === undefined ? 0 : 1);
  }

  /**
   * A send or close from a site on another node: to the clients of that
   * site's channel held here.
   */
  fromCluster(msg: RelayedMessage, body: Uint8Array): void {
    if (msg.op === "send") {
      this.#deliver(msg, body);
      return;
    }
    const client = msg.client === null
      ? undefined
      : this.#clients.get(msg.client);
    if (client?.site === msg.site && client.key === msg.key) {
      try {
        client.socket.close(msg.code, msg.reason);
      } catch {
        // Already closing.
      }
    }
  }

  /** Sends to one client or a whole channel held here; how many it reached. */
  #deliver(msg: RelayedMessage, body: Uint8Array): number {
    // Found first, decoded only when someone is there to receive it.
    if (msg.client !== null) {
      const client = this.#clients.get(msg.client);
      if (client?.site !== msg.site || client.key !== msg.key) return 0;
      this.#send(client, msg.binary ? body : DECODER.decode(body), body.length);
      return 1;
    }
    const clients = this.#byChannel.get(`${msg.site}\0${msg.key}`);
    if (clients === undefined || clients.size === 0) return 0;
    const data: string | Uint8Array = msg.binary ? body : DECODER.decode(body);
    for (const client of clients) this.#send(client, data, body.length);
    return clients.size;
  }

  #send(client: HubClient, data: string | Uint8Array, size: number): void {
    if (!client.open || client.socket.readyState !== WebSocket.OPEN) return;
    const buffered = client.socket.bufferedAmount;
    if (buffered === 0) client.queuedMessages = 0;
    const held = buffered + (client.queuedMessages + 1) * MESSAGE_OVERHEAD +
      size;
    if (held > this.#options.maxBuffer) {
      this.#slow.note(
        client.site,
        `${
          client.id.slice(0, 8)
        } (${client.peer}) is not reading (over ${this.#options.maxBuffer} bytes queued)`,
      );
      this.#closeSlow(client, "Too slow: send buffer full");
      return;
    }
    // What all clients hold is bounded too, per site and in all: a broadcast
    // of large messages to many clients cannot fill the gateway's memory.
    // A client that keeps up (its buffer empty) still gets small messages,
    // so clients that do not read cannot cut a site off from the others.
    const site = this.#heldBy(client.site);
    const all = this.#heldBy(null);
    const over = site.bytes + size > SITE_WEBSOCKET_BYTES ||
      all.bytes + size > GATEWAY_WEBSOCKET_BYTES;
    if (over && (buffered > 0 || size > SMALL_MESSAGE)) {
      this.#slow.note(
        client.site,
        `${
          client.id.slice(0, 8)
        } (${client.peer}): websocket clients hold too much unsent`,
      );
      this.#closeSlow(client, "Too slow: send buffers are full");
      return;
    }
    site.bytes += size + MESSAGE_OVERHEAD;
    all.bytes += size + MESSAGE_OVERHEAD;
    client.queuedMessages++;
    client.held = held;
    client.socket.send(data);
  }

  /** Closes a client that does not read; what it holds stays counted. */
  #closeSlow(client: HubClient, reason: string): void {
    client.budget = null;
    this.#closing.add(client);
    try {
      client.socket.close(1008, reason);
    } catch {
      // Already closing.
    }
  }

  /**
   * What the clients of `site` (or, for null, of every site) hold: summed
   * at most every 100 ms, plus what was sent since. Closing clients count
   * until they are gone.
   */
  #heldBy(site: string | null): { bytes: number; at: number } {
    const key = site ?? "\0";
    const now = Date.now();
    let held = this.#held.get(key);
    if (held === undefined || now - held.at >= 100) {
      let bytes = 0;
      for (const c of this.#clients.values()) {
        if (site !== null && c.site !== site) continue;
        if (c.socket.bufferedAmount === 0) c.queuedMessages = 0;
        bytes += c.socket.bufferedAmount + c.queuedMessages * MESSAGE_OVERHEAD;
      }
      for (const c of this.#closing) {
        if (site === null || c.site === site) bytes += c.held;
      }
      held = { bytes, at: now };
      this.#held.set(key, held);
    }
    return held;
  }

  /** Closes the clients of a sandbox that ended: 1012 if retired by a reload, else 1011. */
  sandboxExited(generation: SandboxProcess): void {
    this.closeGeneration(
      generation,
      generation.retired ? 1012 : 1011,
      generation.retired
        ? "The site was reloaded"
        : "The site's sandbox stopped",
    );
  }

  /** Closes the clients of a generation (its sandbox stopped). */
  closeGeneration(
    generation: SandboxProcess,
    code: number,
    reason: string,
  ): void {
    for (const client of [...this.#clients.values()]) {
      if (client.generation !== generation) continue;
      this.#forceClose(client, code, reason);
    }
  }

  /** Closes every client (the server is stopping). */
  closeAll(code: number, reason: string): void {
    for (const client of [...this.#clients.values()]) {
      this.#forceClose(client, code, reason);
    }
  }

  #forceClose(client: HubClient, code: number, reason: string): void {
    try {
      client.socket.close(code, reason);
    } catch {
      // Already closing.
    }
    // Its sandbox may be gone: forget it now rather than on the close event.
    if (client.open) {
      client.open = false;
      this.#clients.delete(client.id);
      this.#byChannel.get(`${client.site}\0${client.key}`)?.delete(client);
      client.generation.countClient(-1);
    }
  }
}
