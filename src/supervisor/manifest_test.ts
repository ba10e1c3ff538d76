import assert from "node:assert/strict";
import { isAbsolute, join, resolve } from "node:path";
import {
  DEFAULT_MEMORY_MIB,
  ManifestError,
  parseManifest,
  type SiteManifest,
} from "./manifest.ts";

const FILE = "sites/blog/site.json";
const SITE = "/srv/sites/blog";
const OPTIONS = { file: FILE, siteDir: SITE };

const DEFAULTS: SiteManifest = {
  hosts: [],
  fallback: [],
  permissions: { read: [], write: [], net: [], env: false },
  workers: null,
  requestTimeout: null,
  memory: 256,
  disk: 100,
  kv: null,
};

function parse(json: unknown): SiteManifest {
  return parseManifest(JSON.stringify(json), OPTIONS);
}

Deno.test("parseManifest() without site.json allows nothing", () => {
  assert.deepEqual(parseManifest(null, OPTIONS), DEFAULTS);
  assert.equal(DEFAULT_MEMORY_MIB, 256);
});

Deno.test("parseManifest() fills defaults for missing fields", async (t) => {
  const cases = ["{}", " {\n} \n", "\uFEFF{}"];
  for (const text of cases) {
    await t.step(JSON.stringify(text), () => {
      assert.deepEqual(parseManifest(text, OPTIONS), DEFAULTS);
    });
  }
  await t.step("null numbers mean the default", () => {
    assert.deepEqual(
      parse({ workers: null, requestTimeout: null, memory: null }),
      DEFAULTS,
    );
  });
});

Deno.test("parseManifest() reads the SPEC example", () => {
  const text = `{
    "hosts": ["example.test", "*.example.test"],
    "permissions": { "read": ["data"], "write": ["data"], "net": ["api.example.com:443"], "env": false },
    "workers": 2,
    "requestTimeout": 10,
    "memory": 256
  }`;
  assert.deepEqual(parseManifest(text, OPTIONS), {
    hosts: ["example.test", "*.example.test"],
    fallback: [],
    permissions: {
      read: ["/srv/sites/blog/data"],
      write: ["/srv/sites/blog/data"],
      net: ["api.example.com:443"],
      env: false,
    },
    workers: 2,
    requestTimeout: 10,
    memory: 256,
    disk: 100,
    kv: null,
  });
});

Deno.test("parseManifest() reads host patterns", async (t) => {
  const cases: [string[], string[]][] = [
    [["*"], ["*"]],
    [["example.test"], ["example.test"]],
    [["Example.TEST"], ["example.test"]],
    [["*.example.test"], ["*.example.test"]],
    [["~.Example.test"], ["~.example.test"]],
    [["+.example.test"], ["+.example.test"]],
    [["example.test."], ["example.test"]],
    [["localhost"], ["localhost"]],
    [["127.0.0.1"], ["127.0.0.1"]],
    [["xn--bcher-kva.test", "a-b.c-d.test"], [
      "xn--bcher-kva.test",
      "a-b.c-d.test",
    ]],
    [["a.test", "A.test", "b.test"], ["a.test", "b.test"]],
    [[`${"a".repeat(63)}.test`], [`${"a".repeat(63)}.test`]],
    [[], []],
  ];
  for (const [hosts, expected] of cases) {
    await t.step(hosts.join(" ") || "none", () => {
      assert.deepEqual(parse({ hosts }).hosts, expected);
    });
  }
});

Deno.test("parseManifest() resolves read and write paths inside the site", async (t) => {
  const cases: [string[], string[]][] = [
    [["data"], [`${SITE}/data`]],
    [["./data/", "data", "data/../data"], [`${SITE}/data`]],
    [["."], [SITE]],
    [["a/b/c", "sub dir"], [`${SITE}/a/b/c`, `${SITE}/sub dir`]],
    [["..data", "x/.."], [`${SITE}/..data`, SITE]],
    [[], []],
  ];
  for (const [paths, expected] of cases) {
    await t.step(paths.join(" ") || "none", () => {
      const { permissions } = parse({ permissions: { read: paths } });
      assert.deepEqual(permissions.read, expected);
      if (!expected.includes(SITE)) {
        const written = parse({ permissions: { write: paths } });
        assert.deepEqual(written.permissions.write, expected);
      }
    });
  }
  await t.step("write never covers what the loader reads", () => {
    for (
      const path of [
        ".",
        "x/..",
        "site.json",
        "deno.json",
        "package.json",
        "autorun",
        "autorun/lib",
        "node_modules/x",
      ]
    ) {
      assert.throws(
        () => parse({ permissions: { write: [path] } }),
        /"permissions\.write\[0\]" must not cover .*which the loader reads/,
        path,
      );
    }
    // Beside them is fine.
    assert.deepEqual(
      parse({ permissions: { write: ["autorunner", "static"] } }).permissions
        .write,
      [`${SITE}/autorunner`, `${SITE}/static`],
    );
  });
  await t.step("false grants nothing", () => {
    const { permissions } = parse({
      permissions: { read: false, write: false },
    });
    assert.deepEqual(permissions, DEFAULTS.permissions);
  });
  await t.step("relative site folder gives absolute paths", () => {
    const { permissions } = parseManifest('{"permissions":{"read":["data"]}}', {
      file: FILE,
      siteDir: "sites/blog",
    });
    const [path = ""] = permissions.read;
    assert.ok(isAbsolute(path));
    assert.equal(path, resolve("sites/blog/data"));
  });
});

Deno.test("parseManifest() reads kv: a file inside a folder the site may write", () => {
  const write = { permissions: { write: ["data"] } };
  assert.equal(
    parse({ ...write, kv: "data/site.kv" }).kv,
    join(SITE, "data", "site.kv"),
  );
  assert.equal(
    parse({ ...write, kv: "data/deep/store.kv" }).kv,
    join(SITE, "data", "deep", "store.kv"),
  );
  assert.equal(parse(write).kv, null);
  const expected = 'must be a file inside a folder of "permissions.write"';
  for (
    const [json, why] of [
      [{ kv: "data/site.kv" }, expected],
      [{ ...write, kv: "data" }, expected],
      [{ ...write, kv: "other/site.kv" }, expected],
      [{ ...write, kv: "data/../autorun/x.kv" }, ""],
      [{ ...write, kv: "/tmp/site.kv" }, "not an absolute path"],
      [{ ...write, kv: true }, "must be a path relative to the site folder"],
    ] as const
  ) {
    assert.throws(() => parse(json), (err: Error) => {
      assert.equal(err.name, "ManifestError");
      assert.match(err.message, /^sites\/blog\/site\.json: "kv" /);
      assert.ok(err.message.includes(why), err.message);
      return true;
    });
  }
});

Deno.test("parseManifest() reads net hosts", async (t) => {
  const cases: [string[], string[]][] = [
    [["api.example.com:443"], ["api.example.com:443"]],
    [["API.Example.com"], ["api.example.com"]],
    [["localhost:5432"], ["localhost:5432"]],
    [["10.0.0.1", "10.0.0.1:8080"], ["10.0.0.1", "10.0.0.1:8080"]],
    [["[::1]:80", "[::1]"], ["[::1]:80", "[::1]"]],
    // IPv6 written the short way, as URLs and Deno read it.
    [["[0:0::FFFF:7f00:1]:8080", "[::ffff:127.0.0.1]"], [
      "[::ffff:7f00:1]:8080",
      "[::ffff:7f00:1]",
    ]],
    [["::1", "[::1]"], ["[::1]"]],
    [["[FD00::1]:443"], ["[fd00::1]:443"]],
    [["host:080"], ["host:80"]],
    [["host:65535", "host:1"], ["host:65535", "host:1"]],
  ];
  for (const [net, expected] of cases) {
    await t.step(net.join(" "), () => {
      assert.deepEqual(
        parse({ permissions: { net } }).permissions.net,
        expected,
      );
    });
  }
  await t.step("false grants nothing", () => {
    assert.deepEqual(
      parse({ permissions: { net: false } }).permissions.net,
      [],
    );
  });
});

Deno.test("parseManifest() reads env", async (t) => {
  const cases: [unknown, boolean | string[]][] = [
    [true, true],
    [false, false],
    [["API_KEY", "_private", "x1"], ["API_KEY", "_private", "x1"]],
    [["A", "A"], ["A"]],
    [[], false],
  ];
  for (const [env, expected] of cases) {
    await t.step(JSON.stringify(env), () => {
      assert.deepEqual(
        parse({ permissions: { env } }).permissions.env,
        expected,
      );
    });
  }
});

Deno.test("parseManifest() reads workers, requestTimeout and memory", async (t) => {
  const cases: [Record<string, unknown>, Partial<SiteManifest>][] = [
    [{ workers: 1 }, { workers: 1 }],
    [{ workers: 64 }, { workers: 64 }],
    [{ requestTimeout: 0.5 }, { requestTimeout: 0.5 }],
    [{ requestTimeout: 300 }, { requestTimeout: 300 }],
    [{ memory: 64 }, { memory: 64 }],
    [{ memory: 65536 }, { memory: 65536 }],
    [{ disk: 1 }, { disk: 1 }],
    [{ disk: 1048576 }, { disk: 1048576 }],
  ];
  for (const [json, changes] of cases) {
    await t.step(JSON.stringify(json), () => {
      assert.deepEqual(parse(json), { ...DEFAULTS, ...changes });
    });
  }
  await t.step("2.0 is an integer", () => {
    assert.equal(parseManifest('{"workers": 2.0}', OPTIONS).workers, 2);
  });
});

Deno.test("parseManifest() names the line and column of JSON errors", async (t) => {
  const cases: [string, string][] = [
    [
      '{"workers": 2,}',
      "invalid JSON at line 1, column 15: expected double-quoted property name",
    ],
    [
      '{\n  "hosts": ["a.test"]\n  "workers": 2\n}',
      "invalid JSON at line 3, column 3: expected ',' or '}' after property value",
    ],
    ["", "invalid JSON at line 1, column 1: unexpected end of file"],
    [
      '{"hosts": [',
      "invalid JSON at line 1, column 12: unexpected end of file",
    ],
    [
      "{'hosts': []}",
      "invalid JSON at line 1, column 2: expected property name or '}'",
    ],
  ];
  for (const [text, message] of cases) {
    await t.step(JSON.stringify(text), () => {
      assert.throws(() => parseManifest(text, OPTIONS), {
        name: "ManifestError",
        message: `${FILE}: ${message}`,
      });
    });
  }
  await t.step("every syntax error names the file", () => {
    for (const text of ['{"a":tru}', "{", "[1,]", "nope", '{"a" 1}']) {
      assert.throws(
        () => parseManifest(text, OPTIONS),
        (err) =>
          err instanceof ManifestError &&
          err.message.startsWith(`${FILE}: invalid JSON`) &&
          err.cause instanceof SyntaxError,
      );
    }
  });
});

const FIELDS =
  '"hosts", "permissions", "workers", "requestTimeout", "memory", "disk" and "kv"';
const PERMISSIONS = '"read", "write", "net" and "env"';
const PATTERN = 'must be a host pattern: "*", "example.test", ' +
  '"*.example.test", "~.example.test" or "+.example.test"';
const RELATIVE = 'must be a path relative to the site folder, such as "data"';
const ABSOLUTE =
  "must be a path relative to the site folder, not an absolute path";
const LEAVES =
  "must be a path inside the site folder; it may not leave it with ..";
const NET = "must be a host name or IP address with an optional port, " +
  'such as "api.example.com:443", "10.0.0.1" or "[::1]:80" (IPv4 in dotted decimal)';

/** [site.json text, message after "FILE: "] */
const BAD_MANIFESTS: [string, string][] = [
  // the document
  ["[]", `expected a JSON object with the fields ${FIELDS}, got []`],
  ["null", `expected a JSON object with the fields ${FIELDS}, got null`],
  ['"x"', `expected a JSON object with the fields ${FIELDS}, got "x"`],
  ["42", `expected a JSON object with the fields ${FIELDS}, got 42`],
  [
    '{"host": ["a.test"]}',
    `unknown field "host"; valid fields are ${FIELDS} (did you mean "hosts"?)`,
  ],
  [
    '{"Workers": 2}',
    `unknown field "Workers"; valid fields are ${FIELDS} (did you mean "workers"?)`,
  ],
  ['{"name": "blog"}', `unknown field "name"; valid fields are ${FIELDS}`],
  // hosts
  [
    '{"hosts": "example.test"}',
    '"hosts" must be an array of host patterns such as ["example.test", "*.example.test"], got "example.test"',
  ],
  [
    '{"hosts": null}',
    '"hosts" must be an array of host patterns such as ["example.test", "*.example.test"], got null',
  ],
  ['{"hosts": [1]}', `"hosts[0]" ${PATTERN}, got 1`],
  ['{"hosts": ["a.test", null]}', `"hosts[1]" ${PATTERN}, got null`],
  ['{"hosts": [""]}', `"hosts[0]" ${PATTERN}, got ""`],
  ['{"hosts": ["*."]}', `"hosts[0]" ${PATTERN}, got "*."`],
  ['{"hosts": ["**"]}', `"hosts[0]" ${PATTERN}, got "**"`],
  ['{"hosts": ["*.*.test"]}', `"hosts[0]" ${PATTERN}, got "*.*.test"`],
  [
    '{"hosts": ["~example.test"]}',
    `"hosts[0]" ${PATTERN}, got "~example.test"`,
  ],
  ['{"hosts": ["a.*.test"]}', `"hosts[0]" ${PATTERN}, got "a.*.test"`],
  ['{"hosts": ["-a.test"]}', `"hosts[0]" ${PATTERN}, got "-a.test"`],
  ['{"hosts": ["a-.test"]}', `"hosts[0]" ${PATTERN}, got "a-.test"`],
  ['{"hosts": ["a_b.test"]}', `"hosts[0]" ${PATTERN}, got "a_b.test"`],
  ['{"hosts": ["a..test"]}', `"hosts[0]" ${PATTERN}, got "a..test"`],
  ['{"hosts": ["a b.test"]}', `"hosts[0]" ${PATTERN}, got "a b.test"`],
  ['{"hosts": ["300.1.1.1"]}', `"hosts[0]" ${PATTERN}, got "300.1.1.1"`],
  ['{"hosts": ["*.10.0.0.1"]}', `"hosts[0]" ${PATTERN}, got "*.10.0.0.1"`],
  [
    `{"hosts": ["${"a".repeat(64)}.test"]}`,
    `"hosts[0]" ${PATTERN}, got "${"a".repeat(50)}…"`,
  ],
  [
    '{"hosts": ["a.test:8080"]}',
    `"hosts[0]" ${PATTERN} (patterns match every port, so leave the port out), got "a.test:8080"`,
  ],
  [
    '{"hosts": ["a.test,b.test"]}',
    '"hosts[0]" must be one host pattern; put each pattern of a comma list in its own entry, got "a.test,b.test"',
  ],
  // permissions
  [
    '{"permissions": "all"}',
    '"permissions" must be an object such as {"read": ["data"], "net": ["api.example.com:443"]}, got "all"',
  ],
  [
    '{"permissions": ["read"]}',
    '"permissions" must be an object such as {"read": ["data"], "net": ["api.example.com:443"]}, got ["read"]',
  ],
  [
    '{"permissions": null}',
    '"permissions" must be an object such as {"read": ["data"], "net": ["api.example.com:443"]}, got null',
  ],
  ...["run", "ffi", "sys", "import"].map((name): [string, string] => [
    `{"permissions": {"${name}": true}}`,
    `"permissions.${name}" cannot be granted to a site; sites may only ask for ${PERMISSIONS}`,
  ]),
  [
    '{"permissions": {"nett": []}}',
    `unknown permission "nett" in "permissions"; valid permissions are ${PERMISSIONS} (did you mean "net"?)`,
  ],
  [
    '{"permissions": {"files": []}}',
    `unknown permission "files" in "permissions"; valid permissions are ${PERMISSIONS}`,
  ],
  // permissions.read and permissions.write
  [
    '{"permissions": {"read": true}}',
    '"permissions.read" must be an array of paths inside the site folder, such as ["data"]; a site cannot be given the whole file system, got true',
  ],
  [
    '{"permissions": {"read": "data"}}',
    '"permissions.read" must be an array of paths inside the site folder, such as ["data"], got "data"',
  ],
  [
    '{"permissions": {"write": true}}',
    '"permissions.write" must be an array of paths inside the site folder, such as ["data"]; a site cannot be given the whole file system, got true',
  ],
  [
    '{"permissions": {"write": {"data": true}}}',
    '"permissions.write" must be an array of paths inside the site folder, such as ["data"], got {"data":true}',
  ],
  [
    '{"permissions": {"read": [1]}}',
    `"permissions.read[0]" ${RELATIVE}, got 1`,
  ],
  [
    '{"permissions": {"read": ["a", ""]}}',
    `"permissions.read[1]" ${RELATIVE}, got ""`,
  ],
  [
    '{"permissions": {"read": ["a\\u0000b"]}}',
    `"permissions.read[0]" ${RELATIVE}, got "a\\u0000b"`,
  ],
  [
    '{"permissions": {"read": ["/etc"]}}',
    `"permissions.read[0]" ${ABSOLUTE}, got "/etc"`,
  ],
  [
    '{"permissions": {"read": ["C:\\\\data"]}}',
    `"permissions.read[0]" ${ABSOLUTE}, got "C:\\\\data"`,
  ],
  [
    '{"permissions": {"read": [".."]}}',
    `"permissions.read[0]" ${LEAVES}, got ".."`,
  ],
  [
    '{"permissions": {"read": ["../other"]}}',
    `"permissions.read[0]" ${LEAVES}, got "../other"`,
  ],
  [
    '{"permissions": {"read": ["data/../../x"]}}',
    `"permissions.read[0]" ${LEAVES}, got "data/../../x"`,
  ],
  [
    '{"permissions": {"write": ["data", "../blog2"]}}',
    `"permissions.write[1]" ${LEAVES}, got "../blog2"`,
  ],
  [
    '{"permissions": {"write": ["/tmp"]}}',
    `"permissions.write[0]" ${ABSOLUTE}, got "/tmp"`,
  ],
  // permissions.net
  [
    '{"permissions": {"net": true}}',
    '"permissions.net" must be an array of hosts such as ["api.example.com:443"]; a site cannot be given the whole network, got true',
  ],
  [
    '{"permissions": {"net": "api.example.com"}}',
    '"permissions.net" must be an array of hosts such as ["api.example.com:443"], got "api.example.com"',
  ],
  ['{"permissions": {"net": [443]}}', `"permissions.net[0]" ${NET}, got 443`],
  ...[
    "",
    "http://api.example.com",
    "api.example.com/path",
    "host:0",
    "host:65536",
    "host:",
    "host:http",
    ":80",
    "[::1",
    "[::1]:",
    "[1.2.3.4]:80",
    "[nope]",
    "*.example.com",
    "*",
    "a b",
    "1.2.3.256",
    "a:b:c",
  ].map((entry): [string, string] => [
    `{"permissions": {"net": ["ok.test", ${JSON.stringify(entry)}]}}`,
    `"permissions.net[1]" ${NET}, got ${JSON.stringify(entry)}`,
  ]),
  // permissions.env
  [
    '{"permissions": {"env": "API_KEY"}}',
    '"permissions.env" must be true, false or an array of variable names such as ["API_KEY"], got "API_KEY"',
  ],
  [
    '{"permissions": {"env": null}}',
    '"permissions.env" must be true, false or an array of variable names such as ["API_KEY"], got null',
  ],
  [
    '{"permissions": {"env": 1}}',
    '"permissions.env" must be true, false or an array of variable names such as ["API_KEY"], got 1',
  ],
  ...["1X", "A-B", "", "A=B", true].map((entry): [string, string] => [
    `{"permissions": {"env": ["OK", ${JSON.stringify(entry)}]}}`,
    `"permissions.env[1]" must be an environment variable name such as "API_KEY", got ${
      JSON.stringify(entry)
    }`,
  ]),
  // workers
  ...['"two"', "0", "65", "1.5", "-1", "true", "[2]"].map((
    value,
  ): [string, string] => [
    `{"workers": ${value}}`,
    `"workers" must be an integer from 1 to 64, got ${value}`,
  ]),
  // requestTimeout
  ...["0", "-1", "301", "3600", '"10"', "true", "1e400"].map((
    value,
  ): [string, string] => [
    `{"requestTimeout": ${value}}`,
    `"requestTimeout" must be a number of seconds greater than 0 and at most 300, got ${
      value === "1e400" ? "Infinity" : value
    }`,
  ]),
  // disk
  ...["0", "1048577", "1.5", '"100"'].map((
    value,
  ): [string, string] => [
    `{"disk": ${value}}`,
    `"disk" must be an integer number of MiB from 1 to 1048576, got ${value}`,
  ]),
  // memory
  ...["15", "63", "0", "65537", "256.5", '"256"', "false", "{}"].map((
    value,
  ): [string, string] => [
    `{"memory": ${value}}`,
    `"memory" must be an integer number of MiB from 64 to 65536, got ${value}`,
  ]),
];

Deno.test("parseManifest() rejects bad fields, naming file and field", async (t) => {
  for (const [text, message] of BAD_MANIFESTS) {
    await t.step(text, () => {
      assert.throws(() => parseManifest(text, OPTIONS), {
        name: "ManifestError",
        message: `${FILE}: ${message}`,
      });
    });
  }
});

Deno.test("parseManifest() errors are one line with no final period", () => {
  for (const [text] of BAD_MANIFESTS) {
    try {
      parseManifest(text, OPTIONS);
      assert.fail(`${text} parsed`);
    } catch (err) {
      assert.ok(err instanceof ManifestError, text);
      assert.doesNotMatch(err.message, /\n|\.$/, text);
    }
  }
});

Deno.test("parseManifest() reads a host's fallback opt-in", () => {
  const manifest = parse({
    hosts: ["a.test", { host: "B.test", fallback: true }, {
      host: "c.test",
      fallback: false,
    }],
  });
  assert.deepEqual(manifest.hosts, ["a.test", "b.test", "c.test"]);
  assert.deepEqual(manifest.fallback, ["b.test"]);
  assert.throws(
    () => parse({ hosts: [{ host: "a.test", fallback: "yes" }] }),
    /"hosts\[0\]\.fallback" must be true or false/,
  );
  assert.throws(
    () => parse({ hosts: [{ host: "*", fallback: true }] }),
    /"hosts\[0\]\.fallback" is for named hosts/,
  );
  assert.throws(
    () => parse({ hosts: [{ name: "a.test" }] }),
    /"hosts\[0\]" must be a host pattern, or \{"host"/,
  );
});
