/**
 * The blog's posts, as plain data. A real site might read them from files
 * (with `"read": ["posts"]` in site.json); a module inside the site is the
 * simplest source, and saving it reloads the site like saving a script.
 */

/** One blog post. */
export interface Post {
  /** The URL part: /blog/post/SLUG (lower-case letters, digits, dashes). */
  slug: string;
  title: string;
  /** ISO date, YYYY-MM-DD: sorts as text. */
  date: string;
  /** Plain text; blank lines separate paragraphs. */
  body: string;
}

export const posts: Post[] = [
  {
    slug: "hello-sandflare",
    title: "Hello, Sandflare",
    date: "2026-01-05",
    body: `This blog is a Sandflare site: a folder with a site.json, a script in
autorun/ and a stylesheet under static/.

Every page is built with the html helper, so nothing a post says can turn
into markup by accident.`,
  },
  {
    slug: "escaping-b-tags",
    title: "Why <b>bold</b> stays plain text",
    date: "2026-02-14",
    body: `The title of this post contains a <b> tag. The html helper escapes
every interpolated value, so the page shows the tag as text instead of
making the words bold. The same goes for <script>alert(1)</script>:
it is shown, never run.

To insert trusted markup on purpose, wrap it in raw(...).`,
  },
  {
    slug: "patterns-and-404s",
    title: "Pattern routes & 404s",
    date: "2026-03-01",
    body: `A post's address is matched by a route pattern whose capture is the
slug. A slug that names no post answers 404 with res.halt.`,
  },
];
