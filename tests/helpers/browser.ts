/**
 * Test helpers for browser tests: launch Debian's headless Chromium through
 * Playwright (`playwright-core`, which never downloads a browser itself).
 *
 * @module
 */

import { type Browser, chromium } from "playwright-core";

/** Where Debian's `chromium` package installs the browser. */
export const CHROMIUM_PATH = "/usr/bin/chromium";

/**
 * Flags for a quiet, headless Chromium that only talks to the test server:
 * no sandbox (the tests run as root), no GPU, and none of the background
 * traffic (updates, sync, QUIC, proxies) a fresh profile would start.
 */
export const CHROMIUM_ARGS: readonly string[] = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-proxy-server",
];

/**
 * Launches headless Chromium from {@linkcode CHROMIUM_PATH} with
 * {@linkcode CHROMIUM_ARGS}. Playwright gives it a fresh temporary profile
 * and removes it on `close()`. The caller must `close()` the browser.
 *
 * @returns the running browser
 * @throws {Error} when Chromium is not installed, saying how to install it
 */
export async function launchChromium(): Promise<Browser> {
  try {
    await Deno.stat(CHROMIUM_PATH);
  } catch (err) {
    throw new Error(
      `Chromium not found at "${CHROMIUM_PATH}": install it with \`apt-get install chromium\``,
      { cause: err },
    );
  }
  return await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [...CHROMIUM_ARGS],
  });
}
