import assert from "node:assert/strict";
import {
  type ClientAddress,
  clientAddress,
  type IpMatcher,
  matchAny,
  normalizeIp,
  parseTrustEntry,
} from "./proxy.ts";

/** The matcher of an entry that must be an address or CIDR. */
function cidr(entry: string): IpMatcher {
  const parsed = parseTrustEntry(entry);
  assert.ok(parsed?.kind === "cidr", `"${entry}" should be a CIDR`);
  return parsed.matcher;
}

function trustList(...entries: string[]): IpMatcher {
  return matchAny(entries.map(cidr));
}

Deno.test("normalizeIp() gives the canonical form", async (t) => {
  const cases: [string, string][] = [
    ["127.0.0.1", "127.0.0.1"],
    ["0.0.0.0", "0.0.0.0"],
    ["255.255.255.255", "255.255.255.255"],
    ["::1", "::1"],
    ["0:0::1", "::1"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["[::1]", "::1"],
    ["::", "::"],
    ["0::0", "::"],
    ["::FFFF:127.0.0.1", "127.0.0.1"],
    ["::ffff:7f00:1", "127.0.0.1"],
    ["[::ffff:10.1.2.3]", "10.1.2.3"],
    ["0:0:0:0:0:ffff:192.0.2.1", "192.0.2.1"],
    ["::127.0.0.1", "::7f00:1"],
    ["::ffff:0:127.0.0.1", "::ffff:0:7f00:1"],
    ["64:ff9b::192.0.2.33", "64:ff9b::c000:221"],
    ["2001:DB8::1", "2001:db8::1"],
    ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["1:0:0:2:0:0:0:3", "1:0:0:2::3"],
    ["1::", "1::"],
    ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"],
    ["::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"],
    ["fe80::1%eth0", "fe80::1"],
    ["[fe80::1%25eth0]", "fe80::1"],
    ["fe80::1%1", "fe80::1"],
  ];
  for (const [text, expected] of cases) {
    await t.step(text, () => {
      assert.equal(normalizeIp(text), expected);
      assert.equal(normalizeIp(expected), expected);
    });
  }
});

Deno.test("normalizeIp() refuses what is not an address", async (t) => {
  const cases: string[] = [
    "",
    " ",
    " 127.0.0.1",
    "127.0.0.1 ",
    "localhost",
    "example.test",
    "unknown",
    "127.0.0.1.",
    "127.0.0",
    "127.1",
    "2130706433",
    "0x7f.0.0.1",
    "127.0.0.01",
    "010.0.0.1",
    "256.0.0.1",
    "1.2.3.4.5",
    "1..2.3",
    "-1.2.3.4",
    "+1.2.3.4",
    "1.2.3.4/32",
    "1.2.3.4:80",
    "[1.2.3.4]",
    "[::1",
    "::1]",
    "[[::1]]",
    ":",
    ":::",
    "::1::",
    "1::2::3",
    ":1:2:3:4:5:6:7",
    "1:2:3:4:5:6:7:",
    "1:2:3:4:5:6:7",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7:8::",
    "::1:2:3:4:5:6:7:8",
    "12345::1",
    "g::1",
    "::ffff:1.2.3",
    "::ffff:1.2.3.4:5",
    "::1.2.3.4:5",
    "1.2.3.4::",
    "fe80::1%",
    "fe80::1%eth 0",
    "fe80::1%eth0%1",
    "127.0.0.1%eth0",
    "١٢٧.0.0.1",
    "::ffff:127.0.0.1\u0000",
    "1".repeat(100_000),
    ":".repeat(100_000),
    `::${"0:".repeat(30)}1`,
  ];
  for (const text of cases) {
    await t.step(JSON.stringify(text.slice(0, 40)), () => {
      assert.equal(normalizeIp(text), null);
    });
  }
});

Deno.test("parseTrustEntry() reads addresses, CIDRs and names", async (t) => {
  const names: [string, string][] = [
    ["localhost", "localhost"],
    ["LocalHost", "localhost"],
    ["proxy.example.test", "proxy.example.test"],
    ["proxy.example.test.", "proxy.example.test"],
    [" lb-1.internal ", "lb-1.internal"],
    ["1password.com", "1password.com"],
    ["a.b-c.d9", "a.b-c.d9"],
  ];
  for (const [entry, name] of names) {
    await t.step(`name ${entry}`, () => {
      assert.deepEqual(parseTrustEntry(entry), { kind: "name", name });
    });
  }
  const cidrs = [
    "10.1.2.3",
    "::1",
    "[::1]",
    "10.0.0.0/8",
    "fd00::/8",
    "[fd00::]/8",
    "::ffff:10.0.0.0/104",
    "0.0.0.0/0",
    "::/0",
    "1.2.3.4/32",
    "::1/128",
    " 10.0.0.0/8 ",
  ];
  for (const entry of cidrs) {
    await t.step(`cidr ${entry}`, () => {
      assert.equal(parseTrustEntry(entry)?.kind, "cidr");
    });
  }
  const invalid = [
    "",
    " ",
    "*",
    "10.0.0.0/33",
    "10.0.0.0/-1",
    "10.0.0.0/",
    "10.0.0.0/8/8",
    "10.0.0.0/08",
    "10.0.0.0/1e1",
    "10.0.0.0/ 8",
    "::/129",
    "::/1000",
    "[::1/128]",
    "[10.0.0.1]",
    "fe80::1%eth0",
    "fe80::/10%eth0",
    "host/8",
    "10.0.0.256",
    "1.2.3",
    "300",
    "-proxy.test",
    "proxy-.test",
    "proxy..test",
    "pro_xy.test",
    "proxy.test:8080",
    "http://proxy.test",
    `${"a".repeat(64)}.test`,
    `${"a.".repeat(130)}test`,
    "x".repeat(100_000),
  ];
  for (const entry of invalid) {
    await t.step(`invalid ${JSON.stringify(entry.slice(0, 30))}`, () => {
      assert.equal(parseTrustEntry(entry), null);
    });
  }
});

Deno.test("parseTrustEntry() matchers compare by value", async (t) => {
  const cases: [string, string, boolean][] = [
    // IPv4 single addresses (a /32)
    ["10.1.2.3", "10.1.2.3", true],
    ["10.1.2.3", "10.1.2.4", false],
    ["10.1.2.3", "::ffff:10.1.2.3", true],
    ["10.1.2.3", "[::ffff:a01:203]", true],
    ["10.1.2.3", "::10.1.2.3", false],
    ["10.1.2.3", "10.1.2.3:80", false],
    ["10.1.2.3", "garbage", false],
    ["10.1.2.3", "", false],
    // IPv4 networks and edges
    ["10.0.0.0/8", "10.0.0.0", true],
    ["10.0.0.0/8", "10.255.255.255", true],
    ["10.0.0.0/8", "9.255.255.255", false],
    ["10.0.0.0/8", "11.0.0.0", false],
    ["10.0.0.0/8", "::ffff:10.200.0.1", true],
    ["10.0.0.1/8", "10.99.0.7", true],
    ["10.0.0.1/8", "11.0.0.1", false],
    ["192.168.1.128/25", "192.168.1.128", true],
    ["192.168.1.128/25", "192.168.1.255", true],
    ["192.168.1.128/25", "192.168.1.127", false],
    ["172.16.0.0/12", "172.31.255.255", true],
    ["172.16.0.0/12", "172.32.0.0", false],
    ["1.2.3.4/32", "1.2.3.4", true],
    ["1.2.3.4/32", "1.2.3.5", false],
    ["1.2.3.4/31", "1.2.3.5", true],
    ["1.2.3.4/31", "1.2.3.6", false],
    ["0.0.0.0/0", "203.0.113.9", true],
    ["0.0.0.0/0", "::ffff:203.0.113.9", true],
    ["0.0.0.0/0", "::1", false],
    ["0.0.0.0/0", "2001:db8::1", false],
    ["127.0.0.0/8", "::ffff:127.0.0.1", true],
    ["127.0.0.0/8", "::1", false],
    // IPv6
    ["::1", "::1", true],
    ["::1", "0:0::1", true],
    ["::1", "0:0:0:0:0:0:0:1", true],
    ["::1", "[::1]", true],
    ["::1", "::2", false],
    ["::1", "127.0.0.1", false],
    ["[::1]", "::1", true],
    ["::1/128", "::1", true],
    ["::1/128", "::", false],
    ["fd00::/8", "fd12:3456::1", true],
    ["fd00::/8", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true],
    ["fd00::/8", "fc00::1", false],
    ["fd00::/8", "fe00::", false],
    ["fd00::1/8", "fd99::", true],
    ["fe80::/10", "fe80::1%eth0", true],
    ["fe80::/10", "[febf::1%25eth0]", true],
    ["fe80::/10", "fec0::1", false],
    ["2001:db8::/32", "2001:DB8:FFFF::", true],
    ["2001:db8::/32", "2001:db9::", false],
    ["2001:db8::/127", "2001:db8::1", true],
    ["2001:db8::/127", "2001:db8::2", false],
    // IPv4-mapped networks are IPv4 networks.
    ["::ffff:10.0.0.0/104", "10.1.2.3", true],
    ["::ffff:10.0.0.0/104", "::ffff:10.1.2.3", true],
    ["::ffff:10.0.0.0/104", "11.1.2.3", false],
    ["::ffff:127.0.0.1", "127.0.0.1", true],
    ["::ffff:0:0/96", "8.8.8.8", true],
    ["::ffff:0:0/96", "::1", false],
    // ::/0 is every address, IPv4 included (IPv4 is mapped IPv6).
    ["::/0", "2001:db8::1", true],
    ["::/0", "10.0.0.1", true],
    ["::/0", "nonsense", false],
  ];
  for (const [entry, address, expected] of cases) {
    await t.step(`${entry} ${expected ? "has" : "lacks"} ${address}`, () => {
      assert.equal(cidr(entry)(address), expected);
    });
  }
});

Deno.test("matchAny() matches when any matcher does", async (t) => {
  const local = trustList("127.0.0.0/8", "::1");
  const cases: [string, boolean][] = [
    ["127.0.0.1", true],
    ["127.255.0.9", true],
    ["::ffff:127.0.0.1", true],
    ["::1", true],
    ["0:0::1", true],
    ["[::1]", true],
    ["10.0.0.1", false],
    ["::2", false],
    ["", false],
    ["localhost", false],
  ];
  for (const [address, expected] of cases) {
    await t.step(address || "(empty)", () => {
      assert.equal(local(address), expected);
    });
  }
  await t.step("an empty list matches nothing", () => {
    const none = matchAny([]);
    assert.equal(none("127.0.0.1"), false);
    assert.equal(none("::"), false);
  });
  await t.step("later changes to the array do not leak in", () => {
    const list: IpMatcher[] = [];
    const matcher = matchAny(list);
    list.push(() => true);
    assert.equal(matcher("1.2.3.4"), false);
  });
});

const PROXIES = trustList("127.0.0.0/8", "::1", "10.0.0.0/8", "fd00::/8");
const ok = (peer: string): ClientAddress => ({ kind: "ok", peer });
const UNTRUSTED: ClientAddress = { kind: "untrusted" };
const BAD_REAL_IP: ClientAddress = { kind: "malformed", header: "X-Real-IP" };
const BAD_XFF: ClientAddress = {
  kind: "malformed",
  header: "X-Forwarded-For",
};

Deno.test("clientAddress() trusts only trusted proxies", async (t) => {
  type Case = [
    string,
    string,
    string | null,
    string | null,
    ClientAddress,
  ];
  const cases: Case[] = [
    // [name, peer, X-Real-IP, X-Forwarded-For, expected]
    ["untrusted peer", "203.0.113.5", null, null, UNTRUSTED],
    [
      "untrusted peer with headers",
      "203.0.113.5",
      "127.0.0.1",
      "127.0.0.1",
      UNTRUSTED,
    ],
    ["untrusted v6 peer", "2001:db8::1", null, null, UNTRUSTED],
    ["peer that is not an address", "unix:/tmp/s", null, null, UNTRUSTED],
    ["empty peer", "", null, null, UNTRUSTED],
    ["no headers", "127.0.0.1", null, null, ok("127.0.0.1")],
    [
      "no headers, mapped peer",
      "::ffff:127.0.0.1",
      null,
      null,
      ok("127.0.0.1"),
    ],
    ["no headers, v6 peer", "0:0::1", null, null, ok("::1")],
    // X-Real-IP
    ["X-Real-IP v4", "127.0.0.1", "198.51.100.7", null, ok("198.51.100.7")],
    ["X-Real-IP v6", "::1", "2001:DB8::7", null, ok("2001:db8::7")],
    [
      "X-Real-IP mapped",
      "::1",
      "::ffff:198.51.100.7",
      null,
      ok("198.51.100.7"),
    ],
    ["X-Real-IP spaces", "::1", "  198.51.100.7 ", null, ok("198.51.100.7")],
    [
      "X-Real-IP wins over XFF",
      "::1",
      "198.51.100.7",
      "192.0.2.1",
      ok("198.51.100.7"),
    ],
    ["X-Real-IP trusted address", "::1", "10.1.1.1", null, ok("10.1.1.1")],
    ["X-Real-IP empty", "::1", "", null, BAD_REAL_IP],
    ["X-Real-IP blank", "::1", "   ", null, BAD_REAL_IP],
    ["X-Real-IP garbage", "::1", "<script>", null, BAD_REAL_IP],
    ["X-Real-IP name", "::1", "localhost", null, BAD_REAL_IP],
    ["X-Real-IP list", "::1", "1.2.3.4, 5.6.7.8", null, BAD_REAL_IP],
    ["X-Real-IP with port", "::1", "1.2.3.4:80", null, BAD_REAL_IP],
    ["X-Real-IP octal", "::1", "010.0.0.1", null, BAD_REAL_IP],
    ["X-Real-IP huge", "::1", "1".repeat(1_000_000), null, BAD_REAL_IP],
    ["X-Real-IP bad, XFF good", "::1", "x", "192.0.2.1", BAD_REAL_IP],
    // X-Forwarded-For
    ["XFF one", "127.0.0.1", null, "192.0.2.1", ok("192.0.2.1")],
    ["XFF v6", "127.0.0.1", null, "2001:db8::0:1", ok("2001:db8::1")],
    ["XFF bracketed v6", "127.0.0.1", null, "[2001:db8::1]", ok("2001:db8::1")],
    ["XFF v4 with port", "127.0.0.1", null, "192.0.2.1:4711", ok("192.0.2.1")],
    [
      "XFF v6 with port",
      "127.0.0.1",
      null,
      "[2001:db8::1]:4711",
      ok("2001:db8::1"),
    ],
    [
      "XFF trusted chain",
      "127.0.0.1",
      null,
      "192.0.2.1, 10.0.0.2, fd00::3",
      ok("192.0.2.1"),
    ],
    [
      "XFF mapped proxies",
      "::ffff:10.0.0.1",
      null,
      "192.0.2.1, ::ffff:10.9.9.9",
      ok("192.0.2.1"),
    ],
    [
      "XFF all trusted",
      "127.0.0.1",
      null,
      "10.0.0.5, 10.0.0.6",
      ok("10.0.0.5"),
    ],
    ["XFF only trusted one", "127.0.0.1", null, "::1", ok("::1")],
    [
      "XFF tabs and spaces",
      "127.0.0.1",
      null,
      " \t192.0.2.1 ,\t10.0.0.1\t",
      ok("192.0.2.1"),
    ],
    [
      "XFF empty elements",
      "127.0.0.1",
      null,
      ",, 192.0.2.1,,",
      ok("192.0.2.1"),
    ],
    [
      "XFF many commas",
      "127.0.0.1",
      null,
      `192.0.2.1${",".repeat(100_000)}`,
      ok("192.0.2.1"),
    ],
    ["XFF empty", "127.0.0.1", null, "", BAD_XFF],
    ["XFF blank", "127.0.0.1", null, "  ", BAD_XFF],
    ["XFF only commas", "127.0.0.1", null, ",".repeat(100_000), BAD_XFF],
    ["XFF garbage", "127.0.0.1", null, "garbage", BAD_XFF],
    ["XFF unknown", "127.0.0.1", null, "unknown", BAD_XFF],
    ["XFF garbage right-most", "127.0.0.1", null, "192.0.2.1, nope", BAD_XFF],
    [
      "XFF garbage after proxy",
      "127.0.0.1",
      null,
      "192.0.2.1, nope, 10.0.0.1",
      BAD_XFF,
    ],
    [
      "XFF v6 port unbracketed",
      "127.0.0.1",
      null,
      "2001:db8::1:99999",
      BAD_XFF,
    ],
    ["XFF bad port", "127.0.0.1", null, "192.0.2.1:http", BAD_XFF],
    ["XFF huge entry", "127.0.0.1", null, "9".repeat(1_000_000), BAD_XFF],
    ["XFF names", "127.0.0.1", null, "client.example.test", BAD_XFF],
  ];
  for (const [name, peer, realIp, forwardedFor, expected] of cases) {
    await t.step(name, () => {
      const headers = { realIp, forwardedFor };
      assert.deepEqual(clientAddress(peer, headers, PROXIES), expected);
    });
  }
});

Deno.test("clientAddress() resists spoofed X-Forwarded-For", async (t) => {
  type Case = [string, string, ClientAddress];
  const cases: Case[] = [
    // The client claims to be local or another address; the proxy appends
    // the real address on the right, which wins.
    ["claims localhost", "127.0.0.1, 198.51.100.9", ok("198.51.100.9")],
    ["claims ::1", "::1, 198.51.100.9", ok("198.51.100.9")],
    ["claims another client", "192.0.2.66, 198.51.100.9", ok("198.51.100.9")],
    [
      "claims a chain",
      "127.0.0.1, 10.0.0.1, 198.51.100.9, 10.0.0.2",
      ok("198.51.100.9"),
    ],
    ["garbage left of client", "<script>, 198.51.100.9", ok("198.51.100.9")],
    [
      "huge garbage left of client",
      `${"x".repeat(100_000)}, 198.51.100.9`,
      ok("198.51.100.9"),
    ],
    [
      "many entries left of client",
      `${"1.1.1.1, ".repeat(10_000)}198.51.100.9`,
      ok("198.51.100.9"),
    ],
    ["empty claim", ", 198.51.100.9", ok("198.51.100.9")],
    // Spelling a trusted address differently changes nothing.
    ["mapped spelling", "::ffff:127.0.0.1, 198.51.100.9", ok("198.51.100.9")],
    ["padded v6", "0:0:0:0:0:0:0:1, 198.51.100.9", ok("198.51.100.9")],
    // An untrusted client spelled as mapped IPv6 is still untrusted.
    [
      "client spelled mapped",
      "127.0.0.1, ::ffff:198.51.100.9",
      ok("198.51.100.9"),
    ],
  ];
  for (const [name, forwardedFor, expected] of cases) {
    await t.step(name, () => {
      const headers = { realIp: null, forwardedFor };
      assert.deepEqual(clientAddress("10.0.0.1", headers, PROXIES), expected);
    });
  }
  await t.step("a client cannot reach the server directly", () => {
    const headers = { realIp: "127.0.0.1", forwardedFor: "127.0.0.1" };
    assert.deepEqual(
      clientAddress("198.51.100.9", headers, PROXIES),
      UNTRUSTED,
    );
    assert.deepEqual(
      clientAddress("::ffff:198.51.100.9", headers, PROXIES),
      UNTRUSTED,
    );
  });
  await t.step("trusting nothing refuses every peer", () => {
    const headers = { realIp: null, forwardedFor: null };
    assert.deepEqual(
      clientAddress("127.0.0.1", headers, matchAny([])),
      UNTRUSTED,
    );
  });
});
