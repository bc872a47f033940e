// A loopback pass-through proxy that adds `Authorization: Bearer <token>` to requests
// that carry none, because the conformance suite (0.1.16) cannot send headers of its own
// and `serve` requires every client to authenticate.
//
// Everything else goes through untouched, in both directions and unbuffered (SSE streams):
// method, path, body, and every request header *including Host and Origin*, so the server's
// DNS-rebinding guard sees exactly what the suite sent.
//
// usage: node auth-proxy.mjs LISTEN_PORT UPSTREAM_PORT   (token in $INTEROP_PROXY_TOKEN)
import http from "node:http";

const [listenPort, upstreamPort] = process.argv.slice(2).map(Number);
const token = process.env.INTEROP_PROXY_TOKEN;
if (!listenPort && listenPort !== 0 || !upstreamPort || !token) {
  console.error("usage: INTEROP_PROXY_TOKEN=... node auth-proxy.mjs LISTEN_PORT UPSTREAM_PORT");
  process.exit(2);
}

const agent = new http.Agent({ keepAlive: true });
const server = http.createServer((req, res) => {
  const headers = { ...req.headers };
  if (!headers.authorization) headers.authorization = `Bearer ${token}`;
  const upstream = http.request(
    { host: "127.0.0.1", port: upstreamPort, method: req.method, path: req.url, headers, agent },
    (up) => {
      res.writeHead(up.statusCode, up.statusMessage, up.rawHeaders);
      res.flushHeaders();
      up.pipe(res);
    },
  );
  upstream.on("error", (err) => {
    if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
    res.end(`auth-proxy: upstream error: ${err.message}`);
  });
  res.on("close", () => upstream.destroy());
  req.pipe(upstream);
});
server.listen(listenPort, "127.0.0.1", () => {
  console.error(`auth-proxy listening on http://127.0.0.1:${server.address().port} -> 127.0.0.1:${upstreamPort}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
