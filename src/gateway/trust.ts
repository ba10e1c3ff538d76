/**
 * Resolving `--trusted-reverse-proxies` at start: addresses and CIDRs as
 * they are, host names through the system resolver (so /etc/hosts counts).
 *
 * @module
 */

import { lookup } from "node:dns/promises";
import { type IpMatcher, matchAny, parseTrustEntry } from "./proxy.ts";

/** The resolved trust list. */
export interface TrustedProxies {
  matches: IpMatcher;
  /** What each entry became, for the log. */
  described: string[];
}

/** A trust entry that cannot be used. */
export class TrustError extends Error {
  override name = "TrustError";
}

/**
 * Resolves the entries of `--trusted-reverse-proxies`.
 * @throws {TrustError} naming an entry that is invalid or does not resolve
 */
export async function resolveTrustedProxies(
  entries: string[],
  flag = "--trusted-reverse-proxies",
): Promise<TrustedProxies> {
  const matchers: IpMatcher[] = [];
  const described: string[] = [];
  for (const entry of entries) {
    const parsed = parseTrustEntry(entry);
    if (parsed === null) {
      throw new TrustError(
        `Invalid ${flag} entry ${
          JSON.stringify(entry)
        }: use an IP address, a CIDR such as 10.0.0.0/8 or fd00::/8, or a host name`,
      );
    }
    if (parsed.kind === "cidr") {
      matchers.push(parsed.matcher);
      described.push(entry);
      continue;
    }
    let addresses: string[];
    try {
      addresses = (await lookup(parsed.name, { all: true })).map((a) =>
        a.address
      );
    } catch (err) {
      throw new TrustError(
        `Cannot resolve ${flag} entry ${JSON.stringify(entry)}: ${
          (err as Error).message
        }`,
      );
    }
    if (parsed.name === "localhost") addresses.push("127.0.0.1", "::1");
    const unique = [...new Set(addresses)];
    for (const address of unique) {
      const m = parseTrustEntry(address);
      if (m !== null && m.kind === "cidr") matchers.push(m.matcher);
    }
    described.push(`${entry} (${unique.join(", ")})`);
  }
  return { matches: matchAny(matchers), described };
}
