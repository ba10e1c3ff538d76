/**
 * This node as a load balancer and the operator see it: the paths the
 * gateway answers itself on every host, the health check
 * (`/.well-known/sandflare/health`) and /stats, with the cluster on it.
 * Also how the gateway's parts are wired to the cluster, when the node is
 * part of one.
 *
 * @module
 */

import type { Cluster, RelayedMessage } from "../cluster/cluster.ts";
import type { TaskLeases } from "../cluster/task_leases.ts";
import type { SessionStore } from "../supervisor/session_store.ts";
import type { TaskGate } from "../supervisor/site_runner.ts";
import { ROOT_SITE } from "../supervisor/sites.ts";
import { type Answer, type RequestContext, send } from "./answer.ts";
import {
  type ClusterStats,
  type LatencyTracker,
  statsAnswer,
} from "./stats.ts";
import type { GatewayOptions } from "./options.ts";
import type { Supervisor } from "../supervisor/supervisor.ts";
import { HEALTH_PATH, STATS_PATH } from "../shared/operator_paths.ts";
import denoJson from "../../deno.json" with { type: "json" };

const VERSION: string = denoJson.version;

/** What {@linkcode NodeStatus} reads of the gateway. */
export interface NodeStatusSources {
  cluster: Cluster | null;
  leases: TaskLeases | null;
  /** Who may see /stats and the health check's details (`operators`). */
  options: Pick<GatewayOptions, "operators" | "sites">;
  /** The sites (made after the node's status, hence a function). */
  sites: () => Supervisor;
  latency: LatencyTracker;
  /** Open websocket clients of a site. */
  websockets: (site: string) => number;
  /** An error page, as the gateway makes them. */
  error: (
    code: number,
    message: string,
    owner: string,
    ctx: RequestContext,
  ) => Promise<Answer>;
}

/** What the gateway's parts take from the cluster (nothing when alone). */
export interface ClusterParts {
  /** For the websocket hub: sends to pass on to the other nodes. */
  hub: { relay?: (msg: RelayedMessage, body: Uint8Array) => void };
  /** For the session bridge: the shared store. */
  sessions: { store?: SessionStore };
  /** For the supervisor: where scheduler tasks run. */
  supervisor: { tasks?: TaskGate };
  cluster: Cluster | null;
  leases: TaskLeases | null;
}

/**
 * Wires a node's parts to its cluster: websocket sends relayed, sessions
 * in Redis, scheduler tasks where the node holds their lease.
 *
 * @param runTasks starts or pauses a site's tasks when its lease moves
 */
export function clusterParts(
  cluster: Cluster | null,
  runTasks: (site: string, run: boolean) => void,
): ClusterParts {
  if (cluster === null) {
    return { hub: {}, sessions: {}, supervisor: {}, cluster, leases: null };
  }
  const leases = cluster.leases(runTasks);
  return {
    hub: { relay: (msg, body) => cluster.relay(msg, body) },
    sessions: { store: cluster.sessionStore() },
    supervisor: {
      tasks: { want: (site, wanted) => leases.want(site, wanted) },
    },
    cluster,
    leases,
  };
}

/** The node's state, for balancers and the operator. */
export class NodeStatus {
  /** Stopping: the health check says so, so balancers send no more. */
  draining = false;
  readonly #from: NodeStatusSources;
  readonly #cluster: Cluster | null;
  readonly #startedAt = Date.now();

  constructor(from: NodeStatusSources) {
    this.#from = from;
    this.#cluster = from.cluster;
  }

  /**
   * The answer for an operator path (no site can shadow these), or null
   * for any other path.
   */
  answer(
    path: string,
    ctx: RequestContext,
    query: string,
  ): Answer | Promise<Answer> | null {
    const operator = this.#from.options.operators(ctx.wire.peer);
    if (path === HEALTH_PATH) return this.health(ctx, operator);
    if (path !== STATS_PATH) return null;
    if (!operator) {
      return this.#from.error(
        403,
        "/stats is only for the operator's addresses",
        ROOT_SITE,
        ctx,
      );
    }
    return this.#stats(ctx, query);
  }

  async #stats(ctx: RequestContext, query: string): Promise<Answer> {
    const sites = this.#from.sites();
    return statsAnswer(ctx, query, {
      snapshot: sites.snapshot,
      notLoaded: sites.notLoaded,
      spares: sites.spares,
      latency: this.#from.latency,
      websockets: this.#from.websockets,
      version: VERSION,
      startedAt: this.#startedAt,
      limits: this.#from.options.sites.containment.describe(),
      cluster: await this.clusterStats(),
    });
  }

  /**
   * The health check: 200 while this node serves and its cluster store
   * answers, else 503. The operator's addresses get the details as JSON;
   * others only the verdict.
   */
  health(ctx: RequestContext, operator: boolean): Answer {
    const sites = this.#from.sites();
    const cluster = this.#cluster;
    const store = cluster === null ? null : cluster.healthy ? "up" : "down";
    const ok = !this.draining && store !== "down";
    const verdict = ok ? "ok" : "unavailable";
    const body = operator
      ? JSON.stringify({
        status: verdict,
        node: cluster?.nodeId ?? null,
        draining: this.draining,
        clusterStore: store,
        sites: sites.siteNames.length,
        notLoaded: sites.notLoaded.size,
      })
      : verdict;
    const type = operator ? "application/json" : "text/plain";
    return send(
      ok ? 200 : 503,
      [
        ["content-type", `${type}; charset=utf-8`],
        ["cache-control", "no-store"],
      ],
      body + "\n",
      ctx.wire.method,
      ROOT_SITE,
    );
  }

  /** What /stats shows of the cluster, or null for a node on its own. */
  async clusterStats(): Promise<ClusterStats | null> {
    const cluster = this.#cluster;
    if (cluster === null) return null;
    let nodes: ClusterStats["nodes"] = null;
    try {
      nodes = await cluster.nodes();
    } catch {
      // Shown as unknown.
    }
    return {
      node: cluster.nodeId,
      store: cluster.link.shown,
      storeUp: cluster.healthy,
      nodes,
      tasksHere: this.#from.leases?.held ?? [],
    };
  }

  /** Leaves the cluster (leases handed back), once the sites stopped. */
  async leave(): Promise<void> {
    await this.#cluster?.leave();
  }
}
