/**
 * Byte sizes as operators write them on the command line: `512`, `1.5K`,
 * `10MiB`, `1GB`.
 *
 * `K`, `KiB`, `M`, `MiB`, `G` and `GiB` are powers of 1024; `KB`, `MB` and
 * `GB` are powers of 1000; a bare number or `B` is bytes. Units ignore case.
 *
 * @module
 */

/** How a size is written, for error and help messages. */
export const SIZE_SYNTAX =
  "a number of bytes with an optional unit K, KB, KiB, M, MB, MiB, G, GB or GiB (e.g. 10MiB)";

const KIB = 1024n;
const UNIT_BYTES: ReadonlyMap<string, bigint> = new Map([
  ["", 1n],
  ["b", 1n],
  ["k", KIB],
  ["kb", 1000n],
  ["kib", KIB],
  ["m", KIB ** 2n],
  ["mb", 1000n ** 2n],
  ["mib", KIB ** 2n],
  ["g", KIB ** 3n],
  ["gb", 1000n ** 3n],
  ["gib", KIB ** 3n],
]);

const SIZE_REGEXP = /^(\d+)(?:\.(\d+))?([a-z]*)$/i;

/**
 * Parses a size such as `512`, `1K`, `1KB`, `1.5MiB` or `2g` into bytes.
 *
 * Decimals are computed exactly and rounded down to whole bytes.
 *
 * @param text The size as written.
 * @returns The number of bytes, a safe integer.
 * @throws {RangeError} When `text` is not a size or is too large.
 *
 * @example Parse sizes
 * ```ts
 * import { parseSize } from "./sizes.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseSize("10MiB"), 10_485_760);
 * assert.equal(parseSize("1KB"), 1000);
 * assert.equal(parseSize("1.5k"), 1536);
 * ```
 */
export function parseSize(text: string): number {
  const match = SIZE_REGEXP.exec(text);
  const unit = UNIT_BYTES.get(match?.[3]?.toLowerCase() ?? "?");
  if (match === null || unit === undefined) {
    throw new RangeError(
      `${JSON.stringify(text)} is not a size: use ${SIZE_SYNTAX}`,
    );
  }
  const whole = match[1] ?? "0";
  const fraction = match[2] ?? "";
  const scale = 10n ** BigInt(fraction.length);
  const bytes = BigInt(whole + fraction) * unit / scale;
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(
      `${
        JSON.stringify(text)
      } is too large: sizes go up to ${Number.MAX_SAFE_INTEGER} bytes`,
    );
  }
  return Number(bytes);
}

const FORMAT_UNITS: readonly (readonly [string, number])[] = [
  ["GiB", 1024 ** 3],
  ["MiB", 1024 ** 2],
  ["KiB", 1024],
  ["GB", 1000 ** 3],
  ["MB", 1000 ** 2],
  ["KB", 1000],
];

/**
 * Formats a byte count with the unit that divides it exactly into the
 * smallest number (binary units win ties), so that
 * `parseSize(formatSize(n)) === n`.
 *
 * @param bytes A non-negative safe integer.
 * @returns The size, such as `"10MiB"`, `"1KB"` or `"1023B"`.
 * @throws {RangeError} When `bytes` is not a non-negative safe integer.
 *
 * @example Format sizes
 * ```ts
 * import { formatSize } from "./sizes.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatSize(10_485_760), "10MiB");
 * assert.equal(formatSize(1000), "1KB");
 * assert.equal(formatSize(1023), "1023B");
 * ```
 */
export function formatSize(bytes: number): string {
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new RangeError(
      `Cannot format ${bytes} as a size: expected a non-negative whole number of bytes`,
    );
  }
  let best = `${bytes}B`;
  let bestCount = bytes;
  for (const [unit, size] of FORMAT_UNITS) {
    const count = bytes / size;
    if (bytes > 0 && Number.isInteger(count) && count < bestCount) {
      best = `${count}${unit}`;
      bestCount = count;
    }
  }
  return best;
}
