/**
 * The root site's welcome page on `/` for every host (a site's own `/` wins):
 * it tells a new operator what is running and how to add a site.
 */
import { hosts, html } from "sandflare";

// Shown as code: html`` escapes it.
const EXAMPLE = 'import { hosts, html } from "sandflare";\n\n' +
  'hosts.any.add("/", (req) => html`<h1>Hello from ${req.host}</h1>`);';

hosts.any.add("/", (req) =>
  html`
    <!DOCTYPE html>
    <html lang="en">
      <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width">
        <title>Sandflare</title>
        <style>
    body{font:16px/1.55 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem;color:#222}
    code,pre{background:#f4f4f4;border-radius:4px}code{padding:.1rem .3rem}pre{padding:.8rem 1rem;overflow:auto}
    h1{font-weight:600;margin-bottom:.2rem}.sub{color:#666;margin-top:0}
    </style>
      </head>
      <body>
        <h1>Sandflare is running</h1>
        <p
          class="sub">No site has claimed <code>/</code> on <code>${req.host ||
            "this host"}</code> yet.</p>
        <h2>Add a site</h2>
        <p>Create a folder in the sites folder (<code>sites/</code> by default) with a manifest and a script:</p>
        <pre><code>sites/shop/site.json          { "hosts": ["*"] }
    sites/shop/autorun/ar_shop.ts</code></pre>
        <pre><code>${EXAMPLE}</code></pre>
        <p>It is live as soon as you save: every site runs in a sandbox of its own, with only the
    permissions its <code>site.json</code> asks for.</p>
        <h2>See what is running</h2>
        <ul>
          <li><code>deno task cli sites</code> lists every site with its hosts, pages and permissions.</li>
          <li><a href="/stats">/stats</a> (from this machine only) shows requests, latency, restarts and memory per site.</li>
        </ul>
      </body>
    </html>
  `);
