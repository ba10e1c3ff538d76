import assert from "node:assert/strict";
import db from "mime-db";
import { contentTypeFor, mimeDbTable, parseMimeTypes } from "./mime.ts";

Deno.test("parseMimeTypes() reads the mime.types format", async (t) => {
  const cases: [string, string, [string, string][]][] = [
    ["one type, several extensions", "text/html html htm", [
      ["html", "text/html"],
      ["htm", "text/html"],
    ]],
    [
      "tabs and runs of spaces",
      "image/png\t\tpng\n  image/jpeg   jpg  jpeg  ",
      [
        ["png", "image/png"],
        ["jpg", "image/jpeg"],
        ["jpeg", "image/jpeg"],
      ],
    ],
    [
      "comments and blank lines",
      "# text/plain txt\n\n   \n  # x/y z\ntext/css css",
      [
        ["css", "text/css"],
      ],
    ],
    ["CRLF line ends", "text/css css\r\ntext/plain txt\r\n", [
      ["css", "text/css"],
      ["txt", "text/plain"],
    ]],
    ["case is lowered", "Text/HTML HTML Htm", [
      ["html", "text/html"],
      ["htm", "text/html"],
    ]],
    ["a type without extensions adds nothing", "application/x-nothing\n", []],
    ["a line without a slash is skipped", "notatype foo bar\ntext/css css", [
      ["css", "text/css"],
    ]],
    ["a later line wins", "text/x-a dup\ntext/x-b dup", [["dup", "text/x-b"]]],
    ["empty text", "", []],
  ];
  for (const [name, text, want] of cases) {
    await t.step(name, () => {
      assert.deepEqual([...parseMimeTypes(text)], want);
    });
  }
});

Deno.test("contentTypeFor() finds the type by the last extension", async (t) => {
  const table = new Map([
    ["html", "text/html"],
    ["css", "text/css"],
    ["txt", "text/plain"],
    ["js", "text/javascript"],
    ["mjs", "application/javascript"],
    ["json", "application/json"],
    ["jsonld", "application/ld+json"],
    ["xml", "application/xml"],
    ["atom", "application/atom+xml"],
    ["svg", "image/svg+xml"],
    ["png", "image/png"],
    ["gz", "application/gzip"],
    ["wasm", "application/wasm"],
    ["dtd", "application/xml-dtd"],
    ["jsonx", "application/jsonx"],
    ["pdf", "application/pdf"],
  ]);
  const cases: [string, string][] = [
    ["index.html", "text/html; charset=utf-8"],
    ["style.css", "text/css; charset=utf-8"],
    ["notes.txt", "text/plain; charset=utf-8"],
    ["app.js", "text/javascript; charset=utf-8"],
    ["mod.mjs", "application/javascript; charset=utf-8"],
    ["data.json", "application/json; charset=utf-8"],
    ["doc.jsonld", "application/ld+json; charset=utf-8"],
    ["feed.xml", "application/xml; charset=utf-8"],
    ["feed.atom", "application/atom+xml; charset=utf-8"],
    ["logo.svg", "image/svg+xml; charset=utf-8"],
    ["logo.png", "image/png"],
    ["a.pdf", "application/pdf"],
    ["a.wasm", "application/wasm"],
    ["a.dtd", "application/xml-dtd"],
    ["a.jsonx", "application/jsonx"],
    ["archive.tar.gz", "application/gzip"],
    ["A.HTML", "text/html; charset=utf-8"],
    ["Logo.PnG", "image/png"],
    ["a/b.CSS", "text/css; charset=utf-8"],
    ["file.unknownext", "application/octet-stream"],
    ["README", "application/octet-stream"],
    ["Makefile", "application/octet-stream"],
    ["trailing.", "application/octet-stream"],
    ["", "application/octet-stream"],
    ["dir.html/README", "application/octet-stream"],
    ["static/v1.2/README", "application/octet-stream"],
    ["static/v1.2/page.html", "text/html; charset=utf-8"],
    ["/srv/site.d/css/site.css", "text/css; charset=utf-8"],
    ["a.png/b.txt", "text/plain; charset=utf-8"],
    ["html", "application/octet-stream"],
  ];
  for (const [name, want] of cases) {
    await t.step(JSON.stringify(name), () => {
      assert.equal(contentTypeFor(table, name), want);
    });
  }
});

Deno.test("mimeDbTable() maps the common extensions", async (t) => {
  const table = mimeDbTable();
  const cases: [string, string][] = [
    ["index.html", "text/html; charset=utf-8"],
    ["a.htm", "text/html; charset=utf-8"],
    ["a.css", "text/css; charset=utf-8"],
    ["a.js", "text/javascript; charset=utf-8"],
    ["a.mjs", "text/javascript; charset=utf-8"],
    ["a.json", "application/json; charset=utf-8"],
    ["a.txt", "text/plain; charset=utf-8"],
    ["a.svg", "image/svg+xml; charset=utf-8"],
    ["a.png", "image/png"],
    ["a.jpg", "image/jpeg"],
    ["a.gif", "image/gif"],
    ["a.webp", "image/webp"],
    ["a.wasm", "application/wasm"],
    ["a.pdf", "application/pdf"],
    ["a.woff2", "font/woff2"],
    ["a.mp4", "video/mp4"],
    ["a.zip", "application/zip"],
    ["a.no-such-ext", "application/octet-stream"],
  ];
  for (const [name, want] of cases) {
    await t.step(name, () => assert.equal(contentTypeFor(table, name), want));
  }

  await t.step("an extension under several types gets the IANA one", () => {
    const owners = new Map<string, { type: string; iana: boolean }[]>();
    for (const [type, entry] of Object.entries(db as Record<string, unknown>)) {
      const { extensions, source } = entry as {
        extensions?: string[];
        source?: string;
      };
      for (const ext of extensions ?? []) {
        const list = owners.get(ext) ?? [];
        list.push({ type, iana: source === "iana" });
        owners.set(ext, list);
      }
    }
    let checked = 0;
    for (const [ext, list] of owners) {
      const iana = list.filter((o) => o.iana);
      if (list.length < 2 || iana.length !== 1) continue;
      assert.equal(table.get(ext), iana[0]!.type, `extension ${ext}`);
      checked++;
    }
    assert.ok(checked > 5, `only ${checked} shared extensions checked`);
  });

  await t.step("every extension is lower case with no dot", () => {
    for (const ext of table.keys()) {
      assert.equal(ext, ext.toLowerCase());
      assert.ok(!ext.startsWith("."));
    }
  });
});
