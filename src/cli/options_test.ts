import assert from "node:assert/strict";
import {
  defaultListenOptions,
  formatHelp,
  LISTEN_OPTIONS,
  type ListenOptions,
  parseListenOptions,
  UsageError,
} from "./options.ts";

const MIB = 1024 * 1024;

const DEFAULTS: ListenOptions = {
  port: 8080,
  host: "*",
  sitesDir: "./sites",
  grantsFile: null,
  grantRequests: false,
  operatorAddresses: ["localhost"],
  threads: 1,
  reload: true,
  siteCpu: 1,
  cgroups: true,
  isolate: "none",
  install: false,
  outPid: null,
  systemd: false,
  reverseProxy: false,
  trustedReverseProxies: ["localhost"],
  xAccelRedirect: null,
  xSendfile: false,
  maxPostLength: 10 * MIB,
  maxEtagSize: 64 * MIB,
  keepaliveTime: 2,
  maxConnections: 10000,
  requestTimeout: 30,
  tlsCert: null,
  tlsKey: null,
  dataDir: "./data",
  sessionMaxAge: 30 * 24 * 3600,
  websocketMaxMessage: 1024 * 1024,
  websocketMaxBuffer: 4 * 1024 * 1024,
  websocketMaxRate: 1000,
  siteQueue: 1000,
  idleStop: null,
  warmSpares: 2,
  fastConnections: false,
  cluster: null,
  nodeId: null,
  clusterPrefix: "sandflare:",
  reusePort: false,
  help: false,
  version: false,
};

Deno.test("parseListenOptions() gives the defaults for no arguments", () => {
  assert.deepEqual(parseListenOptions([]), DEFAULTS);
  assert.deepEqual(defaultListenOptions(), DEFAULTS);
});

Deno.test("defaultListenOptions() returns a fresh object each time", () => {
  const first = defaultListenOptions();
  first.trustedReverseProxies.push("10.0.0.1");
  first.port = 1;
  assert.deepEqual(defaultListenOptions(), DEFAULTS);
  assert.deepEqual(parseListenOptions([]), DEFAULTS);
});

Deno.test("parseListenOptions() reads every option", async (t) => {
  const cases: [string[], Partial<ListenOptions>][] = [
    [["--port=80"], { port: 80 }],
    [["--port", "443"], { port: 443 }],
    [["--port=0"], { port: 0 }],
    [["--port=65535"], { port: 65535 }],
    [["--host=127.0.0.1"], { host: "127.0.0.1" }],
    [["--host=::"], { host: "::" }],
    [["--host=[::1]"], { host: "::1" }],
    [["--host=Web.Example.Test"], { host: "web.example.test" }],
    [["--host=*"], { host: "*" }],
    [["-l"], { host: "localhost" }],
    [["--local"], { host: "localhost" }],
    [["--sites-dir=/srv/sites"], { sitesDir: "/srv/sites" }],
    [["--cluster=redis://10.0.0.5:6380/2"], {
      cluster: "redis://10.0.0.5:6380/2",
    }],
    [["--cluster=rediss://:pw@redis.example.test"], {
      cluster: "rediss://:pw@redis.example.test:6379",
    }],
    [["--cluster=redis://[::1]:7000", "--node-id=web1:8080"], {
      cluster: "redis://[::1]:7000",
      nodeId: "web1:8080",
    }],
    [["--cluster=redis://r", "--cluster-prefix=blue:", "--reuse-port"], {
      cluster: "redis://r:6379",
      clusterPrefix: "blue:",
      reusePort: true,
    }],
    [["--sites-dir", "my sites"], { sitesDir: "my sites" }],
    [["--threads=4"], { threads: 4 }],
    [["--threads=64"], { threads: 64 }],
    [["--no-reload"], { reload: false }],
    [["--out-pid=/run/sandflare.pid"], { outPid: "/run/sandflare.pid" }],
    [["--systemd"], { systemd: true }],
    [["--reverse-proxy"], { reverseProxy: true }],
    [
      ["--trusted-reverse-proxies=10.0.0.0/8, 192.168.1.1,fd00::/8,[::1]"],
      {
        trustedReverseProxies: ["10.0.0.0/8", "192.168.1.1", "fd00::/8", "::1"],
      },
    ],
    [
      ["--trusted-reverse-proxies=Proxy.Example.Test,proxy.example.test"],
      { trustedReverseProxies: ["proxy.example.test"] },
    ],
    [
      ["--trusted-reverse-proxies=0.0.0.0/0,::/0,::1/128"],
      { trustedReverseProxies: ["0.0.0.0/0", "::/0", "::1/128"] },
    ],
    [["--x-accel-redirect"], { xAccelRedirect: "/./" }],
    [["--x-accel-redirect=/protected/"], { xAccelRedirect: "/protected/" }],
    [["--x-accel-redirect", "--port=1"], { xAccelRedirect: "/./", port: 1 }],
    [["--x-sendfile"], { xSendfile: true }],
    [["--max-post-length=1K"], { maxPostLength: 1024 }],
    [["--max-post-length=0"], { maxPostLength: 0 }],
    [["--max-post-length=2MB"], { maxPostLength: 2_000_000 }],
    [["--max-etag-size=1GiB"], { maxEtagSize: 1024 * MIB }],
    [["--keepalive-time=0.5"], { keepaliveTime: 0.5 }],
    [["--keepalive-time=10"], { keepaliveTime: 10 }],
    [["--max-connections=1"], { maxConnections: 1 }],
    [["--max-connections=250000"], { maxConnections: 250000 }],
    [["--request-timeout=2.5"], { requestTimeout: 2.5 }],
    [["--request-timeout=300"], { requestTimeout: 300 }],
    [["--site-cpu=0.5"], { siteCpu: 0.5 }],
    [["--site-cpu=2"], { siteCpu: 2 }],
    [["--no-cgroups"], { cgroups: false }],
    [["--isolate=bwrap"], { isolate: "bwrap" }],
    [["--install"], { install: true }],
    [
      ["--tls-cert=cert.pem", "--tls-key=key.pem"],
      { tlsCert: "cert.pem", tlsKey: "key.pem" },
    ],
    [["--data-dir=/var/lib/sandflare"], { dataDir: "/var/lib/sandflare" }],
    [["-h"], { help: true }],
    [["--help"], { help: true }],
    [["-v"], { version: true }],
    [["--version"], { version: true }],
    [["-lhv"], { host: "localhost", help: true, version: true }],
    [["--"], {}],
  ];
  for (const [args, changes] of cases) {
    await t.step(args.join(" "), () => {
      assert.deepEqual(parseListenOptions(args), { ...DEFAULTS, ...changes });
    });
  }
});

Deno.test("parseListenOptions() keeps the last of repeated options", async (t) => {
  const cases: [string[], Partial<ListenOptions>][] = [
    [["--port=1", "--port=2"], { port: 2 }],
    [["--host=a.test", "-l"], { host: "localhost" }],
    [["-l", "--host=a.test"], { host: "a.test" }],
    [["--x-accel-redirect=/a/", "--x-accel-redirect"], {
      xAccelRedirect: "/./",
    }],
    [
      ["--trusted-reverse-proxies=10.0.0.1", "--trusted-reverse-proxies=::1"],
      { trustedReverseProxies: ["::1"] },
    ],
    [["--systemd", "--systemd"], { systemd: true }],
  ];
  for (const [args, changes] of cases) {
    await t.step(args.join(" "), () => {
      assert.deepEqual(parseListenOptions(args), { ...DEFAULTS, ...changes });
    });
  }
});

const INTEGER_PORT = "expected an integer from 0 to 65535";
const SECONDS = "expected a number of seconds greater than 0 and at most 3600";
const REQUEST_SECONDS =
  "expected a number of seconds greater than 0 and at most 300";
const SIZE =
  "expected a number of bytes with an optional unit K, KB, KiB, M, MB, MiB, G, GB or GiB (e.g. 10MiB)";
const PROXIES =
  "expected a comma-separated list of IP addresses, CIDR ranges and host names";

Deno.test("parseListenOptions() rejects bad values, naming the option", async (t) => {
  const cases: [string[], string][] = [
    [["--port=80x"], `Invalid value "80x" for --port: ${INTEGER_PORT}`],
    [["--port="], `Invalid value "" for --port: ${INTEGER_PORT}`],
    [["--port=-1"], `Invalid value "-1" for --port: ${INTEGER_PORT}`],
    [["--port=65536"], `Invalid value "65536" for --port: ${INTEGER_PORT}`],
    [["--port=8.5"], `Invalid value "8.5" for --port: ${INTEGER_PORT}`],
    [["--port=1e3"], `Invalid value "1e3" for --port: ${INTEGER_PORT}`],
    [["--port= 80"], `Invalid value " 80" for --port: ${INTEGER_PORT}`],
    [["--port=0x50"], `Invalid value "0x50" for --port: ${INTEGER_PORT}`],
    [["--port=abc"], `Invalid value "abc" for --port: ${INTEGER_PORT}`],
    [
      ["--host="],
      'Invalid value "" for --host: expected *, an IP address or a host name',
    ],
    [
      ["--host=bad_host"],
      'Invalid value "bad_host" for --host: expected *, an IP address or a host name',
    ],
    [
      ["--host=300.1.1.1"],
      'Invalid value "300.1.1.1" for --host: expected *, an IP address or a host name',
    ],
    [
      ["--threads=0"],
      'Invalid value "0" for --threads: expected an integer from 1 to 64',
    ],
    [
      ["--cluster=http://10.0.0.5"],
      'Invalid value "http://10.0.0.5" for --cluster: the scheme must be redis: or rediss:, not http:; expected redis://HOST:PORT[/DB] or rediss://… (TLS), with an optional password as redis://:PASSWORD@HOST:PORT',
    ],
    [
      // The password is never shown, not even in an error.
      ["--cluster=redis://:s3cret@10.0.0.5/x"],
      'Invalid value "redis://:***@10.0.0.5/x" for --cluster: the path must be a database number such as /0, not "/x"',
    ],
    [
      ["--cluster=redis://h?db=1"],
      'Invalid value "redis://h?db=1" for --cluster: the URL may not have a query or fragment; expected redis://HOST:PORT[/DB] or rediss://… (TLS), with an optional password as redis://:PASSWORD@HOST:PORT',
    ],
    [
      ["--cluster=redis://h", "--node-id=a b"],
      'Invalid value "a b" for --node-id: expected 1 to 100 letters, digits and . _ : - (such as web1:8080)',
    ],
    [
      ["--cluster=redis://h", "--cluster-prefix=a b"],
      'Invalid value "a b" for --cluster-prefix: expected 1 to 64 printable ASCII characters without spaces, such as sandflare:',
    ],
    [
      ["--reuse-port"],
      "Option --reuse-port needs --cluster=redis://HOST:PORT: nodes sharing a port or a name share sessions, websockets and tasks through it",
    ],
    [
      ["--node-id=a"],
      "Option --node-id needs --cluster=redis://HOST:PORT: nodes sharing a port or a name share sessions, websockets and tasks through it",
    ],
    [
      ["--threads=65"],
      'Invalid value "65" for --threads: expected an integer from 1 to 64',
    ],
    [["--sites-dir="], 'Invalid value "" for --sites-dir: expected a path'],
    [["--out-pid="], 'Invalid value "" for --out-pid: expected a path'],
    [["--data-dir="], 'Invalid value "" for --data-dir: expected a path'],
    [
      ["--tls-cert=", "--tls-key=k"],
      'Invalid value "" for --tls-cert: expected a path',
    ],
    [
      ["--trusted-reverse-proxies="],
      `Invalid value "" for --trusted-reverse-proxies: ${PROXIES}`,
    ],
    [
      ["--trusted-reverse-proxies=10.0.0.1,,10.0.0.2"],
      `Invalid value "10.0.0.1,,10.0.0.2" for --trusted-reverse-proxies: ${PROXIES}`,
    ],
    [
      ["--trusted-reverse-proxies=10.0.0.0/33"],
      'Invalid value "10.0.0.0/33" for --trusted-reverse-proxies: "10.0.0.0/33" is not an IP address, CIDR range or host name',
    ],
    [
      ["--trusted-reverse-proxies=::1/129"],
      'Invalid value "::1/129" for --trusted-reverse-proxies: "::1/129" is not an IP address, CIDR range or host name',
    ],
    [
      ["--trusted-reverse-proxies=localhost,10.0.0.0/8/8"],
      'Invalid value "localhost,10.0.0.0/8/8" for --trusted-reverse-proxies: "10.0.0.0/8/8" is not an IP address, CIDR range or host name',
    ],
    [
      ["--trusted-reverse-proxies=proxy.test/8"],
      'Invalid value "proxy.test/8" for --trusted-reverse-proxies: "proxy.test/8" is not an IP address, CIDR range or host name',
    ],
    [
      ["--trusted-reverse-proxies=-bad-.test"],
      'Invalid value "-bad-.test" for --trusted-reverse-proxies: "-bad-.test" is not an IP address, CIDR range or host name',
    ],
    [
      ["--trusted-reverse-proxies=10.0.0.256"],
      'Invalid value "10.0.0.256" for --trusted-reverse-proxies: "10.0.0.256" is not an IP address, CIDR range or host name',
    ],
    [
      ["--x-accel-redirect=protected/"],
      'Invalid value "protected/" for --x-accel-redirect: expected a URL path prefix starting with "/", such as /protected/',
    ],
    [
      ["--x-accel-redirect="],
      'Invalid value "" for --x-accel-redirect: expected a URL path prefix starting with "/", such as /protected/',
    ],
    [
      ["--x-accel-redirect=/a b/"],
      'Invalid value "/a b/" for --x-accel-redirect: expected a URL path prefix starting with "/", such as /protected/',
    ],
    [
      ["--max-post-length=12X"],
      `Invalid value "12X" for --max-post-length: ${SIZE}`,
    ],
    [
      ["--max-post-length=-1"],
      `Invalid value "-1" for --max-post-length: ${SIZE}`,
    ],
    [["--max-etag-size="], `Invalid value "" for --max-etag-size: ${SIZE}`],
    [
      ["--max-etag-size=9999999999G"],
      'Invalid value "9999999999G" for --max-etag-size: expected at most 9007199254740991 bytes',
    ],
    [
      ["--keepalive-time=0"],
      `Invalid value "0" for --keepalive-time: ${SECONDS}`,
    ],
    [
      ["--keepalive-time=-2"],
      `Invalid value "-2" for --keepalive-time: ${SECONDS}`,
    ],
    [
      ["--keepalive-time=2s"],
      `Invalid value "2s" for --keepalive-time: ${SECONDS}`,
    ],
    [
      ["--keepalive-time=.5"],
      `Invalid value ".5" for --keepalive-time: ${SECONDS}`,
    ],
    [
      ["--request-timeout=301"],
      `Invalid value "301" for --request-timeout: ${REQUEST_SECONDS}`,
    ],
    [
      ["--isolate=docker"],
      'Invalid value "docker" for --isolate: expected "none" or "bwrap"',
    ],
    [
      ["--site-cpu=0"],
      'Invalid value "0" for --site-cpu: expected a number of CPUs greater than 0 and at most 64 (0.5 is half of one)',
    ],
    [
      ["--request-timeout=Infinity"],
      `Invalid value "Infinity" for --request-timeout: ${REQUEST_SECONDS}`,
    ],
    [
      ["--max-connections=0"],
      'Invalid value "0" for --max-connections: expected an integer of at least 1',
    ],
    [
      ["--max-connections=99999999999999999999"],
      'Invalid value "99999999999999999999" for --max-connections: expected an integer of at least 1',
    ],
  ];
  for (const [args, message] of cases) {
    await t.step(args.join(" "), () => {
      assert.throws(() => parseListenOptions(args), {
        name: "UsageError",
        message,
      });
    });
  }
});

Deno.test("parseListenOptions() rejects malformed command lines", async (t) => {
  const cases: [string[], string][] = [
    [["--foo"], 'Unknown option "--foo"; see --help for the valid options'],
    [["--foo=1"], 'Unknown option "--foo"; see --help for the valid options'],
    [["-x"], 'Unknown option "-x"; see --help for the valid options'],
    [["-lx"], 'Unknown option "-x"; see --help for the valid options'],
    [
      ["--reload"],
      'Unknown option "--reload"; see --help for the valid options',
    ],
    [
      ["--port=1", "--Port=2"],
      'Unknown option "--Port"; see --help for the valid options',
    ],
    [
      ["-port=80"],
      'Unknown option "-port"; long options take two dashes: "--port"',
    ],
    [
      ["serve"],
      'Unexpected argument "serve": listen takes only options; see --help',
    ],
    [
      ["--port=1", "extra"],
      'Unexpected argument "extra": listen takes only options; see --help',
    ],
    [
      ["--", "--port=1"],
      'Unexpected argument "--port=1": listen takes only options; see --help',
    ],
    [
      ["--x-accel-redirect", "/prefix/"],
      'Unexpected argument "/prefix/": listen takes only options; see --help',
    ],
    [["--help=yes"], 'Option --help takes no value, got "yes"'],
    [["--no-reload=1"], 'Option --no-reload takes no value, got "1"'],
    [["-l=x"], 'Option -l takes no value, got "x"'],
    [["--port"], `Missing value for --port: ${INTEGER_PORT}`],
    [["--sites-dir"], "Missing value for --sites-dir: expected a path"],
    [
      ["--port", "--help"],
      `Missing value for --port before "--help": ${INTEGER_PORT}; write --port=VALUE for a value starting with "-"`,
    ],
    [
      ["--port", "-1"],
      `Missing value for --port before "-1": ${INTEGER_PORT}; write --port=VALUE for a value starting with "-"`,
    ],
    [
      ["--tls-cert=cert.pem"],
      "Option --tls-cert needs --tls-key as well: HTTPS takes a certificate and its key",
    ],
    [
      ["--tls-key=key.pem"],
      "Option --tls-key needs --tls-cert as well: HTTPS takes a certificate and its key",
    ],
    [
      ["--x-accel-redirect", "--x-sendfile"],
      "Options --x-accel-redirect and --x-sendfile cannot be used together",
    ],
  ];
  for (const [args, message] of cases) {
    await t.step(args.join(" "), () => {
      assert.throws(() => parseListenOptions(args), {
        name: "UsageError",
        message,
      });
    });
  }
});

Deno.test("parseListenOptions() errors are UsageErrors on one line", () => {
  for (const args of [["--port=x"], ["--foo"], ["x"], ["--port"]]) {
    try {
      parseListenOptions(args);
      assert.fail(`${args.join(" ")} parsed`);
    } catch (err) {
      assert.ok(err instanceof UsageError);
      assert.ok(err instanceof Error);
      assert.doesNotMatch(err.message, /\n|\.$/);
    }
  }
});

Deno.test("LISTEN_OPTIONS describes every field once, with a default", () => {
  const keys = new Set(LISTEN_OPTIONS.map((option) => option.key));
  assert.deepEqual([...keys].sort(), Object.keys(DEFAULTS).sort());
  const names = LISTEN_OPTIONS.map((option) => option.name);
  assert.equal(new Set(names).size, names.length);
  for (const key of keys) {
    const withDefault = LISTEN_OPTIONS.filter((option) =>
      option.key === key && option.default !== undefined
    );
    assert.equal(withDefault.length, 1, `default of ${key}`);
  }
});

Deno.test("formatHelp() lists every option with its default", async (t) => {
  const help = formatHelp();
  await t.step("usage line first", () => {
    assert.match(help, /^Usage: sandflare listen \[OPTIONS\]\n/);
  });
  await t.step("every option appears", () => {
    for (const option of LISTEN_OPTIONS) {
      assert.ok(help.includes(`--${option.name}`), option.name);
      if (option.short !== undefined) {
        assert.ok(
          help.includes(`-${option.short}, --${option.name}`),
          option.name,
        );
      }
    }
  });
  const defaults: [string, string][] = [
    ["--port=N", "8080"],
    ["--host=ADDR", "*"],
    ["--sites-dir=PATH", "./sites"],
    ["--threads=N", "1"],
    ["--max-post-length=SIZE", "10MiB"],
    ["--max-etag-size=SIZE", "64MiB"],
    ["--keepalive-time=S", "2"],
    ["--max-connections=N", "10000"],
    ["--request-timeout=S", "30"],
    ["--data-dir=PATH", "./data"],
  ];
  for (const [label, value] of defaults) {
    await t.step(`${label} defaults to ${value}`, () => {
      const start = help.indexOf(`${label} `);
      assert.notEqual(start, -1);
      const entry = help.slice(start, help.indexOf("\n      --", start + 1));
      assert.ok(
        entry.replace(/\s+/g, " ").includes(`(default: ${value})`),
        entry,
      );
    });
  }
  await t.step("trusted proxies default to localhost", () => {
    assert.match(help.replace(/\s+/g, " "), /trusts \(default: localhost\)/);
  });
  await t.step("bare value of --x-accel-redirect is optional", () => {
    assert.ok(help.includes("--x-accel-redirect[=PREFIX]"));
  });
  await t.step("descriptions are aligned and lines fit 80 columns", () => {
    const lines = help.split("\n");
    for (const line of lines) assert.ok(line.length <= 80, line);
    const columns = new Set(
      lines.filter((line) => /^ {2}(-\w, |\s{4})--/.test(line))
        .map((line) =>
          /^ {2}\S.*?\s{2,}|^ {6}\S.*?\s{2,}/.exec(line)?.[0].length
        ),
    );
    assert.equal(columns.size, 1, [...columns].join(","));
  });
});
