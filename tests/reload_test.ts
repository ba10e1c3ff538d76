/**
 * Hot reload (SPEC §6) and the scheduler: a changed site loads a new
 * generation that takes over only once it has loaded; nothing fails on the
 * way.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  delay,
  type SiteFiles,
  startServer,
  type TestServer,
  writeSites,
} from "./helpers/server.ts";

const page = (path: string, text: string) => `
import { hosts } from "sandflare";
hosts.any.add("${path}", () => ${JSON.stringify(text)});
`;

const SITES: SiteFiles = {
  live: {
    "site.json": JSON.stringify({ hosts: ["*"], workers: 2 }),
    "autorun/ar_main.ts": page("/live", "version 1"),
    "lib/util.ts": `export const word = "from lib v1";`,
    "autorun/ar_lib.ts": `
import { hosts } from "sandflare";
import { word } from "../lib/util.ts";
hosts.any.add("/lib", () => word);
`,
  },
  ticker: {
    "site.json": JSON.stringify({
      hosts: ["ticker.test"],
      workers: 2,
      permissions: { write: ["data"] },
    }),
    "data/.keep": "",
    "autorun/ar_ticker.ts": `
import { hosts, scheduler } from "sandflare";
const generation = crypto.randomUUID().slice(0, 8);
const file = new URL("../data/ticks.txt", import.meta.url);
hosts.get("ticker.test").add("/", () => "ticker");
scheduler.newTask("tick", async () => {
  while (true) {
    await Deno.writeTextFile(file, self.name + " " + generation + "\\n", { append: true });
    await scheduler.sleep(0.05);
  }
});
scheduler.newTask("thrower", async () => {
  await scheduler.sleep(0.05);
  throw new Error("task exploded");
});
scheduler.newTask("hog", async () => {
  await scheduler.sleep(0.1);
  const until = Date.now() + 700;
  while (Date.now() < until) { /* hog the worker */ }
});
`,
  },
};

async function until(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await delay(20);
  }
  throw new Error(`Timed out waiting for: ${what}`);
}

async function body(server: TestServer, path: string): Promise<string> {
  const res = await server.fetch(path);
  return `${res.status} ${res.text}`;
}

async function writeAtomically(file: string, text: string): Promise<void> {
  // What editors do: write a temporary file, then rename it over the original.
  const tmp = `${file}.tmp-${crypto.randomUUID().slice(0, 4)}~`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, file);
}

Deno.test("hot reload swaps generations and drops nothing", async (t) => {
  const sitesDir = await writeSites(SITES);
  const autorun = join(sitesDir, "live", "autorun");
  const server = await startServer({ sitesDir });
  try {
    await t.step("an edited script is served", async () => {
      assert.equal(await body(server, "/live"), "200 version 1");
      await Deno.writeTextFile(
        join(autorun, "ar_main.ts"),
        page("/live", "version 2"),
      );
      await until(
        "version 2",
        async () => await body(server, "/live") === "200 version 2",
      );
      await server.waitForLog(/\[live\] Reloaded in \d+ ms/);
    });

    await t.step(
      "a new script is served, a removed one's pages are gone",
      async () => {
        await Deno.writeTextFile(
          join(autorun, "ar_new.ts"),
          page("/new", "new page"),
        );
        await until(
          "new page",
          async () => await body(server, "/new") === "200 new page",
        );
        await Deno.remove(join(autorun, "ar_new.ts"));
        await until(
          "new page gone",
          async () => (await server.fetch("/new")).status === 404,
        );
      },
    );

    await t.step(
      "a change to an imported module inside the site reloads it",
      async () => {
        assert.equal(await body(server, "/lib"), "200 from lib v1");
        await Deno.writeTextFile(
          join(sitesDir, "live", "lib", "util.ts"),
          `export const word = "from lib v2";`,
        );
        await until(
          "lib v2",
          async () => await body(server, "/lib") === "200 from lib v2",
        );
      },
    );

    await t.step("an editor's write-then-rename save is seen", async () => {
      await writeAtomically(
        join(autorun, "ar_main.ts"),
        page("/live", "version 3"),
      );
      await until(
        "version 3",
        async () => await body(server, "/live") === "200 version 3",
      );
    });

    await t.step(
      "a broken script keeps the old generation serving and logs file:line",
      async () => {
        await Deno.writeTextFile(
          join(autorun, "ar_main.ts"),
          `import { hosts } from "sandflare";\nhosts.any.add("/live", () => "broken");\nconst = oops;\n`,
        );
        const line = await server.waitForLog(/\[live\] Reload failed/);
        assert.match(line, /autorun\/ar_main\.ts:3/);
        assert.equal(await body(server, "/live"), "200 version 3");
        await Deno.writeTextFile(
          join(autorun, "ar_main.ts"),
          page("/live", "version 4"),
        );
        await until(
          "fixed",
          async () => await body(server, "/live") === "200 version 4",
        );
      },
    );

    await t.step(
      "a reload that claims an undeclared host is refused; the old one serves",
      async () => {
        await Deno.writeTextFile(
          join(autorun, "ar_main.ts"),
          `import { hosts } from "sandflare";\nhosts.get("stolen.test").add("/live", () => "stolen");\n`,
        );
        const line = await server.waitForLog(/\[live\] Reload refused/);
        assert.match(line, /stolen\.test/);
        assert.equal(await body(server, "/live"), "200 version 4");
        await Deno.writeTextFile(
          join(autorun, "ar_main.ts"),
          page("/live", "version 5"),
        );
        await until(
          "version 5",
          async () => await body(server, "/live") === "200 version 5",
        );
      },
    );

    await t.step(
      "zero failed requests across reloads under concurrent load",
      async () => {
        let stop = false;
        let ok = 0;
        const failures: string[] = [];
        const client = async () => {
          while (!stop) {
            try {
              const res = await server.fetch("/live");
              if (res.status === 200 && /^version \d+$/.test(res.text)) ok++;
              else failures.push(`${res.status} ${res.text.slice(0, 80)}`);
            } catch (err) {
              failures.push(String(err));
            }
          }
        };
        const clients = Array.from({ length: 8 }, client);
        for (let v = 6; v <= 9; v++) {
          await delay(250);
          await Deno.writeTextFile(
            join(autorun, "ar_main.ts"),
            page("/live", `version ${v}`),
          );
          await until(
            `version ${v}`,
            async () => await body(server, "/live") === `200 version ${v}`,
          );
        }
        await delay(250);
        stop = true;
        await Promise.all(clients);
        assert.deepEqual(failures, []);
        assert.ok(ok > 100, `served ${ok} requests during the reloads`);
      },
    );

    await t.step(
      "a site folder added while running is started, and stopped when removed",
      async () => {
        const dir = join(sitesDir, "late");
        await Deno.mkdir(join(dir, "autorun"), { recursive: true });
        await Deno.writeTextFile(
          join(dir, "site.json"),
          JSON.stringify({ hosts: ["*"] }),
        );
        await Deno.writeTextFile(
          join(dir, "autorun", "ar_late.ts"),
          page("/late", "late site"),
        );
        await until(
          "late site",
          async () => await body(server, "/late") === "200 late site",
        );
        await Deno.remove(dir, { recursive: true });
        await until(
          "late site gone",
          async () => (await server.fetch("/late")).status === 404,
        );
        await server.waitForLog(/\[late\] Site folder removed/);
      },
    );

    await t.step(
      "scheduler tasks run in exactly one worker, and again after a reload",
      async () => {
        const ticks = join(sitesDir, "ticker", "data", "ticks.txt");
        const read = async () =>
          (await Deno.readTextFile(ticks).catch(() => "")).trim().split("\n")
            .filter(Boolean);
        await until("ticks", async () => (await read()).length >= 5);
        const before = await read();
        const workers = new Set(before.map((l) => l.split(" ")[0]));
        const generations = new Set(before.map((l) => l.split(" ")[1]));
        assert.equal(workers.size, 1, `one worker ticked: ${[...workers]}`);
        assert.equal(generations.size, 1);
        // Reload the ticker: the new generation ticks, the old one stops.
        const script = join(sitesDir, "ticker", "autorun", "ar_ticker.ts");
        await Deno.writeTextFile(
          script,
          (await Deno.readTextFile(script)) + "\n// touched\n",
        );
        await server.waitForLog(/\[ticker\] Reloaded/);
        const genOf = (l: string) => l.split(" ")[1];
        let newGen = "";
        await until("the new generation ticks", async () => {
          const lines = await read();
          newGen = genOf(lines.at(-1)!)!;
          return newGen !== genOf(before[0]!) &&
            lines.filter((l) => genOf(l) === newGen).length >= 5;
        });
        const after = await read();
        const first = after.findIndex((l) => genOf(l) === newGen);
        assert.deepEqual(
          after.slice(first).filter((l) => genOf(l) !== newGen),
          [],
          "once the new generation ticks, the old one does not",
        );
        const perGeneration = new Map<string, Set<string>>();
        for (const l of after) {
          const [w, g] = l.split(" ");
          perGeneration.set(g!, (perGeneration.get(g!) ?? new Set()).add(w!));
        }
        for (const [g, ws] of perGeneration) {
          assert.equal(ws.size, 1, `generation ${g} ticked in one worker`);
        }
      },
    );

    await t.step(
      "a throwing task is logged by name; a blocking one is warned about",
      async () => {
        const thrown = await server.waitForLog(
          /\[ticker\] Task "thrower" failed: Error: task exploded/,
        );
        assert.ok(thrown);
        const hog = await server.waitForLog(
          /\[ticker\] Task "hog" blocked its worker for \d+ ms/,
        );
        assert.ok(hog);
        assert.equal(await body(server, "/live").then(() => "alive"), "alive");
        const res = await server.raw(
          "GET / HTTP/1.1\r\nHost: ticker.test\r\nConnection: close\r\n\r\n",
        );
        assert.equal(res.body, "ticker");
      },
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("--no-reload ignores changes; SIGHUP reloads every site", async () => {
  const sitesDir = await writeSites({ live: SITES.live! });
  const server = await startServer({ sitesDir, args: ["--no-reload"] });
  try {
    await Deno.writeTextFile(
      join(sitesDir, "live", "autorun", "ar_main.ts"),
      page("/live", "after hup"),
    );
    await delay(700);
    assert.equal(await body(server, "/live"), "200 version 1");
    server.child.kill("SIGHUP");
    await until(
      "after hup",
      async () => await body(server, "/live") === "200 after hup",
    );
    await server.waitForLog(/SIGHUP: reloading every site/);
  } finally {
    const status = await server.stop();
    assert.equal(status.code, 0);
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a script seen empty half-way through a save is not loaded over the working one", async () => {
  const sitesDir = await writeSites({
    half: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_half.ts": page("/half", "version 1"),
    },
  });
  const server = await startServer({ sitesDir });
  const get = async () => {
    const res = await fetch(`${server.origin}/half`);
    return `${res.status} ${await res.text()}`;
  };
  try {
    const script = join(sitesDir, "half/autorun/ar_half.ts");
    // Truncated, and written only later (some editors save so).
    await Deno.writeTextFile(script, "");
    await server.waitForLog(
      /\[half\] autorun\/ar_half\.ts is empty: not reloaded until it has content/,
    );
    await delay(300);
    assert.doesNotMatch(server.logs(), /\[half\] Reloaded/);
    // Before: the empty script loaded, and /half was a 404.
    assert.equal(await get(), "200 version 1");
    await Deno.writeTextFile(script, page("/half", "version 2"));
    await server.waitForLog(/\[half\] Reloaded in/);
    assert.equal(await get(), "200 version 2");
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
