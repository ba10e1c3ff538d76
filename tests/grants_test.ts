/**
 * Grants as an operator uses them: a site not listed gets the safe defaults,
 * `sites` shows what each asks for against what it is granted, `grant`
 * writes a request into the grants file and a running server picks it up;
 * a narrowed grant stops a site that no longer fits; bad grants files are
 * clear errors.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  cliCommand,
  delay,
  startServer,
  type TestServer,
  writeSites,
} from "./helpers/server.ts";

async function get(server: TestServer, host: string, path: string) {
  const res = await server.raw(
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
  );
  return { status: res.status, body: res.body };
}

/** Runs a CLI command with `input` on stdin. */
async function cli(args: string[], input = "") {
  const child = cliCommand(args, {}, "piped", "piped").spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input));
  await writer.close();
  const out = await child.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** Polls until `check` passes, for a server that notices changes by itself. */
async function eventually(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Not in time: ${what}`);
    await delay(100);
  }
}

const SITES = {
  blog: {
    "site.json": JSON.stringify({
      hosts: ["blog.test"],
      permissions: { net: ["api.example.com:443"] },
    }),
    "autorun/ar_blog.ts":
      `import { hosts } from "sandflare";\nhosts.get("blog.test").add("/", () => "the blog");\n`,
  },
  plain: {
    "site.json": JSON.stringify({ hosts: ["*"] }),
    "autorun/ar_plain.ts":
      `import { hosts } from "sandflare";\nhosts.any.add("/plain", () => "plain");\n`,
  },
  quiet: {
    "autorun/ar_quiet.ts": `import "sandflare";\n`,
  },
};

Deno.test("an unlisted site gets the defaults; grant writes its request and the server picks it up", async (t) => {
  const sitesDir = await writeSites(SITES);
  const grantsFile = join(sitesDir, ".grants.json");
  const server = await startServer({
    sitesDir,
    grants: { sites: { plain: { hosts: ["*"] } } },
  });
  const flags = [`--sites-dir=${sitesDir}`, `--grants=${grantsFile}`];
  try {
    await t.step(
      "a site asking for a host it is not granted is not loaded",
      async () => {
        const line = await server.waitForLog(/\[blog\] Site not loaded/);
        assert.match(
          line,
          /site\.json asks for more than .*\.grants\.json grants a site it does not list: hosts "blog\.test" \(granted: none\); permissions\.net "api\.example\.com:443" \(granted: none\)\. To grant what it asks: deno task cli grant blog/,
        );
        assert.notEqual((await get(server, "blog.test", "/")).body, "the blog");
      },
    );
    await t.step(
      "a site asking for nothing loads with the defaults",
      async () => {
        await server.waitForLog(/\[plain\] Loaded /);
      },
    );
    await t.step("sites shows what each asks for and is granted", async () => {
      const out = await cli(["sites", ...flags]);
      assert.equal(out.code, 1);
      assert.match(
        out.stdout,
        /blog .*\n {2}NOT LOADED: .*hosts "blog\.test" \(granted: none\).*\n {2}granted: {5}\(not listed\) hosts none; read \.; write data; net none; env none/,
      );
      assert.match(
        out.stdout,
        /plain .*\n(.*\n)*? {2}granted: {5}hosts \*; read \./,
      );
      assert.match(
        out.stdout,
        /quiet .*\n(.*\n)*? {2}granted: {5}\(not listed\) hosts none; read \./,
      );
    });
    await t.step(
      "grant shows the request and writes nothing unless confirmed",
      async () => {
        const no = await cli(["grant", "blog", ...flags], "n\n");
        assert.equal(no.code, 1, no.stderr);
        assert.match(no.stdout, /blog: .*site\.json asks for/);
        assert.match(no.stdout, /"blog\.test"/);
        assert.match(
          no.stdout,
          /not listed in .*, so it gets the grant of unlisted sites/,
        );
        assert.match(no.stdout, /Nothing written/);
        assert.deepEqual(JSON.parse(await Deno.readTextFile(grantsFile)), {
          sites: { plain: { hosts: ["*"] } },
        });
      },
    );
    await t.step(
      "confirmed, it writes the request as the site's grant",
      async () => {
        const yes = await cli(["grant", "blog", ...flags], "y\n");
        assert.equal(yes.code, 0, yes.stderr);
        assert.deepEqual(JSON.parse(await Deno.readTextFile(grantsFile)), {
          sites: {
            plain: { hosts: ["*"] },
            blog: {
              hosts: ["blog.test"],
              permissions: {
                read: [],
                write: [],
                net: ["api.example.com:443"],
                env: [],
              },
            },
          },
        });
      },
    );
    await t.step(
      "the running server loads the site without a restart",
      async () => {
        await eventually(
          "blog.test served",
          async () => (await get(server, "blog.test", "/")).body === "the blog",
        );
        await server.waitForLog(/Grants changed in .*: reloading blog/);
      },
    );
    await t.step("a narrowed grant stops the site", async () => {
      await Deno.writeTextFile(
        grantsFile,
        JSON.stringify({
          sites: { plain: { hosts: ["*"] }, blog: { hosts: ["blog.test"] } },
        }),
      );
      await server.waitForLog(
        /\[blog\] Site stopped: its grant no longer covers it: .*permissions\.net "api\.example\.com:443" \(granted: none\)/,
      );
      assert.notEqual((await get(server, "blog.test", "/")).body, "the blog");
    });
    await t.step(
      "a broken grants file is logged and the grants stay",
      async () => {
        await Deno.writeTextFile(
          grantsFile,
          JSON.stringify({ sites: { plain: { hosts: "*" } } }),
        );
        await server.waitForLog(
          /Grants not changed, the previous ones stay: .*\.grants\.json: "sites\.plain\.hosts" must be an array of host patterns/,
        );
        assert.equal((await get(server, "x.test", "/plain")).body, "plain");
      },
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a grant may be wider than the request: the site gets what it asks", async () => {
  const sitesDir = await writeSites({
    shop: {
      "site.json": JSON.stringify({ hosts: ["a.shop.test"], memory: 64 }),
      "autorun/ar_shop.ts":
        `import { hosts } from "sandflare";\nhosts.get("a.shop.test").add("/", () => "shop a");\n`,
    },
    big: {
      "site.json": JSON.stringify({ workers: 8, memory: 1024 }),
      "autorun/ar_big.ts": `import "sandflare";\n`,
    },
  });
  const server = await startServer({
    sitesDir,
    grants: {
      sites: {
        shop: { hosts: ["*.shop.test"], memory: 128 },
        big: { workers: 4 },
      },
    },
  });
  try {
    assert.equal((await get(server, "a.shop.test", "/")).body, "shop a");
    // Granted, but not asked for: not the site's.
    assert.equal((await get(server, "b.shop.test", "/")).status, 200);
    assert.notEqual((await get(server, "b.shop.test", "/")).body, "shop a");
    await server.waitForLog(
      /\[big\] Site not loaded: .*workers 8 \(granted: at most 4\); memory 1024 \(granted: at most 256\)/,
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a grants file that cannot be used stops listen and sites with exit 2", async (t) => {
  const sitesDir = await writeSites(SITES);
  const file = join(sitesDir, ".bad.json");
  const cases: [string, string, RegExp][] = [
    ["not JSON", "{ sites: ", /\.bad\.json: invalid JSON at line 1, column 3/],
    [
      "an unknown field",
      '{"site": {}}',
      /\.bad\.json: unknown field "site"; valid fields are "sites" and "unlisted"/,
    ],
    [
      "env true",
      '{"sites": {"blog": {"permissions": {"env": true}}}}',
      /"sites\.blog\.permissions\.env" must list the variable names/,
    ],
    [
      "a path out of the site",
      '{"unlisted": {"permissions": {"read": ["../x"]}}}',
      /"unlisted\.permissions\.read\[0\]" must be a path inside the site folder/,
    ],
    [
      "a bad site name",
      '{"sites": {"../etc": {}}}',
      /"sites\.\.\.\/etc" is not a site folder name/,
    ],
  ];
  try {
    for (const [name, text, expected] of cases) {
      await t.step(name, async () => {
        await Deno.writeTextFile(file, text);
        for (const command of ["listen", "sites"]) {
          const out = await cli([
            command,
            "--port=0",
            "--host=127.0.0.1",
            `--sites-dir=${sitesDir}`,
            `--grants=${file}`,
          ]);
          assert.equal(out.code, 2, `${command}: ${out.stderr}`);
          assert.match(out.stderr, expected, command);
        }
      });
    }
  } finally {
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a grant's workers and requestTimeout bound a site that does not ask", async () => {
  const sitesDir = await writeSites({
    slow: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_slow.ts": `
import { hosts } from "sandflare";
hosts.any.add("/slow", async () => {
  await new Promise((r) => setTimeout(r, 4000));
  return "late";
});
`,
    },
  });
  const server = await startServer({
    sitesDir,
    args: ["--threads=4", "--request-timeout=30"],
    grants: {
      sites: { slow: { hosts: ["*"], workers: 1, requestTimeout: 1 } },
    },
  });
  try {
    const res = await get(server, "x.test", "/slow");
    assert.equal(res.status, 503);
    const out = await cli([
      "sites",
      `--sites-dir=${sitesDir}`,
      `--grants=${join(sitesDir, ".grants.json")}`,
      "--threads=4",
    ]);
    assert.match(out.stdout, /slow .*\n(.*\n)*? {2}sandbox: {5}1 worker\(s\)/);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
