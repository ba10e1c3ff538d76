/**
 * Paths the gateway answers itself on every host, for the operator's
 * addresses only: no site can shadow them.
 *
 * @module
 */

/** The operator's statistics page. */
export const STATS_PATH = "/stats";

/** Every operator path. */
export const OPERATOR_PATHS: readonly string[] = [STATS_PATH];
