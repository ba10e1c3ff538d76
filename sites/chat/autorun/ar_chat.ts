/**
 * A chat room: the page asks for a nickname (kept in a session), then talks
 * to everyone else on /chat over a websocket.
 */
import { hosts, html, type SafeHtml, session, websocket } from "sandflare";

const room = websocket.register("/chat/ws", "chat");

// Who is who comes from the session the page started, never from what a
// client says. Each client stays with the worker it connected through, so
// a per-worker map of its nickname is enough; it holds the session's answer
// from the moment the client connects, so an early message waits for it.
const nicks = new Map<string, Promise<string | null>>();

room.onConnect = async (client) => {
  const nick = session.get(client).then((s) =>
    typeof s.data.nick === "string" ? s.data.nick : null
  );
  nicks.set(client.id, nick);
  if (await nick === null) client.close(4001, "Pick a nickname on /chat first");
};

room.onDisconnect = (client) => {
  nicks.delete(client.id);
};

room.onMessage = async (client, message) => {
  const nick = await nicks.get(client.id);
  if (typeof nick !== "string" || typeof message !== "string") return;
  const text = message.slice(0, 500);
  if (text.trim() === "") return;
  room.send(JSON.stringify({ nick, text, at: Date.now() }));
};

hosts.any.add("/chat", async (req, res) => {
  const s = await session.get(req, res);
  const nick = typeof s.data.nick === "string" ? s.data.nick : null;
  if (nick === null) {
    res.append(page(html`
      <form method="post" action="/chat/nick">
        <label>Pick a nickname <input name="nick" maxlength="32" required autofocus></label>
        <button>Join</button>
      </form>
    `));
    return;
  }
  res.append(page(html`
    <p>You are <b id="me">${nick}</b>.</p>
    <ul id="log"></ul>
    <form
      id="say"><input id="text" maxlength="500" autocomplete="off" placeholder="Say something" required> <button>Send</button></form>
    <script>
    const log = document.getElementById("log");
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/chat/ws", "chat");
    ws.onopen = () => document.body.dataset.connected = "yes";
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      const li = document.createElement("li");
      li.textContent = m.nick + ": " + m.text;
      log.append(li);
    };
    document.getElementById("say").onsubmit = (e) => {
      e.preventDefault();
      const input = document.getElementById("text");
      ws.send(input.value);
      input.value = "";
    };
    </script>
  `));
});

hosts.any.add("/chat/nick", async (req, res) => {
  const nick = ((await req.postParams()).nick ?? "").trim().slice(0, 32);
  const s = await session.get(req, res);
  if (nick !== "") {
    s.data.nick = nick;
    await s.save();
  }
  res.status = 303;
  res.setHeader("Location", "/chat");
}, "POST");

function page(body: SafeHtml): SafeHtml {
  return html`
    <!DOCTYPE html>
    <html lang="en">
      <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width">
        <title>Chat</title>
        <style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}#log{list-style:none;padding:0;min-height:8rem;border:1px solid #ddd;padding:.5rem}</style>
      </head>
      <body><h1>Chat</h1>${body}</body>
    </html>
  `;
}
