/**
 * /stats counts what each site answered: every 4xx and 5xx, its pages' own
 * included, and shows a failed reload as the site's last problem.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { startServer, writeSites } from "./helpers/server.ts";

const SITE = `
import { hosts } from "sandflare";
hosts.any.add("/ok", () => "ok");
hosts.any.add("/boom", () => { throw new Error("boom"); });
hosts.any.add("/busy", (_req, res) => { res.status = 503; return "busy"; });
hosts.any.add("/gone", (_req, res) => { res.status = 410; return "gone"; });
`;

interface SiteLine {
  name: string;
  requests: number;
  status4xx: number;
  status5xx: number;
  errors: number;
  lastProblem: string | null;
}

Deno.test("/stats counts a site's 4xx and 5xx, its pages' own included, and shows a failed reload", async () => {
  const sitesDir = await writeSites({
    app: { "site.json": '{"hosts":["*"]}', "autorun/ar_app.ts": SITE },
  });
  const server = await startServer({ sitesDir });
  try {
    for (
      const [path, status] of [
        ["/ok", 200],
        ["/boom", 500],
        ["/boom", 500],
        ["/busy", 503],
        ["/gone", 410],
      ] as const
    ) {
      const res = await server.fetch(path);
      assert.equal(res.status, status, path);
    }
    const line = async (): Promise<SiteLine> => {
      const stats = await (await fetch(`${server.origin}/stats?format=json`))
        .json() as { sites: SiteLine[] };
      return stats.sites.find((s) => s.name === "app")!;
    };
    const counted = await line();
    assert.equal(counted.status5xx, 3);
    assert.equal(counted.status4xx, 1);
    assert.equal(counted.lastProblem, null);

    // A script that no longer loads: the old version keeps serving, and
    // /stats says why the new one did not.
    await Deno.writeTextFile(
      join(sitesDir, "app", "autorun", "ar_app.ts"),
      SITE + "\nthrow new Error('broken on purpose');\n",
    );
    await server.waitForLog(/\[app\] Reload failed/);
    assert.equal((await server.fetch("/ok")).status, 200);
    const failed = await line();
    assert.match(
      failed.lastProblem ?? "",
      /^Reload failed, .*broken on purpose/,
    );
    const html = (await server.fetch("/stats")).text;
    assert.match(html, /<th>4xx<\/th><th>5xx<\/th>/);
    assert.match(html, /Reload failed, the previous version keeps serving/);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
