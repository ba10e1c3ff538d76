/**
 * The server's own pages and the shipped blog example (sites/blog), rendered
 * in headless Chromium: the welcome page, /stats, an error page, the blog
 * index and a post, and the clock example's server-sent events. Each is checked on its rendered text and screenshotted.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { launchChromium } from "./helpers/browser.ts";
import { startExamples, type TestServer } from "./helpers/server.ts";

/** How long any one browser wait may take. */
const WAIT_MS = 10_000;

/** The eight bytes every PNG file starts with. */
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** The title of sites/blog's post with a `<b>` in it, as the text it shows. */
const ESCAPED_TITLE = "Why <b>bold</b> stays plain text";

/** Saves a full-page screenshot of `page` to `dir/name.png` and checks it. */
async function screenshot(page: Page, dir: string, name: string) {
  const path = join(dir, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  const png = await Deno.readFile(path);
  assert.ok(png.length > PNG_SIGNATURE.length, `${name}.png is empty`);
  assert.deepEqual([...png.subarray(0, 8)], PNG_SIGNATURE, `${name}.png`);
}

/** Opens `url`, checks the status, returns the rendered text of the body. */
async function open(
  page: Page,
  url: string,
  status: number,
): Promise<string> {
  const response = await page.goto(url);
  assert.equal(response?.status(), status, `status of ${url}`);
  return await page.locator("body").innerText();
}

/** Waits until the element shows an ISO time other than `not`; returns it. */
async function waitForTime(
  element: ReturnType<Page["locator"]>,
  not: string | null,
): Promise<string> {
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline) {
    const text = await element.innerText();
    if (/^\d{4}-\d\d-\d\dT/.test(text) && text !== not) return text;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`No new time after ${not} within ${WAIT_MS} ms`);
}

Deno.test("server pages and the blog example render in Chromium", async (t) => {
  const sitesDir = await Deno.makeTempDir({ prefix: "sandflare-test-" });
  const shotsDir = await Deno.makeTempDir({ prefix: "sandflare-shots-" });
  let server: TestServer | undefined;
  let browser: Browser | undefined;
  try {
    server = await startExamples(sitesDir, ["blog", "hello", "clock"]);
    const origin = server.origin;
    browser = await launchChromium();
    const context = await browser.newContext();
    context.setDefaultTimeout(WAIT_MS);
    const page = await context.newPage();

    await t.step("the welcome page of the root site", async () => {
      const text = await open(page, `${origin}/`, 200);
      assert.match(text, /Sandflare is running/);
      assert.equal(await page.title(), "Sandflare");
      await screenshot(page, shotsDir, "welcome");
    });

    await t.step("/stats lists the sites in a table", async () => {
      await open(page, `${origin}/stats`, 200);
      const names = await page.locator("table tr td:first-child")
        .allInnerTexts();
      for (const site of ["blog", "hello"]) {
        assert.ok(names.includes(site), `"${site}" not in ${names}`);
      }
      await screenshot(page, shotsDir, "stats");
    });

    await t.step("an unknown path is a 404 page", async () => {
      const text = await open(page, `${origin}/no-such-page`, 404);
      assert.equal(await page.locator("h1").innerText(), "404 Not Found");
      assert.doesNotMatch(text, /\bat .*\.ts:\d+/, "no stack trace");
      await screenshot(page, shotsDir, "404");
    });

    await t.step("the blog index lists the posts, newest first", async () => {
      await open(page, `${origin}/blog`, 200);
      const titles = await page.locator("ul.posts li a").allInnerTexts();
      assert.deepEqual(titles, [
        "Pattern routes & 404s",
        ESCAPED_TITLE,
        "Hello, Sandflare",
      ]);
      // The static stylesheet is linked and applied.
      // (A string: this file is type-checked without the DOM library.)
      const font = await page.evaluate<string>(
        "getComputedStyle(document.body).fontFamily",
      );
      assert.match(font, /Georgia/);
      await screenshot(page, shotsDir, "blog-index");
    });

    await t.step("a post shows the escaped <b> as text", async () => {
      await page.getByRole("link", { name: ESCAPED_TITLE }).click();
      await page.waitForURL(`${origin}/blog/post/escaping-b-tags`);
      const h1 = page.locator("article h1");
      assert.equal(await h1.innerText(), ESCAPED_TITLE);
      assert.equal(await h1.locator("b").count(), 0, "the title made a <b>");
      assert.equal(await page.title(), `${ESCAPED_TITLE} · Blog`);
      // The body's <script> is text too: shown, never run.
      const body = await page.locator("article").innerText();
      assert.match(body, /<script>alert\(1\)<\/script>/);
      assert.equal(await page.locator("article script").count(), 0);
      await screenshot(page, shotsDir, "blog-post");
    });

    await t.step("an unknown slug is the blog's 404", async () => {
      const text = await open(page, `${origin}/blog/post/nope`, 404);
      assert.match(text, /404 Not Found/);
      assert.match(text, /No post "nope"/);
    });

    await t.step(
      "the clock example's server-sent events tick in the page",
      async () => {
        await open(page, `${origin}/clock`, 200);
        const now = page.locator("#now");
        // Two different times: the page got an event, then another.
        const first = await waitForTime(now, null);
        const second = await waitForTime(now, first);
        assert.ok(Date.parse(second) > Date.parse(first), `${first} ${second}`);
        await page.goto("about:blank");
      },
    );

    await t.step("posts.json lists the posts", async () => {
      const res = await server!.fetch("/blog/posts.json");
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /application\/json/);
      const list = JSON.parse(res.text) as { slug: string; url: string }[];
      assert.deepEqual(list.map((p) => p.slug), [
        "patterns-and-404s",
        "escaping-b-tags",
        "hello-sandflare",
      ]);
    });
  } finally {
    await browser?.close();
    await server?.stop();
    await Deno.remove(shotsDir, { recursive: true });
    await Deno.remove(sitesDir, { recursive: true });
  }
});
