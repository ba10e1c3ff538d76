/**
 * Route patterns cost the gateway what the router allows, not what a site
 * asks: a site loading (and reloading) the worst patterns the limits allow,
 * asked for the most costly paths and fallbacks, leaves a neighbour as it was.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { startServer, writeSites } from "../../helpers/server.ts";
import {
  MAX_PATH_BYTES,
  MAX_PATTERN_LENGTH,
  MAX_PATTERNS_PER_SITE,
} from "../../../src/shared/route_limits.ts";
import {
  assertUnharmed,
  NEIGHBOUR,
  NEIGHBOUR_SITE,
  runClient,
  underAttack,
} from "./harness.ts";

/** Every position of `.*x?.*x?…` is active on a path of x's. */
function worstPatterns(salt: number): string {
  const body = ".*x?".repeat(Math.floor((MAX_PATTERN_LENGTH - 12) / 4));
  const lines = [];
  for (let i = 0; i < MAX_PATTERNS_PER_SITE / 2; i++) {
    const source = JSON.stringify(`${body}(?:${salt}|${i})?`);
    lines.push(`hosts.any.addPattern(${source}, () => "any");`);
    lines.push(`h.addPattern(${source}, () => "own");`);
  }
  return `import { hosts } from "sandflare";\nconst h = hosts.get("pat.test");\n${
    lines.join("\n")
  }\n`;
}

const SITES = {
  nb: NEIGHBOUR_SITE,
};

/** Costly requests on 8 connections: own host and fallback, long paths. */
const HAMMER = `
const [port, ms, maxPath] = Deno.args;
const paths = ["/" + "x".repeat(40), "/" + "x".repeat(2000), "/" + "x".repeat(Number(maxPath) - 1)];
const hosts = ["pat.test", "unknown.test"];
const end = Date.now() + Number(ms);
const counts = {};
await Promise.all(Array.from({ length: 8 }, async (_, c) => {
  let conn = null;
  for (let i = c; Date.now() < end; i++) {
    try {
    conn ??= await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
    const path = paths[i % paths.length];
    await conn.write(new TextEncoder().encode("GET " + path + " HTTP/1.1\\r\\nHost: " + hosts[i % 2] + "\\r\\n\\r\\n"));
    // Bytes, not characters: an error page may quote the path with "…".
    let text = "";
    let bytes = 0;
    const buffer = new Uint8Array(65536);
    const whole = () => {
      const head = text.indexOf("\\r\\n\\r\\n");
      if (head < 0) return false;
      const length = Number(/content-length: (\\d+)/i.exec(text)?.[1] ?? 0);
      return bytes >= new TextEncoder().encode(text.slice(0, head + 4)).length + length;
    };
    while (!whole()) {
      const n = await conn.read(buffer);
      if (n === null) { conn = null; break; }
      bytes += n;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    const status = text.slice(9, 12);
    counts[status] = (counts[status] ?? 0) + 1;
    } catch { conn = null; counts.errors = (counts.errors ?? 0) + 1; }
  }
  conn?.close();
}));
console.log(JSON.stringify(counts));
`;

Deno.test("the worst patterns the limits allow, loaded and asked for, leave a neighbour as it was", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  const site = join(sitesDir, "pat");
  try {
    let counts = "";
    const report = await underAttack(server, NEIGHBOUR, 3000, async () => {
      // The site appears, then reloads with new patterns every 300 ms,
      // while costly requests hammer its host and the fallback.
      await Deno.mkdir(join(site, "autorun"), { recursive: true });
      await Deno.writeTextFile(
        join(site, "site.json"),
        JSON.stringify({ hosts: ["*", "pat.test"] }),
      );
      await Deno.writeTextFile(
        join(site, "autorun/ar_pat.ts"),
        worstPatterns(0),
      );
      await server.waitForLog(/\[pat\] Loaded 1 script\(s\), 256 page\(s\)/);
      const hammer = runClient(HAMMER, [
        String(server.port),
        "2500",
        String(MAX_PATH_BYTES),
      ]).then((out) => counts = out);
      for (let salt = 1; salt <= 6; salt++) {
        await new Promise((r) => setTimeout(r, 300));
        await Deno.writeTextFile(
          join(site, "autorun/ar_pat.ts"),
          worstPatterns(salt),
        );
      }
      await hammer;
    });
    assertUnharmed("worst route patterns", report);
    // deno-lint-ignore no-console -- the figures are the point of the test
    console.log(`hammer: ${counts}`);
    assert.match(counts, /"200":\d+/, counts); // short paths still match
    await server.waitForLog(/\[pat\] Reloaded in/);
    await server.waitForLog(
      /\[pat\] Route patterns skipped, over the work allowed per request/,
    );
    const tooLong = await server.raw(
      `GET /${
        "x".repeat(MAX_PATH_BYTES)
      } HTTP/1.1\r\nHost: pat.test\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(tooLong.status, 414);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a pattern or a pattern count over the limits is a load error naming the file and line", async () => {
  const sitesDir = await writeSites({
    long: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_long.ts":
        `import { hosts } from "sandflare";\n\nhosts.any.addPattern("/${
          "a".repeat(MAX_PATTERN_LENGTH)
        }", () => "x");\n`,
    },
    many: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_many.ts":
        `import { hosts } from "sandflare";\nfor (let i = 0; i <= ${MAX_PATTERNS_PER_SITE}; i++) {\n  hosts.any.addPattern("/m" + i + "/(\\\\d+)", () => "x");\n}\n`,
    },
  });
  const server = await startServer({ sitesDir });
  try {
    assert.match(
      await server.waitForLog(/\[long\] Site not loaded/),
      /autorun\/ar_long\.ts:3:\d+: .*route patterns may have at most 256/,
    );
    assert.match(
      await server.waitForLog(/\[many\] Site not loaded/),
      /autorun\/ar_many\.ts:3:\d+: .*at most 256 route patterns/,
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
