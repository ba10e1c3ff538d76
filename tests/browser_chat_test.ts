/**
 * The shipped chat example (sites/chat) driven end to end in headless
 * Chromium: two browsers with separate sessions pick nicknames, talk over
 * the websocket, and a reload keeps the nickname.
 */

import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { launchChromium } from "./helpers/browser.ts";
import { startExamples, type TestServer } from "./helpers/server.ts";

/** How long any one browser wait may take. */
const WAIT_MS = 10_000;

/** The eight bytes every PNG file starts with. */
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Opens /chat on `page`, joins as `nick` and waits for the socket. */
async function joinChat(
  page: Page,
  origin: string,
  nick: string,
): Promise<void> {
  await page.goto(`${origin}/chat`);
  await page.locator('input[name="nick"]').fill(nick);
  await page.getByRole("button", { name: "Join" }).click();
  await page.locator("body[data-connected=yes]").waitFor();
  assert.equal(new URL(page.url()).pathname, "/chat");
  assert.equal(await page.locator("#me").textContent(), nick);
}

/** Types `text` into the chat box and sends it. */
async function say(page: Page, text: string): Promise<void> {
  await page.locator("#text").fill(text);
  await page.getByRole("button", { name: "Send" }).click();
}

/** Waits until `#log` shows exactly the line `line`. */
async function waitForLine(page: Page, line: string): Promise<void> {
  await page.locator("#log li").filter({ hasText: line }).first().waitFor();
  assert.ok(
    (await page.locator("#log li").allTextContents()).includes(line),
    `"${line}" not in #log`,
  );
}

Deno.test("chat example works in two real browsers", async (t) => {
  const sitesDir = await Deno.makeTempDir({ prefix: "sandflare-test-" });
  const shot = await Deno.makeTempFile({ prefix: "chat-", suffix: ".png" });
  let server: TestServer | undefined;
  let browser: Browser | undefined;
  try {
    server = await startExamples(sitesDir, ["chat"]);
    const origin = server.origin;
    browser = await launchChromium();
    // Separate contexts: separate cookie jars, so separate sessions.
    const contextA = await browser.newContext();
    const contextB = await browser.newContext();
    contextA.setDefaultTimeout(WAIT_MS);
    contextB.setDefaultTimeout(WAIT_MS);
    const pageA = await contextA.newPage();
    const pageB = await contextB.newPage();

    await t.step("each browser joins with its own nickname", async () => {
      await joinChat(pageA, origin, "alice");
      await joinChat(pageB, origin, "bob");
    });

    await t.step("a message reaches both browsers", async () => {
      await say(pageA, "hello from A");
      await waitForLine(pageA, "alice: hello from A");
      await waitForLine(pageB, "alice: hello from A");
    });

    await t.step("the reply reaches the sender", async () => {
      await say(pageB, "hi alice, B here");
      await waitForLine(pageA, "bob: hi alice, B here");
      await waitForLine(pageB, "bob: hi alice, B here");
    });

    await t.step("a reload keeps the nickname (session)", async () => {
      await pageA.reload();
      await pageA.locator("body[data-connected=yes]").waitFor();
      assert.equal(await pageA.locator("#me").textContent(), "alice");
      assert.equal(await pageA.locator('input[name="nick"]').count(), 0);
    });

    await t.step("a screenshot is a non-empty PNG", async () => {
      await pageA.screenshot({ path: shot });
      const png = await Deno.readFile(shot);
      assert.ok(png.length > PNG_SIGNATURE.length, "screenshot is empty");
      assert.deepEqual([...png.subarray(0, 8)], PNG_SIGNATURE);
    });
  } finally {
    await browser?.close();
    await server?.stop();
    await Deno.remove(sitesDir, { recursive: true });
    await Deno.remove(shot);
  }
});
