/**
 * Websocket clients live in the gateway: each is bound to the generation of
 * the site that accepted it (its events go there), while any generation of
 * that site can send to it or to every client of the same channel.
 *
 * @module
 */

import { RepeatedWarning } from "../log.ts";
import { Budget } from "../shared/budget.ts";
import type { SiteMessage } from "../supervisor/sandbox_process.ts";
import type { SandboxProcess } from "../supervisor/sandbox_process.ts";
import { socketKey } from "../supervisor/snapshot.ts";

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
}

/** The channel key of a generation's channel number, or null. */
function keyOf(generation: SandboxProcess, channel: number): string | null {
  const reg = generation.routes?.websockets[channel];
  return reg === undefined ? null : socketKey(reg);
}

/** Bytes all of one site's websocket clients may have queued. */
export const SITE_WEBSOCKET_BYTES = 64 * 1024 * 1024;

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
}

/** What `accept` needs to know about a new client. */
export interface AcceptInfo {
  site: string;
  /** Host, path and protocol of the registration: the same in every generation. */
  key: string;
  channel: number;
  generation: SandboxProcess;
  peer: string;
}

const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();

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
  #queued = new Map<string, { bytes: number; at: number }>();

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

  /** Takes over an upgraded socket. */
  accept(socket: WebSocket, info: AcceptInfo): void {
    socket.binaryType = "arraybuffer";
    const client: HubClient = {
      id: randomId(),
      ...info,
      socket,
      open: false,
      budget: new Budget({ perSecond: this.#options.maxRate }),
    };
    socket.onopen = () => {
      client.open = true;
      this.#clients.set(client.id, client);
      const group = `${client.site}\0${client.key}`;
      let set = this.#byChannel.get(group);
      if (set === undefined) this.#byChannel.set(group, set = new Set());
      set.add(client);
      client.generation.countClient(1);
      client.generation.post({
        t: "wsOpen",
        channel: client.channel,
        client: client.id,
        peer: client.peer,
      });
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
    if (msg.t === "wsClose") {
      const client = this.#clients.get(msg.client);
      if (client?.site === site && client.key === key) {
        client.socket.close(msg.code, msg.reason);
      }
      return 1;
    }
    // Found first, decoded only when someone is there to receive it.
    if (msg.client !== null) {
      const client = this.#clients.get(msg.client);
      if (client?.site !== site || client.key !== key) return 0;
      this.#send(client, msg.binary ? body : DECODER.decode(body), body.length);
      return 1;
    }
    const clients = this.#byChannel.get(`${site}\0${key}`);
    if (clients === undefined || clients.size === 0) return 0;
    const data: string | Uint8Array = msg.binary ? body : DECODER.decode(body);
    for (const client of clients) this.#send(client, data, body.length);
    return clients.size;
  }

  #send(client: HubClient, data: string | Uint8Array, size: number): void {
    if (!client.open || client.socket.readyState !== WebSocket.OPEN) return;
    if (client.socket.bufferedAmount + size > this.#options.maxBuffer) {
      this.#slow.note(
        client.site,
        `${
          client.id.slice(0, 8)
        } (${client.peer}) is not reading (over ${this.#options.maxBuffer} bytes queued)`,
      );
      client.socket.close(1008, "Too slow: send buffer full");
      return;
    }
    // What all of a site's clients have queued is bounded too: a broadcast
    // of large messages to many clients cannot fill the gateway's memory.
    const queued = this.#siteQueued(client.site);
    if (queued.bytes + size > SITE_WEBSOCKET_BYTES) {
      this.#slow.note(
        client.site,
        `${
          client.id.slice(0, 8)
        } (${client.peer}): the site's clients have ${SITE_WEBSOCKET_BYTES} bytes queued`,
      );
      client.socket.close(1008, "Too slow: the site's send buffers are full");
      return;
    }
    queued.bytes += size;
    client.socket.send(data);
  }

  /**
   * Bytes a site's clients have queued: summed from their buffers at most
   * every 100 ms, plus what was sent since.
   */
  #siteQueued(site: string): { bytes: number; at: number } {
    const now = Date.now();
    let queued = this.#queued.get(site);
    if (queued === undefined || now - queued.at >= 100) {
      let bytes = 0;
      for (const c of this.#clients.values()) {
        if (c.site === site) bytes += c.socket.bufferedAmount;
      }
      queued = { bytes, at: now };
      this.#queued.set(site, queued);
    }
    return queued;
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
