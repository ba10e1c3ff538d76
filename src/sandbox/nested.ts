/**
 * The entry of a Worker started by site code (see ./confine.ts): the same
 * confined scope as a pool worker, then the site's own module.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { confineGlobals, outputToLog, runNested } from "./confine.ts";

outputToLog();
confineGlobals();
runNested();
