/**
 * Static files and file answers (SPEC §7): routing like pages, HTTP
 * semantics (types, validators, 304, 206, 416, HEAD), containment, listings.
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

const HELLO = "hello, static world\n";

const SITES: SiteFiles = {
  files: {
    "site.json": JSON.stringify({ hosts: ["*", "files.test"] }),
    "secret.txt": "TOP SECRET site file",
    "static/*/hello.txt": HELLO,
    "static/*/index.html": "<h1>static index</h1>",
    "static/*/docs/index.html": "<h1>docs</h1>",
    "static/*/style.css": "body{}",
    "static/*/a b.txt": "spaced",
    "static/*/clash": "file side",
    "static/files.test/only.txt": "only on files.test",
    "listing/x<y>.txt": "x",
    "listing/sub/inner.txt": "inner",
    "autorun/ar_files.ts": `
import { hosts } from "sandflare";
hosts.any.add("/clash", () => "page side");
hosts.any.add("/sf", (_req, res) => res.setFile("static/*/hello.txt"));
hosts.any.add("/sf-typed", (_req, res) => { res.setHeader("Content-Type", "text/x-custom"); res.setFile("static/*/style.css"); });
hosts.any.add("/list", (_req, res) => res.setFile("listing", { listDirectory: true }));
hosts.any.add("/nolist", (_req, res) => res.setFile("listing"));
`,
  },
  hooked: {
    "site.json": JSON.stringify({ hosts: ["hooked.test"] }),
    "pub/one.txt": "1",
    "autorun/ar_hooked.ts": `
import { hook, hosts } from "sandflare";
hosts.get("hooked.test").add("/list", (_req, res) => res.setFile("pub", { listDirectory: true }));
hook.add("ListDirectory", "mine", async (_req, res, path) => {
  const names = [];
  for await (const e of Deno.readDir(new URL("../" + path, import.meta.url))) names.push(e.name);
  res.append("custom listing of " + path + ": " + names.join(","));
  return true;
});
`,
  },
};

function get(
  server: TestServer,
  path: string,
  headers: Record<string, string> = {},
  method = "GET",
) {
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join(
    "",
  );
  return server.raw(
    `${method} ${path} HTTP/1.1\r\nHost: x.test\r\n${extra}Connection: close\r\n\r\n`,
  );
}

Deno.test("static files", async (t) => {
  const sitesDir = await writeSites(SITES);
  await Deno.writeTextFile(
    join(sitesDir, "files", "static", "*", "big.bin"),
    "b".repeat(5000),
  );
  const server = await startServer({
    sitesDir,
    args: ["--max-etag-size=4KiB"],
  });
  try {
    const first = await get(server, "/hello.txt");
    const etag = first.headers["etag"]!;
    const lastModified = first.headers["last-modified"]!;

    await t.step(
      "served with type, length, Last-Modified and a strong ETag",
      () => {
        assert.equal(first.status, 200);
        assert.equal(first.body, HELLO);
        assert.equal(
          first.headers["content-type"],
          "text/plain; charset=utf-8",
        );
        assert.equal(first.headers["content-length"], String(HELLO.length));
        assert.match(
          lastModified,
          /^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/,
        );
        assert.match(etag, /^"[^"]+"$/);
        assert.equal(first.headers["server"], "sandflare");
      },
    );

    await t.step(
      "types from the MIME table; index.html for folders; encoded names",
      async () => {
        assert.equal(
          (await get(server, "/style.css")).headers["content-type"],
          "text/css; charset=utf-8",
        );
        assert.equal((await get(server, "/")).body, "<h1>static index</h1>");
        assert.equal((await get(server, "/docs/")).body, "<h1>docs</h1>");
        assert.equal((await get(server, "/a%20b.txt")).body, "spaced");
      },
    );

    await t.step("host folders are host patterns", async () => {
      const on = await server.raw(
        "GET /only.txt HTTP/1.1\r\nHost: files.test\r\nConnection: close\r\n\r\n",
      );
      assert.equal(on.body, "only on files.test");
      assert.equal((await get(server, "/only.txt")).status, 404);
    });

    await t.step(
      "a page and a file at one path is a 409; the log names both",
      async () => {
        const res = await get(server, "/clash");
        assert.equal(res.status, 409);
        await server.waitForLog(
          /Answered 409: .*static file "\/clash".*GET "\/clash"|Answered 409: .*GET "\/clash".*static file "\/clash"/,
        );
      },
    );

    await t.step(
      "304 for If-None-Match (lists, weak comparison, *) and If-Modified-Since",
      async () => {
        const cases: [Record<string, string>, number][] = [
          [{ "If-None-Match": etag }, 304],
          [{ "If-None-Match": `"nope", ${etag}` }, 304],
          [{ "If-None-Match": `W/${etag}` }, 304],
          [{ "If-None-Match": "*" }, 304],
          [{ "If-None-Match": '"nope"' }, 200],
          [
            { "If-None-Match": '"nope"', "If-Modified-Since": lastModified },
            200,
          ],
          [{ "If-Modified-Since": lastModified }, 304],
          [{ "If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT" }, 200],
          [{ "If-Modified-Since": "yesterday-ish garbage" }, 200],
          [{ "If-Modified-Since": "Sun, 99 Foo 99999 99:99:99 GMT" }, 200],
        ];
        for (const [headers, status] of cases) {
          const res = await get(server, "/hello.txt", headers);
          assert.equal(res.status, status, JSON.stringify(headers));
          if (status === 304) assert.equal(res.body, "");
        }
      },
    );

    await t.step(
      "206 for a single range, 416 when unsatisfiable, If-Range honoured",
      async () => {
        const part = await get(server, "/hello.txt", { Range: "bytes=0-4" });
        assert.equal(part.status, 206);
        assert.equal(part.body, "hello");
        assert.equal(
          part.headers["content-range"],
          `bytes 0-4/${HELLO.length}`,
        );
        const suffix = await get(server, "/hello.txt", { Range: "bytes=-6" });
        assert.equal(suffix.body, "world\n");
        const bad = await get(server, "/hello.txt", {
          Range: `bytes=${HELLO.length}-`,
        });
        assert.equal(bad.status, 416);
        assert.equal(bad.headers["content-range"], `bytes */${HELLO.length}`);
        assert.equal(
          (await get(server, "/hello.txt", { Range: "bytes=0-1,3-4" })).status,
          200,
        );
        assert.equal(
          (await get(server, "/hello.txt", {
            Range: "bytes=0-4",
            "If-Range": etag,
          })).status,
          206,
        );
        assert.equal(
          (await get(server, "/hello.txt", {
            Range: "bytes=0-4",
            "If-Range": '"old"',
          })).status,
          200,
        );
      },
    );

    await t.step(
      "HEAD has the headers and no body; POST is a 405",
      async () => {
        const head = await get(server, "/hello.txt", {}, "HEAD");
        assert.equal(head.status, 200);
        assert.equal(head.headers["content-length"], String(HELLO.length));
        assert.equal(head.body, "");
        const post = await server.raw(
          "POST /hello.txt HTTP/1.1\r\nHost: x.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert.equal(post.status, 405);
        assert.equal(post.headers["allow"], "GET, HEAD");
      },
    );

    await t.step("files over --max-etag-size get no ETag", async () => {
      const big = await get(server, "/big.bin");
      assert.equal(big.status, 200);
      assert.equal(big.headers["etag"], undefined);
      assert.equal(big.body.length, 5000);
    });

    await t.step("no way out of the static folder or the site", async () => {
      const corpus = [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/.%2e/.%2e/secret.txt",
        "/docs/../../secret.txt",
        "//secret.txt",
        "/static/*/hello.txt",
        "/hello.txt%00.png",
        "/hello.txt/..%2f..%2fsecret.txt",
        "/%252e%252e/secret.txt",
        "/etc/passwd",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
      ];
      for (const path of corpus) {
        const res = await get(server, path);
        assert.ok(
          [400, 403, 404].includes(res.status),
          `${path}: ${res.status}`,
        );
        assert.doesNotMatch(res.body, /TOP SECRET|root:x:/, path);
      }
    });

    await t.step("setFile answers with the same semantics", async () => {
      const sf = await get(server, "/sf", { Range: "bytes=0-4" });
      assert.equal(sf.status, 206);
      assert.equal(sf.body, "hello");
      const typed = await get(server, "/sf-typed");
      assert.equal(typed.headers["content-type"], "text/x-custom");
      assert.equal(
        (await get(server, "/sf", { "If-None-Match": etag })).status,
        304,
      );
    });

    await t.step(
      "directory listings: escaped default, or the site's ListDirectory hook",
      async () => {
        const list = await get(server, "/list");
        assert.equal(list.status, 200);
        assert.match(list.body, /x&lt;y&gt;\.txt/);
        assert.doesNotMatch(list.body, /x<y>\.txt/);
        assert.ok(
          list.body.indexOf("sub/") < list.body.indexOf("x&lt;y"),
          "folders first",
        );
        assert.equal((await get(server, "/nolist")).status, 403);
        const hooked = await server.raw(
          "GET /list HTTP/1.1\r\nHost: hooked.test\r\nConnection: close\r\n\r\n",
        );
        assert.equal(hooked.body, "custom listing of pub: one.txt");
      },
    );

    await t.step(
      "bytes arrive exactly: binary, a BOM, a change on disk",
      async () => {
        const dir = join(sitesDir, "files", "static", "*");
        const binary = new Uint8Array([
          0xff,
          0xfe,
          0x00,
          0x80,
          0xc3,
          0x28,
          0x41,
        ]);
        const bom = new Uint8Array([0xef, 0xbb, 0xbf, 0x68, 0x69]);
        await Deno.writeFile(join(dir, "bin.dat"), binary);
        await Deno.writeFile(join(dir, "bom.txt"), bom);
        const fetchBytes = async (path: string) => {
          let res = await fetch(`${server.origin}${path}`);
          for (let i = 0; i < 100 && res.status === 404; i++) {
            await res.body?.cancel();
            await delay(20);
            res = await fetch(`${server.origin}${path}`);
          }
          return new Uint8Array(await res.arrayBuffer());
        };
        assert.deepEqual(await fetchBytes("/bin.dat"), binary);
        assert.deepEqual(await fetchBytes("/bom.txt"), bom);
        const range = await fetch(`${server.origin}/bom.txt`, {
          headers: { Range: "bytes=0-2" },
        });
        assert.deepEqual(
          new Uint8Array(await range.arrayBuffer()),
          bom.subarray(0, 3),
        );
        // A changed file is served within the cache's revalidation time (1 s).
        await Deno.writeTextFile(join(dir, "hello.txt"), "changed on disk\n");
        const deadline = Date.now() + 5000;
        let text = "";
        while (Date.now() < deadline) {
          text = (await get(server, "/hello.txt")).body;
          if (text === "changed on disk\n") break;
          await delay(100);
        }
        assert.equal(text, "changed on disk\n");
      },
    );

    await t.step("a new static file is served without a reload", async () => {
      await Deno.writeTextFile(
        join(sitesDir, "files", "static", "*", "fresh.txt"),
        "fresh",
      );
      const deadline = Date.now() + 5000;
      let res = await get(server, "/fresh.txt");
      while (res.status !== 200 && Date.now() < deadline) {
        await delay(20);
        res = await get(server, "/fresh.txt");
      }
      assert.equal(res.body, "fresh");
      assert.doesNotMatch(server.logs(), /\[files\] Reloaded/);
    });
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
