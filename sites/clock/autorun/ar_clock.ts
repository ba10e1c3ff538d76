import { hosts, html } from "sandflare";

// Server-sent events: the time, once a second, for as long as the browser
// listens. Each event reaches it as it is written; when the browser goes
// away, the stream is cancelled and the timer stops.
hosts.any.add("/clock/events", () => {
  const encoder = new TextEncoder();
  let timer: ReturnType<typeof setInterval> | undefined;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const tick = () =>
        controller.enqueue(
          encoder.encode(`data: ${new Date().toISOString()}\n\n`),
        );
      tick();
      timer = setInterval(tick, 1000);
    },
    cancel() {
      clearInterval(timer);
    },
  });
  return new Response(body, {
    headers: {
      "content-type": "text/event-stream",
      "cache-control": "no-store",
    },
  });
});

hosts.any.add("/clock", () =>
  html`
    <!DOCTYPE html>
    <meta charset="utf-8">
    <title>Clock</title>
    <h1>Server time: <span id="now">…</span></h1>
    <script>
          const now = document.getElementById("now");
          new EventSource("/clock/events").onmessage = (event) => {
            now.textContent = event.data;
          };
        </script>
  `);
