/**
 * The entry of a Worker started by site code (see ./confine.ts): the same
 * confined scope as a pool worker, without Deno KV, then the site's own
 * module.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import {
  confineGlobals,
  confineKv,
  outputToLog,
  runNested,
} from "./confine.ts";

outputToLog();
confineGlobals();
confineKv(null); // a site's store is opened by its pool workers
runNested();
