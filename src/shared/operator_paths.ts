/**
 * Paths the gateway answers itself on every host, for the operator's
 * addresses only: no site can shadow them.
 *
 * @module
 */

/** The operator's statistics page. */
export const STATS_PATH = "/stats";

/**
 * The health check for load balancers: answered on every host, to every
 * peer (with details only for the operator's addresses).
 */
export const HEALTH_PATH = "/.well-known/sandflare/health";

/** Every operator path. */
export const OPERATOR_PATHS: readonly string[] = [STATS_PATH];
