/**
 * The hostile-input corpus against a running server over raw sockets; a
 * normal client is served before, between and after.
 */

import assert from "node:assert/strict";
import { startServer, writeSites } from "../helpers/server.ts";
import { CORPUS } from "./corpus.ts";

const SITES = {
  normal: {
    "site.json": JSON.stringify({ hosts: ["*"] }),
    "autorun/ar_normal.ts": `
import { hosts, websocket } from "sandflare";
hosts.any.add("/ok", () => "ok");
hosts.any.add("/echo", async (req) => await req.text(), "POST");
websocket.register("/ws");
`,
  },
};

/** Sends bytes, reads until close or a 2 s lull; returns the status line's code (0 = none). */
async function exchange(
  port: number,
  bytes: string,
): Promise<{ status: number; text: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(bytes)).catch(() => {});
    const chunks: string[] = [];
    const buf = new Uint8Array(65536);
    const decoder = new TextDecoder();
    while (true) {
      const n = await Promise.race([
        conn.read(buf).catch(() => null),
        new Promise<"lull">((r) => setTimeout(() => r("lull"), 2000)),
      ]);
      if (n === null || n === "lull") break;
      chunks.push(decoder.decode(buf.subarray(0, n)));
      if (
        /\r\n\r\n/.test(chunks.join("")) &&
        !/Transfer-Encoding: chunked/i.test(chunks.join(""))
      ) {
        const text = chunks.join("");
        const length = Number(/content-length: (\d+)/i.exec(text)?.[1] ?? 0);
        if (text.length - text.indexOf("\r\n\r\n") - 4 >= length) break;
      }
    }
    const text = chunks.join("");
    return {
      status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0),
      text,
    };
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by the server.
    }
  }
}

for (const mode of ["", "--fast-connections"]) {
  Deno.test(`hostile input gets a 4xx or a closed connection, and nothing else suffers${mode === "" ? "" : ` (${mode})`}`, async (t) => {
    const sitesDir = await writeSites(SITES);
    const server = await startServer({
      sitesDir,
      args: ["--max-post-length=1MiB", ...(mode === "" ? [] : [mode])],
    });
    const healthy = async () => {
      const res = await server.raw(
        "GET /ok HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n",
      );
      assert.equal(res.body, "ok", "a normal client is served");
    };
    try {
      await healthy();
      for (const entry of CORPUS) {
        await t.step(entry.name, async () => {
          const { status, text } = await exchange(server.port, entry.bytes);
          assert.ok(
            status < 500,
            `${entry.name}: ${status} ${text.slice(0, 200)}`,
          );
          if (entry.ok === "reject") {
            assert.ok(
              status === 0 || (status >= 400 && status < 500),
              `${entry.name}: answered ${status}`,
            );
          }
          if (entry.ok === "404") assert.equal(status, 404, entry.name);
          assert.doesNotMatch(
            text,
            /smuggled/,
            "no second request was smuggled through",
          );
          await healthy();
        });
      }

      await t.step(
        "a body left unread on keep-alive does not break the next request",
        async () => {
          const conn = await Deno.connect({
            hostname: "127.0.0.1",
            port: server.port,
          });
          try {
            // A POST to a page that never reads its body (404 here), then a GET.
            await conn.write(new TextEncoder().encode(
              "POST /nowhere HTTP/1.1\r\nHost: x.test\r\nContent-Length: 10\r\n\r\n0123456789" +
                "GET /ok HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n",
            ));
            let text = "";
            const buf = new Uint8Array(65536);
            while (true) {
              const n = await conn.read(buf).catch(() => null);
              if (n === null) break;
              text += new TextDecoder().decode(buf.subarray(0, n));
            }
            const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((
              m,
            ) => m[1]);
            assert.deepEqual(statuses, ["404", "200"]);
            assert.ok(text.endsWith("ok"));
          } finally {
            try {
              conn.close();
            } catch {
              // Closed.
            }
          }
        },
      );

      await t.step("the server is alive and logged no crash", async () => {
        await healthy();
        assert.doesNotMatch(
          server.logs(),
          /Request failed in the gateway|Uncaught/,
        );
      });
    } finally {
      const status = await server.stop();
      assert.equal(status.code, 0);
      await Deno.remove(sitesDir, { recursive: true });
    }
  });
}
