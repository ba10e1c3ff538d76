/**
 * The entry of a Worker started by site code (see ./confine.ts): the same
 * confined scope as a pool worker, then the site's own module.
 *
 * @module
 */

/// <reference lib="deno.worker" />
// deno-lint-ignore-file no-console -- a sandbox's stderr is its site's log

import { confineGlobals, runNested } from "./confine.ts";

// stdout carries the sandbox's frames: site output goes to stderr.
const logError = console.error.bind(console);
console.log =
  console.info =
  console.debug =
  console.trace =
    logError;

confineGlobals();
runNested();
