import assert from "node:assert/strict";
import type { WireRoutes } from "../protocol/messages.ts";
import { checkHostClaims } from "./claims.ts";

const FILE = "sites/blog/site.json";

function routes(...patterns: string[]): WireRoutes {
  return {
    hosts: patterns.map((pattern) => ({ pattern, noFallback: false })),
    pages: [],
    hooks: [],
    websockets: [],
    tasks: 0,
  };
}

function check(
  patterns: string[],
  allowed: string[],
  root = false,
): string | null {
  return checkHostClaims(routes(...patterns), allowed, { root, file: FILE });
}

Deno.test("checkHostClaims() allows the patterns site.json lists", async (t) => {
  const cases: [string, string[], string[]][] = [
    ["nothing registered, nothing listed", [], []],
    ["nothing registered", [], ["a.test"]],
    ["an exact host", ["a.test"], ["a.test"]],
    ["a wildcard", ["*.a.test"], ["*.a.test"]],
    ["subdomains only", ["~.a.test"], ["~.a.test"]],
    ["one label", ["+.a.test"], ["+.a.test"]],
    ["hosts.any", ["*"], ["*"]],
    ["several hosts", ["a.test", "*", "b.test"], ["b.test", "*", "a.test"]],
    ["a comma list of listed hosts", ["a.test,b.test"], ["a.test", "b.test"]],
    ["a comma list with spaces", ["a.test , b.test"], ["a.test", "b.test"]],
    ["an IPv4 literal", ["127.0.0.1"], ["127.0.0.1"]],
  ];
  for (const [name, patterns, allowed] of cases) {
    await t.step(name, () => assert.equal(check(patterns, allowed), null));
  }
});

Deno.test("checkHostClaims() refuses patterns site.json does not list", async (t) => {
  const cases: [string, string[], string[], string][] = [
    ["no site.json hosts", ["a.test"], [], '"a.test"'],
    ["another host", ["b.test"], ["a.test"], '"b.test"'],
    ["a wider wildcard", ["*.a.test"], ["a.test"], '"*.a.test"'],
    [
      "a wildcard for subdomains only",
      ["~.a.test"],
      ["+.a.test"],
      '"~.a.test"',
    ],
    ["a subdomain of a listed host", ["x.a.test"], ["a.test"], '"x.a.test"'],
    ["a parent of a listed host", ["a.test"], ["x.a.test"], '"a.test"'],
    ['hosts.any without "*"', ["*"], ["a.test", "*.a.test"], "hosts.any"],
    ["hosts.any with nothing listed", ["*"], [], "hosts.any"],
    [
      "one part of a comma list",
      ["a.test,evil.test"],
      ["a.test"],
      '"evil.test"',
    ],
    [
      "the first part of a comma list",
      ["evil.test, a.test"],
      ["a.test"],
      '"evil.test"',
    ],
    [
      "the second of several hosts",
      ["a.test", "evil.test"],
      ["a.test"],
      '"evil.test"',
    ],
  ];
  for (const [name, patterns, allowed, names] of cases) {
    await t.step(name, () => {
      const message = check(patterns, allowed);
      assert.notEqual(message, null);
      assert.ok(message!.includes(names), message!);
      assert.ok(message!.includes(FILE), message!);
      assert.ok(message!.includes('"hosts"'), message!);
    });
  }

  await t.step("the message lists what site.json allows", () => {
    assert.match(
      check(["c.test"], ["a.test", "b.test"])!,
      /it lists "a\.test", "b\.test"/,
    );
    assert.match(check(["c.test"], [])!, /it lists none/);
  });

  await t.step("the first refused pattern is named", () => {
    const message = check(["a.test", "x.test", "y.test"], ["a.test"])!;
    assert.ok(message.includes('"x.test"'));
    assert.ok(!message.includes('"y.test"'));
  });
});

Deno.test("checkHostClaims() lets the root site register anything valid", async (t) => {
  const cases: string[][] = [
    ["*"],
    ["anything.test", "*.other.test"],
    ["~.x.test,+.y.test"],
  ];
  for (const patterns of cases) {
    await t.step(patterns.join(" "), () => {
      assert.equal(check(patterns, [], true), null);
    });
  }
});

Deno.test("checkHostClaims() refuses invalid patterns, even for the root site", async (t) => {
  const cases = [
    "",
    "a..test",
    "-a.test",
    "a_b.test",
    "*.",
    "**.a.test",
    "a.*.test",
    "a.test,*",
    "a.test,",
    "a.test/path",
    "a.test:8080",
    "http://a.test",
    "a test",
  ];
  for (const pattern of cases) {
    for (const root of [false, true]) {
      await t.step(`${JSON.stringify(pattern)}${root ? " (root)" : ""}`, () => {
        const message = check([pattern], [pattern], root);
        assert.notEqual(message, null);
        assert.ok(message!.includes(JSON.stringify(pattern)), message!);
        assert.match(message!, /not valid/);
      });
    }
  }
});
