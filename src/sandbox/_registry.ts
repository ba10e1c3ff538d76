/**
 * What a site's scripts registered in this worker: hosts, pages and hooks.
 * One registry per worker (each worker is its own isolate and loads the site
 * once); it is sealed when loading ends, after which registering is an error.
 *
 * @module
 */

import type {
  FromWorker,
  SocketOut,
  WireHost,
  WirePage,
  WireRequest,
  WireRoutes,
  WireSession,
  WireSocket,
} from "../protocol/messages.ts";
import type { HookFunction, PageCallback } from "./api.ts";

/** A registered page with its callback. */
export interface PageEntry {
  spec: WirePage;
  callback: PageCallback;
  /** For log lines: `GET /path` or `GET /regex/`. */
  label: string;
}

/** A hook callback with its ordering. */
export interface HookEntry {
  fn: HookFunction;
  priority: number;
  order: number;
}

/** A scheduler task. */
export interface TaskEntry {
  name: string;
  fn: () => unknown;
}

/** A websocket registration and the channel object the site holds. */
export interface SocketEntry {
  spec: WireSocket;
  /** Delivers gateway events to the site's callbacks. */
  events: SocketEvents;
}

/** What a channel does with the events of its clients. */
export interface SocketEvents {
  open(client: string, req: WireRequest, captures: string[]): Promise<void>;
  message(client: string, data: string | Uint8Array): Promise<void>;
  close(client: string, code: number, reason: string): Promise<void>;
}

/** A session request (sessionGet or sessionSave, without its call number). */
export type SessionAsk =
  | { t: "sessionGet"; name: string; id: string | null }
  | {
    t: "sessionSave";
    name: string;
    id: string;
    data: Record<string, unknown>;
  };

/** The per-worker registration state. */
export interface Registry {
  sealed: boolean;
  sockets: SocketEntry[];
  /** Sends a message to the host (set by the worker entry). */
  post: (message: FromWorker | SocketOut) => void;
  /** Asks the gateway about a session (set by the worker entry). */
  ask: (question: SessionAsk) => Promise<WireSession>;
  tasks: TaskEntry[];
  hosts: Map<string, WireHost>;
  pages: PageEntry[];
  hooks: Map<string, Map<string, HookEntry>>;
  hookOrder: number;
}

/** The registry of this worker. */
export const registry: Registry = {
  sealed: false,
  sockets: [],
  post: () => {
    throw new Error("The sandbox is not connected");
  },
  ask: () => Promise.reject(new Error("The sandbox is not connected")),
  tasks: [],
  hosts: new Map(),
  pages: [],
  hooks: new Map(),
  hookOrder: 0,
};

/**
 * Throws when registering after the site has loaded.
 * @param call the call, as the site wrote it, for the message
 */
export function assertLoading(call: string): void {
  if (registry.sealed) {
    throw new Error(
      `${call} was called after the site loaded; register hosts and pages at the top level of an autorun script`,
    );
  }
}

/** The routes table this worker reports once loaded. */
export function routesOf(reg: Registry): WireRoutes {
  const hooks: string[] = [];
  for (const [name, entries] of reg.hooks) {
    if (entries.size > 0) hooks.push(name);
  }
  return {
    hosts: [...reg.hosts.values()],
    pages: reg.pages.map((p) => p.spec),
    hooks: hooks.sort(),
    websockets: reg.sockets.map((s) => s.spec),
    tasks: reg.tasks.length,
  };
}
