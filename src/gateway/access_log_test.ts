import assert from "node:assert/strict";
import { type AccessEntry, accessLine, clfDate } from "./access_log.ts";

/** The shape of a whole line: CLF, then duration and site. */
const LINE_REGEXP =
  /^(\S+) - - \[(\d{2}\/[A-Z][a-z]{2}\/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] "([A-Z]+) ([^"\s]*) HTTP\/1\.1" (\d{3}) (\d+) (\d+\.\d)ms (\S+)$/;

function entry(overrides: Partial<AccessEntry> = {}): AccessEntry {
  return {
    peer: "127.0.0.1",
    time: new Date(Date.UTC(2024, 0, 5, 3, 4, 5)),
    method: "GET",
    target: "/",
    status: 200,
    bytes: 5,
    ms: 1.5,
    site: "root",
    ...overrides,
  };
}

Deno.test("clfDate() writes day/Mon/year:h:m:s in UTC", async (t) => {
  const cases: [Date, string][] = [
    [new Date(0), "01/Jan/1970:00:00:00 +0000"],
    [new Date(Date.UTC(2024, 1, 29, 9, 8, 7)), "29/Feb/2024:09:08:07 +0000"],
    [
      new Date(Date.UTC(1999, 11, 31, 23, 59, 59, 999)),
      "31/Dec/1999:23:59:59 +0000",
    ],
    [new Date(Date.UTC(2030, 2, 1)), "01/Mar/2030:00:00:00 +0000"],
    [new Date(Date.UTC(2030, 3, 10)), "10/Apr/2030:00:00:00 +0000"],
    [new Date(Date.UTC(2030, 4, 10)), "10/May/2030:00:00:00 +0000"],
    [new Date(Date.UTC(2030, 5, 10)), "10/Jun/2030:00:00:00 +0000"],
    [new Date(Date.UTC(2030, 6, 10)), "10/Jul/2030:00:00:00 +0000"],
    [new Date(Date.UTC(2030, 7, 10)), "10/Aug/2030:00:00:00 +0000"],
    [new Date(Date.UTC(2030, 8, 10)), "10/Sep/2030:00:00:00 +0000"],
    [new Date(Date.UTC(2030, 9, 10)), "10/Oct/2030:00:00:00 +0000"],
    [new Date(Date.UTC(2030, 10, 10)), "10/Nov/2030:00:00:00 +0000"],
    // A time zone offset in the input does not leak into the output.
    [new Date("2024-07-01T01:30:00+05:00"), "30/Jun/2024:20:30:00 +0000"],
  ];
  for (const [date, want] of cases) {
    await t.step(want, () => assert.equal(clfDate(date), want));
  }
});

Deno.test("accessLine() writes common log format plus duration and site", async (t) => {
  const cases: [string, Partial<AccessEntry>, string][] = [
    [
      "the documented example",
      { time: new Date(0) },
      '127.0.0.1 - - [01/Jan/1970:00:00:00 +0000] "GET / HTTP/1.1" 200 5 1.5ms root',
    ],
    [
      "a POST with a query",
      {
        peer: "::1",
        method: "POST",
        target: "/form?a=1&b=2",
        status: 413,
        bytes: 0,
        ms: 12.345,
        site: "blog",
      },
      '::1 - - [05/Jan/2024:03:04:05 +0000] "POST /form?a=1&b=2 HTTP/1.1" 413 0 12.3ms blog',
    ],
    [
      "zero duration",
      { ms: 0 },
      '127.0.0.1 - - [05/Jan/2024:03:04:05 +0000] "GET / HTTP/1.1" 200 5 0.0ms root',
    ],
    [
      "a long duration",
      { ms: 30001.04, status: 503, bytes: 1234567 },
      '127.0.0.1 - - [05/Jan/2024:03:04:05 +0000] "GET / HTTP/1.1" 503 1234567 30001.0ms root',
    ],
  ];
  for (const [name, overrides, want] of cases) {
    await t.step(name, () => {
      const line = accessLine(entry(overrides));
      assert.equal(line, want);
      assert.match(line, LINE_REGEXP);
    });
  }
});

Deno.test("accessLine() escapes the target so it cannot forge lines", async (t) => {
  const cases: [string, string, string][] = [
    ["LF", "/a\nb", "/a\\x0ab"],
    ["CR", "/a\rb", "/a\\x0db"],
    ["CRLF", "/a\r\nb", "/a\\x0d\\x0ab"],
    ["a double quote", '/a"b', "/a\\x22b"],
    ["a backslash", "/a\\x22", "/a\\x5cx22"],
    ["NUL", "/a\0", "/a\\x00"],
    ["tab", "/a\tb", "/a\\x09b"],
    ["DEL", "/a\x7f", "/a\\x7f"],
    ["ESC (terminal codes)", "/\x1b[31mred", "/\\x1b[31mred"],
    ["a space", "/a b", "/a b"],
    ["non-ASCII text", "/café", "/café"],
  ];
  for (const [name, target, escaped] of cases) {
    await t.step(name, () => {
      const line = accessLine(entry({ target }));
      assert.ok(line.includes(`"GET ${escaped} HTTP/1.1"`), line);
      assert.ok(!/[\r\n\0]/.test(line), "no line breaks or NUL");
    });
  }

  await t.step("a forged second line stays on the first", () => {
    const forged =
      '/x HTTP/1.1" 200 5 1.0ms root\n6.6.6.6 - - [01/Jan/1970:00:00:00 +0000] "GET /admin';
    const line = accessLine(entry({ target: forged }));
    assert.equal(line.split("\n").length, 1);
    // Exactly two quotes: the ones around the request line.
    assert.equal(line.split('"').length - 1, 2);
    assert.ok(line.endsWith(" 200 5 1.5ms root"));
  });

  await t.step("a very long target is cut", () => {
    const line = accessLine(entry({ target: "/" + "a".repeat(10_000) }));
    assert.ok(line.length < 2200, `length ${line.length}`);
    assert.ok(line.includes(`/${"a".repeat(2047)}…`));
  });

  await t.step("a long target is cut before escaping, not mid-escape", () => {
    const line = accessLine(entry({ target: "/" + "\n".repeat(3000) }));
    assert.ok(!line.includes("\n"));
    assert.match(line, /(\\x0a)+… HTTP\/1\.1"/);
  });
});
