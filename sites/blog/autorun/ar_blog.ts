/**
 * A small blog: an index, one page per post, a stylesheet and a JSON feed,
 * all under /blog so the root site's welcome page keeps `/`.
 */
import { hosts, html, type SafeHtml } from "sandflare";
// A module inside the site folder: imported like any other, and saving it
// reloads the site.
import { type Post, posts } from "../posts.ts";

/** Newest first; ISO dates sort as text. */
const newestFirst: Post[] = [...posts].sort((a, b) =>
  b.date.localeCompare(a.date)
);

/** The page around `content`; `html` escapes `title`, keeps `content`. */
function layout(title: string, content: SafeHtml): SafeHtml {
  return html`
    <!DOCTYPE html>
    <html lang="en">
      <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width">
        <title>${title} · Blog</title>
        <link rel="stylesheet" href="/blog/style.css">
      </head>
      <body>
        <header><a href="/blog">Blog</a></header>
        ${content}
      </body>
    </html>
  `;
}

/** One line of the index; `html` escapes the title (and every other value). */
function postLink(post: Post): SafeHtml {
  return html`<li>
    <time>${post.date}</time><a href="/blog/post/${post.slug}">${post.title}</a>
  </li>`;
}

// The index. A page may return `html`: it is appended to the reply.
hosts.any.add("/blog", () =>
  layout(
    "Posts",
    // An array of `html` values is joined.
    html`
      <h1>Posts</h1>
      <ul class="posts">${newestFirst.map(postLink)}</ul>
    `,
  ));

// One post. The pattern must match the whole path; its capture, the slug,
// follows `req, res`.
hosts.any.addPattern("/blog/post/([a-z0-9-]+)", (_req, res, slug) => {
  const post = posts.find((p) => p.slug === slug);
  // halt() throws: it stops the page and answers with the error page.
  if (post === undefined) return res.halt(404, `No post "${slug}"`);
  return layout(
    post.title,
    html`
      <article>
        <h1>${post.title}</h1>
        <p><time>${post.date}</time></p>
        ${post.body.split("\n\n").map((text) => html`<p>${text}</p>`)}
      </article>
    `,
  );
});

// The same posts for programs: res.json sets Content-Type and the body.
hosts.any.add("/blog/posts.json", (_req, res) => {
  res.json(
    newestFirst.map(({ slug, title, date }) => ({
      slug,
      title,
      date,
      url: `/blog/post/${slug}`,
    })),
  );
});
