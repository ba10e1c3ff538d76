import assert from "node:assert/strict";
import { escapeHtml, html, raw, type SafeHtml } from "./html.ts";

Deno.test("html`` escapes every interpolated value unless marked raw", async (t) => {
  const cases: [string, SafeHtml, string][] = [
    [
      "text",
      html`<p>${"<script>alert(1)</script>"}</p>`,
      "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>",
    ],
    [
      "attribute quotes",
      html`<a title="${`"x" 'y'`}">`,
      '<a title="&quot;x&quot; &#39;y&#39;">',
    ],
    ["ampersand", html`${"a & b"}`, "a &amp; b"],
    ["numbers", html`${42} ${1.5}`, "42 1.5"],
    ["nothing", html`[${null}${undefined}${false}]`, "[]"],
    ["zero and true are text", html`${0}${true}`, "0true"],
    ["raw", html`<div>${raw("<b>x</b>")}</div>`, "<div><b>x</b></div>"],
    [
      "nested html stays markup",
      html`<ul>${html`<li>${"<i>"}</li>`}</ul>`,
      "<ul><li>&lt;i&gt;</li></ul>",
    ],
    [
      "arrays are joined",
      html`${["<a>", html`<b>`, raw("<c>")]}`,
      "&lt;a&gt;<b><c>",
    ],
    ["nested arrays", html`${[["<", [">"]]]}`, "&lt;&gt;"],
    [
      "objects use their string",
      html`${{ toString: () => "<obj>" }}`,
      "&lt;obj&gt;",
    ],
  ];
  for (const [name, got, want] of cases) {
    await t.step(name, () => assert.equal(String(got), want));
  }
});

Deno.test("escapeHtml() escapes the five HTML metacharacters", () => {
  assert.equal(escapeHtml(`&<>"'`), "&amp;&lt;&gt;&quot;&#39;");
  assert.equal(escapeHtml("plain"), "plain");
});
