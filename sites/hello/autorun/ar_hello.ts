import { hosts } from "sandflare";

hosts.any.add("/hello", (_req, res) => res.append("hello world"));

hosts.any.addPattern("/hello/([^/]+)", (req, res, name) => {
  res.json({ hello: name, peer: req.peer });
});

hosts.get("hello.localhost").add("/", (req, res) => {
  res.append(`<h1>Hello from ${req.host}</h1>`);
});
