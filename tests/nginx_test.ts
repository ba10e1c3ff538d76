/**
 * Behind a real nginx: X-Accel-Redirect delivers the file, and under
 * --reverse-proxy the client address comes from the trusted proxy's headers.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type SiteFiles, startServer, writeSites } from "./helpers/server.ts";
import { curl, startNginx } from "./helpers/nginx.ts";

const SITES: SiteFiles = {
  proxied: {
    "site.json": JSON.stringify({ hosts: ["*"] }),
    "files/report name.txt": "the report body\n",
    "autorun/ar_proxied.ts": `
import { hosts } from "sandflare";
hosts.any.add("/download", (_req, res) => res.setFile("files/report name.txt"));
hosts.any.add("/peer", (req) => req.peer);
`,
  },
};

const PROXY = (port: number) => `
location / {
  proxy_pass http://127.0.0.1:${port};
  proxy_set_header Host $host;
  proxy_set_header X-Real-IP $remote_addr;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
}
location /xff/ {
  proxy_pass http://127.0.0.1:${port}/;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
}
location /./ {
  internal;
  alias /;
}
`;

Deno.test("behind nginx: X-Accel-Redirect and --reverse-proxy", async (t) => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({
    sitesDir,
    args: [
      "--x-accel-redirect",
      "--reverse-proxy",
      "--trusted-reverse-proxies=127.0.0.1",
    ],
  });
  const nginx = await startNginx(PROXY(server.port));
  const viaNginx = `http://127.0.0.1:${nginx.port}`;
  try {
    await t.step(
      "the gateway answers setFile with X-Accel-Redirect: PREFIX + real path",
      async () => {
        const res = await server.fetch("/download");
        const real = await Deno.realPath(
          join(sitesDir, "proxied", "files", "report name.txt"),
        );
        assert.equal(
          res.headers.get("x-accel-redirect"),
          `/./${real.slice(1).replaceAll(" ", "%20")}`,
        );
        assert.equal(res.text, "");
      },
    );

    await t.step("nginx follows it and the file arrives", async () => {
      const res = await curl([`${viaNginx}/download`]);
      assert.equal(res.code, 0, res.stderr);
      assert.equal(res.stdout, "the report body\n", nginx.log());
    });

    await t.step("req.peer is the client nginx saw, not nginx", async () => {
      const res = await curl(["--interface", "127.0.0.2", `${viaNginx}/peer`]);
      assert.equal(res.stdout, "127.0.0.2");
    });

    await t.step(
      "a client cannot spoof its address through X-Forwarded-For",
      async () => {
        const spoofed = await curl([
          "--interface",
          "127.0.0.2",
          "-H",
          "X-Forwarded-For: 6.6.6.6",
          `${viaNginx}/xff/peer`,
        ]);
        assert.equal(
          spoofed.stdout,
          "127.0.0.2",
          "the right-most untrusted entry wins",
        );
        const realIp = await curl([
          "--interface",
          "127.0.0.2",
          "-H",
          "X-Real-IP: 7.7.7.7",
          `${viaNginx}/peer`,
        ]);
        assert.equal(
          realIp.stdout,
          "127.0.0.2",
          "nginx overwrites the client's X-Real-IP",
        );
      },
    );

    await t.step(
      "untrusted peers get 403; malformed X-Real-IP gets 400",
      async () => {
        const direct = await curl([
          "--interface",
          "127.0.0.2",
          "-o",
          "/dev/null",
          "-w",
          "%{http_code}",
          `${server.origin}/peer`,
        ]);
        assert.equal(direct.stdout, "403");
        const bad = await server.raw(
          "GET /peer HTTP/1.1\r\nHost: x\r\nX-Real-IP: not-an-ip\r\nConnection: close\r\n\r\n",
        );
        assert.equal(bad.status, 400);
        assert.doesNotMatch(bad.body, /not-an-ip/);
        const good = await server.raw(
          "GET /peer HTTP/1.1\r\nHost: x\r\nX-Real-IP: 2001:db8::1\r\nConnection: close\r\n\r\n",
        );
        assert.equal(good.body, "2001:db8::1");
      },
    );
  } finally {
    await nginx.stop();
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("without --reverse-proxy, X-Real-IP and X-Forwarded-For are ignored", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  try {
    const res = await server.raw(
      "GET /peer HTTP/1.1\r\nHost: x\r\nX-Real-IP: 9.9.9.9\r\nX-Forwarded-For: 8.8.8.8\r\nConnection: close\r\n\r\n",
    );
    assert.equal(res.body, "127.0.0.1");
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
