/**
 * What a site's scripts registered in this worker: hosts, pages and hooks.
 * One registry per worker (each worker is its own isolate and loads the site
 * once); it is sealed when loading ends, after which registering is an error.
 *
 * @module
 */

import type { WireHost, WirePage, WireRoutes } from "../protocol/messages.ts";
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

/** The per-worker registration state. */
export interface Registry {
  sealed: boolean;
  tasks: TaskEntry[];
  hosts: Map<string, WireHost>;
  pages: PageEntry[];
  hooks: Map<string, Map<string, HookEntry>>;
  hookOrder: number;
}

/** The registry of this worker. */
export const registry: Registry = {
  sealed: false,
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
  };
}
