import assert from "node:assert/strict";
import { HaltSignal, PageResponse } from "./response.ts";

const DEFAULT_TYPE = ["Content-Type", "text/html; charset=utf-8"];
const decoder = new TextDecoder();

/** The wire headers as [name, value] pairs. */
function pairs(headers: string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < headers.length; i += 2) {
    out.push([headers[i]!, headers[i + 1]!]);
  }
  return out;
}

function wire(res: PageResponse) {
  const { reply, body } = res.toWire();
  return {
    reply,
    headers: pairs("headers" in reply ? reply.headers : []),
    text: decoder.decode(body),
  };
}

Deno.test("PageResponse.setHeader() replaces any case of the same name", async (t) => {
  const cases: [string, [string, string | number][], [string, string][]][] = [
    ["one header", [["X-A", "1"]], [["X-A", "1"]]],
    ["same name", [["X-A", "1"], ["X-A", "2"]], [["X-A", "2"]]],
    ["other case", [["X-A", "1"], ["x-a", "2"]], [["x-a", "2"]]],
    ["upper case", [["x-a", "1"], ["X-A", "2"]], [["X-A", "2"]]],
    ["two names", [["X-A", "1"], ["X-B", "2"], ["x-a", "3"]], [
      ["X-B", "2"],
      ["x-a", "3"],
    ]],
    ["a number value", [["X-N", 42]], [["X-N", "42"]]],
    ["an empty value", [["X-E", ""]], [["X-E", ""]]],
  ];
  for (const [name, calls, want] of cases) {
    await t.step(name, () => {
      const res = new PageResponse();
      for (const [n, v] of calls) res.setHeader(n, v);
      assert.deepEqual(wire(res).headers, [...want, DEFAULT_TYPE]);
      for (const [n, v] of want) {
        assert.equal(res.getHeader(n.toUpperCase()), v);
        assert.equal(res.getHeader(n.toLowerCase()), v);
      }
    });
  }

  await t.step("removeHeader() removes every value of any case", () => {
    const res = new PageResponse();
    res.setCookie("a", "1");
    res.setCookie("b", "2");
    res.setHeader("X-Keep", "1");
    res.removeHeader("set-cookie");
    assert.equal(res.getHeader("Set-Cookie"), null);
    assert.deepEqual(wire(res).headers, [["X-Keep", "1"], DEFAULT_TYPE]);
  });
});

Deno.test("PageResponse.setHeader() refuses CR, LF, NUL and bad names", async (t) => {
  const values = ["a\r\nSet-Cookie: x=1", "a\nb", "a\rb", "a\0b", "\r\n"];
  for (const value of values) {
    await t.step(`value ${JSON.stringify(value)}`, () => {
      const res = new PageResponse();
      res.setHeader("X-A", "old");
      assert.throws(() => res.setHeader("X-A", value), TypeError);
      assert.equal(res.getHeader("X-A"), "old", "the old value stays");
    });
  }
  const names = ["", "X A", "X:A", "X\r\nY", "X-Ä", "(x)"];
  for (const name of names) {
    await t.step(`name ${JSON.stringify(name)}`, () => {
      const res = new PageResponse();
      assert.throws(() => res.setHeader(name, "1"), TypeError);
      assert.deepEqual(wire(res).headers, [DEFAULT_TYPE]);
    });
  }
});

Deno.test("PageResponse.setCookie() formats Set-Cookie", async (t) => {
  const cases: [string, Parameters<PageResponse["setCookie"]>, string][] = [
    ["plain", ["a", "1"], "a=1"],
    ["value encoded", ["a", 'x y;z,"é'], "a=x%20y%3Bz%2C%22%C3%A9"],
    ["empty value", ["a", ""], "a="],
    ["path", ["a", "1", { path: "/" }], "a=1; Path=/"],
    ["domain", ["a", "1", { domain: "a.test" }], "a=1; Domain=a.test"],
    ["maxAge", ["a", "1", { maxAge: 60 }], "a=1; Max-Age=60"],
    ["maxAge rounded down", ["a", "1", { maxAge: 1.9 }], "a=1; Max-Age=1"],
    ["maxAge 0", ["a", "1", { maxAge: 0 }], "a=1; Max-Age=0"],
    ["negative maxAge", ["a", "1", { maxAge: -5 }], "a=1; Max-Age=0"],
    ["httpOnly", ["a", "1", { httpOnly: true }], "a=1; HttpOnly"],
    ["httpOnly false", ["a", "1", { httpOnly: false }], "a=1"],
    ["secure", ["a", "1", { secure: true }], "a=1; Secure"],
    ["sameSite", ["a", "1", { sameSite: "Strict" }], "a=1; SameSite=Strict"],
    [
      "everything",
      ["sid", "abc", {
        path: "/app",
        domain: "a.test",
        maxAge: 3600,
        httpOnly: true,
        secure: true,
        sameSite: "Lax",
      }],
      "sid=abc; Path=/app; Domain=a.test; Max-Age=3600; HttpOnly; Secure; SameSite=Lax",
    ],
  ];
  for (const [name, args, want] of cases) {
    await t.step(name, () => {
      const res = new PageResponse();
      res.setCookie(...args);
      assert.deepEqual(wire(res).headers, [["Set-Cookie", want], DEFAULT_TYPE]);
    });
  }

  await t.step("one header per cookie name: a later call replaces", () => {
    const res = new PageResponse();
    res.setCookie("a", "1");
    res.setCookie("ab", "x");
    res.setCookie("a", "2");
    res.setCookie("b", "3");
    assert.deepEqual(wire(res).headers, [
      ["Set-Cookie", "ab=x"],
      ["Set-Cookie", "a=2"],
      ["Set-Cookie", "b=3"],
      DEFAULT_TYPE,
    ]);
  });

  const bad: [string, Parameters<PageResponse["setCookie"]>][] = [
    ["empty name", ["", "1"]],
    ["name with a space", ["a b", "1"]],
    ["name with =", ["a=b", "1"]],
    ["name with ;", ["a;b", "1"]],
    ["CRLF in the path", ["a", "1", { path: "/\r\nX-Evil: 1" }]],
    ["LF in the domain", ["a", "1", { domain: "a.test\nX-Evil: 1" }]],
  ];
  for (const [name, args] of bad) {
    await t.step(`refuses ${name}`, () => {
      const res = new PageResponse();
      assert.throws(() => res.setCookie(...args), TypeError);
      assert.equal(res.getHeader("Set-Cookie"), null);
    });
  }
});

Deno.test("PageResponse.json() sets the body and Content-Type", async (t) => {
  const values: unknown[] = [
    { id: "1", list: [1, 2] },
    [],
    "text",
    null,
    0,
  ];
  for (const value of values) {
    await t.step(JSON.stringify(value), () => {
      const res = new PageResponse();
      res.setHeader("content-type", "text/plain");
      res.append("earlier body");
      res.json(value);
      const { headers, text } = wire(res);
      assert.deepEqual(headers, [
        ["Content-Type", "application/json; charset=utf-8"],
      ]);
      assert.deepEqual(JSON.parse(text), value);
    });
  }
});

Deno.test("PageResponse.halt() throws HaltSignal for 400–599 only", async (t) => {
  const good: [number, string | undefined, string][] = [
    [400, undefined, ""],
    [404, "No such page", "No such page"],
    [418, "<teapot>", "<teapot>"],
    [599, "", ""],
  ];
  for (const [code, reason, message] of good) {
    await t.step(`${code}`, () => {
      const res = new PageResponse();
      assert.throws(
        () => res.halt(code, reason),
        (err: unknown) => {
          assert.ok(err instanceof HaltSignal);
          assert.equal(err.code, code);
          assert.equal(err.message, message);
          assert.equal(err.name, "HaltSignal");
          return true;
        },
      );
    });
  }
  for (const code of [0, 200, 302, 399, 600, 404.5, NaN, Infinity, -404]) {
    await t.step(`refuses ${code}`, () => {
      assert.throws(
        () => new PageResponse().halt(code),
        (err: unknown) =>
          err instanceof RangeError && !(err instanceof HaltSignal),
      );
    });
  }
});

Deno.test("PageResponse.setFile() answers with a file and no body", async (t) => {
  await t.step("clears an earlier body", () => {
    const res = new PageResponse();
    res.append("body");
    res.setHeader("X-A", "1");
    res.status = 201;
    res.setFile("static/a.txt");
    const { reply, body } = res.toWire();
    assert.deepEqual(reply, {
      kind: "file",
      status: 201,
      headers: ["X-A", "1"],
      path: "static/a.txt",
      listDirectory: false,
    });
    assert.equal(body.length, 0);
    assert.equal(res.hasContent, true);
  });
  await t.step("listDirectory", () => {
    const res = new PageResponse();
    res.setFile("static", { listDirectory: true });
    const { reply } = res.toWire();
    assert.equal(reply.kind === "file" && reply.listDirectory, true);
  });
  await t.step("an empty path is refused", () => {
    assert.throws(() => new PageResponse().setFile(""), TypeError);
  });
  await t.step("setReply() after setFile() answers with the body", () => {
    const res = new PageResponse();
    res.setFile("a.txt");
    res.setReply("instead");
    const { reply, text } = wire(res);
    assert.equal(reply.kind, "body");
    assert.equal(text, "instead");
  });
});

Deno.test("PageResponse.toWire() checks the status", async (t) => {
  for (const status of [200, 204, 301, 404, 599]) {
    await t.step(`accepts ${status}`, () => {
      const res = new PageResponse();
      res.status = status;
      const { reply } = res.toWire();
      assert.equal("status" in reply && reply.status, status);
    });
  }
  const bad: unknown[] = [0, 100, 101, 199, 600, 1000, 200.5, NaN, -200, "200"];
  for (const status of bad) {
    await t.step(`refuses ${JSON.stringify(status)}`, () => {
      const res = new PageResponse();
      (res as { status: unknown }).status = status;
      assert.throws(() => res.toWire(), RangeError);
    });
  }
});

Deno.test("PageResponse builds the body and the default Content-Type", async (t) => {
  await t.step("a new response is an empty 200 HTML page", () => {
    const res = new PageResponse();
    assert.equal(res.hasContent, false);
    const { reply, headers, text } = wire(res);
    assert.equal(reply.kind, "body");
    assert.equal("status" in reply && reply.status, 200);
    assert.deepEqual(headers, [DEFAULT_TYPE]);
    assert.equal(text, "");
  });
  await t.step("append() joins text and bytes in order", () => {
    const res = new PageResponse();
    res.append("a");
    res.append(new TextEncoder().encode("é"));
    res.append("");
    res.append("c");
    assert.equal(res.hasContent, true);
    assert.equal(wire(res).text, "aéc");
  });
  await t.step("a Content-Type of any case replaces the default", () => {
    for (const name of ["Content-Type", "content-type", "CONTENT-TYPE"]) {
      const res = new PageResponse();
      res.setHeader(name, "text/plain");
      assert.deepEqual(wire(res).headers, [[name, "text/plain"]]);
    }
  });
  await t.step("setReply() replaces the body", () => {
    const res = new PageResponse();
    res.append("one");
    res.setReply("two");
    assert.equal(wire(res).text, "two");
  });
  await t.step("toWire() does not change the response", () => {
    const res = new PageResponse();
    res.append("x");
    wire(res);
    res.append("y");
    assert.deepEqual(wire(res).headers, [DEFAULT_TYPE]);
    assert.equal(wire(res).text, "xy");
  });
});

Deno.test("PageResponse.clear() and clearContent() reset what they say", async (t) => {
  function filled(): PageResponse {
    const res = new PageResponse();
    res.status = 404;
    res.setHeader("X-A", "1");
    res.setCookie("c", "1");
    res.append("body");
    return res;
  }
  await t.step("clear() resets status, headers and body", () => {
    const res = filled();
    res.clear();
    assert.equal(res.status, 200);
    assert.equal(res.hasContent, false);
    const { headers, text } = wire(res);
    assert.deepEqual(headers, [DEFAULT_TYPE]);
    assert.equal(text, "");
  });
  await t.step("clear() drops a pending file", () => {
    const res = filled();
    res.setFile("a.txt");
    res.clear();
    assert.equal(wire(res).reply.kind, "body");
  });
  await t.step("clearContent() keeps status and headers", () => {
    const res = filled();
    res.clearContent();
    assert.equal(res.status, 404);
    assert.equal(res.hasContent, false);
    const { headers, text } = wire(res);
    assert.deepEqual(headers, [
      ["X-A", "1"],
      ["Set-Cookie", "c=1"],
      DEFAULT_TYPE,
    ]);
    assert.equal(text, "");
  });
  await t.step("clearContent() drops a pending file", () => {
    const res = filled();
    res.setFile("a.txt");
    res.clearContent();
    assert.equal(wire(res).reply.kind, "body");
  });
});
