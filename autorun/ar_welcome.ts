/**
 * The root site's welcome page on `/` for every host (a site's own `/` wins).
 */
import { hosts } from "sandflare";

hosts.any.add("/", (req, res) => {
  res.append(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Sandflare</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:4rem auto;padding:0 1rem;color:#222}code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}</style>
</head>
<body>
<h1>Sandflare is running</h1>
<p>No site has claimed <code>/</code> on <code>${
    escape(req.host || "this host")
  }</code> yet.</p>
<p>To add a site, create <code>sites/NAME/autorun/ar_main.ts</code>:</p>
<pre><code>import { hosts } from "sandflare";
hosts.any.add("/hello", (_req, res) =&gt; res.append("hello world"));</code></pre>
<p>and a <code>sites/NAME/site.json</code> with <code>{ "hosts": ["*"] }</code>.</p>
</body>
</html>
`);
});

function escape(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
