/**
 * Requests during the first start. The server listens before its sites
 * have started, so that a port in use fails at once; a request that comes
 * meanwhile waits. Most need not wait for every site: a named host belongs
 * to the one site whose `site.json` (as granted) lists it, and only that
 * site and the root site decide what such a request gets (see "Hosts
 * belong to their site" in the README). So a request for a name that
 * exactly one site may claim, without `fallback`, waits only for that site
 * and the root site, and moves that site to the front of the start queue.
 * Anything else (a name nobody owns, one two sites may claim, one whose
 * owner lets `hosts.any` pages answer, an owner that failed to load) waits
 * for every site, as before.
 *
 * @module
 */

import { compileHostPattern, normalizeHost } from "../router/host_pattern.ts";
import type { SiteDefinition } from "./sites.ts";
import { ROOT_SITE } from "./sites.ts";

interface Claim {
  site: string;
  matches: (host: string) => boolean;
  fallback: boolean;
}

/** The first start's progress, as far as requests need it. */
export class FirstStart {
  #hurry: (site: string) => void;
  #serving: (site: string) => boolean;
  #publish: () => void;
  #claims: Claim[] = [];
  #started = new Map<string, PromiseWithResolvers<void>>();
  #begun = Promise.withResolvers<void>();
  #all = Promise.withResolvers<void>();
  #ended = false;
  /** Sites a request waits for. */
  #wanted = new Set<string>();
  /** Sites started since the last publish. */
  #unpublished = false;

  /**
   * `hurry`: moves a site's start ahead of the others. `serving`: whether a
   * site loaded (is served). `publish`: rebuilds the router from the sites
   * started so far.
   */
  constructor(
    hurry: (site: string) => void,
    serving: (site: string) => boolean,
    publish: () => void,
  ) {
    this.#hurry = hurry;
    this.#serving = serving;
    this.#publish = publish;
  }

  /** The sites found, before any starts. */
  begin(defs: readonly SiteDefinition[]): void {
    for (const def of defs) {
      this.#started.set(def.name, Promise.withResolvers<void>());
      if (def.root) continue;
      for (const pattern of def.manifest.hosts) {
        if (pattern === "*") continue;
        this.#claims.push({
          site: def.name,
          matches: compileHostPattern(pattern),
          fallback: def.manifest.fallback.includes(pattern),
        });
      }
    }
    this.#begun.resolve();
  }

  /** `site` has started, or failed to. */
  started(site: string): void {
    this.#unpublished = true;
    this.#started.get(site)?.resolve();
  }

  /** Every site has started (and the router has them all). */
  end(): void {
    this.#ended = true;
    this.#all.resolve();
  }

  /** True when a request waits for `site`: it should not sleep at once. */
  wanted(site: string): boolean {
    return this.#wanted.has(site);
  }

  /** See {@linkcode Supervisor.readyFor}. */
  async readyFor(hostHeader: string): Promise<void> {
    if (this.#ended) return;
    await this.#begun.promise;
    if (this.#ended) return;
    const host = normalizeHost(hostHeader);
    const claims = this.#claims.filter((c) => c.matches(host));
    const owner = claims[0];
    const root = this.#started.get(ROOT_SITE);
    // Any of the owner's patterns with fallback may be the one the router
    // picks for this name (the one it registered pages on): then every
    // site's hosts.any pages may answer it.
    if (
      owner === undefined || root === undefined ||
      claims.some((c) => c.site !== owner.site || c.fallback)
    ) {
      return await this.#all.promise;
    }
    this.#wanted.add(owner.site);
    this.#hurry(owner.site);
    await Promise.all([
      root.promise,
      this.#started.get(owner.site)!.promise,
    ]);
    if (this.#ended) return;
    if (!this.#serving(owner.site) || !this.#serving(ROOT_SITE)) {
      // Without its owner the name is nobody's: every site on "*" counts.
      return await this.#all.promise;
    }
    if (this.#unpublished) {
      this.#unpublished = false;
      this.#publish();
    }
  }
}
