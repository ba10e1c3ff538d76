import assert from "node:assert/strict";
import {
  absoluteRuntimeMap,
  DependencyError,
  installTargets,
  literalAt,
  mappedSpecifier,
  mergeImportMaps,
  notInstalled,
  packageSubpaths,
  parseSiteConfig,
} from "./import_map.ts";

const SOURCE = { file: "/srv/sites/md/deno.json", siteDir: "/srv/sites/md" };

Deno.test("parseSiteConfig() makes entries absolute and drops the server's", () => {
  const map = parseSiteConfig(
    `{
      // comments and trailing commas, as Deno reads deno.json
      "imports": {
        "marked": "npm:marked@15.0.12",
        "@lib/": "./lib/",
        "/srv/sites/md/old/": "./new/",
        "std/": "https://deno.land/std@0.224.0/",
        "sandflare": "file:///opt/sandflare/src/sandbox/api.ts",
        "sandflare/testing": "file:///opt/sandflare/src/testing/mod.ts",
      },
      "scopes": { "vendor/": { "marked": "npm:marked@14.0.0" } },
      "compilerOptions": { "strict": true },
      "lock": false,
    }`,
    SOURCE,
  );
  assert.deepEqual(map, {
    imports: {
      "marked": "npm:marked@15.0.12",
      // A package's subpaths, as a deno.json maps them ("marked/x").
      "marked/": "npm:/marked@15.0.12/",
      "@lib/": "file:///srv/sites/md/lib/",
      "file:///srv/sites/md/old/": "file:///srv/sites/md/new/",
      "std/": "https://deno.land/std@0.224.0/",
    },
    scopes: {
      "file:///srv/sites/md/vendor/": {
        "marked": "npm:marked@14.0.0",
        "marked/": "npm:/marked@14.0.0/",
      },
    },
  });
});

Deno.test("a package's entry maps its subpaths, as a deno.json does", () => {
  assert.equal(
    packageSubpaths("hono", "npm:hono@4.13.19"),
    "npm:/hono@4.13.19/",
  );
  assert.equal(
    packageSubpaths("@std/path", "jsr:@std/path@1.0.8"),
    "jsr:/@std/path@1.0.8/",
  );
  assert.equal(packageSubpaths("x", "npm:/x@1"), "npm:/x@1/");
  assert.equal(packageSubpaths("x/", "npm:/x@1/"), null);
  assert.equal(packageSubpaths("x", "npm:x@1/sub"), null);
  assert.equal(packageSubpaths("x", "https://e.test/x.ts"), null);
  const map = parseSiteConfig(
    `{"imports": {"hono": "npm:hono@4", "hono/": "./mine/"}}`,
    SOURCE,
  );
  assert.equal(map.imports["hono/"], "file:///srv/sites/md/mine/");
});

Deno.test("parseSiteConfig() refuses what a site may not map, naming file and field", async (t) => {
  const cases: [string, string, RegExp][] = [
    ["bad JSON", `{"imports": {`, /^\/srv\/sites\/md\/deno\.json:1:14: /],
    ["not an object", `[1]`, /deno\.json: expected a JSON object/],
    [
      "imports not an object",
      `{"imports": ["npm:x"]}`,
      /deno\.json: "imports" must be an object of specifiers to specifiers, such as \{"marked": "npm:marked@15\.0\.12"/,
    ],
    [
      "a target not a string",
      `{"imports": {"x": 1}}`,
      /deno\.json: "imports"\."x" must be a specifier string \(npm:, jsr:, https: or node: specifiers, or a path inside the site folder\), got 1$/,
    ],
    [
      "a bare target",
      `{"imports": {"x": "marked"}}`,
      /"imports"\."x" maps to "marked", which is neither a URL nor a path/,
    ],
    [
      "an unknown scheme",
      `{"imports": {"x": "data:text/javascript,1"}}`,
      /"imports"\."x" maps to "data:text\/javascript,1"; use npm:, jsr:/,
    ],
    [
      "out of the folder, relative",
      `{"imports": {"x/": "../other/"}}`,
      /"imports"\."x\/" leads to file:\/\/\/srv\/sites\/other\/, outside the site folder/,
    ],
    [
      "out of the folder, absolute",
      `{"imports": {"x": "file:///opt/sandflare/src/gateway/gateway.ts"}}`,
      /"imports"\."x" leads to file:\/\/\/opt\/sandflare\/src\/gateway\/gateway\.ts, outside/,
    ],
    [
      "a key out of the folder",
      `{"imports": {"file:///opt/sandflare/src/sandbox/confine.ts": "./x.ts"}}`,
      /"imports"\."file:\/\/\/opt\/sandflare\/src\/sandbox\/confine\.ts" leads to .*, outside/,
    ],
    [
      "a scope out of the folder",
      `{"scopes": {"/opt/sandflare/src/": {}}}`,
      /"scopes"\."\/opt\/sandflare\/src\/" leads to file:\/\/\/opt\/sandflare\/src\/, outside/,
    ],
    [
      "a scope not an object",
      `{"scopes": {"./a/": 1}}`,
      /"scopes"\."\.\/a\/" must be an object of specifiers/,
    ],
    [
      "node:worker_threads as a key",
      `{"scopes": {"./": {"node:worker_threads": "node:worker_threads"}}}`,
      /"scopes"\."\.\/"\."node:worker_threads": node:worker_threads cannot be remapped/,
    ],
    [
      "a node: built-in as a key (the runtime's modules would get it)",
      `{"imports": {"node:os": "./os.ts"}}`,
      /"imports"\."node:os": a site may map bare names \(such as "marked"\), https: URLs and paths in its folder, not node: specifiers/,
    ],
    [
      "an npm: target climbing out of its package",
      `{"imports": {"ms": "npm:ms@2.1.3/../../secret.mjs"}}`,
      /"imports"\."ms" maps to "npm:ms@2\.1\.3\/\.\.\/\.\.\/secret\.mjs", a package path with a "\." or "\.\." segment/,
    ],
    [
      "an npm: specifier as a key",
      `{"imports": {"npm:x@1": "./x.ts"}}`,
      /"imports"\."npm:x@1": .*not npm: specifiers/,
    ],
    [
      "a data: URL as a key",
      `{"imports": {"data:text/javascript,1": "./x.ts"}}`,
      /"imports"\."data:text\/javascript,1": .*not data: specifiers/,
    ],
    [
      "more than 1000 entries",
      JSON.stringify({
        imports: Object.fromEntries(
          Array.from({ length: 1001 }, (_, i) => [`k${i}`, "npm:x@1"]),
        ),
      }),
      /deno\.json: more than 1000 entries under "imports" and "scopes"; a site may map at most 1000/,
    ],
    [
      "nested too deeply",
      `{"imports": ${"[".repeat(100_000)}`,
      /deno\.json: (nested too deeply to read|1:)/,
    ],
    [
      "node:worker_threads as a target",
      `{"imports": {"wt": "node:worker_threads"}}`,
      /"imports"\."wt": node:worker_threads is not available to sites/,
    ],
    [
      "a prefix to a module",
      `{"imports": {"lib/": "./lib.ts"}}`,
      /"imports"\."lib\/" ends with "\/", so its target must too/,
    ],
    [
      "an empty specifier",
      `{"imports": {"": "npm:x@1"}}`,
      /deno\.json: "imports" has an empty specifier/,
    ],
    [
      "importMap",
      `{"importMap": "./map.json"}`,
      /"importMap" is not supported for a site/,
    ],
  ];
  for (const [name, text, message] of cases) {
    await t.step(name, () => {
      assert.throws(
        () => parseSiteConfig(text, SOURCE),
        (err: unknown) => {
          assert.ok(err instanceof DependencyError);
          assert.match(err.message, message);
          assert.ok(err.message.startsWith(SOURCE.file), err.message);
          return true;
        },
      );
    });
  }
});

Deno.test("mergeImportMaps() lets the runtime win, in imports and in scopes", () => {
  const runtime = absoluteRuntimeMap(
    {
      imports: { sandflare: "./src/sandbox/api.ts", "./src/": "./src/x/" },
      scopes: { "./src/": { "./src/": "./src/" } },
    },
    "file:///opt/sandflare/deno.sandbox.jsonc",
  );
  assert.deepEqual(runtime.imports, {
    sandflare: "file:///opt/sandflare/src/sandbox/api.ts",
    "file:///opt/sandflare/src/": "file:///opt/sandflare/src/x/",
  });
  const merged = mergeImportMaps({
    imports: { "file:///opt/sandflare/src/": "file:///site/", a: "npm:a@1" },
    scopes: { "file:///opt/sandflare/src/": { b: "npm:b@1" } },
  }, runtime);
  assert.equal(
    merged.imports["file:///opt/sandflare/src/"],
    "file:///opt/sandflare/src/x/",
  );
  assert.equal(merged.imports.a, "npm:a@1");
  assert.deepEqual(merged.scopes["file:///opt/sandflare/src/"], {
    b: "npm:b@1",
    "file:///opt/sandflare/src/": "file:///opt/sandflare/src/",
  });
});

Deno.test("installTargets() names the packages and remote modules of a map", () => {
  assert.deepEqual(
    installTargets({
      imports: {
        marked: "npm:marked@15.0.12",
        "preact/": "npm:preact@10.26.0/",
        path: "jsr:@std/path@1",
        "std/": "https://deno.land/std@0.224.0/",
        one: "https://example.com/one.ts",
        "@lib/": "file:///srv/sites/md/lib/",
        fs: "node:fs",
      },
      scopes: { "file:///srv/": { marked: "npm:marked@15.0.12" } },
    }),
    [
      "npm:marked@15.0.12",
      "npm:preact@10.26.0",
      "jsr:@std/path@1",
      "https://example.com/one.ts",
    ],
  );
});

Deno.test("notInstalled() reads Deno 2.9.6's messages for what is not in the cache", async (t) => {
  const cases: [string, string | null | undefined][] = [
    ["Failed caching npm package 'marked@15.0.11'", "npm:marked@15.0.11"],
    [
      'Failed loading https://registry.npmjs.org/marked for package "marked"',
      "npm:marked",
    ],
    [
      "TypeError: JSR package manifest for '@std/path' failed to load. Specifier not found in cache: \"https://jsr.io/@std/path/meta.json\", --cached-only is specified.",
      "jsr:@std/path",
    ],
    [
      'Specifier not found in cache: "https://deno.land/std@0.224.0/path/mod.ts", --cached-only is specified.',
      "https://deno.land/std@0.224.0/path/mod.ts",
    ],
    ["npm specifiers were requested; but --no-npm is specified", null],
    [
      'A remote specifier was requested: "https://x.test/a.ts", but --no-remote is specified.',
      "https://x.test/a.ts",
    ],
    ['Module not found "file:///srv/sites/md/x.ts".', undefined],
    ["SyntaxError: Unexpected token", undefined],
  ];
  for (const [message, expected] of cases) {
    await t.step(message, () => assert.equal(notInstalled(message), expected));
  }
});

Deno.test("literalAt() and mappedSpecifier() find what the code wrote and means", () => {
  const code =
    `import { a } from "./a.ts";\nimport { marked } from 'marked';\n`;
  assert.equal(literalAt(code, 2, 24), "marked");
  assert.equal(literalAt(code, 1, 1), null);
  assert.equal(literalAt(code, 9, 1), null);
  const map = {
    imports: { marked: "npm:marked@15.0.12", "std/": "jsr:@std/" },
    scopes: {},
  };
  assert.equal(mappedSpecifier("marked", map), "npm:marked@15.0.12");
  assert.equal(mappedSpecifier("std/path", map), "jsr:@std/path");
  assert.equal(mappedSpecifier("npm:x@1", map), "npm:x@1");
  assert.equal(mappedSpecifier("other", map), "other");
});
