import assert from "node:assert/strict";
import { join } from "node:path";
import { isInside } from "../supervisor/paths.ts";
import { accelPath, lookupSiteFile } from "./files.ts";

Deno.test("isInside() decides containment by path segments", async (t) => {
  const cases: [string, string, boolean][] = [
    ["/srv/site", "/srv/site", true],
    ["/srv/site", "/srv/site/a/b.txt", true],
    ["/srv/site", "/srv/site/../other", false],
    ["/srv/site", "/srv/site-evil/x", false],
    ["/srv/site", "/srv", false],
    ["/srv/site", "/etc/passwd", false],
    ["/srv/site", "/srv/site/..hidden", true],
  ];
  for (const [dir, path, inside] of cases) {
    await t.step(
      `${path} in ${dir}`,
      () => assert.equal(isInside(dir, path), inside),
    );
  }
});

Deno.test("lookupSiteFile() refuses everything outside the site folder", async (t) => {
  const root = await Deno.realPath(await Deno.makeTempDir());
  const site = join(root, "site");
  await Deno.mkdir(join(site, "files"), { recursive: true });
  await Deno.writeTextFile(join(site, "files", "ok.txt"), "ok");
  await Deno.writeTextFile(join(root, "secret.txt"), "secret");
  await Deno.symlink(join(root, "secret.txt"), join(site, "files", "link-out"));
  await Deno.symlink(join(site, "files", "ok.txt"), join(site, "link-in"));
  try {
    const cases: [string, string][] = [
      ["files/ok.txt", "file"],
      ["/files/ok.txt", "file"],
      ["link-in", "file"],
      ["files", "directory"],
      ["../secret.txt", "refused 403"],
      ["files/../../secret.txt", "refused 403"],
      ["files/link-out", "refused 403"],
      ["nope.txt", "refused 404"],
      ["files/ok.txt\0.png", "refused 403"],
      ["/etc/passwd", "refused 404"],
    ];
    for (const [requested, want] of cases) {
      await t.step(JSON.stringify(requested), async () => {
        const found = await lookupSiteFile(site, requested);
        const got = found.kind === "refused"
          ? `refused ${found.status}`
          : found.kind;
        assert.equal(got, want);
        if (found.kind === "file") assert.ok(found.path.startsWith(site + "/"));
      });
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("accelPath() joins prefix and path with one slash, encoded", async (t) => {
  const cases: [string, string, string][] = [
    ["/./", "/srv/a b.txt", "/./srv/a%20b.txt"],
    ["/./", "/srv//x", "/./srv/x"],
    ["/protected", "/srv/x", "/protected/srv/x"],
    ["/protected/", "/srv/x", "/protected/srv/x"],
    ["/p//", "/srv/%/x", "/p/srv/%25/x"],
  ];
  for (const [prefix, path, want] of cases) {
    await t.step(
      `${prefix} + ${path}`,
      () => assert.equal(accelPath(prefix, path), want),
    );
  }
});
