import assert from "node:assert/strict";
import { DEFAULT_GRANT, judgeRequest, parseGrants } from "./grants.ts";
import { parseManifest } from "./manifest.ts";
import { hostPatternCovers } from "../router/host_pattern.ts";

const SITE = "/srv/sites/blog";
const SERVER = { hostname: "127.0.0.1", port: 8080 };

function request(json: unknown) {
  return parseManifest(JSON.stringify(json), {
    file: "site.json",
    siteDir: SITE,
  });
}

function grant(json: unknown) {
  return parseGrants(JSON.stringify({ sites: { blog: json } }), "g.json")
    .sites.get("blog")!;
}

function judge(req: unknown, granted: unknown, requested = false) {
  return judgeRequest(request(req), grant(granted), {
    siteDir: SITE,
    server: SERVER,
    requested,
  });
}

Deno.test("hostPatternCovers() compares the hosts two patterns match", () => {
  const cases: [string, string, boolean][] = [
    ["a.test", "a.test", true],
    ["a.test", "b.test", false],
    ["*.a.test", "a.test", true],
    ["*.a.test", "x.y.a.test", true],
    ["*.a.test", "*.x.a.test", true],
    ["*.a.test", "~.a.test", true],
    ["*.a.test", "+.a.test", true],
    ["*.a.test", "xa.test", false],
    ["~.a.test", "a.test", false],
    ["~.a.test", "*.a.test", false],
    ["~.a.test", "*.x.a.test", true],
    ["~.a.test", "+.a.test", true],
    ["+.a.test", "x.a.test", true],
    ["+.a.test", "x.y.a.test", false],
    ["+.a.test", "~.a.test", false],
    ["a.test", "*.a.test", false],
    ["*", "a.test", false],
    ["*.test", "*", false],
    ["*", "*", true],
  ];
  for (const [granted, requested, expected] of cases) {
    assert.equal(
      hostPatternCovers(granted, requested),
      expected,
      `${granted} covers ${requested}`,
    );
  }
});

Deno.test("judgeRequest() gives the request when the grant covers it", () => {
  const decision = judge({
    hosts: ["a.blog.test"],
    permissions: { write: ["data/x"], net: ["api.test:443"], env: true },
    memory: 64,
  }, {
    hosts: ["*.blog.test"],
    permissions: { net: ["api.test"], env: ["KEY", "OTHER"] },
  });
  assert.ok(decision.ok);
  assert.deepEqual(decision.manifest.hosts, ["a.blog.test"]);
  assert.deepEqual(decision.manifest.permissions.write, [`${SITE}/data/x`]);
  assert.deepEqual(decision.manifest.permissions.net, ["api.test:443"]);
  assert.deepEqual(decision.manifest.permissions.env, ["KEY", "OTHER"]);
  assert.equal(decision.manifest.memory, 64);
});

Deno.test("judgeRequest() names each part beyond the grant", () => {
  const decision = judge({
    hosts: ["*", "b.test"],
    permissions: { write: ["logs"], net: ["api.test:80"], env: ["PATH"] },
    workers: 4,
    requestTimeout: 120,
  }, { hosts: ["a.test"], permissions: { net: ["api.test:443"] } });
  assert.ok(!decision.ok);
  assert.deepEqual(decision.problems, [
    'hosts "*", "b.test" (granted: "a.test")',
    'permissions.write "logs" (granted: "data")',
    'permissions.net "api.test:80" (granted: "api.test:443")',
    'permissions.env "PATH" (granted: none)',
    "workers 4 (granted: at most 2)",
    "requestTimeout 120 (granted: at most 60)",
  ]);
});

Deno.test("judgeRequest() refuses a net entry that reaches the server unless written out", () => {
  for (
    const entry of [
      "127.0.0.1",
      "127.0.0.1:8080",
      "127.9.9.9:8080",
      "localhost:8080",
      "0.0.0.0",
      "[::1]:8080",
      "[::]",
      "[::ffff:127.0.0.1]:8080",
      "[0::ffff:7f00:1]:8080",
      "[0:0:0:0:0:ffff:7f00:1]:8080",
      "[::ffff:0:0]",
      "[::ffff:0.0.0.0]",
      "app.localhost:8080",
    ]
  ) {
    const asked = { permissions: { net: [entry] } };
    if (entry.endsWith(":8080")) {
      // Covered by the host's grant, but not written out as the site asks.
      const host = { permissions: { net: [entry.replace(/:8080$/, "")] } };
      const refused = judge(asked, host);
      assert.ok(!refused.ok, entry);
      assert.match(refused.problems.at(-1)!, /reaches this server itself/);
    }
    const canonical = request(asked).permissions.net[0]!;
    const written = judge(asked, { permissions: { net: [canonical] } });
    assert.ok(written.ok, `${entry} written out`);
    assert.ok(!judge(asked, {}, true).ok, `${entry} with --grant-requests`);
  }
  // Another port of loopback is another service.
  assert.ok(
    judge({ permissions: { net: ["127.0.0.1:6379"] } }, {
      permissions: { net: ["127.0.0.1:6379"] },
    }).ok,
  );
  assert.ok(judge({ permissions: { net: ["127.0.0.1:6379"] } }, {}, true).ok);
});

Deno.test("parseGrants() fills a grant's missing fields from the defaults", () => {
  const grants = parseGrants(
    '{"sites": {"a": {"permissions": {"net": ["x.test"]}}}}',
    "g.json",
  );
  const a = grants.sites.get("a")!;
  assert.deepEqual(a.permissions.write, DEFAULT_GRANT.permissions.write);
  assert.deepEqual(a.permissions.net, ["x.test"]);
  assert.equal(grants.unlisted, DEFAULT_GRANT);
  const none = parseGrants(
    '{"unlisted": {"permissions": {"write": []}}}',
    "g.json",
  ).unlisted;
  assert.deepEqual(none.permissions.write, []);
  assert.throws(
    () => parseGrants('{"sites": {"__proto__": {}}}', "g.json"),
    /"sites\.__proto__" is not a site folder name/,
  );
});

Deno.test("judgeRequest() refuses hosts that only hide the server's address", async () => {
  // URLs (and Deno) read these as 127.0.0.1: they are not valid entries.
  for (
    const entry of ["0x7f000001:8080", "0x7f.0.0.1", "2130706433", "127.1"]
  ) {
    assert.throws(
      () => request({ permissions: { net: [entry] } }),
      /IPv4 in dotted decimal/,
      entry,
    );
  }
  // A name the system resolves to loopback (an /etc/hosts alias).
  const asked = request({ permissions: { net: ["alias.test:8080"] } });
  const decision = judgeRequest(
    asked,
    grant({ permissions: { net: ["alias.test"] } }),
    {
      siteDir: SITE,
      server: SERVER,
      requested: false,
      resolved: new Map([["alias.test", ["127.0.0.1"]]]),
    },
  );
  assert.ok(!decision.ok);
  assert.match(decision.problems[0]!, /reaches this server itself/);
  const { resolveNetHosts } = await import("./grants.ts");
  const resolved = await resolveNetHosts(["localhost:8080"]);
  assert.ok(resolved.get("localhost")!.includes("127.0.0.1"));
});
