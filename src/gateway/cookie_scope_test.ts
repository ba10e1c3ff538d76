import assert from "node:assert/strict";
import { scopeCookieHeader, scopeSetCookie } from "./cookie_scope.ts";

Deno.test("scopeCookieHeader() keeps only the site's own cookies, by plain name", () => {
  const cases: [string, string][] = [
    ["session=a; sf~blog~session=b; sf~shop~session=c", "session=b"],
    ["sf~blog~x=1;sf~blog~y=2", "x=1; y=2"],
    ["__Host-sf~blog~id=1; __Host-id=2", "__Host-id=1"],
    ["sf~blogx~a=1; sf~blo~a=2; SF~blog~a=3", ""],
    ["sf~blog~novalue", "novalue"],
    ["", ""],
  ];
  for (const [header, expected] of cases) {
    assert.equal(scopeCookieHeader(header, "blog"), expected, header);
  }
});

Deno.test("scopeSetCookie() binds names on shared hosts and limits Domain", () => {
  const shared = { bound: "blog", owns: ["*.blog.test"] };
  const owner = { bound: null, owns: ["*.blog.test", "one.test"] };
  const cases: [typeof shared | typeof owner, string, string, string | null][] =
    [
      [shared, "a=1; Path=/", "sf~blog~a=1; Path=/", null],
      [shared, "__Secure-a=1; Secure", "__Secure-sf~blog~a=1; Secure", null],
      [shared, "a=1; Domain=blog.test", "sf~blog~a=1", "blog.test"],
      [owner, "a=1; Domain=blog.test", "a=1; Domain=blog.test", null],
      [
        owner,
        "a=1; domain=.X.Blog.test; Path=/",
        "a=1; domain=.X.Blog.test; Path=/",
        null,
      ],
      [owner, "a=1; DOMAIN=test; Path=/", "a=1; Path=/", "test"],
      [owner, "a=1; Domain=one.test", "a=1", "one.test"],
      [owner, "a=1; Domain=", "a=1", ""],
    ];
  for (const [scope, value, expected, removed] of cases) {
    const out = scopeSetCookie(value, scope);
    assert.equal(out.value, expected, value);
    assert.equal(out.removedDomain, removed, value);
  }
});
