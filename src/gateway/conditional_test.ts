import assert from "node:assert/strict";
import {
  type ConditionalDecision,
  type ConditionalInput,
  contentRange,
  decideConditional,
  etagMatchesStrong,
  etagMatchesWeak,
  formatHttpDate,
  makeEtag,
  parseHttpDate,
  parseRange,
  type RangeResult,
  unsatisfiedRange,
} from "./conditional.ts";

const FULL: RangeResult = { kind: "full" };
const UNSAT: RangeResult = { kind: "unsatisfiable" };
const part = (start: number, end: number): RangeResult => ({
  kind: "partial",
  start,
  end,
});

Deno.test("parseRange() reads single byte ranges", async (t) => {
  const cases: [string | null, number, RangeResult][] = [
    [null, 1000, FULL],
    ["bytes=0-99", 1000, part(0, 99)],
    ["bytes=0-0", 1000, part(0, 0)],
    ["bytes=999-999", 1000, part(999, 999)],
    ["bytes=100-", 1000, part(100, 999)],
    ["bytes=0-", 1000, part(0, 999)],
    ["bytes=-500", 1000, part(500, 999)],
    ["bytes=-1", 1000, part(999, 999)],
    ["bytes=-1000", 1000, part(0, 999)],
    ["bytes=-5000", 1000, part(0, 999)],
    ["bytes=900-2000", 1000, part(900, 999)],
    ["bytes=0-999", 1000, part(0, 999)],
    ["bytes=0-1000", 1000, part(0, 999)],
    [" bytes = 10 - 20 ", 1000, part(10, 20)],
    ["bytes=\t5-6\t", 1000, part(5, 6)],
    ["Bytes=1-2", 1000, part(1, 2)],
    ["bytes=1-2,", 1000, part(1, 2)],
    ["bytes=, ,1-2", 1000, part(1, 2)],
    ["bytes=007-010", 1000, part(7, 10)],
    ["bytes=0-9007199254740991", 10, part(0, 9)],
  ];
  for (const [header, size, expected] of cases) {
    await t.step(`${JSON.stringify(header)} of ${size}`, () => {
      assert.deepEqual(parseRange(header, size), expected);
    });
  }
});

Deno.test("parseRange() finds unsatisfiable ranges", async (t) => {
  const cases: [string, number][] = [
    ["bytes=1000-", 1000],
    ["bytes=1000-1000", 1000],
    ["bytes=5000-6000", 1000],
    ["bytes=-0", 1000],
    ["bytes=0-", 0],
    ["bytes=0-0", 0],
    ["bytes=-1", 0],
    ["bytes=-0", 0],
  ];
  for (const [header, size] of cases) {
    await t.step(`${header} of ${size}`, () => {
      assert.deepEqual(parseRange(header, size), UNSAT);
    });
  }
});

Deno.test("parseRange() ignores what it does not serve", async (t) => {
  const cases: string[] = [
    "",
    "bytes",
    "bytes=",
    "bytes=-",
    "bytes=,",
    "bytes=5",
    "bytes=10-5",
    "bytes=0-1,5-6",
    "bytes=0-1, -1",
    "bytes=0-1,0-1",
    "items=0-1",
    "bytesx=0-1",
    "=0-1",
    "bytes=a-b",
    "bytes=1-2-3",
    "bytes=+1-2",
    "bytes=1.5-2",
    "bytes=0x10-20",
    "bytes=1 2-3",
    "bytes=--1",
    "bytes=-1-",
    "bytes=9007199254740992-",
    "bytes=0-9007199254740992",
    "bytes=-99999999999999999999999",
    `bytes=${"9".repeat(100_000)}-`,
    `bytes=${",".repeat(100_000)}`,
    `bytes=${"0-1,".repeat(10_000)}`,
    "bytes=\u0660-\u0661",
  ];
  for (const header of cases) {
    await t.step(JSON.stringify(header.slice(0, 40)), () => {
      assert.deepEqual(parseRange(header, 1000), FULL);
    });
  }
  await t.step("a bad size ignores the header", () => {
    assert.deepEqual(parseRange("bytes=0-1", -1), FULL);
    assert.deepEqual(parseRange("bytes=0-1", 1.5), FULL);
    assert.deepEqual(parseRange("bytes=0-1", NaN), FULL);
  });
});

Deno.test("contentRange() and unsatisfiedRange() format headers", async (t) => {
  await t.step("contentRange", () => {
    assert.equal(contentRange(0, 99, 1000), "bytes 0-99/1000");
    assert.equal(contentRange(999, 999, 1000), "bytes 999-999/1000");
  });
  await t.step("unsatisfiedRange", () => {
    assert.equal(unsatisfiedRange(1000), "bytes */1000");
    assert.equal(unsatisfiedRange(0), "bytes */0");
  });
});

Deno.test("makeEtag() is a quoted base64url of 16 bytes", async (t) => {
  await t.step("uses only the first 16 bytes", () => {
    const digest = new Uint8Array(32).map((_, i) => i < 16 ? 0xfb : i);
    const etag = makeEtag(digest);
    assert.equal(etag, '"-_v7-_v7-_v7-_v7-_v7-w"');
    assert.equal(etag, makeEtag(digest.subarray(0, 16)));
  });
  await t.step("differs for different digests", () => {
    const a = makeEtag(new Uint8Array(16).fill(1));
    const b = makeEtag(new Uint8Array(16).fill(2));
    assert.notEqual(a, b);
  });
  await t.step("is a valid strong entity tag", () => {
    for (let seed = 0; seed < 50; seed++) {
      const digest = new Uint8Array(16).map((_, i) =>
        (seed * 31 + i * 17) & 255
      );
      const etag = makeEtag(digest);
      assert.match(etag, /^"[A-Za-z0-9_-]{22}"$/);
      assert.ok(etagMatchesStrong(etag, etag));
    }
  });
  await t.step("short digests are used whole", () => {
    assert.equal(makeEtag(new Uint8Array([0xff])), '"_w"');
  });
  await t.step("an empty digest is a RangeError", () => {
    assert.throws(() => makeEtag(new Uint8Array()), RangeError);
  });
});

Deno.test("etagMatchesWeak() compares If-None-Match lists", async (t) => {
  const cases: [string, string, boolean][] = [
    ['"a"', '"a"', true],
    ['"a"', '"b"', false],
    ['W/"a"', '"a"', true],
    ['"a"', 'W/"a"', true],
    ['W/"a"', 'W/"a"', true],
    ['"x", "a"', '"a"', true],
    ['"x","y" ,W/"a"', '"a"', true],
    ['"x", "y"', '"a"', false],
    [' \t"a"\t ', '"a"', true],
    ['"a",, ,"b"', '"b"', true],
    ["*", '"a"', true],
    [" * ", '"a"', true],
    ['""', '""', true],
    ['""', '"a"', false],
    ['"A"', '"a"', false],
    ['"a b"', '"a"', false],
    // Malformed lists match nothing, even when a good tag comes first.
    ['"a", b', '"a"', false],
    ["a", "a", false],
    ['"a', '"a"', false],
    ['a"', '"a"', false],
    ['"a""b"', '"a"', false],
    ['"a" "b"', '"a"', false],
    ['w/"a"', '"a"', false],
    ['W/ "a"', '"a"', false],
    ['"a\u0000"', '"a"', false],
    ['*, "a"', '"a"', false],
    ["**", '"a"', false],
    ["", '"a"', false],
    [",,,", '"a"', false],
    ['"a"', "a", false],
    ['"a"', "", false],
    [`${'"x",'.repeat(20_000)}"a"`, '"a"', true],
    [`"${"x".repeat(100_000)}`, '"a"', false],
    [",".repeat(100_000), '"a"', false],
  ];
  for (const [header, etag, expected] of cases) {
    await t.step(`${JSON.stringify(header.slice(0, 30))} ~ ${etag}`, () => {
      assert.equal(etagMatchesWeak(header, etag), expected);
    });
  }
});

Deno.test("etagMatchesStrong() needs two equal strong tags", async (t) => {
  const cases: [string, string, boolean][] = [
    ['"a"', '"a"', true],
    [' "a" ', '"a"', true],
    ['"a"', '"b"', false],
    ['W/"a"', '"a"', false],
    ['"a"', 'W/"a"', false],
    ['W/"a"', 'W/"a"', false],
    ['"a", "b"', '"a"', false],
    ["a", "a", false],
    ["*", '"a"', false],
    ["", '""', false],
    ['"a"x', '"a"', false],
  ];
  for (const [tag, etag, expected] of cases) {
    await t.step(`${tag} vs ${etag}`, () => {
      assert.equal(etagMatchesStrong(tag, etag), expected);
    });
  }
});

Deno.test("parseHttpDate() reads the three date forms", async (t) => {
  const nov6 = Date.UTC(1994, 10, 6, 8, 49, 37);
  const cases: [string, number][] = [
    ["Sun, 06 Nov 1994 08:49:37 GMT", nov6],
    ["Sunday, 06-Nov-94 08:49:37 GMT", nov6],
    ["Sun Nov  6 08:49:37 1994", nov6],
    ["Sun Nov 6 08:49:37 1994", nov6],
    ["Sun Nov 06 08:49:37 1994", nov6],
    ["  Sun, 06 Nov 1994 08:49:37 GMT\t", nov6],
    ["Thu, 26 Nov 2026 10:26:30 GMT", Date.UTC(2026, 10, 26, 10, 26, 30)],
    ["Thu, 01 Jan 1970 00:00:00 GMT", 0],
    ["Wed, 31 Dec 1969 23:59:59 GMT", -1000],
    ["Tue, 29 Feb 2000 00:00:00 GMT", Date.UTC(2000, 1, 29)],
    ["Fri, 31 Dec 9999 23:59:59 GMT", Date.UTC(9999, 11, 31, 23, 59, 59)],
    ["Thursday, 01-Jan-70 00:00:00 GMT", 0],
    ["Thursday, 31-Dec-69 00:00:00 GMT", Date.UTC(2069, 11, 31)],
    ["Monday, 01-Jan-00 00:00:00 GMT", Date.UTC(2000, 0, 1)],
    ["Friday, 31-Dec-99 23:59:59 GMT", Date.UTC(1999, 11, 31, 23, 59, 59)],
    // The weekday name is not checked against the date (as nginx and Go).
    ["Mon, 06 Nov 1994 08:49:37 GMT", nov6],
  ];
  for (const [text, expected] of cases) {
    await t.step(text, () => {
      assert.equal(parseHttpDate(text), expected);
    });
  }
});

Deno.test("parseHttpDate() refuses garbage", async (t) => {
  const cases: (string | null)[] = [
    null,
    "",
    "yesterday",
    "0",
    "1700000000",
    "2026-11-26T10:26:30Z",
    "Sun, 06 Nov 1994 08:49:37 UTC",
    "Sun, 06 Nov 1994 08:49:37 gmt",
    "Sun, 06 Nov 1994 08:49:37",
    "Sun, 6 Nov 1994 08:49:37 GMT",
    "Sun 06 Nov 1994 08:49:37 GMT",
    "Sun,  06 Nov 1994 08:49:37 GMT",
    "Sun, 06 nov 1994 08:49:37 GMT",
    "sun, 06 Nov 1994 08:49:37 GMT",
    "Sunday, 06 Nov 1994 08:49:37 GMT",
    "Sun, 06 Nov 94 08:49:37 GMT",
    "Sun, 06 Nov 1994 8:49:37 GMT",
    "Sun, 06 Nov 1994 24:00:00 GMT",
    "Sun, 06 Nov 1994 23:60:00 GMT",
    "Sun, 06 Nov 1994 23:59:60 GMT",
    "Sun, 00 Nov 1994 08:49:37 GMT",
    "Sun, 31 Nov 1994 08:49:37 GMT",
    "Sun, 29 Feb 1900 08:49:37 GMT",
    "Sun, 32 Jan 1994 08:49:37 GMT",
    "Sun, 06 Foo 1994 08:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:37 GMT x",
    "Sun, 06 Nov 1994 08:49:37 GMTGMT",
    "Sun, ٠٦ Nov 1994 08:49:37 GMT",
    "Sun, 06 Nov +994 08:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:37 GMT\u0000",
    "Sunday, 06-Nov-1994 08:49:37 GMT",
    "Sun, 06-Nov-94 08:49:37 GMT",
    "Sun Nov  6 08:49:37 94",
    "Sun Nov   6 08:49:37 1994",
    "Sun Nov  6 08:49:37 1994 GMT",
    `Sun, 06 Nov 1994 08:49:37 GMT${" ".repeat(100)}`,
    "x".repeat(100_000),
  ];
  for (const text of cases) {
    await t.step(JSON.stringify(text?.slice(0, 40) ?? null), () => {
      assert.equal(parseHttpDate(text), null);
    });
  }
});

Deno.test("formatHttpDate() writes IMF-fixdate", async (t) => {
  const cases: [number, string][] = [
    [Date.UTC(2026, 10, 26, 10, 26, 30), "Thu, 26 Nov 2026 10:26:30 GMT"],
    [Date.UTC(2026, 10, 26, 10, 26, 30, 999), "Thu, 26 Nov 2026 10:26:30 GMT"],
    [0, "Thu, 01 Jan 1970 00:00:00 GMT"],
    [Date.UTC(1994, 10, 6, 8, 49, 37), "Sun, 06 Nov 1994 08:49:37 GMT"],
    [Date.UTC(2000, 1, 29, 1, 2, 3), "Tue, 29 Feb 2000 01:02:03 GMT"],
    [-1000, "Wed, 31 Dec 1969 23:59:59 GMT"],
  ];
  for (const [ms, expected] of cases) {
    await t.step(expected, () => {
      assert.equal(formatHttpDate(ms), expected);
      assert.equal(parseHttpDate(expected), Math.floor(ms / 1000) * 1000);
    });
  }
  await t.step("pads years below 1000", () => {
    const ms = new Date(0).setUTCFullYear(999, 0, 1);
    assert.equal(formatHttpDate(ms), "Tue, 01 Jan 0999 00:00:00 GMT");
    assert.equal(parseHttpDate(formatHttpDate(ms)), ms);
  });
  await t.step("refuses times that are not dates", () => {
    for (const ms of [NaN, Infinity, -Infinity, 8.64e15 + 1]) {
      assert.throws(() => formatHttpDate(ms), RangeError);
    }
    assert.throws(() => formatHttpDate(Date.UTC(10000, 0, 1)), RangeError);
  });
});

const MODIFIED = Date.UTC(2026, 0, 15, 12, 0, 0);
const ETAG = '"abc"';
const BASE: ConditionalInput = {
  method: "GET",
  ifNoneMatch: null,
  ifModifiedSince: null,
  ifRange: null,
  range: null,
  etag: ETAG,
  lastModified: MODIFIED,
  size: 1000,
};
const AT = formatHttpDate(MODIFIED);
const BEFORE = formatHttpDate(MODIFIED - 1000);
const AFTER = formatHttpDate(MODIFIED + 1000);
const OK: ConditionalDecision = { status: 200 };
const NOT_MODIFIED: ConditionalDecision = { status: 304 };
const RANGE_0_9: ConditionalDecision = { status: 206, start: 0, end: 9 };
const BAD_RANGE: ConditionalDecision = { status: 416 };

Deno.test("decideConditional() follows RFC 9110 §13.2.2", async (t) => {
  const cases: [string, Partial<ConditionalInput>, ConditionalDecision][] = [
    ["no conditions", {}, OK],
    // If-None-Match
    ["INM match", { ifNoneMatch: ETAG }, NOT_MODIFIED],
    ["INM weak match", { ifNoneMatch: 'W/"abc"' }, NOT_MODIFIED],
    ["INM in list", { ifNoneMatch: '"x", "abc"' }, NOT_MODIFIED],
    ["INM star", { ifNoneMatch: "*" }, NOT_MODIFIED],
    ["INM star, no etag", { ifNoneMatch: "*", etag: null }, NOT_MODIFIED],
    ["INM no etag", { ifNoneMatch: ETAG, etag: null }, OK],
    ["INM mismatch", { ifNoneMatch: '"old"' }, OK],
    ["INM malformed", { ifNoneMatch: "abc" }, OK],
    ["INM HEAD", { method: "HEAD", ifNoneMatch: ETAG }, NOT_MODIFIED],
    ["INM POST", { method: "POST", ifNoneMatch: ETAG }, OK],
    ["INM lower-case get", { method: "get", ifNoneMatch: ETAG }, OK],
    // If-None-Match wins over If-Modified-Since.
    ["INM mismatch, IMS fresh", {
      ifNoneMatch: '"old"',
      ifModifiedSince: AFTER,
    }, OK],
    ["INM malformed, IMS fresh", {
      ifNoneMatch: "garbage",
      ifModifiedSince: AFTER,
    }, OK],
    ["INM match, IMS stale", {
      ifNoneMatch: ETAG,
      ifModifiedSince: BEFORE,
    }, NOT_MODIFIED],
    ["INM blank counts as absent", {
      ifNoneMatch: "  ",
      ifModifiedSince: AT,
    }, NOT_MODIFIED],
    // If-Modified-Since
    ["IMS equal", { ifModifiedSince: AT }, NOT_MODIFIED],
    ["IMS later", { ifModifiedSince: AFTER }, NOT_MODIFIED],
    ["IMS earlier", { ifModifiedSince: BEFORE }, OK],
    ["IMS sub-second mtime", {
      ifModifiedSince: AT,
      lastModified: MODIFIED + 999,
    }, NOT_MODIFIED],
    ["IMS asctime", {
      ifModifiedSince: "Thu Jan 15 12:00:00 2026",
    }, NOT_MODIFIED],
    ["IMS garbage", { ifModifiedSince: "tomorrow" }, OK],
    ["IMS empty", { ifModifiedSince: "" }, OK],
    ["IMS no mtime", { ifModifiedSince: AFTER, lastModified: null }, OK],
    ["IMS HEAD", { method: "HEAD", ifModifiedSince: AT }, NOT_MODIFIED],
    ["IMS POST", { method: "POST", ifModifiedSince: AT }, OK],
    // Range
    ["range", { range: "bytes=0-9" }, RANGE_0_9],
    ["range suffix", { range: "bytes=-10" }, {
      status: 206,
      start: 990,
      end: 999,
    }],
    ["range unsatisfiable", { range: "bytes=1000-" }, BAD_RANGE],
    ["range empty file", { range: "bytes=0-", size: 0 }, BAD_RANGE],
    ["range multi", { range: "bytes=0-1,3-4" }, OK],
    ["range garbage", { range: "lines=1-2" }, OK],
    ["range HEAD", { method: "HEAD", range: "bytes=0-9" }, OK],
    ["range POST", { method: "POST", range: "bytes=0-9" }, OK],
    ["range after stale INM", {
      ifNoneMatch: '"old"',
      range: "bytes=0-9",
    }, RANGE_0_9],
    [
      "304 before range",
      { ifNoneMatch: ETAG, range: "bytes=0-9" },
      NOT_MODIFIED,
    ],
    [
      "304 before 416",
      { ifModifiedSince: AT, range: "bytes=5000-" },
      NOT_MODIFIED,
    ],
    // If-Range
    ["IR etag", { ifRange: ETAG, range: "bytes=0-9" }, RANGE_0_9],
    ["IR etag spaces", { ifRange: ` ${ETAG} `, range: "bytes=0-9" }, RANGE_0_9],
    ["IR etag mismatch", { ifRange: '"old"', range: "bytes=0-9" }, OK],
    ["IR weak etag", { ifRange: 'W/"abc"', range: "bytes=0-9" }, OK],
    ["IR our weak etag", {
      ifRange: 'W/"abc"',
      etag: 'W/"abc"',
      range: "bytes=0-9",
    }, OK],
    ["IR etag, no etag", {
      ifRange: ETAG,
      etag: null,
      range: "bytes=0-9",
    }, OK],
    ["IR date equal", { ifRange: AT, range: "bytes=0-9" }, RANGE_0_9],
    ["IR date sub-second mtime", {
      ifRange: AT,
      lastModified: MODIFIED + 500,
      range: "bytes=0-9",
    }, RANGE_0_9],
    ["IR date later", { ifRange: AFTER, range: "bytes=0-9" }, OK],
    ["IR date earlier", { ifRange: BEFORE, range: "bytes=0-9" }, OK],
    ["IR date, no mtime", {
      ifRange: AT,
      lastModified: null,
      range: "bytes=0-9",
    }, OK],
    ["IR garbage", { ifRange: "garbage", range: "bytes=0-9" }, OK],
    ["IR empty", { ifRange: "", range: "bytes=0-9" }, OK],
    ["IR list", { ifRange: `${ETAG}, ${ETAG}`, range: "bytes=0-9" }, OK],
    ["IR mismatch skips 416", { ifRange: '"old"', range: "bytes=5000-" }, OK],
    ["IR without range", { ifRange: '"old"' }, OK],
  ];
  for (const [name, overrides, expected] of cases) {
    await t.step(name, () => {
      assert.deepEqual(decideConditional({ ...BASE, ...overrides }), expected);
    });
  }
});
