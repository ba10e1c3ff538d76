import assert from "node:assert/strict";
import { errorPage, reasonPhrase, wantsJson } from "./error_page.ts";

const HTML = "text/html; charset=utf-8";
const JSON_TYPE = "application/json; charset=utf-8";

Deno.test("reasonPhrase() gives the standard phrase or Error", async (t) => {
  const cases: [number, string][] = [
    [200, "OK"],
    [400, "Bad Request"],
    [404, "Not Found"],
    [405, "Method Not Allowed"],
    [409, "Conflict"],
    [413, "Payload Too Large"],
    [500, "Internal Server Error"],
    [502, "Bad Gateway"],
    [503, "Service Unavailable"],
    [499, "Error"],
    [599, "Error"],
    [0, "Error"],
  ];
  for (const [code, phrase] of cases) {
    await t.step(`${code}`, () => assert.equal(reasonPhrase(code), phrase));
  }
});

Deno.test("wantsJson() picks JSON only when JSON is accepted and HTML is not", async (t) => {
  const cases: [string | null, boolean][] = [
    [null, false],
    ["", false],
    ["application/json", true],
    ["APPLICATION/JSON", true],
    ["application/json; charset=utf-8", true],
    [" application/json ", true],
    ["application/problem+json", true],
    ["application/vnd.api+json", true],
    ["application/jsonp", false],
    ["text/json-ish", false],
    ["text/html", false],
    ["text/html,application/json", false],
    ["application/json, text/html", false],
    ["application/json, application/xhtml+xml", false],
    ["application/json;q=0", false],
    ["application/json; q=0", false],
    ["application/json;Q=0", false],
    ["application/json;q=0.0", false],
    ["application/json;q=0.5", true],
    ["application/json;q=0.001", true],
    ["application/json, text/html;q=0", true],
    ["application/json;q=0.9, text/html;q=0", true],
    ["text/html;q=0, application/problem+json", true],
    ["application/json;q=0, text/html;q=0", false],
    ["application/json;q=0, application/problem+json", true],
    ["*/*", false],
    ["*/*;q=0.8", false],
    ["application/json, text/plain, */*", true],
    ["text/plain", false],
    ["image/png", false],
    [
      "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
      false,
    ],
    ["garbage;;;,,,", false],
  ];
  for (const [accept, want] of cases) {
    await t.step(JSON.stringify(accept), () => {
      assert.equal(wantsJson(accept), want);
    });
  }
});

Deno.test("errorPage() escapes the message in HTML", async (t) => {
  const cases: [string, string, string][] = [
    ["<", "a<b", "a&lt;b"],
    [">", "a>b", "a&gt;b"],
    ["&", "a&b", "a&amp;b"],
    ['"', 'say "hi"', "say &quot;hi&quot;"],
    ["'", "it's", "it&#39;s"],
    ["already escaped", "&lt;", "&amp;lt;"],
    [
      "a script",
      "<script>alert('x')</script>",
      "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;",
    ],
    [
      "an attribute breakout",
      '"><img src=x onerror=alert(1)>',
      "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;",
    ],
  ];
  for (const [name, message, escaped] of cases) {
    await t.step(name, () => {
      const page = errorPage(404, message, null);
      assert.equal(page.contentType, HTML);
      assert.ok(page.body.includes(`<p>${escaped}</p>`), page.body);
      if (escaped !== message) assert.ok(!page.body.includes(message));
    });
  }
});

Deno.test("errorPage() renders HTML with the code and reason phrase", async (t) => {
  await t.step("title and heading", () => {
    const page = errorPage(405, 'No "PUT" page at "/x"', "text/html");
    assert.equal(page.contentType, HTML);
    assert.ok(page.body.startsWith("<!DOCTYPE html>"));
    assert.match(page.body, /<title>405 Method Not Allowed<\/title>/);
    assert.match(page.body, /<h1>405 Method Not Allowed<\/h1>/);
    assert.match(
      page.body,
      /<p>No &quot;PUT&quot; page at &quot;\/x&quot;<\/p>/,
    );
  });
  await t.step("unknown code", () => {
    assert.match(errorPage(599, "", null).body, /<h1>599 Error<\/h1>/);
  });
  await t.step("no paragraph for an empty message", () => {
    assert.ok(!errorPage(500, "", null).body.includes("<p>"));
  });
  await t.step("a multi-line message stays one escaped paragraph", () => {
    const body = errorPage(500, "one\n<two>", null).body;
    assert.ok(body.includes("<p>one\n&lt;two&gt;</p>"));
  });
});

Deno.test("errorPage() renders JSON for JSON clients", async (t) => {
  const cases: [string, number, string][] = [
    ["application/json", 404, 'No page at "/x"'],
    ["application/problem+json", 500, "Internal Server Error (ref abc123)"],
    ["application/json", 418, "<b>&'\"</b>\n"],
    ["application/json", 599, ""],
  ];
  for (const [accept, code, message] of cases) {
    await t.step(`${accept} ${code}`, () => {
      const page = errorPage(code, message, accept);
      assert.equal(page.contentType, JSON_TYPE);
      assert.deepEqual(JSON.parse(page.body), {
        error: { code, reason: reasonPhrase(code), message },
      });
    });
  }
  await t.step("HTML wins when both are accepted", () => {
    const page = errorPage(404, "x", "application/json, text/html");
    assert.equal(page.contentType, HTML);
  });
});

Deno.test("errorPage() never shows more than the message", async (t) => {
  const err = new Error("secret detail");
  const stack = err.stack ?? "";
  for (const accept of [null, "application/json"]) {
    await t.step(`accept ${accept}`, () => {
      const page = errorPage(500, "Internal Server Error (ref 1)", accept);
      assert.ok(!page.body.includes("secret"));
      assert.ok(!page.body.includes(stack.split("\n")[1] ?? "?"));
      assert.ok(!/\bat .*:\d+:\d+/.test(page.body), "no stack frames");
      assert.ok(!page.body.includes("stack"));
    });
  }
  await t.step("the JSON body has exactly code, reason and message", () => {
    const body = JSON.parse(errorPage(500, "m", "application/json").body);
    assert.deepEqual(Object.keys(body), ["error"]);
    assert.deepEqual(Object.keys(body.error).sort(), [
      "code",
      "message",
      "reason",
    ]);
  });
});
