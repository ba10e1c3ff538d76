/**
 * What the gateway needs to run. The gateway defines it; the CLI maps the
 * flags of `listen` onto it.
 *
 * @module
 */

import type { SupervisorOptions } from "../supervisor/supervisor.ts";
import type { IpMatcher } from "./proxy.ts";
import type { Cluster } from "../cluster/cluster.ts";

/** What the gateway needs to run; the CLI maps its flags onto it. */
export interface GatewayOptions {
  /** Where the sites are and how each is run. */
  sites: Pick<
    SupervisorOptions,
    | "projectDir"
    | "sitesDir"
    | "threads"
    | "requestTimeout"
    | "siteQueue"
    | "idleStopMs"
    | "warmSpares"
    | "grantsFile"
    | "serverAddress"
    | "containment"
    | "siteCpu"
    | "isolate"
    | "cacheDir"
    | "routesDir"
    | "configDir"
    | "install"
    | "installCommand"
  >;
  /** Who may see /stats and the other operator paths. */
  operators: IpMatcher;
  /** Largest accepted request body, in bytes. */
  maxPostLength: number;
  /** Seconds a request body may pause (and the unit of its time budget). */
  bodyStallSeconds: number;
  /** Who may set X-Real-IP / X-Forwarded-For; null when not behind a proxy. */
  trustedProxies: IpMatcher | null;
  /** Files larger than this get no ETag. */
  maxEtagSize: number;
  /** Answer `setFile` with `X-Sendfile`. */
  xSendfile: boolean;
  /** Answer `setFile` with `X-Accel-Redirect` under this prefix, or null. */
  xAccelRedirect: string | null;
  /** The folder of the server's own data (sessions). */
  dataDir: string;
  /** Seconds a session lives after it was last saved. */
  sessionMaxAge: number;
  /** Whether cookies are `Secure` (the server speaks HTTPS). */
  secureCookies: boolean;
  /** Largest websocket message accepted from a client. */
  websocketMaxMessage: number;
  /**
   * Bytes queued for a slow websocket client before it is closed, and bytes
   * of client messages that may wait for their site.
   */
  websocketMaxBuffer: number;
  /** Messages a second one websocket client may send (bursts of twice that). */
  websocketMaxRate: number;
  /**
   * The cluster this node is part of: sessions, websocket sends and
   * scheduler tasks are shared through it. Null for a node on its own.
   */
  cluster: Cluster | null;
}
