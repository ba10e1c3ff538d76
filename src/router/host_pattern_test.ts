import assert from "node:assert/strict";
import {
  compileHostPattern,
  isValidHostPattern,
  normalizeHost,
} from "./host_pattern.ts";

Deno.test("normalizeHost() strips port, case and one trailing dot", async (t) => {
  const cases: [string, string][] = [
    ["", ""],
    ["example.test", "example.test"],
    ["Example.TEST", "example.test"],
    ["example.test:8080", "example.test"],
    ["EXAMPLE.test:80", "example.test"],
    ["example.test.", "example.test"],
    ["example.test.:8080", "example.test"],
    ["example.test..", "example.test."],
    ["example.test:", "example.test"],
    [" example.test ", "example.test"],
    ["127.0.0.1:8080", "127.0.0.1"],
    ["[::1]", "[::1]"],
    ["[::1]:8080", "[::1]"],
    ["[0:0:0:0:0:0:0:1]:80", "[::1]"],
    ["[2001:DB8::1]", "[2001:db8::1]"],
    ["[::ffff:127.0.0.1]", "[::ffff:7f00:1]"],
    ["[::1", "[::1"],
    ["[not-an-ip]:80", "[not-an-ip]"],
    ["::1", "::1"],
    [":8080", ""],
    [".", ""],
  ];
  for (const [input, expected] of cases) {
    await t.step(JSON.stringify(input), () => {
      assert.equal(normalizeHost(input), expected);
    });
  }
});

Deno.test("isValidHostPattern() accepts the documented forms", async (t) => {
  const cases: [string, boolean][] = [
    ["*", true],
    [" * ", true],
    ["example.test", true],
    ["EXAMPLE.Test", true],
    ["localhost", true],
    ["example.test.", true],
    ["a-b.example.test", true],
    ["xn--bcher-kva.test", true],
    ["*.example.test", true],
    ["~.example.test", true],
    ["+.example.test", true],
    ["*.test", true],
    ["a.test,b.test", true],
    ["a.test , *.b.test,  ~.c.test", true],
    ["127.0.0.1", true],
    ["[::1]", true],
    ["[2001:db8::1]", true],
    ["[::ffff:1.2.3.4]", true],
    ["[1:2:3:4:5:6:7:8]", true],
    ["", false],
    ["   ", false],
    ["*.", false],
    ["*.*.example.test", false],
    ["**.example.test", false],
    ["*example.test", false],
    ["a.*.test", false],
    ["example.*", false],
    ["-.example.test", false],
    ["?.example.test", false],
    ["example..test", false],
    [".example.test", false],
    ["example.test..", false],
    ["exa_mple.test", false],
    ["exa mple.test", false],
    ["-a.test", false],
    ["a-.test", false],
    ["a".repeat(64) + ".test", false],
    ["a".repeat(63) + ".test", true],
    ["example.test:8080", false],
    ["a.test,", false],
    [",a.test", false],
    ["a.test,,b.test", false],
    ["*, a.test", false],
    ["a.test, *", false],
    ["1.2.3.256", false],
    ["1.2.3", false],
    ["a.123", false],
    ["*.1.2.3.4", false],
    ["+.127.0.0.1", false],
    ["::1", false],
    ["[::1", false],
    ["[::g]", false],
    ["[1:2:3:4:5:6:7:8:9]", false],
    ["[1::2::3]", false],
    ["[1:2:3:4:5:6:7::8]", false],
    ["*.[::1]", false],
    ["bücher.test", false],
  ];
  for (const [pattern, expected] of cases) {
    await t.step(JSON.stringify(pattern), () => {
      assert.equal(isValidHostPattern(pattern), expected);
    });
  }
});

Deno.test("compileHostPattern() matches normalized hosts", async (t) => {
  const cases: [pattern: string, host: string, expected: boolean][] = [
    ["*", "anything.test", true],
    ["*", "", true],
    // exact (broken in LuaFlare)
    ["example.test", "example.test", true],
    ["example.test", "EXAMPLE.TEST", true],
    ["Example.Test", "example.test", true],
    ["example.test.", "example.test", true],
    ["example.test", "www.example.test", false],
    ["example.test", "notexample.test", false],
    ["example.test", "example.test.evil", false],
    ["example.test", "", false],
    ["127.0.0.1", "127.0.0.1", true],
    ["127.0.0.1", "127.0.0.2", false],
    ["[::1]", "[::1]", true],
    ["[0::1]", "[::1]", true],
    ["[::1]", "[0:0:0:0:0:0:0:1]", true],
    ["[::1]", "[::2]", false],
    // *. root and every subdomain
    ["*.example.test", "example.test", true],
    ["*.example.test", "www.example.test", true],
    ["*.example.test", "a.b.c.example.test", true],
    ["*.example.test", "WWW.Example.Test", true],
    ["*.example.test", "notexample.test", false],
    ["*.example.test", "example.test.evil", false],
    ["*.example.test", "example.testing", false],
    ["*.example.test", ".example.test", false],
    ["*.example.test", "a..example.test", false],
    ["*.example.test", "a/b.example.test", false],
    ["*.example.test", "other.test", false],
    // ~. subdomains only (broken in LuaFlare)
    ["~.example.test", "example.test", false],
    ["~.example.test", "www.example.test", true],
    ["~.example.test", "a.b.example.test", true],
    ["~.example.test", "notexample.test", false],
    ["~.example.test", ".example.test", false],
    ["~.example.test", "a.example.test.", false],
    // +. exactly one label below (broken in LuaFlare)
    ["+.example.test", "example.test", false],
    ["+.example.test", "www.example.test", true],
    ["+.example.test", "WWW.example.test", true],
    ["+.example.test", "a-b.example.test", true],
    ["+.example.test", "a.b.example.test", false],
    ["+.example.test", "notexample.test", false],
    ["+.example.test", ".example.test", false],
    ["+.example.test", "a.notexample.test", false],
    // comma lists
    ["a.test, *.b.test", "a.test", true],
    ["a.test, *.b.test", "x.b.test", true],
    ["a.test, *.b.test", "b.test", true],
    ["a.test, *.b.test", "x.a.test", false],
    ["a.test,+.b.test,[::1]", "[::1]", true],
    ["a.test,+.b.test,[::1]", "x.y.b.test", false],
  ];
  for (const [pattern, host, expected] of cases) {
    await t.step(`${pattern} ~ ${JSON.stringify(host)}`, () => {
      assert.equal(compileHostPattern(pattern)(host), expected);
    });
  }
});

Deno.test("compileHostPattern() works with normalizeHost()", async (t) => {
  const cases: [pattern: string, header: string, expected: boolean][] = [
    ["*.example.test", "WWW.Example.Test:8080", true],
    ["*.example.test", "example.test.:443", true],
    ["+.example.test", "blog.example.test.", true],
    ["example.test", "Example.Test.:8080", true],
    ["[::1]", "[0:0::1]:8080", true],
    ["~.example.test", "example.test:8080", false],
  ];
  for (const [pattern, header, expected] of cases) {
    await t.step(`${pattern} ~ ${header}`, () => {
      assert.equal(
        compileHostPattern(pattern)(normalizeHost(header)),
        expected,
      );
    });
  }
});

Deno.test("compileHostPattern() rejects invalid patterns", async (t) => {
  for (const pattern of ["", "*.*.a.test", "a.test,", "a b.test"]) {
    await t.step(JSON.stringify(pattern), () => {
      assert.throws(() => compileHostPattern(pattern), TypeError);
    });
  }
});
