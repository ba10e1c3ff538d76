// An unmodified Hono app: Sandflare runs its `export default` (a fetch
// handler) for every path of hono.localhost. Nothing here knows Sandflare.
import { Hono } from "hono";
import { getCookie, setCookie } from "hono/cookie";

const app = new Hono();

app.get("/", (c) => c.html("<h1>Hello from Hono</h1>"));
app.get("/hello", (c) => c.text("Hello Hono!"));
app.get("/users/:id", (c) => c.json({ id: c.req.param("id") }));
app.post("/echo", async (c) => c.json({ got: await c.req.json() }));
app.get("/login", (c) => {
  setCookie(c, "user", "ann", { path: "/", httpOnly: true });
  setCookie(c, "theme", "dark", { path: "/" });
  return c.text("two cookies set");
});
app.get("/whoami", (c) => c.text(`user ${getCookie(c, "user") ?? "nobody"}`));
app.notFound((c) => c.text(`Hono has nothing at ${c.req.path}`, 404));

export default app;
