import assert from "node:assert/strict";
import { originAllowed } from "./websocket_upgrade.ts";
import type { WireSocket } from "../protocol/messages.ts";

const REG: WireSocket = {
  id: 0,
  host: "*",
  path: "/ws",
  protocol: null,
  origins: [],
};

Deno.test("originAllowed(): a browser page of the same host, and listed origins, only", () => {
  const http = { authority: "a.test:8080", scheme: "http" } as const;
  const https = { authority: "a.test", scheme: "https" } as const;
  const cases: [string, typeof http | typeof https, WireSocket, boolean][] = [
    ["http://a.test:8080", http, REG, true],
    ["HTTP://A.TEST:8080", http, REG, true],
    ["https://a.test:8080", http, REG, true],
    ["http://a.test", http, REG, false], // another port
    ["http://b.test:8080", http, REG, false],
    ["http://a.test.:8080", http, REG, false],
    ["http://a.test:8080.evil.test", http, REG, false],
    ["ws://a.test:8080", http, REG, false],
    ["file://a.test:8080", http, REG, false],
    ["http://user@a.test:8080", http, REG, false],
    ["null", http, REG, false],
    ["", http, REG, false],
    ["https://a.test", https, REG, true],
    // A page over plain http must not reach a socket over TLS.
    ["http://a.test", https, REG, false],
    [
      "https://app.example",
      https,
      { ...REG, origins: ["https://app.example"] },
      true,
    ],
    [
      "http://app.example",
      https,
      { ...REG, origins: ["https://app.example"] },
      false,
    ],
    ["http://evil.test", https, { ...REG, origins: ["*"] }, true],
  ];
  for (const [origin, request, reg, allowed] of cases) {
    assert.equal(
      originAllowed(origin, request, reg),
      allowed,
      `${origin} to ${request.scheme}://${request.authority}`,
    );
  }
});
