/**
 * Messages between a sandbox host and its workers (postMessage, same
 * process). The worker runs site code, so the host narrows what it receives.
 *
 * @module
 */

import type {
  WireReply,
  WireRequest,
  WireRoutes,
} from "../protocol/messages.ts";

/** Host → worker. */
export type ToWorker =
  | { t: "load"; site: string; siteDir: string; scripts: string[] }
  | {
    t: "request";
    id: number;
    page: number;
    captures: string[];
    req: WireRequest;
    body: Uint8Array;
  }
  | { t: "error"; id: number; code: number; message: string; req: WireRequest }
  | { t: "ping"; id: number }
  /** Run a hook in this worker (e.g. `ReloadScripts`). */
  | { t: "hook"; name: string }
  /** This worker runs the site's scheduler tasks. */
  | { t: "startTasks" };

/** Worker → host. */
export type FromWorker =
  | { t: "loaded"; routes: WireRoutes }
  | { t: "loadFailed"; message: string; location: string | null }
  | { t: "reply"; id: number; reply: WireReply; body: Uint8Array }
  | { t: "pong"; id: number };

/**
 * Narrows a message from a worker; returns null for anything else (site code
 * can call `postMessage` itself).
 */
export function parseFromWorker(value: unknown): FromWorker | null {
  if (typeof value !== "object" || value === null) return null;
  const msg = value as Record<string, unknown>;
  switch (msg.t) {
    case "loaded":
    case "loadFailed":
      return msg as FromWorker; // re-checked by the gateway's parseFromSandbox
    case "reply":
      if (Number.isSafeInteger(msg.id) && msg.body instanceof Uint8Array) {
        return msg as FromWorker;
      }
      return null;
    case "pong":
      return Number.isSafeInteger(msg.id) ? msg as FromWorker : null;
    default:
      return null;
  }
}
