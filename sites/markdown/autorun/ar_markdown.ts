/**
 * Markdown pages rendered with marked, an npm package the site lists in its
 * own deno.json: /markdown renders pages/index.md, /markdown/TEXT a heading.
 */
import { hosts, html, raw, type SafeHtml } from "sandflare";
import { marked } from "marked";

// A site may always read its own folder: the page is read on each request,
// so an edit shows at once.
const INDEX = new URL("../pages/index.md", import.meta.url);

/** Markdown the site wrote itself, as HTML (marked keeps inline HTML). */
function render(markdown: string): SafeHtml {
  return raw(marked.parse(markdown, { async: false }));
}

function layout(title: string, content: SafeHtml): SafeHtml {
  return html`
    <!DOCTYPE html>
    <html lang="en">
      <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width">
        <title>${title}</title>
        <style>
          body{font:16px/1.55 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem;color:#222}
          code,pre{background:#f4f4f4;border-radius:4px}code{padding:.1rem .3rem}pre{padding:.8rem 1rem;overflow:auto}
        </style>
      </head>
      <body>${content}</body>
    </html>
  `;
}

hosts.any.add(
  "/markdown",
  async () => layout("Markdown", render(await Deno.readTextFile(INDEX))),
);

// A visitor's text is escaped first: marked keeps HTML as it is.
hosts.any.addPattern("/markdown/([a-z0-9-]+)", (_req, _res, slug) => {
  const title = slug.replaceAll("-", " ");
  return layout(
    title,
    html`${
      render(`# ${escapeMarkdown(title)}`)
    }<p><a href="/markdown">Back</a></p>`,
  );
});

/** Letters, digits and spaces only reach marked (the pattern allows no more). */
function escapeMarkdown(text: string): string {
  return text.replace(/[^a-z0-9 ]/g, "");
}
