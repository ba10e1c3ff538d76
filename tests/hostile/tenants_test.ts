/**
 * Tenants stay apart (issue 14): a site cannot take another's cookies,
 * sessions, hosts or paths, grant itself permissions, or reach the server
 * itself; public pages name no other tenant, and /stats is the operator's.
 * Each case is one the review found working on the code before.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type SiteFiles,
  startServer,
  type TestServer,
  writeSites,
} from "../helpers/server.ts";

/** A browser's cookie jar for one host: name → value. */
type Jar = Map<string, string>;

/** GET `path` on `host` sending `jar`, and keep what the reply sets in it. */
async function browse(
  server: TestServer,
  host: string,
  path: string,
  jar: Jar,
): Promise<{ status: number; body: string; setCookies: string[] }> {
  const cookie = [...jar].map(([n, v]) => `${n}=${v}`).join("; ");
  const res = await server.raw(
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${
      cookie === "" ? "" : `Cookie: ${cookie}\r\n`
    }Connection: close\r\n\r\n`,
  );
  const setCookies = res.raw.split("\r\n\r\n")[0]!.split("\r\n")
    .filter((line) => /^set-cookie:/i.test(line))
    .map((line) => line.slice(line.indexOf(":") + 1).trim());
  for (const value of setCookies) {
    const pair = value.split(";")[0]!;
    const eq = pair.indexOf("=");
    jar.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return { status: res.status, body: res.body, setCookies };
}

const NB = {
  "site.json": JSON.stringify({ hosts: ["nb.test"] }),
  "autorun/ar_nb.ts": `
import { hosts, session } from "sandflare";
const nb = hosts.get("nb.test");
nb.add("/login", async (req, res) => {
  const s = await session.get(req, res);
  s.data.user = "ann";
  await s.save();
  return "logged in";
});
nb.add("/me", async (req, res) => (await session.get(req, res)).data.user ?? "nobody");
`,
};

const THIEF = {
  "site.json": JSON.stringify({ hosts: ["*"] }),
  "autorun/ar_thief.ts": `
import { hosts } from "sandflare";
hosts.any.add("/steal", (req) => "stolen: " + (req.headers.get("cookie") ?? ""));
hosts.any.add("/steal-auth", (req) =>
  "stolen: " + (req.headers.get("authorization") ?? "") + (req.headers.get("proxy-authorization") ?? ""));
hosts.any.add("/blog", () => "thief's blog");
hosts.any.add("/stats", () => "thief's stats");
`,
};

Deno.test("a site on hosts.any never gets another site's host, or its cookies", async (t) => {
  const sitesDir = await writeSites({ nb: NB, thief: THIEF });
  const server = await startServer({
    sitesDir,
    grants: {
      sites: { nb: { hosts: ["nb.test"] }, thief: { hosts: ["*"] } },
    },
  });
  try {
    const jar: Jar = new Map();
    await t.step("logging in at nb.test sets its session cookie", async () => {
      const login = await browse(server, "nb.test", "/login", jar);
      assert.equal(login.body, "logged in");
      assert.match(jar.get("session") ?? "", /^[0-9a-f]{32}$/);
    });
    await t.step(
      "nb.test/steal is nb's 404, not the thief's page",
      async () => {
        // What an <img src="//nb.test/steal"> on any page would send.
        const steal = await browse(server, "nb.test", "/steal", jar);
        assert.equal(steal.status, 404);
        assert.doesNotMatch(steal.body, /stolen/);
        assert.doesNotMatch(steal.body, new RegExp(jar.get("session")!));
        // Nor with the host written otherwise.
        for (const host of ["NB.test", "nb.test.", "nb.test:80"]) {
          const again = await browse(server, host, "/steal", jar);
          assert.equal(again.status, 404, host);
        }
      },
    );
    await t.step("the user is still logged in", async () => {
      assert.equal((await browse(server, "nb.test", "/me", jar)).body, "ann");
    });
    await t.step("a host nobody owns still reaches hosts.any", async () => {
      const other = await browse(server, "x.test", "/steal", new Map());
      assert.equal(other.body, "stolen: ");
    });
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("an owner that opts in to fallback still keeps its cookies", async () => {
  const sitesDir = await writeSites({
    nb: {
      ...NB,
      "site.json": JSON.stringify({
        hosts: [{ host: "nb.test", fallback: true }],
      }),
    },
    thief: THIEF,
  });
  const server = await startServer({
    sitesDir,
    grants: {
      sites: { nb: { hosts: ["nb.test"] }, thief: { hosts: ["*"] } },
    },
  });
  try {
    const jar: Jar = new Map();
    await browse(server, "nb.test", "/login", jar);
    const steal = await browse(server, "nb.test", "/steal", jar);
    assert.equal(steal.status, 200, "the thief's page answers: nb opted in");
    assert.equal(steal.body, "stolen: ", "but it sees none of nb's cookies");
    assert.equal((await browse(server, "nb.test", "/me", jar)).body, "ann");
    // Credentials sent to nb's host are nb's too.
    const auth = await server.raw(
      "GET /steal-auth HTTP/1.1\r\nHost: nb.test\r\nAuthorization: Basic YW5uOnNlY3JldA==\r\nProxy-Authorization: Basic eDp5\r\nConnection: close\r\n\r\n",
    );
    assert.equal(auth.body, "stolen: ");
    // On a host nobody owns, a site's own credentials reach it.
    const shared = await server.raw(
      "GET /steal-auth HTTP/1.1\r\nHost: shared.test\r\nAuthorization: Basic YQ==\r\nConnection: close\r\n\r\n",
    );
    assert.equal(shared.body, "stolen: Basic YQ==");
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

const SHARED_SESSIONS: SiteFiles = {
  app: {
    "site.json": JSON.stringify({ hosts: ["*"] }),
    "autorun/ar_app.ts": `
import { hosts, session } from "sandflare";
hosts.any.add("/app/login", async (req, res) => {
  const s = await session.get(req, res);
  s.data.user = "ann";
  await s.save();
  return "in";
});
hosts.any.add("/app/me", async (req, res) => (await session.get(req, res)).data.user ?? "nobody");
`,
  },
  other: {
    "site.json": JSON.stringify({ hosts: ["*"] }),
    "autorun/ar_other.ts": `
import { hosts, session } from "sandflare";
hosts.any.add("/other/visit", async (req, res) => {
  const s = await session.get(req, res);
  s.data.visits = (Number(s.data.visits) || 0) + 1;
  await s.save();
  return "seen " + JSON.stringify(req.cookies);
});
hosts.any.add("/other/prefs", (_req, res) => {
  res.setCookie("theme", "dark");
  return "ok";
});
`,
  },
};

Deno.test("sites sharing hosts.any can neither read nor clobber each other's cookies", async (t) => {
  const sitesDir = await writeSites(SHARED_SESSIONS);
  const server = await startServer({ sitesDir });
  try {
    const jar: Jar = new Map();
    await t.step("each site's session cookie is bound to it", async () => {
      await browse(server, "shared.test", "/app/login", jar);
      const visit = await browse(server, "shared.test", "/other/visit", jar);
      assert.deepEqual([...jar.keys()].sort(), [
        "sf~app~session",
        "sf~other~session",
      ]);
      // The other site saw only its own cookie (none yet), by its plain name.
      assert.equal(visit.body, "seen {}");
      const again = await browse(server, "shared.test", "/other/visit", jar);
      assert.match(again.body, /^seen \{"session":"[0-9a-f]{32}"\}$/);
    });
    await t.step("the first site's user is still logged in", async () => {
      const me = await browse(server, "shared.test", "/app/me", jar);
      assert.equal(me.body, "ann");
    });
    await t.step("any cookie a site sets is bound to it", async () => {
      const prefs = await browse(server, "shared.test", "/other/prefs", jar);
      assert.match(prefs.setCookies[0]!, /^sf~other~theme=dark/);
    });
    await t.step(
      "a forged cookie of another site's name is not read as ours",
      async () => {
        const forged: Jar = new Map([["session", "0".repeat(32)]]);
        const me = await browse(server, "shared.test", "/app/me", forged);
        assert.equal(me.body, "nobody");
      },
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a cookie's Domain is kept only over hosts the site owns", async () => {
  const sitesDir = await writeSites({
    wide: {
      "site.json": JSON.stringify({ hosts: ["*.wide.test", "one.test"] }),
      "autorun/ar_wide.ts": `
import { hosts } from "sandflare";
for (const host of ["*.wide.test", "one.test"]) {
  hosts.get(host).add("/set", (req, res) => {
    res.setCookie("a", "1", { domain: req.params.domain });
    return "set";
  });
}
`,
    },
  });
  const server = await startServer({ sitesDir });
  try {
    const cases: [string, string, RegExp][] = [
      ["a.wide.test", "wide.test", /^a=1; Domain=wide\.test/],
      ["a.wide.test", "a.wide.test", /^a=1; Domain=a\.wide\.test/],
      ["a.wide.test", "test", /^a=1$/],
      // An exact host owns no name below it, and a Domain cookie reaches them.
      ["one.test", "one.test", /^a=1$/],
      ["one.test", "test", /^a=1$/],
    ];
    for (const [host, domain, expected] of cases) {
      const { setCookies } = await browse(
        server,
        host,
        `/set?domain=${domain}`,
        new Map(),
      );
      assert.match(
        setCookies[0] ?? "",
        expected,
        `${host}: Domain=${domain}: ${setCookies[0]}`,
      );
      if (!expected.source.includes("Domain")) {
        assert.doesNotMatch(setCookies[0]!, /domain/i);
      }
    }
    await server.waitForLog(
      /warn \[wide\] A cookie's Domain was removed: the site does not own every host under it: Domain=test/,
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a path on hosts.any taken by a second site never breaks the owner's host, and the 409 names nobody", async () => {
  const sitesDir = await writeSites({
    first: {
      "site.json": JSON.stringify({ hosts: ["*", "first.test"] }),
      "autorun/ar_first.ts":
        `import { hosts } from "sandflare";\nhosts.any.add("/blog", () => "first's blog");\n`,
    },
    thief: THIEF,
  });
  const server = await startServer({ sitesDir });
  try {
    const own = await browse(server, "first.test", "/blog", new Map());
    assert.equal(own.body, "first's blog");
    const shared = await browse(server, "x.test", "/blog", new Map());
    assert.equal(shared.status, 409);
    assert.doesNotMatch(shared.body, /first|thief/);
    await server.waitForLog(
      /Answered 409: (?=.*site first)(?=.*site thief)/,
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("/stats is the operator's on every host: no site shadows it", async (t) => {
  const sitesDir = await writeSites({
    thief: THIEF,
    own: {
      "site.json": JSON.stringify({ hosts: ["own.test"] }),
      "autorun/ar_own.ts":
        `import { hosts } from "sandflare";\nhosts.get("own.test").add("/stats", () => "own stats");\n`,
    },
  });
  let server = await startServer({ sitesDir });
  try {
    await t.step("the gateway answers /stats, whatever the host", async () => {
      for (const host of ["x.test", "own.test"]) {
        const res = await browse(server, host, "/stats", new Map());
        assert.equal(res.status, 200, host);
        assert.match(res.body, /<title>[^<]*stats/i, host);
        assert.doesNotMatch(res.body, /(thief|own)'?s? stats/);
      }
      await server.waitForLog(
        /GET "\/stats" of site (thief|own) is never served/,
      );
    });
    await server.stop();
    server = await startServer({
      sitesDir,
      args: ["--operator-addresses=10.0.0.0/8"],
    });
    await t.step("only for --operator-addresses", async () => {
      const res = await browse(server, "x.test", "/stats", new Map());
      assert.equal(res.status, 403);
      assert.doesNotMatch(res.body, /thief/);
    });
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a site cannot grant itself the environment, its own files or the server", async (t) => {
  const probe = `
import { hosts } from "sandflare";
hosts.any.add("/env", () => {
  try { return JSON.stringify(Object.keys(Deno.env.toObject()).sort()); }
  catch (err) { return "refused: " + (err as Error).name; }
});
hosts.any.add("/granted", () => {
  try { return Deno.env.get("SF_GRANTED") ?? "unset"; }
  catch (err) { return "refused: " + (err as Error).name; }
});
hosts.any.add("/rewrite", async () => {
  try { await Deno.writeTextFile("site.json", "{}"); return "rewrote"; }
  catch (err) { return "refused: " + (err as Error).name; }
});
hosts.any.add("/data", async () => {
  await Deno.writeTextFile("data/note.txt", "ok");
  return "wrote data";
});
`;
  const sitesDir = await writeSites({
    greedy: {
      "site.json": JSON.stringify({
        hosts: ["*"],
        permissions: { env: true, write: ["data"] },
      }),
      "data/.keep": "",
      "autorun/ar_greedy.ts": probe,
    },
    self: {
      "site.json": JSON.stringify({
        hosts: ["*"],
        permissions: { write: ["."] },
      }),
      "autorun/ar_self.ts": `import { hosts } from "sandflare";\n`,
    },
    loop: {
      "site.json": JSON.stringify({
        hosts: ["*"],
        permissions: { net: ["0.0.0.0"] },
      }),
      "autorun/ar_loop.ts": `import { hosts } from "sandflare";\n`,
    },
  });
  const grants = {
    sites: {
      greedy: {
        hosts: ["*"],
        permissions: { env: ["SF_GRANTED"], write: ["data"] },
      },
      self: { hosts: ["*"], permissions: { write: ["."] } },
      loop: { hosts: ["*"], permissions: { net: ["example.com"] } },
    },
  };
  const env = { SF_GRANTED: "yes", SF_SECRET: "server secret" };
  // A grant may not give write over the site itself either.
  await t.step(
    "a grants file granting write over the site is refused",
    async () => {
      await assert.rejects(
        () => startServer({ sitesDir, grants, env }),
        /\.grants\.json: "sites\.self\.permissions\.write\[0\]" must not cover the whole site folder/,
      );
    },
  );
  delete (grants.sites as Record<string, unknown>).self;
  const server = await startServer({ sitesDir, grants, env });
  try {
    await t.step(
      '"env": true gives the names granted, never the rest',
      async () => {
        const keys = await browse(server, "x.test", "/env", new Map());
        assert.equal(keys.body, "refused: NotCapable");
        const granted = await browse(server, "x.test", "/granted", new Map());
        assert.equal(granted.body, "yes");
      },
    );
    await t.step("a writable data/ does not reach site.json", async () => {
      const rewrite = await browse(server, "x.test", "/rewrite", new Map());
      assert.equal(rewrite.body, "refused: NotCapable");
      const data = await browse(server, "x.test", "/data", new Map());
      assert.equal(data.body, "wrote data");
      assert.equal(
        await Deno.readTextFile(join(sitesDir, "greedy", "data", "note.txt")),
        "ok",
      );
    });
    await t.step("write over the site itself is not loaded", async () => {
      await server.waitForLog(
        /\[self\] Site not loaded: .*"permissions\.write\[0\]" must not cover the whole site folder/,
      );
    });
    await t.step(
      "net to 0.0.0.0 is not loaded unless written out",
      async () => {
        await server.waitForLog(
          /\[loop\] Site not loaded: .*asks for more than .* grants it: permissions\.net "0\.0\.0\.0" \(granted: "example\.com"\); permissions\.net "0\.0\.0\.0" reaches this server itself/,
        );
      },
    );
  } finally {
    await server.stop();
  }
  await t.step("nor with --grant-requests", async () => {
    await Deno.remove(join(sitesDir, "self"), { recursive: true });
    const trusting = await startServer({ sitesDir });
    try {
      await trusting.waitForLog(
        /\[loop\] Site not loaded: .*permissions\.net "0\.0\.0\.0" reaches this server itself/,
      );
      const keys = await browse(trusting, "x.test", "/env", new Map());
      assert.equal(keys.body, "refused: NotCapable");
      assert.equal(
        (await browse(trusting, "x.test", "/granted", new Map())).body,
        "refused: NotCapable",
      );
    } finally {
      await trusting.stop();
    }
  });
  await t.step("the operator may write the server's address out", async () => {
    const written = await startServer({
      sitesDir,
      grants: {
        sites: {
          ...grants.sites,
          loop: { hosts: ["*"], permissions: { net: ["0.0.0.0"] } },
        },
      },
      env,
    });
    try {
      await written.waitForLog(/\[loop\] Loaded /);
    } finally {
      await written.stop();
      await Deno.remove(sitesDir, { recursive: true });
    }
  });
});

Deno.test("a writable folder cannot reach what the loader reads by a link", async (t) => {
  const sitesDir = await writeSites({
    loop: {
      "site.json": JSON.stringify({ permissions: { write: ["data"] } }),
      "autorun/ar_loop.ts": `import "sandflare";\n`,
    },
    inner: {
      "site.json": JSON.stringify({ permissions: { write: ["data"] } }),
      "data/.keep": "",
      "autorun/ar_inner.ts": `import "sandflare";\n`,
    },
    hard: {
      "site.json": JSON.stringify({ permissions: { write: ["data"] } }),
      "data/.keep": "",
      "autorun/ar_hard.ts": `import "sandflare";\n`,
    },
    fine: {
      "site.json": JSON.stringify({ permissions: { write: ["data"] } }),
      "data/.keep": "",
      "autorun/ar_fine.ts": `import "sandflare";\n`,
    },
  });
  await Deno.symlink(".", join(sitesDir, "loop", "data"));
  await Deno.symlink("../autorun", join(sitesDir, "inner", "data", "code"));
  await Deno.link(
    join(sitesDir, "hard", "site.json"),
    join(sitesDir, "hard", "data", "m.json"),
  );
  const server = await startServer({ sitesDir });
  try {
    for (
      const [site, expected] of [
        ["loop", /The writable path data leads to the whole site folder/],
        ["inner", /data\/code is a link to "autorun", which the loader reads/],
        ["hard", /site\.json is hard-linked \(2 names\)/],
      ] as const
    ) {
      await t.step(site, async () => {
        const line = await server.waitForLog(
          new RegExp(`\\[${site}\\] Site not loaded`),
        );
        assert.match(line, expected);
      });
    }
    await t.step("a plain data/ folder loads", async () => {
      await server.waitForLog(/\[fine\] Loaded /);
    });
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("headers that speak for other sites are removed; a Response's cookies all pass", async () => {
  const sitesDir = await writeSites({
    rude: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_rude.ts": `
import { hosts } from "sandflare";
hosts.any.add("/wipe", (_req, res) => {
  res.setHeader("Clear-Site-Data", '"cookies"');
  res.setHeader("Strict-Transport-Security", "max-age=600; includeSubDomains");
  return "wiped?";
});
hosts.any.add("/two", () => {
  const headers = new Headers();
  headers.append("set-cookie", "a=1");
  headers.append("set-cookie", "b=2");
  return new Response("two", { headers });
});
`,
    },
  });
  const server = await startServer({ sitesDir });
  try {
    const wipe = await server.raw(
      "GET /wipe HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n",
    );
    assert.equal(wipe.body, "wiped?");
    assert.equal(wipe.headers["clear-site-data"], undefined);
    assert.equal(wipe.headers["strict-transport-security"], undefined);
    await server.waitForLog(
      /\[rude\] A header that speaks for other sites was removed/,
    );
    const { setCookies } = await browse(server, "x.test", "/two", new Map());
    assert.deepEqual(setCookies, ["sf~rude~a=1", "sf~rude~b=2"]);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
