/**
 * The options of `sandflare listen` (SPEC §1).
 *
 * One table, {@linkcode LISTEN_OPTIONS}, describes every option. It drives
 * both parsing ({@linkcode parseListenOptions}) and the help text
 * ({@linkcode formatHelp}), so the two cannot drift apart.
 *
 * @module
 */
import { isIP } from "node:net";
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { formatSize, parseSize, SIZE_SYNTAX } from "./sizes.ts";
import { MAX_WORKERS } from "../protocol/messages.ts";
import { MAX_REQUEST_TIMEOUT } from "../supervisor/manifest.ts";
import type { Isolation } from "../supervisor/isolation.ts";
import {
  checkClusterPrefix,
  checkClusterUrl,
  checkNodeId,
  CLUSTER_PREFIX_SYNTAX,
  CLUSTER_URL_SYNTAX,
  NODE_ID_SYNTAX,
  redactClusterUrl,
} from "../cluster/cluster_url.ts";

/**
 * A bad command line. The message is one line that names the option and
 * says what is valid; the CLI prints it and exits with code 2.
 *
 * @example Catch a usage error
 * ```ts
 * import { parseListenOptions, UsageError } from "./options.ts";
 * import assert from "node:assert/strict";
 *
 * assert.throws(() => parseListenOptions(["--port=x"]), UsageError);
 * ```
 */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The resolved options of `sandflare listen`. */
export interface ListenOptions {
  /** TCP port, 0 to 65535; 0 picks any free port. */
  port: number;
  /** Bind address: `*` (every address), an IP address or a host name. */
  host: string;
  /** Folder holding the third-party sites. */
  sitesDir: string;
  /** The operator's grants file, or `null` for the default beside sitesDir. */
  grantsFile: string | null;
  /** Whether every site gets what its site.json asks for (no grants file). */
  grantRequests: boolean;
  /** IP addresses, CIDR ranges and host names that may see /stats. */
  operatorAddresses: string[];
  /** Default number of workers per site, 1 to 64. */
  threads: number;
  /** Whether changed scripts are reloaded. */
  reload: boolean;
  /** CPUs one sandbox may use at most (where cgroups hold it). */
  siteCpu: number;
  /** Whether sandboxes are held in cgroups where the machine allows. */
  cgroups: boolean;
  /** How sandboxes are isolated beyond Deno's permissions. */
  isolate: Isolation;
  /** Whether a site's dependencies are installed before its sandbox starts. */
  install: boolean;
  /** Where to write the PID once loaded, or `null`. */
  outPid: string | null;
  /** Whether to send sd_notify messages. */
  systemd: boolean;
  /** Whether to take the client address from trusted reverse proxies. */
  reverseProxy: boolean;
  /** IP addresses, CIDR ranges and host names of trusted proxies. */
  trustedReverseProxies: string[];
  /** Prefix for `X-Accel-Redirect` answers to `setFile`, or `null`. */
  xAccelRedirect: string | null;
  /** Whether `setFile` answers with `X-Sendfile`. */
  xSendfile: boolean;
  /** Largest accepted request body, in bytes. */
  maxPostLength: number;
  /** Largest file that gets an ETag, in bytes. */
  maxEtagSize: number;
  /** Seconds an idle connection is kept open. */
  keepaliveTime: number;
  /** Most simultaneous connections. */
  maxConnections: number;
  /** Seconds a page callback may run. */
  requestTimeout: number;
  /** PEM certificate chain for HTTPS, or `null`. */
  tlsCert: string | null;
  /** PEM private key for HTTPS, or `null`. */
  tlsKey: string | null;
  /** Folder for the server's own data, such as sessions. */
  dataDir: string;
  /** Seconds a session lives after it was last saved. */
  sessionMaxAge: number;
  /** Largest websocket message accepted; larger ones close the socket (1009). */
  websocketMaxMessage: number;
  /**
   * Bytes queued for a slow websocket client before it is closed; also the
   * bytes of client messages that may wait for a site that is not keeping up.
   */
  websocketMaxBuffer: number;
  /** Messages a second a websocket client may send (bursts of twice that). */
  websocketMaxRate: number;
  /** Requests in flight per site beyond which new ones get 503. */
  siteQueue: number;
  /**
   * Seconds without requests after which a site's sandbox is stopped, to
   * start again on its next request; null: sites stay up.
   */
  idleStop: number | null;
  /** Spare sandboxes kept for the sites reloaded last (0: none). */
  warmSpares: number;
  /**
   * Leave connections to `Deno.serve` (faster, but idle ones stay open and
   * no cap is enforced): for a server behind nginx or haproxy.
   */
  fastConnections: boolean;
  /** The Redis a cluster of nodes shares (`redis://…`), or `null` alone. */
  cluster: string | null;
  /** This node's name in the cluster, or `null` for host name and port. */
  nodeId: string | null;
  /** What every key of the cluster in Redis starts with. */
  clusterPrefix: string;
  /** Whether the port is bound with SO_REUSEPORT (several nodes on one port). */
  reusePort: boolean;
  /** Whether `-h`/`--help` was given. */
  help: boolean;
  /** Whether `-v`/`--version` was given. */
  version: boolean;
}

/** How an option's value is written and parsed. */
export type OptionKind =
  | "flag"
  | "int"
  | "seconds"
  | "cpus"
  | "size"
  | "string"
  | "path"
  | "list";

/** A value of one of the {@linkcode ListenOptions} fields. */
export type OptionValue = ListenOptions[keyof ListenOptions];

/** One row of {@linkcode LISTEN_OPTIONS}. */
export interface OptionDescriptor {
  /** Long name, without the leading `--`. */
  readonly name: string;
  /** One-letter alias, without the leading `-`. */
  readonly short?: string;
  /** The field of {@linkcode ListenOptions} that the option sets. */
  readonly key: keyof ListenOptions;
  /** How the value is written and parsed. */
  readonly kind: OptionKind;
  /**
   * The field's value when no option sets it. Only one of the options that
   * share a field gives it.
   */
  readonly default?: OptionValue;
  /** What a flag stores when given. @default {true} */
  readonly value?: OptionValue;
  /** What a valued option stores when given bare, without `=VALUE`. */
  readonly bare?: string;
  /** Name of the value in the help, such as `N` or `PATH`. */
  readonly placeholder?: string;
  /** Smallest valid `int`. @default {0} */
  readonly min?: number;
  /** Largest valid `int` or `seconds`. */
  readonly max?: number;
  /** What a valid value looks like, for `string` and `list` options. */
  readonly expected?: string;
  /**
   * Validates a `string` value or `list` entry and returns it normalized.
   * Throws a `RangeError` whose message says what is wrong.
   */
  readonly check?: (text: string) => string;
  /**
   * How a value may be shown in an error, for values that hold a secret.
   * @default {the value as given}
   */
  readonly shown?: (text: string) => string;
  /** What the option does, for the help. */
  readonly help: string;
}

const MAX_SECONDS = 3600;
const ADDRESS_LIST =
  "expected a comma-separated list of IP addresses, CIDR ranges and host names";
const MIB = 1024 * 1024;
const HOST_LABEL_REGEXP = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;
const HEADER_PATH_REGEXP = /^\/[\x21-\x7e]*$/;

/** Whether `text` is an RFC 1123 host name (and not a malformed IPv4). */
function isHostName(text: string): boolean {
  const name = text.endsWith(".") ? text.slice(0, -1) : text;
  const labels = name.split(".");
  return name.length > 0 && name.length <= 253 &&
    labels.every((label) => HOST_LABEL_REGEXP.test(label)) &&
    !/^\d+$/.test(labels.at(-1) ?? "");
}

/** Removes the brackets around an IPv6 address, if any. */
function unbracket(text: string): string {
  const inner = text.slice(1, -1);
  return text.startsWith("[") && text.endsWith("]") && isIP(inner) === 6
    ? inner
    : text;
}

function isCidr(text: string): boolean {
  const [address = "", prefix = "", ...rest] = text.split("/");
  const version = isIP(address);
  const bits = version === 4 ? 32 : 128;
  return rest.length === 0 && version !== 0 && /^\d{1,3}$/.test(prefix) &&
    Number(prefix) <= bits;
}

function checkBindAddress(text: string): string {
  const address = unbracket(text);
  if (address === "*" || isIP(address) !== 0) return address;
  if (isHostName(address)) return address.toLowerCase();
  throw new RangeError("expected *, an IP address or a host name");
}

function checkProxy(text: string): string {
  const address = unbracket(text);
  if (isIP(address) !== 0 || isCidr(address)) return address;
  if (isHostName(address)) return address.toLowerCase();
  throw new RangeError(
    `${JSON.stringify(text)} is not an IP address, CIDR range or host name`,
  );
}

function checkAccelPrefix(text: string): string {
  if (HEADER_PATH_REGEXP.test(text)) return text;
  throw new RangeError(
    'expected a URL path prefix starting with "/", such as /protected/',
  );
}

/**
 * Every option of `sandflare listen`, in help order.
 *
 * @example List the option names
 * ```ts
 * import { LISTEN_OPTIONS } from "./options.ts";
 * import assert from "node:assert/strict";
 *
 * assert.ok(LISTEN_OPTIONS.some((option) => option.name === "port"));
 * ```
 */
export const LISTEN_OPTIONS: readonly OptionDescriptor[] = [
  {
    name: "port",
    key: "port",
    kind: "int",
    default: 8080,
    placeholder: "N",
    min: 0,
    max: 65535,
    help: "TCP port to listen on; 0 picks any free port",
  },
  {
    name: "host",
    key: "host",
    kind: "string",
    default: "*",
    placeholder: "ADDR",
    expected: "expected *, an IP address or a host name",
    check: checkBindAddress,
    help: "address to bind; * binds every address",
  },
  {
    name: "local",
    short: "l",
    key: "host",
    kind: "flag",
    value: "localhost",
    help: "bind to localhost only, the same as --host=localhost",
  },
  {
    name: "sites-dir",
    key: "sitesDir",
    kind: "path",
    default: "./sites",
    placeholder: "PATH",
    help: "folder holding the third-party sites",
  },
  {
    name: "grants",
    key: "grantsFile",
    kind: "path",
    default: null,
    placeholder: "PATH",
    help: "the operator's grants, what each site may have; when not " +
      "given, sandflare.json beside --sites-dir",
  },
  {
    name: "grant-requests",
    key: "grantRequests",
    kind: "flag",
    default: false,
    help: "give every site what its site.json asks for, without a grants " +
      "file: only for sites you wrote yourself",
  },
  {
    name: "operator-addresses",
    key: "operatorAddresses",
    kind: "list",
    default: ["localhost"],
    placeholder: "LIST",
    expected: ADDRESS_LIST,
    check: checkProxy,
    help: "comma-separated IP addresses, CIDR ranges and host names that " +
      "may see /stats",
  },
  {
    name: "threads",
    key: "threads",
    kind: "int",
    default: 1,
    placeholder: "N",
    min: 1,
    max: MAX_WORKERS,
    help: 'workers per site, unless its site.json sets "workers"',
  },
  {
    name: "no-reload",
    key: "reload",
    kind: "flag",
    default: true,
    value: false,
    help: "do not reload a site when its scripts change",
  },
  {
    name: "site-cpu",
    key: "siteCpu",
    kind: "cpus",
    default: 1,
    placeholder: "N",
    max: MAX_WORKERS,
    help: "CPUs one site's sandbox may use at most (0.5: half of one), " +
      "held by a cgroup where the server may make one",
  },
  {
    name: "isolate",
    key: "isolate",
    kind: "string",
    default: "none",
    placeholder: "HOW",
    expected: 'expected "none" or "bwrap"',
    check: (text) => {
      if (text !== "none" && text !== "bwrap") {
        throw new RangeError('expected "none" or "bwrap"');
      }
      return text;
    },
    help: "bwrap: run each sandbox under bubblewrap too, seeing only the " +
      "Deno runtime, its module cache and its own site folder",
  },
  {
    name: "install",
    key: "install",
    kind: "flag",
    default: false,
    help: "install a site's dependencies (its deno.json imports and the " +
      "packages its scripts import) into its cache before its sandbox " +
      "starts, on load and on reload, as cli install does; needs the network",
  },
  {
    name: "no-cgroups",
    key: "cgroups",
    kind: "flag",
    default: true,
    value: false,
    help: "sandboxes hold themselves to their memory and run at nice 10, " +
      "even where cgroups could be made",
  },
  {
    name: "out-pid",
    key: "outPid",
    kind: "path",
    default: null,
    placeholder: "PATH",
    help: "write the process ID to PATH once loaded; removed on clean exit",
  },
  {
    name: "systemd",
    key: "systemd",
    kind: "flag",
    default: false,
    help: "notify systemd: READY=1 once loaded, WATCHDOG=1, STOPPING=1",
  },
  {
    name: "reverse-proxy",
    key: "reverseProxy",
    kind: "flag",
    default: false,
    help: "take the client address from X-Real-IP or X-Forwarded-For " +
      "sent by a trusted proxy; refuse other peers with 403",
  },
  {
    name: "trusted-reverse-proxies",
    key: "trustedReverseProxies",
    kind: "list",
    default: ["localhost"],
    placeholder: "LIST",
    expected: ADDRESS_LIST,
    check: checkProxy,
    help:
      "comma-separated IP addresses, CIDR ranges (10.0.0.0/8, fd00::/8) and " +
      "host names that --reverse-proxy trusts",
  },
  {
    name: "x-accel-redirect",
    key: "xAccelRedirect",
    kind: "string",
    default: null,
    bare: "/./",
    placeholder: "PREFIX",
    expected:
      'expected a URL path prefix starting with "/", such as /protected/',
    check: checkAccelPrefix,
    help: "let setFile answer with X-Accel-Redirect: PREFIX + path " +
      "(PREFIX is /./ when omitted)",
  },
  {
    name: "x-sendfile",
    key: "xSendfile",
    kind: "flag",
    default: false,
    help: "let setFile answer with X-Sendfile: path",
  },
  {
    name: "max-post-length",
    key: "maxPostLength",
    kind: "size",
    default: 10 * MIB,
    placeholder: "SIZE",
    help: "larger request bodies get 413",
  },
  {
    name: "max-etag-size",
    key: "maxEtagSize",
    kind: "size",
    default: 64 * MIB,
    placeholder: "SIZE",
    help: "larger files get no ETag",
  },
  {
    name: "keepalive-time",
    key: "keepaliveTime",
    kind: "seconds",
    default: 2,
    placeholder: "S",
    max: MAX_SECONDS,
    help: "a connection idle for S seconds, or without a whole request " +
      "head, is closed; a request body that stalls that long gets 408",
  },
  {
    name: "max-connections",
    key: "maxConnections",
    kind: "int",
    default: 10000,
    placeholder: "N",
    min: 1,
    help: "close new connections beyond N (websockets included) at once",
  },
  {
    name: "request-timeout",
    key: "requestTimeout",
    kind: "seconds",
    default: 30,
    placeholder: "S",
    max: MAX_REQUEST_TIMEOUT,
    help: "a page callback running longer gets 503, " +
      'unless its site.json sets "requestTimeout"',
  },
  {
    name: "tls-cert",
    key: "tlsCert",
    kind: "path",
    default: null,
    placeholder: "PATH",
    help: "PEM certificate chain; serve HTTPS (needs --tls-key)",
  },
  {
    name: "tls-key",
    key: "tlsKey",
    kind: "path",
    default: null,
    placeholder: "PATH",
    help: "PEM private key; serve HTTPS (needs --tls-cert)",
  },
  {
    name: "data-dir",
    key: "dataDir",
    kind: "path",
    default: "./data",
    placeholder: "PATH",
    help: "folder for the server's own data, such as sessions",
  },
  {
    name: "session-max-age",
    key: "sessionMaxAge",
    kind: "seconds",
    default: 30 * 24 * 3600,
    placeholder: "S",
    max: 10 * 365 * 24 * 3600,
    help: "a session expires S seconds after it was last saved",
  },
  {
    name: "websocket-max-message",
    key: "websocketMaxMessage",
    kind: "size",
    default: MIB,
    placeholder: "SIZE",
    help: "a larger websocket message closes the socket (1009)",
  },
  {
    name: "websocket-max-buffer",
    key: "websocketMaxBuffer",
    kind: "size",
    default: 4 * MIB,
    placeholder: "SIZE",
    help: "a websocket client with more unsent bytes is closed (1008), " +
      "and so is one sending while its site has that much waiting",
  },
  {
    name: "websocket-max-rate",
    key: "websocketMaxRate",
    kind: "int",
    default: 1000,
    placeholder: "N",
    min: 1,
    help: "a websocket client sending more than N messages a second " +
      "(bursts of 2N) is closed (1008)",
  },
  {
    name: "fast-connections",
    key: "fastConnections",
    kind: "flag",
    default: false,
    help: "leave connections to Deno.serve: about twice the throughput for " +
      "static files, but idle connections stay open and --max-connections " +
      "is not enforced; only behind nginx or haproxy, which close them",
  },
  {
    name: "site-queue",
    key: "siteQueue",
    kind: "int",
    default: 1000,
    placeholder: "N",
    min: 1,
    help: "a site with N requests in flight answers new ones 503",
  },
  {
    name: "idle-stop",
    key: "idleStop",
    kind: "seconds",
    default: null,
    placeholder: "S",
    help: "stop a site's sandbox after S seconds without requests (never " +
      "one with scheduler tasks or open websockets); its next request " +
      "starts it again",
  },
  {
    name: "warm-spares",
    key: "warmSpares",
    kind: "int",
    default: 2,
    placeholder: "N",
    min: 0,
    max: 64,
    help: "keep a spare sandbox for each of the N sites reloaded or asleep " +
      "last, started with that site's permissions and none of its code: " +
      "its next reload or wake only loads the scripts; 0: none",
  },
  {
    name: "cluster",
    key: "cluster",
    kind: "string",
    default: null,
    placeholder: "URL",
    expected: CLUSTER_URL_SYNTAX,
    check: checkClusterUrl,
    shown: redactClusterUrl,
    help: "run as a node of the cluster that shares this Redis: sessions, " +
      "websocket sends and scheduler tasks are shared; redis://HOST:PORT[/DB] " +
      "or rediss://; a password in the URL or in SANDFLARE_CLUSTER_PASSWORD " +
      "is never logged",
  },
  {
    name: "node-id",
    key: "nodeId",
    kind: "string",
    default: null,
    placeholder: "ID",
    expected: NODE_ID_SYNTAX,
    check: checkNodeId,
    help: "this node's name in the cluster; when not given, host name and " +
      "port (and the process id with --reuse-port)",
  },
  {
    name: "cluster-prefix",
    key: "clusterPrefix",
    kind: "string",
    default: "sandflare:",
    placeholder: "TEXT",
    expected: CLUSTER_PREFIX_SYNTAX,
    check: checkClusterPrefix,
    help: "what the cluster's Redis keys start with, so two clusters can " +
      "share one Redis",
  },
  {
    name: "reuse-port",
    key: "reusePort",
    kind: "flag",
    default: false,
    help: "bind the port with SO_REUSEPORT so several nodes of one cluster " +
      "on this machine share it (needs --cluster; each node runs its own " +
      "sandbox per site)",
  },
  {
    name: "help",
    short: "h",
    key: "help",
    kind: "flag",
    default: false,
    help: "print this help and exit",
  },
  {
    name: "version",
    short: "v",
    key: "version",
    kind: "flag",
    default: false,
    help: "print the version and exit",
  },
];

const BY_NAME: ReadonlyMap<string, OptionDescriptor> = new Map(
  LISTEN_OPTIONS.map((option) => [option.name, option]),
);

const PARSE_CONFIG: ParseArgsOptionsConfig = Object.fromEntries(
  LISTEN_OPTIONS.map((option) => [option.name, {
    type: option.kind === "flag" ? "boolean" : "string",
    ...(option.short === undefined ? {} : { short: option.short }),
  }]),
);

/**
 * The options as they are when no argument is given.
 *
 * @returns A fresh object; changing it changes no later result.
 *
 * @example Read a default
 * ```ts
 * import { defaultListenOptions } from "./options.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(defaultListenOptions().port, 8080);
 * ```
 */
export function defaultListenOptions(): ListenOptions {
  const options: Partial<Record<keyof ListenOptions, OptionValue>> = {};
  for (const option of LISTEN_OPTIONS) {
    if (option.default === undefined) continue;
    const value = option.default;
    options[option.key] = Array.isArray(value) ? [...value] : value;
  }
  return options as ListenOptions;
}

/**
 * Parses the arguments of `sandflare listen` (after the command name).
 *
 * Values go after `=` or in the next argument; a repeated option keeps its
 * last value. `--x-accel-redirect` alone means `--x-accel-redirect=/./`.
 *
 * @param args The arguments, such as `["--port=80", "-l"]`.
 * @returns Every option, with defaults for those not given.
 * @throws {UsageError} On an unknown option, a positional argument, a
 * missing or bad value, or options that cannot go together.
 *
 * @example Parse a command line
 * ```ts
 * import { parseListenOptions } from "./options.ts";
 * import assert from "node:assert/strict";
 *
 * const options = parseListenOptions(["--port", "80", "-l", "--threads=4"]);
 * assert.equal(options.port, 80);
 * assert.equal(options.host, "localhost");
 * assert.equal(options.threads, 4);
 * assert.equal(options.maxPostLength, 10 * 1024 * 1024);
 * ```
 */
export function parseListenOptions(args: readonly string[]): ListenOptions {
  const expanded = expandBareOptions(args);
  const options = defaultListenOptions();
  const fields = options as unknown as Record<string, OptionValue>;
  for (const token of tokenize(expanded)) {
    if (token.kind !== "option") continue;
    const option = BY_NAME.get(token.name);
    if (option === undefined) throw unknownOption(token.rawName, "");
    fields[option.key] = option.kind === "flag"
      ? option.value ?? true
      : convert(option, token.value ?? "");
  }
  checkCombinations(options);
  return options;
}

/** Gives bare valued options (`--x-accel-redirect`) their bare value. */
function expandBareOptions(args: readonly string[]): string[] {
  const end = args.indexOf("--");
  return args.map((arg, index) => {
    if (!arg.startsWith("--") || (end !== -1 && index >= end)) return arg;
    const bare = BY_NAME.get(arg.slice(2))?.bare;
    return bare === undefined ? arg : `${arg}=${bare}`;
  });
}

function tokenize(args: string[]) {
  try {
    return parseArgs({
      args,
      options: PARSE_CONFIG,
      strict: true,
      allowPositionals: false,
      tokens: true,
    }).tokens;
  } catch (err) {
    throw diagnose(args, err);
  }
}

/** Explains why the strict parse failed, naming the option at fault. */
function diagnose(args: string[], err: unknown): UsageError {
  const { tokens } = parseArgs({
    args,
    options: PARSE_CONFIG,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  for (const token of tokens) {
    const problem = token.kind === "positional"
      ? unexpectedArgument(token.value)
      : token.kind === "option"
      ? optionProblem(token, args[token.index] ?? "")
      : null;
    if (problem !== null) return problem;
  }
  const reason = err instanceof Error ? err.message.split("\n")[0] : err;
  return new UsageError(`Invalid arguments: ${reason}; see --help`, {
    cause: err,
  });
}

type OptionToken = Extract<
  ReturnType<typeof tokenize>[number],
  { kind: "option" }
>;

function optionProblem(token: OptionToken, arg: string): UsageError | null {
  const { rawName } = token;
  const option = BY_NAME.get(token.name);
  if (option === undefined) {
    return unknownOption(rawName, arg);
  }
  const { value, inlineValue } = token;
  if (option.kind === "flag") {
    return value === undefined ? null : new UsageError(
      `Option --${option.name} takes no value, got ${JSON.stringify(value)}`,
    );
  }
  if (value === undefined) {
    return new UsageError(
      `Missing value for --${option.name}: ${expected(option)}`,
    );
  }
  if (!inlineValue && value.startsWith("-")) {
    return new UsageError(
      `Missing value for --${option.name} before ${JSON.stringify(value)}: ${
        expected(option)
      }; write --${option.name}=VALUE for a value ` +
        `starting with "-"`,
    );
  }
  return null;
}

const SHORTS: ReadonlyMap<string, OptionDescriptor> = new Map(
  LISTEN_OPTIONS.flatMap((option) =>
    option.short === undefined ? [] : [[option.short, option]]
  ),
);

function unknownOption(rawName: string, arg: string): UsageError {
  const [, short = "", value = ""] = /^-([^-=])=(.*)$/s.exec(arg) ?? [];
  const option = SHORTS.get(short);
  if (option !== undefined) {
    return new UsageError(
      option.kind === "flag"
        ? `Option -${short} takes no value, got ${JSON.stringify(value)}`
        : `Invalid option ${JSON.stringify(arg)}: write --${option.name}=VALUE`,
    );
  }
  const name = /^-([^-=][^=]+)/.exec(arg)?.[1];
  if (name !== undefined && BY_NAME.has(name)) {
    return new UsageError(
      `Unknown option "-${name}"; long options take two dashes: "--${name}"`,
    );
  }
  return new UsageError(
    `Unknown option ${
      JSON.stringify(rawName)
    }; see --help for the valid options`,
  );
}

function unexpectedArgument(value: string): UsageError {
  return new UsageError(
    `Unexpected argument ${
      JSON.stringify(value)
    }: listen takes only options; see --help`,
  );
}

/** What a valid value of `option` looks like, starting with "expected". */
function expected(option: OptionDescriptor): string {
  const { min = 0, max } = option;
  switch (option.kind) {
    case "int":
      return max === undefined
        ? `expected an integer of at least ${min}`
        : `expected an integer from ${min} to ${max}`;
    case "seconds":
      return `expected a number of seconds greater than 0 and at most ${
        max ?? MAX_SECONDS
      }`;
    case "cpus":
      return `expected a number of CPUs greater than 0 and at most ${
        max ?? MAX_WORKERS
      } (0.5 is half of one)`;
    case "size":
      return `expected ${SIZE_SYNTAX}`;
    case "path":
      return "expected a path";
    case "string":
    case "list":
      return option.expected ?? "expected a value";
    case "flag":
      return "expected no value";
    default:
      return unreachable(option.kind);
  }
}

function unreachable(kind: never): never {
  throw new TypeError(`Unknown option kind ${JSON.stringify(kind)}`);
}

function invalid(
  option: OptionDescriptor,
  text: string,
  detail = expected(option),
): UsageError {
  const shown = option.shown?.(text) ?? text;
  return new UsageError(
    `Invalid value ${JSON.stringify(shown)} for --${option.name}: ${detail}`,
  );
}

/** Turns the text of a valued option into its field's value. */
function convert(option: OptionDescriptor, text: string): OptionValue {
  switch (option.kind) {
    case "int":
      return toInteger(option, text);
    case "seconds":
      return toPositive(option, text, MAX_SECONDS);
    case "cpus":
      return toPositive(option, text, MAX_WORKERS);
    case "size":
      return toSize(option, text);
    case "string":
    case "path":
      if (text === "") throw invalid(option, text);
      return checked(option, text, text);
    case "list":
      return toList(option, text);
    case "flag":
      return option.value ?? true;
    default:
      return unreachable(option.kind);
  }
}

function toInteger(option: OptionDescriptor, text: string): number {
  const { min = 0, max = Number.MAX_SAFE_INTEGER } = option;
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < min || value > max) {
    throw invalid(option, text);
  }
  return value;
}

function toPositive(
  option: OptionDescriptor,
  text: string,
  defaultMax: number,
): number {
  const { max = defaultMax } = option;
  const value = Number(text);
  if (!/^\d+(?:\.\d+)?$/.test(text) || value <= 0 || value > max) {
    throw invalid(option, text);
  }
  return value;
}

function toSize(option: OptionDescriptor, text: string): number {
  try {
    return parseSize(text);
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    throw invalid(
      option,
      text,
      err.message.includes("too large")
        ? `expected at most ${Number.MAX_SAFE_INTEGER} bytes`
        : undefined,
    );
  }
}

function toList(option: OptionDescriptor, text: string): string[] {
  const entries = text.split(",").map((entry) => entry.trim());
  if (entries.some((entry) => entry === "")) throw invalid(option, text);
  return [...new Set(entries.map((entry) => checked(option, text, entry)))];
}

/** Runs `option.check` on one value, turning its RangeError into a UsageError. */
function checked(
  option: OptionDescriptor,
  text: string,
  value: string,
): string {
  if (option.check === undefined) return value;
  try {
    return option.check(value);
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    throw invalid(option, text, err.message);
  }
}

function checkCombinations(options: ListenOptions): void {
  if ((options.tlsCert === null) !== (options.tlsKey === null)) {
    const [given, missing] = options.tlsCert === null
      ? ["--tls-key", "--tls-cert"]
      : ["--tls-cert", "--tls-key"];
    throw new UsageError(
      `Option ${given} needs ${missing} as well: HTTPS takes a certificate and its key`,
    );
  }
  if (options.cluster === null) {
    const alone = [
      options.nodeId !== null ? "--node-id" : null,
      options.clusterPrefix !== "sandflare:" ? "--cluster-prefix" : null,
      options.reusePort ? "--reuse-port" : null,
    ].filter((name) => name !== null);
    if (alone.length > 0) {
      throw new UsageError(
        `Option ${alone[0]} needs --cluster=redis://HOST:PORT: nodes ` +
          "sharing a port or a name share sessions, websockets and tasks " +
          "through it",
      );
    }
  }
  if (options.xAccelRedirect !== null && options.xSendfile) {
    throw new UsageError(
      "Options --x-accel-redirect and --x-sendfile cannot be used together",
    );
  }
}

const HELP_WIDTH = 80;

/**
 * The help of `sandflare listen`: a usage line, then every option with its
 * meaning and default, aligned.
 *
 * @returns The help text, ending with a newline.
 *
 * @example Show the default port
 * ```ts
 * import { formatHelp } from "./options.ts";
 * import assert from "node:assert/strict";
 *
 * assert.match(formatHelp(), /--port=N +TCP port[^]*?\(default: 8080\)/);
 * ```
 */
export function formatHelp(): string {
  const rows = LISTEN_OPTIONS.map((option) => ({
    label: helpLabel(option),
    text: helpText(option),
  }));
  const width = Math.max(...rows.map((row) => row.label.length)) + 4;
  const lines = [
    "Usage: sandflare listen [OPTIONS]",
    "",
    "Serve every site in the sites folder until SIGINT or SIGTERM.",
    "",
    "Options:",
    ...rows.flatMap(({ label, text }) =>
      wrap(text, HELP_WIDTH - width).map((line, index) =>
        (index === 0 ? `  ${label}`.padEnd(width) : " ".repeat(width)) + line
      )
    ),
    "",
    ...wrap(`SIZE is ${SIZE_SYNTAX}; K and KiB are 1024 bytes, KB 1000.`),
    ...wrap("S is a number of seconds, such as 2 or 0.5."),
  ];
  return lines.join("\n") + "\n";
}

function helpLabel(option: OptionDescriptor): string {
  const short = option.short === undefined ? "    " : `-${option.short}, `;
  const placeholder = option.placeholder ?? "VALUE";
  const value = option.kind === "flag"
    ? ""
    : option.bare === undefined
    ? `=${placeholder}`
    : `[=${placeholder}]`;
  return `${short}--${option.name}${value}`;
}

function helpText(option: OptionDescriptor): string {
  const value = option.default;
  if (option.kind === "flag" || value === undefined || value === null) {
    return option.help;
  }
  const shown = option.kind === "size" && typeof value === "number"
    ? formatSize(value)
    : Array.isArray(value)
    ? value.join(",")
    : String(value);
  return `${option.help} (default: ${shown})`;
}

/** Splits `text` into lines of at most `width` characters, at spaces. */
function wrap(text: string, width = HELP_WIDTH): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  return [...lines, line];
}
