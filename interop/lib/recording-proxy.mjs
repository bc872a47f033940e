// A loopback pass-through proxy that records every HTTP exchange, to check what a client that
// cannot be instrumented (the Inspector CLI, a separate process) put on the wire.
//
// Requests and responses go through untouched and unbuffered (SSE streams flow as they come);
// each exchange is kept as { at (ms since start), method, headers, body (parsed JSON or
// null), status, responseHeaders, messages (the JSON-RPC messages of the response: the JSON
// body, or every SSE `data:` event) }.
//
//   const proxy = await startRecordingProxy("http://127.0.0.1:8790/mcp");
//   ... point the client at proxy.url ...
//   proxy.exchanges; await proxy.close();
import http from "node:http";

export async function startRecordingProxy(upstreamUrl) {
  const upstream = new URL(upstreamUrl);
  const started = Date.now();
  const exchanges = [];
  const agent = new http.Agent({ keepAlive: true });
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks);
      const exchange = { at: Date.now() - started, method: req.method, headers: req.headers, body: parseJson(raw.toString()) };
      exchanges.push(exchange);
      const up = http.request(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: upstream.pathname + (new URL(req.url, "http://x").search), headers: req.headers, agent },
        (ur) => {
          exchange.status = ur.statusCode;
          exchange.responseHeaders = ur.headers;
          res.writeHead(ur.statusCode, ur.statusMessage, ur.rawHeaders);
          res.flushHeaders();
          const out = [];
          ur.on("data", (c) => (out.push(c), res.write(c)));
          ur.on("end", () => {
            exchange.messages = messagesOf(Buffer.concat(out).toString(), ur.headers["content-type"] ?? "");
            res.end();
          });
        },
      );
      up.on("error", (err) => {
        exchange.error = err.message;
        if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
        res.end(`recording-proxy: upstream error: ${err.message}`);
      });
      res.on("close", () => up.destroy());
      up.end(raw);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}${upstream.pathname}`,
    exchanges,
    close: () => new Promise((resolve) => (server.closeAllConnections(), server.close(resolve), agent.destroy())),
  };
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function messagesOf(text, contentType) {
  if (contentType.startsWith("text/event-stream")) {
    return text.split(/\r?\n\r?\n/).flatMap((event) => {
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      const message = data ? parseJson(data) : null;
      return message ? [message] : [];
    });
  }
  const message = parseJson(text);
  return message ? [message] : [];
}
