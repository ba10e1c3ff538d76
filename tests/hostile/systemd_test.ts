/**
 * `--systemd` against a real datagram listener standing in for systemd.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { delay, startServer, writeSites } from "../helpers/server.ts";

const SITES = {
  plain: {
    "site.json": JSON.stringify({ hosts: ["*"] }),
    "autorun/ar_plain.ts":
      `import { hosts } from "sandflare";\nhosts.any.add("/plain", () => "plain");\n`,
  },
};

Deno.test("--systemd notifies READY, WATCHDOG, RELOADING/READY and STOPPING", async () => {
  const sitesDir = await writeSites(SITES);
  const socketPath = join(sitesDir, "notify.sock");
  const listener = Deno.listenDatagram({
    path: socketPath,
    transport: "unixpacket",
  });
  const received: string[] = [];
  const reading = (async () => {
    try {
      while (true) {
        const [data] = await listener.receive();
        received.push(new TextDecoder().decode(data));
      }
    } catch {
      // Closed.
    }
  })();
  const until = async (what: string, check: () => boolean) => {
    const deadline = Date.now() + 10_000;
    while (!check()) {
      if (Date.now() > deadline) {
        throw new Error(`no ${what}; got ${JSON.stringify(received)}`);
      }
      await delay(20);
    }
  };
  const server = await startServer({
    sitesDir,
    args: ["--systemd"],
    env: { NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: "200000" },
  });
  try {
    await until("READY=1", () => received.some((m) => m.startsWith("READY=1")));
    assert.equal(
      (await server.fetch("/plain")).text,
      "plain",
      "ready means serving",
    );
    await until(
      "3 watchdog pings",
      () => received.filter((m) => m === "WATCHDOG=1").length >= 3,
    );
    server.child.kill("SIGHUP");
    await until("RELOADING=1 then READY=1", () => {
      const reloading = received.findIndex((m) => m.startsWith("RELOADING=1"));
      return reloading >= 0 &&
        received.slice(reloading).some((m) => m.startsWith("READY=1"));
    });
    assert.match(
      received.find((m) => m.startsWith("RELOADING=1"))!,
      /\nMONOTONIC_USEC=\d+$/,
    );
    const status = await server.stop();
    assert.equal(status.code, 0);
    await until("STOPPING=1", () => received.includes("STOPPING=1"));
  } finally {
    await server.stop();
    listener.close();
    await reading;
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("--systemd with an abstract socket says it is unsupported and serves anyway", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({
    sitesDir,
    args: ["--systemd"],
    env: { NOTIFY_SOCKET: "@sandflare-test" },
  });
  try {
    await server.waitForLog(
      /--systemd: NOTIFY_SOCKET "@sandflare-test" is an abstract socket/,
    );
    assert.equal((await server.fetch("/plain")).text, "plain");
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
