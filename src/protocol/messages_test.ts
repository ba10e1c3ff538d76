import assert from "node:assert/strict";
import {
  parseFromSandbox,
  parseToSandbox,
  ProtocolError,
  type WireRequest,
} from "./messages.ts";

type Json = Record<string, unknown>;
type Path = (string | number)[];

const DELETE = Symbol("delete");

/** A deep copy of `base` with the value at `path` replaced or deleted. */
function changed(base: Json, path: Path, value: unknown): Json {
  const copy = structuredClone(base);
  let target: Record<string | number, unknown> = copy;
  for (const key of path.slice(0, -1)) {
    target = target[key] as Record<string | number, unknown>;
  }
  const last = path.at(-1)!;
  if (value === DELETE) delete target[last];
  else target[last] = value;
  return copy;
}

const REQ: WireRequest = {
  method: "GET",
  path: "/a b",
  fullUrl: "/a%20b?x=1",
  scheme: "http",
  authority: "a.test",
  query: "x=1",
  headers: ["host", "a.test", "accept", "*/*"],
  host: "a.test",
  peer: "127.0.0.1",
  startTime: 1_700_000_000_000,
  upgraded: false,
};

/** Every valid message from a sandbox, by name. */
const FROM_SANDBOX: Record<string, Json> = {
  "loaded": {
    t: "loaded",
    routes: {
      hosts: [
        { pattern: "a.test", noFallback: false },
        { pattern: "*", noFallback: true },
      ],
      pages: [
        { id: 0, host: "*", method: "GET", path: "/" },
        {
          id: 1,
          host: "a.test",
          method: "POST",
          regex: { source: "/u/(\\d+)", flags: "" },
        },
        { id: 2, host: "*", method: "*", prefix: "/api" },
      ],
      hooks: ["Error", "Request"],
      websockets: [
        { id: 0, host: "*", path: "/ws", protocol: null, origins: [] },
        {
          id: 1,
          host: "a.test",
          regex: { source: "/rooms/([a-z]+)", flags: "" },
          protocol: "chat",
          origins: ["https://app.example"],
        },
      ],
      tasks: 2,
    },
  },
  "loaded, nothing registered": {
    t: "loaded",
    routes: { hosts: [], pages: [], hooks: [], websockets: [], tasks: 0 },
  },
  "loadFailed with a location": {
    t: "loadFailed",
    message: "boom",
    location: "ar_01.ts:3:5",
  },
  "loadFailed without a location": {
    t: "loadFailed",
    message: "boom",
    location: null,
  },
  "reply with a body": {
    t: "reply",
    id: 0,
    reply: { kind: "body", status: 200, headers: ["content-type", "x"] },
  },
  "reply with status 100": {
    t: "reply",
    id: 1,
    reply: { kind: "body", status: 100, headers: [] },
  },
  "reply with status 599": {
    t: "reply",
    id: 1,
    reply: { kind: "body", status: 599, headers: [] },
  },
  "reply with a file": {
    t: "reply",
    id: 2,
    reply: {
      kind: "file",
      status: 200,
      headers: [],
      path: "static/a.txt",
      listDirectory: true,
    },
  },
  "reply with an error": {
    t: "reply",
    id: Number.MAX_SAFE_INTEGER,
    reply: { kind: "error", code: 418, message: "teapot" },
  },
  "heartbeat": { t: "heartbeat", id: 3, ok: true },
  "heartbeat not ok": { t: "heartbeat", id: 3, ok: false },
};

/** Every valid message from the gateway, by name. */
const TO_SANDBOX: Record<string, Json> = {
  "init": {
    t: "init",
    site: "blog",
    siteDir: "/srv/sites/blog",
    scripts: ["file:///srv/sites/blog/autorun/ar_01.ts"],
    hosts: ["blog.test", "*"],
    workers: 2,
    permissions: {
      read: ["/srv/sites/blog"],
      write: [],
      net: ["api.example.com:443"],
      env: false,
    },
    kv: null,
    limits: { memoryBytes: null, nice: false },
  },
  "init with an env list": {
    t: "init",
    site: "blog",
    siteDir: "/srv/sites/blog",
    scripts: [],
    hosts: [],
    workers: 1,
    permissions: { read: [], write: [], net: [], env: ["HOME"] },
    kv: "/srv/sites/blog/data/site.kv",
    limits: { memoryBytes: 268435456, nice: true },
  },
  "init of a spare": {
    t: "init",
    site: "blog",
    siteDir: "/srv/sites/blog",
    scripts: null,
    hosts: [],
    workers: 2,
    permissions: { read: ["/srv/sites/blog"], write: [], net: [], env: false },
    kv: null,
    limits: { memoryBytes: null, nice: true },
  },
  "load": {
    t: "load",
    scripts: ["file:///srv/sites/blog/autorun/ar_01.ts"],
    hosts: ["blog.test"],
  },
  "request": {
    t: "request",
    id: 4,
    page: 0,
    captures: ["42", ""],
    req: REQ,
  },
  "error": {
    t: "error",
    id: 5,
    code: 404,
    message: "Not found",
    req: { ...REQ, upgraded: true, headers: [] },
  },
  "wsOpen": {
    t: "wsOpen",
    channel: 1,
    client: "c0ffee",
    req: { ...REQ, upgraded: true },
    captures: ["kitchen"],
  },
  "heartbeat": { t: "heartbeat", id: 0 },
  "reloading": { t: "reloading" },
  "activate": { t: "activate" },
  "pauseTasks": { t: "pauseTasks" },
  "shutdown": { t: "shutdown" },
};

Deno.test("parseFromSandbox() accepts every valid message", async (t) => {
  for (const [name, message] of Object.entries(FROM_SANDBOX)) {
    await t.step(name, () => {
      assert.deepEqual(parseFromSandbox(structuredClone(message)), message);
    });
  }
  await t.step("unknown top-level fields are dropped", () => {
    const parsed = parseFromSandbox({
      t: "heartbeat",
      id: 1,
      ok: true,
      extra: "x",
    });
    assert.deepEqual(parsed, { t: "heartbeat", id: 1, ok: true });
  });
});

Deno.test("parseToSandbox() accepts every valid message", async (t) => {
  for (const [name, message] of Object.entries(TO_SANDBOX)) {
    await t.step(name, () => {
      assert.deepEqual(parseToSandbox(structuredClone(message)), message);
    });
  }
  await t.step("unknown top-level fields are dropped", () => {
    assert.deepEqual(parseToSandbox({ t: "shutdown", now: true }), {
      t: "shutdown",
    });
  });
});

/** Values that are not a valid message of either direction. */
const NOT_MESSAGES: [string, unknown][] = [
  ["null", null],
  ["undefined", undefined],
  ["a number", 1],
  ["a string", "heartbeat"],
  ["a boolean", true],
  ["an empty object", {}],
  ["an empty array", []],
  ["an array holding a message", [{ t: "shutdown" }]],
  ["t missing", { id: 1, ok: true }],
  ["t not a string", { t: 1 }],
  ["t unknown", { t: "launchMissiles" }],
  ["t in another case", { t: "Heartbeat", id: 1, ok: true }],
];

/** Malformed sandbox messages: [name, base message, path, bad value]. */
const BAD_FROM_SANDBOX: [string, string, Path, unknown][] = [
  ["websocket origins missing", "loaded", [
    "routes",
    "websockets",
    0,
    "origins",
  ], DELETE],
  ["websocket with path and regex", "loaded", [
    "routes",
    "websockets",
    0,
    "regex",
  ], { source: "x", flags: "" }],
  ["websocket with neither path nor regex", "loaded", [
    "routes",
    "websockets",
    1,
    "regex",
  ], DELETE],
  ["websocket regex flags missing", "loaded", [
    "routes",
    "websockets",
    1,
    "regex",
    "flags",
  ], DELETE],
  ["routes missing", "loaded", ["routes"], DELETE],
  ["routes an array", "loaded", ["routes"], []],
  ["hosts missing", "loaded", ["routes", "hosts"], DELETE],
  ["hosts not an array", "loaded", ["routes", "hosts"], { 0: {} }],
  ["host null", "loaded", ["routes", "hosts", 0], null],
  ["host pattern a number", "loaded", ["routes", "hosts", 0, "pattern"], 1],
  ["host noFallback missing", "loaded", [
    "routes",
    "hosts",
    1,
    "noFallback",
  ], DELETE],
  ["host noFallback a string", "loaded", [
    "routes",
    "hosts",
    0,
    "noFallback",
  ], "false"],
  ["pages missing", "loaded", ["routes", "pages"], DELETE],
  ["page a string", "loaded", ["routes", "pages", 0], "/"],
  ["page id negative", "loaded", ["routes", "pages", 0, "id"], -1],
  ["page id fractional", "loaded", ["routes", "pages", 0, "id"], 0.5],
  ["page id a string", "loaded", ["routes", "pages", 0, "id"], "0"],
  ["page host missing", "loaded", ["routes", "pages", 0, "host"], DELETE],
  ["page method missing", "loaded", ["routes", "pages", 0, "method"], DELETE],
  ["page method a number", "loaded", ["routes", "pages", 1, "method"], 1],
  ["page path a number", "loaded", ["routes", "pages", 0, "path"], 1],
  ["page path null", "loaded", ["routes", "pages", 0, "path"], null],
  ["page with path and regex", "loaded", ["routes", "pages", 0, "regex"], {
    source: "x",
    flags: "",
  }],
  ["page with neither path nor regex", "loaded", [
    "routes",
    "pages",
    1,
    "regex",
  ], DELETE],
  ["page regex a string", "loaded", ["routes", "pages", 1, "regex"], "x"],
  [
    "page with path and prefix",
    "loaded",
    ["routes", "pages", 0, "prefix"],
    "/",
  ],
  ["page prefix a number", "loaded", ["routes", "pages", 2, "prefix"], 1],
  ["page regex source missing", "loaded", [
    "routes",
    "pages",
    1,
    "regex",
    "source",
  ], DELETE],
  ["page regex flags a number", "loaded", [
    "routes",
    "pages",
    1,
    "regex",
    "flags",
  ], 0],
  ["hooks missing", "loaded", ["routes", "hooks"], DELETE],
  ["hooks with a number", "loaded", ["routes", "hooks", 1], 2],
  ["loadFailed message missing", "loadFailed without a location", [
    "message",
  ], DELETE],
  ["loadFailed message a number", "loadFailed with a location", [
    "message",
  ], 1],
  ["loadFailed location missing", "loadFailed without a location", [
    "location",
  ], DELETE],
  ["loadFailed location a number", "loadFailed with a location", [
    "location",
  ], 3],
  ["reply id missing", "reply with a body", ["id"], DELETE],
  ["reply id negative", "reply with a body", ["id"], -1],
  ["reply id fractional", "reply with a body", ["id"], 1.5],
  ["reply id a string", "reply with a body", ["id"], "1"],
  ["reply id unsafe", "reply with a body", ["id"], 2 ** 53],
  ["reply missing", "reply with a body", ["reply"], DELETE],
  ["reply null", "reply with a body", ["reply"], null],
  ["reply kind unknown", "reply with a body", ["reply", "kind"], "stream"],
  ["reply kind missing", "reply with a body", ["reply", "kind"], DELETE],
  ["status 99", "reply with a body", ["reply", "status"], 99],
  ["status 600", "reply with a body", ["reply", "status"], 600],
  ["status 0", "reply with a body", ["reply", "status"], 0],
  ["status fractional", "reply with a body", ["reply", "status"], 200.5],
  ["status a string", "reply with a body", ["reply", "status"], "200"],
  ["status missing", "reply with a body", ["reply", "status"], DELETE],
  ["headers odd length", "reply with a body", ["reply", "headers"], ["a"]],
  ["headers of three", "reply with a body", ["reply", "headers"], [
    "a",
    "1",
    "b",
  ]],
  ["headers with a number", "reply with a body", ["reply", "headers"], [
    "a",
    1,
  ]],
  ["headers an object", "reply with a body", ["reply", "headers"], { a: "1" }],
  ["headers missing", "reply with a body", ["reply", "headers"], DELETE],
  ["file path missing", "reply with a file", ["reply", "path"], DELETE],
  ["file path a number", "reply with a file", ["reply", "path"], 1],
  ["file listDirectory missing", "reply with a file", [
    "reply",
    "listDirectory",
  ], DELETE],
  ["file listDirectory a number", "reply with a file", [
    "reply",
    "listDirectory",
  ], 1],
  ["file status 600", "reply with a file", ["reply", "status"], 600],
  ["file headers odd", "reply with a file", ["reply", "headers"], ["x"]],
  ["error code 99", "reply with an error", ["reply", "code"], 99],
  ["error code 600", "reply with an error", ["reply", "code"], 600],
  ["error code missing", "reply with an error", ["reply", "code"], DELETE],
  ["error message missing", "reply with an error", [
    "reply",
    "message",
  ], DELETE],
  ["error message null", "reply with an error", ["reply", "message"], null],
  ["heartbeat id missing", "heartbeat", ["id"], DELETE],
  ["heartbeat id negative", "heartbeat", ["id"], -3],
  ["heartbeat id fractional", "heartbeat", ["id"], 3.25],
  ["heartbeat ok missing", "heartbeat", ["ok"], DELETE],
  ["heartbeat ok a string", "heartbeat", ["ok"], "true"],
  ["heartbeat ok a number", "heartbeat", ["ok"], 1],
];

Deno.test("parseFromSandbox() rejects malformed messages", async (t) => {
  const cases: [string, unknown][] = [
    ...NOT_MESSAGES,
    ...BAD_FROM_SANDBOX.map(([name, base, path, value]): [string, unknown] => [
      name,
      changed(FROM_SANDBOX[base]!, path, value),
    ]),
    // Messages of the other direction are not sandbox messages.
    ...Object.entries(TO_SANDBOX)
      .filter(([name]) => name !== "heartbeat")
      .map(([name, m]): [string, unknown] => [`gateway's ${name}`, m]),
    ["gateway's heartbeat (no ok)", TO_SANDBOX["heartbeat"]],
  ];
  for (const [name, value] of cases) {
    await t.step(name, () => {
      assert.throws(() => parseFromSandbox(value), ProtocolError);
    });
  }
});

/** Malformed gateway messages: [name, base message, path, bad value]. */
const BAD_TO_SANDBOX: [string, string, Path, unknown][] = [
  ["wsOpen req missing", "wsOpen", ["req"], DELETE],
  ["wsOpen req without headers", "wsOpen", ["req", "headers"], DELETE],
  ["wsOpen captures missing", "wsOpen", ["captures"], DELETE],
  ["wsOpen captures with a number", "wsOpen", ["captures", 0], 1],
  ["request scheme missing", "request", ["req", "scheme"], DELETE],
  ["request scheme ftp", "request", ["req", "scheme"], "ftp"],
  ["request authority missing", "request", ["req", "authority"], DELETE],
  ["init hosts missing", "init", ["hosts"], DELETE],
  ["init scripts missing", "init", ["scripts"], DELETE],
  ["load scripts null", "load", ["scripts"], null],
  ["load hosts missing", "load", ["hosts"], DELETE],
  ["load script a number", "load", ["scripts", 0], 1],
  ["init kv missing", "init", ["kv"], DELETE],
  ["init kv a boolean", "init", ["kv"], true],
  ["init hosts with a number", "init", ["hosts", 0], 1],
  ["init site missing", "init", ["site"], DELETE],
  ["init site a number", "init", ["site"], 1],
  ["init siteDir missing", "init", ["siteDir"], DELETE],
  ["init scripts a string", "init", ["scripts"], "ar_01.ts"],
  ["init scripts with null", "init", ["scripts", 0], null],
  ["init workers negative", "init", ["workers"], -1],
  ["init workers fractional", "init", ["workers"], 1.5],
  ["init workers a string", "init", ["workers"], "2"],
  ["init limits missing", "init", ["limits"], DELETE],
  ["init memory limit a string", "init", ["limits", "memoryBytes"], "1"],
  ["init nice missing", "init", ["limits", "nice"], DELETE],
  ["init permissions missing", "init", ["permissions"], DELETE],
  ["init permissions an array", "init", ["permissions"], []],
  ["init read missing", "init", ["permissions", "read"], DELETE],
  ["init read a string", "init", ["permissions", "read"], "/srv"],
  ["init write with a number", "init", ["permissions", "write"], [1]],
  ["init net true", "init", ["permissions", "net"], true],
  ["init env missing", "init", ["permissions", "env"], DELETE],
  ["init env a string", "init", ["permissions", "env"], "HOME"],
  ["init env with a number", "init", ["permissions", "env"], ["A", 1]],
  ["request id missing", "request", ["id"], DELETE],
  ["request id negative", "request", ["id"], -1],
  ["request id fractional", "request", ["id"], 0.1],
  ["request page missing", "request", ["page"], DELETE],
  ["request page negative", "request", ["page"], -2],
  ["request page a string", "request", ["page"], "0"],
  ["request captures missing", "request", ["captures"], DELETE],
  ["request captures with null", "request", ["captures", 0], null],
  ["request req missing", "request", ["req"], DELETE],
  ["request req an array", "request", ["req"], []],
  ...(Object.keys(REQ) as (keyof WireRequest)[]).map((
    key,
  ): [string, string, Path, unknown] => [
    `request req.${key} missing`,
    "request",
    ["req", key],
    DELETE,
  ]),
  ["request req.method a number", "request", ["req", "method"], 1],
  ["request req.path null", "request", ["req", "path"], null],
  ["request req.headers odd", "request", ["req", "headers"], ["host"]],
  ["request req.headers with a number", "request", ["req", "headers", 1], 5],
  ["request req.startTime a string", "request", [
    "req",
    "startTime",
  ], "1700000000000"],
  ["request req.upgraded a number", "request", ["req", "upgraded"], 0],
  ["error id negative", "error", ["id"], -1],
  ["error code 99", "error", ["code"], 99],
  ["error code 600", "error", ["code"], 600],
  ["error code a string", "error", ["code"], "404"],
  ["error message missing", "error", ["message"], DELETE],
  ["error req missing", "error", ["req"], DELETE],
  ["error req.headers odd", "error", ["req", "headers"], ["a", "b", "c"]],
  ["heartbeat id missing", "heartbeat", ["id"], DELETE],
  ["heartbeat id negative", "heartbeat", ["id"], -1],
  ["heartbeat id fractional", "heartbeat", ["id"], 1.5],
  ["heartbeat id a string", "heartbeat", ["id"], "1"],
];

Deno.test("parseToSandbox() rejects malformed messages", async (t) => {
  const cases: [string, unknown][] = [
    ...NOT_MESSAGES,
    ...BAD_TO_SANDBOX.map(([name, base, path, value]): [string, unknown] => [
      name,
      changed(TO_SANDBOX[base]!, path, value),
    ]),
    ...Object.entries(FROM_SANDBOX)
      .filter(([name]) => !name.startsWith("heartbeat"))
      .map(([name, m]): [string, unknown] => [`sandbox's ${name}`, m]),
  ];
  for (const [name, value] of cases) {
    await t.step(name, () => {
      assert.throws(() => parseToSandbox(value), ProtocolError);
    });
  }
});

Deno.test("ProtocolError messages show the value, cut at 200 characters", async (t) => {
  await t.step("short value in full", () => {
    assert.throws(
      () => parseFromSandbox({ t: "nope" }),
      (err: unknown) =>
        err instanceof ProtocolError &&
        err.message.includes('{"t":"nope"}') &&
        err.name === "ProtocolError",
    );
  });
  await t.step("long value cut", () => {
    const long = { t: "x".repeat(1000) };
    assert.throws(
      () => parseToSandbox(long),
      (err: unknown) =>
        err instanceof ProtocolError && err.message.length < 300 &&
        err.message.endsWith("…"),
    );
  });
  await t.step("undefined does not crash the message", () => {
    assert.throws(
      () => parseToSandbox(undefined),
      (err: unknown) =>
        err instanceof ProtocolError && err.message.includes("undefined"),
    );
  });
});
