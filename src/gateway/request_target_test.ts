import assert from "node:assert/strict";
import {
  parseTarget,
  removeDotSegments,
  TargetError,
} from "./request_target.ts";

const ORIGIN = "http://a.test";

/** The properties every path a site sees must have. */
function assertClean(path: string): void {
  assert.ok(path.startsWith("/"), `${JSON.stringify(path)} is absolute`);
  assert.ok(!path.includes("//"), `${JSON.stringify(path)} has no //`);
  const segments = path.split("/");
  assert.ok(
    !segments.includes("..") && !segments.includes("."),
    `${JSON.stringify(path)} has no dot segments`,
  );
}

Deno.test("parseTarget() decodes the path and removes dot segments", async (t) => {
  const cases: [string, string][] = [
    ["/", "/"],
    ["", "/"],
    ["/a", "/a"],
    ["/a/", "/a/"],
    ["/a/b/../c", "/a/c"],
    ["/a/./b", "/a/b"],
    ["/a/b/..", "/a/"],
    ["/a/b/.", "/a/b/"],
    ["/..", "/"],
    ["/../", "/"],
    ["/../../etc/passwd", "/etc/passwd"],
    ["/a/../../../b", "/b"],
    ["/a/%2e%2e/b", "/b"],
    ["/a/%2E%2E/b", "/b"],
    ["/a/.%2e/b", "/b"],
    ["/a/%2e./b", "/b"],
    ["/a/%2e/b", "/a/b"],
    ["/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"],
    ["/a/%2f../b", "/b"],
    ["/a%2f..%2f..%2fetc", "/etc"],
    ["/a/b%2f%2e%2e/c", "/a/c"],
    ["/a%5c..%5cb", "/a\\..\\b"],
    ["//a//b", "/a/b"],
    ["///", "/"],
    ["/a//../b", "/b"],
    ["/a%20b", "/a b"],
    ["/%E2%82%AC", "/€"],
    ["/caf%C3%A9/", "/café/"],
    ["/a+b", "/a+b"],
    ["/...", "/..."],
    ["/a/.../b", "/a/.../b"],
    ["/..a/b..", "/..a/b.."],
    ["/.hidden", "/.hidden"],
  ];
  for (const [target, path] of cases) {
    await t.step(JSON.stringify(target), () => {
      const parsed = parseTarget(`${ORIGIN}${target}`);
      assert.equal(parsed.path, path);
      assertClean(parsed.path);
    });
  }
});

Deno.test("parseTarget() splits off the query and drops the fragment", async (t) => {
  const cases: [string, { path: string; query: string; raw: string }][] = [
    ["/a?x=1", { path: "/a", query: "x=1", raw: "/a?x=1" }],
    ["/a?", { path: "/a", query: "", raw: "/a?" }],
    ["/a?x=1&y=%2F..", {
      path: "/a",
      query: "x=1&y=%2F..",
      raw: "/a?x=1&y=%2F..",
    }],
    ["/a?x=%zz", { path: "/a", query: "x=%zz", raw: "/a?x=%zz" }],
    ["/a?x=1?y", { path: "/a", query: "x=1?y", raw: "/a?x=1?y" }],
    ["/a#frag", { path: "/a", query: "", raw: "/a" }],
    ["/a?x=1#frag", { path: "/a", query: "x=1", raw: "/a?x=1" }],
    ["/a#frag?x=1", { path: "/a", query: "", raw: "/a" }],
    ["/a/../b?q=../x", { path: "/b", query: "q=../x", raw: "/a/../b?q=../x" }],
    ["/%3F?x", { path: "/?", query: "x", raw: "/%3F?x" }],
    ["/%23", { path: "/#", query: "", raw: "/%23" }],
  ];
  for (const [target, want] of cases) {
    await t.step(JSON.stringify(target), () => {
      assert.deepEqual(parseTarget(`${ORIGIN}${target}`), {
        ...want,
        scheme: "http",
      });
    });
  }
  await t.step("the host part is not taken for the path", () => {
    assert.deepEqual(parseTarget("https://user@a.test:8443/x/y?z"), {
      path: "/x/y",
      query: "z",
      raw: "/x/y?z",
      scheme: "https",
    });
  });
});

Deno.test("parseTarget() throws TargetError on bad encoding and NUL", async (t) => {
  const cases = [
    "/%",
    "/%2",
    "/%zz",
    "/a%g0",
    "/%E2%82",
    "/%C3",
    "/%FF",
    "/%C0%AE%C0%AE/",
    "/%00",
    "/a%00.txt",
    "/a/%00/../b",
  ];
  for (const target of cases) {
    await t.step(target, () => {
      assert.throws(() => parseTarget(`${ORIGIN}${target}`), TargetError);
    });
  }
});

Deno.test("removeDotSegments() resolves dots and collapses slashes", async (t) => {
  const cases: [string, string][] = [
    ["", "/"],
    ["/", "/"],
    ["a/b", "/a/b"],
    ["./a", "/a"],
    ["../a", "/a"],
    ["/a/../../b//c/.", "/b/c/"],
    ["/a/b/c/../../d", "/a/d"],
    ["/a/./././b", "/a/b"],
    ["/a/b/../..", "/"],
    ["/a/b/../../", "/"],
    ["/a//", "/a/"],
    ["//", "/"],
    ["/./", "/"],
    ["/.", "/"],
    ["..", "/"],
    ["/a/b/", "/a/b/"],
  ];
  for (const [input, want] of cases) {
    await t.step(JSON.stringify(input), () => {
      assert.equal(removeDotSegments(input), want);
    });
  }
});

Deno.test("removeDotSegments() never returns a path that leaves the root", () => {
  // Deterministic pseudo-random paths built from tricky pieces.
  const pieces = ["a", "b", ".", "..", "", "...", ".a", "a.", "%2e"];
  let seed = 12345;
  const next = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed;
  };
  for (let i = 0; i < 5000; i++) {
    const count = next() % 9;
    const parts = Array.from(
      { length: count },
      () => pieces[next() % pieces.length]!,
    );
    const input = (next() % 2 === 0 ? "/" : "") + parts.join("/");
    const out = removeDotSegments(input);
    assertClean(out);
    assert.equal(removeDotSegments(out), out, `idempotent for ${input}`);
    const depth = out.split("/").filter((s) => s !== "").length;
    const named = parts.filter((p) => p !== "" && p !== "." && p !== "..");
    assert.ok(depth <= named.length, `${input} → ${out}`);
  }
});
