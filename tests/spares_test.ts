/**
 * Warm starts (issue 20, point 2, as Deno allows it): after a reload, a
 * spare sandbox waits for the site's next one, started with the site's
 * permissions and none of its code. It runs no site code until it is
 * handed the scripts, is used once, and is not used when the site's
 * sandbox would now be started otherwise.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  cacheGrower,
  childrenOf,
  delay,
  startServer,
  type TestServer,
  writeSites,
} from "./helpers/server.ts";

/** Each load of the site appends its pid to data/loads.txt. */
function script(version: number): string {
  return `
import { hosts } from "sandflare";
Deno.writeTextFileSync("data/loads.txt", Deno.pid + "\\n", { append: true });
let served = 0;
hosts.any.add("/", () => "v${version} pid " + Deno.pid + " served " + (++served));
`;
}

const SITES = {
  app: {
    "site.json": JSON.stringify({
      hosts: ["*"],
      permissions: { write: ["data"] },
    }),
    "data/.keep": "",
    "autorun/ar_app.ts": script(1),
  },
};

/** The processes the server started. */
function children(server: TestServer): number[] {
  return childrenOf(server.child.pid, () => true);
}

function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(Deno.readTextFileSync(`/proc/${pid}/status`));
  } catch {
    return false;
  }
}

/** Pids named by the log's sandbox lines (every generation that loaded). */
function loggedPids(server: TestServer): number[] {
  return [...server.logs().matchAll(/sandbox pid (\d+)/g)].map((m) =>
    Number(m[1])
  );
}

function reloads(server: TestServer): string[] {
  return server.logs().split("\n").filter((l) => /\[app\] Reloaded in/.test(l));
}

/**
 * Waits until no reload has happened for 700 ms: one save may be seen as
 * two changes (a truncate, then a write), and make two reloads.
 */
async function settled(server: TestServer): Promise<void> {
  let seen = reloads(server).length;
  let quiet = 0;
  while (quiet < 700) {
    await delay(50);
    const now = reloads(server).length;
    quiet = now === seen ? quiet + 50 : 0;
    seen = now;
  }
}

/** The one process the server started that no log line names: the spare. */
async function spareOf(server: TestServer): Promise<number> {
  await settled(server);
  for (let i = 0; i < 200; i++) {
    const logged = new Set(loggedPids(server));
    const unnamed = children(server).filter((p) => !logged.has(p) && alive(p));
    if (unnamed.length === 1) return unnamed[0]!;
    await delay(25);
  }
  throw new Error(`no single spare: ${children(server)}\n${server.logs()}`);
}

async function page(server: TestServer): Promise<string> {
  return await (await fetch(`${server.origin}/`)).text();
}

/** Saves the app's script as editors do: written aside, renamed over it. */
async function save(sitesDir: string, text: string): Promise<void> {
  const aside = join(sitesDir, ".ar_app.ts.tmp");
  await Deno.writeTextFile(aside, text);
  await Deno.rename(aside, join(sitesDir, "app/autorun/ar_app.ts"));
}

async function reload(
  server: TestServer,
  sitesDir: string,
  version: number,
): Promise<number> {
  const before = reloads(server).length;
  await save(sitesDir, script(version));
  return await reloaded(server, before);
}

/** The pid of the first reload after the `before`th. */
async function reloaded(server: TestServer, before: number): Promise<number> {
  for (let i = 0; i < 400; i++) {
    const line = reloads(server)[before];
    if (line !== undefined) return Number(/sandbox pid (\d+)/.exec(line)![1]);
    await delay(25);
  }
  throw new Error(`no reload seen:\n${server.logs()}`);
}

Deno.test("a spare runs no site code until its site's next reload, which it serves; it is used once", async () => {
  const sitesDir = await writeSites(SITES);
  const loads = join(sitesDir, "app/data/loads.txt");
  const server = await startServer({ sitesDir });
  try {
    assert.match(await page(server), /^v1 /);
    // No reload yet: no spare.
    assert.deepEqual(
      children(server).filter((p) => !loggedPids(server).includes(p)),
      [],
    );
    const second = await reload(server, sitesDir, 2);
    assert.match(await page(server), /^v2 pid \d+ served 1$/);
    const spare = await spareOf(server);
    await delay(500); // had it loaded the site, it would have written by now
    const loaded = (await Deno.readTextFile(loads)).split("\n")
      .filter(Boolean).map(Number);
    assert.ok(
      !loaded.includes(spare),
      `the spare ${spare} ran the site's script: ${loaded}\n${server.logs()}`,
    );
    assert.equal(loaded.at(-1), second, server.logs());
    // The operator sees it on /stats.
    const stats = await (await fetch(`${server.origin}/stats?format=json`))
      .json() as { spares: { site: string; pid: number }[] };
    assert.deepEqual(
      stats.spares.map((s) => ({ site: s.site, pid: s.pid })),
      [{ site: "app", pid: spare }],
    );
    assert.match(
      await (await fetch(`${server.origin}/stats`)).text(),
      new RegExp(`Spare sandboxes .*: app \\(pid ${spare}\\b`),
    );

    // The next reload is served by the spare, with nothing of the previous
    // generation's state.
    const third = await reload(server, sitesDir, 3);
    assert.equal(third, spare);
    assert.equal(await page(server), `v3 pid ${spare} served 1`);
    assert.equal(
      (await Deno.readTextFile(loads)).split("\n").filter((l) =>
        l === String(spare)
      ).length,
      1,
    );
    assert.match(server.logs(), /\[app\] Reloaded in \d+ ms \(sandbox pid/);
    // A new spare for the next one: another process.
    const next = await spareOf(server);
    assert.notEqual(next, spare);
    assert.ok(![second, third].includes(next));
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
  // The spare's cgroups went with it, as every sandbox's do.
  const bases = server.logs().matchAll(/cgroup (\/sys\/fs\/cgroup\/[^\s;]+)/g);
  for (const [, dir] of bases) {
    let left: string[] = [];
    try {
      left = [...Deno.readDirSync(dir!)].filter((e) => e.isDirectory)
        .map((e) => e.name);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    assert.deepEqual(left, [], dir);
  }
});

Deno.test("--idle-stop: a site that falls asleep after its requests wakes in a spare that ran none of its code", async () => {
  const sitesDir = await writeSites(SITES);
  const loads = join(sitesDir, "app/data/loads.txt");
  const server = await startServer({ sitesDir, args: ["--idle-stop=1"] });
  try {
    // It starts asleep (nobody asked for it yet): this request wakes it.
    assert.match(await page(server), /^v1 /);
    const awake = () =>
      server.logs().split("\n").filter((l) => /\[app\] Awake in/.test(l));
    assert.equal(awake().length, 1);
    await server.waitForLog(/\[app\] Asleep after 1 s/);
    const spare = await spareOf(server);
    await delay(500); // had it loaded the site, it would have written by now
    const before = await Deno.readTextFile(loads);
    assert.ok(
      !before.split("\n").includes(String(spare)),
      `the spare ${spare} ran the site's script before its wake`,
    );
    // The wake hands it the scripts: a fresh load in the spare's process.
    assert.equal(await page(server), `v1 pid ${spare} served 1`);
    assert.equal(awake().length, 2);
    assert.match(awake()[1]!, new RegExp(`sandbox pid ${spare}\\b`));
    const after = (await Deno.readTextFile(loads)).split("\n");
    assert.equal(after.filter((l) => l === String(spare)).length, 1);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a spare is not used when its site's sandbox would now start otherwise", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  try {
    await reload(server, sitesDir, 2);
    const spare = await spareOf(server);
    // Other permissions: the spare was started with the old ones.
    const before = reloads(server).length;
    await Deno.writeTextFile(
      join(sitesDir, "app/site.json"),
      JSON.stringify({
        hosts: ["*"],
        permissions: { write: ["data"], env: ["SANDFLARE_SPARE_TEST"] },
      }),
    );
    const pid = await reloaded(server, before);
    assert.notEqual(pid, spare);
    for (let i = 0; i < 200 && alive(spare); i++) await delay(25);
    assert.ok(!alive(spare), "the spare with the old permissions still runs");
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("--warm-spares=0 keeps no spare", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir, args: ["--warm-spares=0"] });
  try {
    await reload(server, sitesDir, 2);
    await delay(1000);
    const logged = new Set(loggedPids(server));
    assert.deepEqual(
      children(server).filter((p) => !logged.has(p) && alive(p)),
      [],
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a site's Deno cache emptied for its quota: its restart does not take the spare that held the old cache", async () => {
  const sitesDir = await writeSites({
    app: {
      "site.json": JSON.stringify({ hosts: ["*"], disk: 5 }),
      "autorun/ar_app.ts": `
import { hosts } from "sandflare";
hosts.any.add("/", () => "pid " + Deno.pid);
${cacheGrower("hosts.any")}`,
    },
  });
  const dataDir = await Deno.makeTempDir({ prefix: "sandflare-data-" });
  const server = await startServer({
    sitesDir,
    args: [`--data-dir=${dataDir}`],
  });
  try {
    // A save: a spare waits, with the cache's files open.
    const script = join(sitesDir, "app/autorun/ar_app.ts");
    await save(sitesDir, await Deno.readTextFile(script));
    await reloaded(server, 0);
    const spare = await spareOf(server);
    await fetch(`${server.origin}/grow`).then((r) => r.body?.cancel());
    await server.waitForLog(/\[app\] Its Deno cache went over its disk quota/);
    const line = await server.waitForLog(/\[app\] Sandbox restarted/);
    // Before: the restart took the spare, which held the emptied files.
    assert.doesNotMatch(line, new RegExp(`pid ${spare}\\b`));
    for (let i = 0; i < 200 && alive(spare); i++) await delay(25);
    assert.ok(!alive(spare), "the spare still runs");
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
    await Deno.remove(dataDir, { recursive: true });
  }
});
