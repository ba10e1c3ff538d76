import assert from "node:assert/strict";
import { parseCookies } from "./request.ts";

Deno.test("parseCookies() reads a Cookie header", async (t) => {
  const cases: [string, string, [string, string][]][] = [
    ["empty", "", []],
    ["one cookie", "a=1", [["a", "1"]]],
    ["two cookies", "a=1; b=2", [["a", "1"], ["b", "2"]]],
    ["no space after ;", "a=1;b=2", [["a", "1"], ["b", "2"]]],
    ["spaces around name and value", "  a = 1 ;  b=2 ", [["a", "1"], [
      "b",
      "2",
    ]]],
    ["percent-decoded", "b=x%20y", [["b", "x y"]]],
    ["UTF-8 decoded", "c=caf%C3%A9", [["c", "café"]]],
    ["bad percent-encoding kept as sent", "a=%zz; b=100%", [["a", "%zz"], [
      "b",
      "100%",
    ]]],
    ["quoted value unquoted", 'a="x y"', [["a", "x y"]]],
    ["a lone quote kept", 'a="', [["a", '"']]],
    ["an empty value", "a=; b=2", [["a", ""], ["b", "2"]]],
    ["= inside a value", "t=a=b=c", [["t", "a=b=c"]]],
    ["the first of a repeated name wins", "a=1; a=2; b=3; a=4", [["a", "1"], [
      "b",
      "3",
    ]]],
    ["parts without = are skipped", "flag; a=1; ;", [["a", "1"]]],
    ["an empty name is skipped", "=x; a=1", [["a", "1"]]],
    ["a blank name is skipped", "  =x; a=1", [["a", "1"]]],
    ["names are case-sensitive", "A=1; a=2", [["A", "1"], ["a", "2"]]],
  ];
  for (const [name, header, want] of cases) {
    await t.step(name, () => {
      assert.deepEqual(Object.entries(parseCookies(header)), want);
    });
  }
});

Deno.test("parseCookies() cannot be made to pollute prototypes", async (t) => {
  const names = [
    "__proto__",
    "constructor",
    "prototype",
    "hasOwnProperty",
    "toString",
  ];
  for (const name of names) {
    await t.step(name, () => {
      const cookies = parseCookies(
        `${name}=%7B%22polluted%22%3Atrue%7D; ${name}=second; ok=1`,
      );
      assert.ok(Object.hasOwn(cookies, name), `${name} is an own property`);
      assert.equal(cookies[name], '{"polluted":true}');
      assert.equal(cookies.ok, "1");
      assert.equal(Object.keys(cookies).length, 2);
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
      assert.equal(
        (Object.prototype as Record<string, unknown>).polluted,
        undefined,
      );
      assert.equal(Object.getPrototypeOf({}), Object.prototype);
    });
  }

  await t.step("a name the result did not receive is absent", () => {
    const cookies = parseCookies("a=1");
    assert.equal(cookies["toString"], undefined);
    assert.equal(cookies["__proto__"], undefined);
    assert.equal("constructor" in cookies, false);
  });
});
