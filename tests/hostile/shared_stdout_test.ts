/**
 * Workers write their replies straight to the sandbox's stdout, under a
 * lock shared with the host (src/sandbox/out.ts). Large replies from several
 * workers at once must arrive whole and unmixed, and a site that writes to
 * stdout itself garbles only its own sandbox, which is then restarted.
 */

import assert from "node:assert/strict";
import { startServer, writeSites } from "../helpers/server.ts";

const BIG = 1024 * 1024; // far more than a pipe's 64 KiB buffer

const SITES = {
  big: {
    "site.json": JSON.stringify({ hosts: ["*"], workers: 4 }),
    "autorun/ar_big.ts": `
import { hosts } from "sandflare";
hosts.any.addPattern("/big/([0-9]+)", (_req, res, n) => {
  // Each reply is one letter repeated: any mixing of two frames shows.
  const letter = String.fromCharCode(97 + (Number(n) % 26));
  res.setHeader("x-letter", letter);
  return letter.repeat(${BIG});
});
`,
  },
  garble: {
    "site.json": JSON.stringify({ hosts: ["*"] }),
    "autorun/ar_garble.ts": `
import { hosts } from "sandflare";
hosts.any.add("/garble/ok", () => "fine");
hosts.any.add("/garble", () => {
  Deno.stdout.writeSync(new TextEncoder().encode("\\xff\\xff\\xff\\xffforged"));
  return "garbled";
});
`,
  },
  other: {
    "site.json": JSON.stringify({ hosts: ["*"] }),
    "autorun/ar_other.ts":
      `import { hosts } from "sandflare";\nhosts.any.add("/other", () => "other");\n`,
  },
};

Deno.test("replies written by workers to the shared stdout", async (t) => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  const get = (path: string) => fetch(`${server.origin}${path}`);
  try {
    await t.step(
      "40 replies of 1 MiB from 4 workers at once arrive whole",
      async () => {
        const replies = await Promise.all(
          Array.from({ length: 40 }, async (_, n) => {
            const res = await get(`/big/${n}`);
            return {
              n,
              letter: res.headers.get("x-letter"),
              body: await res.text(),
            };
          }),
        );
        for (const { n, letter, body } of replies) {
          const want = String.fromCharCode(97 + (n % 26));
          assert.equal(letter, want);
          assert.equal(body.length, BIG, `reply ${n} has its length`);
          assert.ok(
            body === want.repeat(BIG),
            `reply ${n} is only "${want}"`,
          );
        }
      },
    );

    await t.step(
      "a site writing to stdout breaks only its own sandbox, which restarts",
      async () => {
        const garbled = await get("/garble");
        await garbled.body?.cancel();
        assert.ok(garbled.status >= 500, `answered ${garbled.status}`);
        await server.waitForLog(/\[garble\].*(protocol|frame)/i);
        assert.equal(await (await get("/other")).text(), "other");
        assert.equal(
          (await get("/big/1")).headers.get("x-letter"),
          "b",
        );
        // The garbling site comes back.
        let answer = "";
        for (let i = 0; i < 100 && answer !== "fine"; i++) {
          const res = await get("/garble/ok");
          answer = res.ok ? await res.text() : (await res.body?.cancel(), "");
          if (answer !== "fine") await new Promise((r) => setTimeout(r, 100));
        }
        assert.equal(answer, "fine", "the site was restarted and serves");
      },
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
