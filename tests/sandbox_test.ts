/**
 * The sandbox (SPEC §5): a hostile site tries to get out of its sandbox or
 * take the server down; each attempt is refused or contained while a
 * neighbour site keeps answering.
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

const attempt = (name: string, body: string) => `
hosts.get("evil.test").add("/${name}", async () => {
  try {
    ${body}
    return "ESCAPED";
  } catch (err) {
    return (err as Error).name + "|" + (err as Error).message;
  }
});`;

const SITES: SiteFiles = {
  victim: {
    "site.json": JSON.stringify({ hosts: ["victim.test"] }),
    "secret.txt": "victim secret 123",
    "autorun/ar_victim.ts": `
import { hosts } from "sandflare";
hosts.get("victim.test").add("/", () => "victim ok");
hosts.get("victim.test").add("/file", (_req, res) => res.setFile("secret.txt"));
`,
  },
  evil: {
    "site.json": JSON.stringify({
      hosts: ["evil.test"],
      requestTimeout: 2,
      memory: 64,
      workers: 2,
    }),
    "own.txt": "evil's own file",
    "autorun/ar_evil.ts": `
import { hosts } from "sandflare";
${attempt("passwd", 'await Deno.readTextFile("/etc/passwd");')}
${
      attempt(
        "neighbour",
        'await Deno.readTextFile(new URL("../../victim/secret.txt", import.meta.url));',
      )
    }
${attempt("env", 'Deno.env.get("HOME");')}
${attempt("net", 'await fetch("http://127.0.0.1:5555/");')}
${attempt("connect", 'await Deno.connect({ hostname: "127.0.0.1", port: 9 });')}
${attempt("run", 'await new Deno.Command("id").output();')}
${
      attempt(
        "write",
        'await Deno.writeTextFile(new URL("../pwned.txt", import.meta.url), "x");',
      )
    }
${attempt("ffi", 'Deno.dlopen("libc.so.6", {});')}
${attempt("sys", "Deno.hostname();")}
${attempt("import", 'await import("/etc/hostname");')}
${attempt("remote", 'await import("https://example.com/mod.ts");')}
hosts.get("evil.test").add("/own", async () => await Deno.readTextFile(new URL("../own.txt", import.meta.url)));
hosts.get("evil.test").add("/own-relative", async () => await Deno.readTextFile("own.txt"));
hosts.get("evil.test").add("/setfile-up", (_req, res) => res.setFile("../victim/secret.txt"));
hosts.get("evil.test").add("/setfile-abs", (_req, res) => res.setFile("/etc/passwd"));
hosts.get("evil.test").add("/setfile-own", (_req, res) => res.setFile("own.txt"));
hosts.get("evil.test").add("/loop", () => { while (true) { /* spin */ } });
hosts.get("evil.test").add("/slow", async () => { await new Promise((r) => setTimeout(r, 3500)); return "late"; });
hosts.get("evil.test").add("/oom", () => {
  const hoard: number[][] = [];
  while (true) hoard.push(new Array(1_000_000).fill(1.5));
});
hosts.get("evil.test").add("/stdout", () => {
  console.log("chatty site output");
  return "still framed";
});
`,
  },
  "evil-claim": {
    "site.json": JSON.stringify({ hosts: ["claim.test"] }),
    "autorun/ar_claim.ts": `
import { hosts } from "sandflare";
hosts.get("victim.test").add("/", () => "stolen");
`,
  },
  "evil-any": {
    "autorun/ar_any.ts": `
import { hosts } from "sandflare";
hosts.any.add("/grab", () => "grabbed");
`,
  },
  "evil-redos": {
    "site.json": JSON.stringify({ hosts: ["redos.test"] }),
    "autorun/ar_redos.ts": `
import { hosts } from "sandflare";
hosts.get("redos.test").addPattern("/(a+)+\\\\1", () => "never");
`,
  },
  "evil-link": {
    "site.json": JSON.stringify({ hosts: ["link.test"] }),
    "autorun/ar_link.ts": `
import { hosts } from "sandflare";
hosts.get("link.test").add("/", (_req, res) => res.setFile("etc-link/passwd"));
`,
  },
  broken: {
    "site.json": JSON.stringify({ hosts: ["broken.test"] }),
    "autorun/ar_broken.ts":
      `import { hosts } from "sandflare";\n\nconst x = ;\n`,
  },
  thrower: {
    "site.json": JSON.stringify({ hosts: ["thrower.test"] }),
    "autorun/ar_thrower.ts":
      `import { hosts } from "sandflare";\nhosts.get("thrower.test");\nthrow new Error("refusing to load");\n`,
  },
  "bad-manifest": {
    "site.json": `{ "hosts": ["ok.test"], "workers": "two" }`,
    "autorun/ar_x.ts": `export {};`,
  },
};

async function get(server: TestServer, host: string, path: string) {
  return await server.raw(
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
    {
      timeoutMs: 20_000,
    },
  );
}

Deno.test("a hostile site is refused or contained; its neighbour keeps answering", async (t) => {
  const sitesDir = await writeSites(SITES);
  await Deno.symlink("/etc", join(sitesDir, "evil-link", "etc-link"));
  const server = await startServer({ sitesDir });
  try {
    await t.step("the neighbour serves, including its own file", async () => {
      assert.equal((await get(server, "victim.test", "/")).body, "victim ok");
      assert.equal(
        (await get(server, "victim.test", "/file")).body,
        "victim secret 123",
      );
    });

    await t.step(
      "every capability the site was not granted is NotCapable",
      async () => {
        for (
          const name of [
            "passwd",
            "neighbour",
            "env",
            "net",
            "connect",
            "run",
            "write",
            "ffi",
            "sys",
            "import",
          ]
        ) {
          const res = await get(server, "evil.test", `/${name}`);
          assert.equal(res.status, 200, name);
          // fetch and import() wrap the refusal in a TypeError; the rest is NotCapable.
          assert.match(
            res.body,
            /^NotCapable\||^TypeError\|Requires (net|read) access/,
            `${name}: ${res.body}`,
          );
        }
        const remote = await get(server, "evil.test", "/remote");
        assert.notEqual(remote.body, "ESCAPED");
        assert.equal(
          (await get(server, "evil.test", "/own")).body,
          "evil's own file",
        );
        // Relative paths resolve in the site's own folder.
        assert.equal(
          (await get(server, "evil.test", "/own-relative")).body,
          "evil's own file",
        );
      },
    );

    await t.step("setFile cannot leave the site folder", async () => {
      const up = await get(server, "evil.test", "/setfile-up");
      assert.equal(up.status, 403);
      assert.doesNotMatch(up.body, /victim secret/);
      const abs = await get(server, "evil.test", "/setfile-abs");
      assert.equal(abs.status, 404);
      assert.doesNotMatch(abs.body, /root:/);
      assert.equal(
        (await get(server, "evil.test", "/setfile-own")).body,
        "evil's own file",
      );
    });

    await t.step(
      "site output cannot corrupt the sandbox's frames",
      async () => {
        assert.equal(
          (await get(server, "evil.test", "/stdout")).body,
          "still framed",
        );
        await server.waitForLog(/\[evil\].*chatty site output/);
      },
    );

    await t.step("claiming an undeclared host refuses the site", async () => {
      const line = await server.waitForLog(/\[evil-claim\] Site not loaded/);
      assert.match(line, /victim\.test/);
      assert.match(line, /site\.json/);
      assert.equal((await get(server, "victim.test", "/")).body, "victim ok");
      const any = await server.waitForLog(/\[evil-any\] Site not loaded/);
      assert.match(any, /hosts\.any/);
      assert.equal((await get(server, "x.test", "/grab")).status, 404);
    });

    await t.step("a backtracking route pattern is refused", async () => {
      const line = await server.waitForLog(/\[evil-redos\] Site not loaded/);
      assert.match(line, /\(a\+\)\+/);
    });

    await t.step(
      "a symlink out of the site folder refuses the site",
      async () => {
        const line = await server.waitForLog(/\[evil-link\] Site not loaded/);
        assert.match(line, /etc-link/);
        assert.equal((await get(server, "link.test", "/")).status, 200); // the welcome page, not passwd
        assert.doesNotMatch(
          (await get(server, "link.test", "/")).body,
          /root:/,
        );
      },
    );

    await t.step("load errors name the site, file and line", async () => {
      assert.match(
        await server.waitForLog(/\[broken\] Site not loaded/),
        /autorun\/ar_broken\.ts:3/,
      );
      assert.match(
        await server.waitForLog(/\[thrower\] Site not loaded/),
        /autorun\/ar_thrower\.ts:3.*refusing to load/,
      );
      assert.match(
        await server.waitForLog(/\[bad-manifest\] Site not loaded/),
        /site\.json.*"workers"/,
      );
    });

    await t.step("a slow page gets 503 but its sandbox is kept", async () => {
      const started = Date.now();
      const res = await get(server, "evil.test", "/slow");
      assert.equal(res.status, 503);
      assert.ok(
        Date.now() - started < 3500,
        "answered at the timeout, not when the page finished",
      );
      await delay(2000); // the heartbeat answers: nothing is replaced
      assert.doesNotMatch(server.logs(), /\[evil\].*stuck/);
    });

    await t.step(
      "an infinite loop gets 503, the sandbox is replaced, the neighbour is unaffected",
      async () => {
        const looping = get(server, "evil.test", "/loop");
        const during: number[] = [];
        for (let i = 0; i < 10; i++) {
          const t0 = performance.now();
          const res = await get(server, "victim.test", "/");
          assert.equal(res.body, "victim ok");
          during.push(performance.now() - t0);
          await delay(100);
        }
        assert.ok(
          Math.max(...during) < 1000,
          `neighbour stayed fast: ${during.map(Math.round)}`,
        );
        assert.equal((await looping).status, 503);
        await server.waitForLog(/\[evil\].*stuck.*replacing the sandbox/);
        await server.waitForLog(/\[evil\] Sandbox restarted/);
        assert.equal(
          (await get(server, "evil.test", "/own")).body,
          "evil's own file",
        );
      },
    );

    await t.step(
      "running out of memory is a 502; the site restarts alone",
      async () => {
        const res = await get(server, "evil.test", "/oom");
        assert.equal(res.status, 502);
        await server.waitForLog(
          /\[evil\] Sandbox stopped: .*(out of memory|SIG)/,
        );
        // Requests during the replacement wait for it instead of failing.
        assert.equal(
          (await get(server, "evil.test", "/own")).body,
          "evil's own file",
        );
        assert.equal((await get(server, "victim.test", "/")).body, "victim ok");
      },
    );
  } finally {
    const status = await server.stop();
    assert.equal(status.code, 0);
    await Deno.remove(sitesDir, { recursive: true });
  }
});
