/**
 * The error a cluster's store gives when it cannot answer, in a module of
 * its own: the gateway recognizes it without loading the Redis client, which
 * a node on its own never needs.
 *
 * @module
 */

/**
 * The cluster store cannot answer now (away, or too slow). Callers report
 * it as a failure the site or operator can act on; nothing was done, or it
 * is not known whether it was.
 */
export class ClusterUnavailable extends Error {
  override name = "ClusterUnavailable";
}
