import assert from "node:assert/strict";
import { formatSize, parseSize } from "./sizes.ts";

const KIB = 1024;
const MIB = 1024 ** 2;
const GIB = 1024 ** 3;

Deno.test("parseSize() accepts bytes with every unit", async (t) => {
  const cases: [string, number][] = [
    ["0", 0],
    ["512", 512],
    ["512B", 512],
    ["512b", 512],
    ["1K", KIB],
    ["1k", KIB],
    ["1KB", 1000],
    ["1kb", 1000],
    ["1KiB", KIB],
    ["1kib", KIB],
    ["1M", MIB],
    ["1MB", 1_000_000],
    ["10MiB", 10 * MIB],
    ["64mib", 64 * MIB],
    ["2G", 2 * GIB],
    ["2GB", 2_000_000_000],
    ["2GiB", 2 * GIB],
    ["007", 7],
  ];
  for (const [text, bytes] of cases) {
    await t.step(text, () => assert.equal(parseSize(text), bytes));
  }
});

Deno.test("parseSize() computes decimals exactly and rounds down", async (t) => {
  const cases: [string, number][] = [
    ["1.5K", 1536],
    ["1.5KB", 1500],
    ["4.35KB", 4350],
    ["0.5MiB", MIB / 2],
    ["1.1B", 1],
    ["0.9", 0],
    ["0.0001K", 0],
    ["1.000000000000000000001G", GIB],
  ];
  for (const [text, bytes] of cases) {
    await t.step(text, () => assert.equal(parseSize(text), bytes));
  }
});

Deno.test("parseSize() rejects what is not a size", async (t) => {
  const cases = [
    "",
    " ",
    "12X",
    "-1",
    "+1",
    "1 K",
    " 1K",
    "1K ",
    "K",
    ".5K",
    "1.",
    "1e3",
    "0x10",
    "Infinity",
    "NaN",
    "1KK",
    "1Ki",
    "1TB",
    "1,000",
  ];
  for (const text of cases) {
    await t.step(JSON.stringify(text), () => {
      assert.throws(() => parseSize(text), {
        name: "RangeError",
        message: `${
          JSON.stringify(text)
        } is not a size: use a number of bytes with an optional unit K, KB, KiB, M, MB, MiB, G, GB or GiB (e.g. 10MiB)`,
      });
    });
  }
});

Deno.test("parseSize() rejects sizes beyond a safe integer", async (t) => {
  await t.step("largest safe integer passes", () => {
    assert.equal(
      parseSize(String(Number.MAX_SAFE_INTEGER)),
      Number.MAX_SAFE_INTEGER,
    );
  });
  for (
    const text of ["9007199254740992", "8388608GiB", "99999999999999999999"]
  ) {
    await t.step(text, () => {
      assert.throws(() => parseSize(text), {
        name: "RangeError",
        message: new RegExp(`^"${text}" is too large`),
      });
    });
  }
});

Deno.test("formatSize() picks the exact unit with the smallest count", async (t) => {
  const cases: [number, string][] = [
    [0, "0B"],
    [1, "1B"],
    [1023, "1023B"],
    [1000, "1KB"],
    [1024, "1KiB"],
    [1536, "1536B"],
    [10 * MIB, "10MiB"],
    [64 * MIB, "64MiB"],
    [3 * GIB, "3GiB"],
    [1_500_000, "1500KB"],
    [2_000_000_000, "2GB"],
  ];
  for (const [bytes, text] of cases) {
    await t.step(text, () => assert.equal(formatSize(bytes), text));
  }
});

Deno.test("formatSize() round-trips through parseSize()", () => {
  for (const bytes of [0, 1, 999, 1000, 1024, 4096, 123_456_789, 5 * GIB]) {
    assert.equal(parseSize(formatSize(bytes)), bytes);
  }
});

Deno.test("formatSize() rejects what is not a byte count", async (t) => {
  for (const bytes of [-1, 1.5, NaN, Infinity, 2 ** 53]) {
    await t.step(String(bytes), () => {
      assert.throws(() => formatSize(bytes), RangeError);
    });
  }
});
