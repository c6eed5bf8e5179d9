// Bun broadcast peer server for crier's fan-out comparison: uWebSockets'
// native pub/sub (`server.publish`) behind `Bun.serve`.
//
//   node_modules/.bin/bun server.js --port 0
//
// Listens on 127.0.0.1 only (port 0 = pick a free one) and prints exactly one
// line `listening 127.0.0.1:PORT` on stdout once ready. A WebSocket upgrade on
// any path subscribes the socket to one topic; a socket that sends a message
// is a publisher from then on (unsubscribed, so it gets no echo) and every
// message it sends goes to every subscriber as it came, by
// `server.publish(topic, message)`. No per-message compression. Driven by
// `crier bench --protocol raw --publish-via ws`.

const TOPIC = "bench";
const args = process.argv.slice(2);
const at = args.findIndex((a) => a === "--port");
const port = at >= 0 ? Number(args[at + 1]) : 0;
if (args.length !== (at >= 0 ? 2 : 0) || !Number.isInteger(port) || port < 0 || port > 65535) {
  console.error("usage: bun server.js --port PORT   (0 = pick a free one)");
  process.exit(2);
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(req, server) {
    if (server.upgrade(req, { data: { publisher: false } })) return;
    return new Response("WebSocket only\n", { status: 426 });
  },
  websocket: {
    perMessageDeflate: false,
    open(ws) {
      ws.subscribe(TOPIC);
    },
    message(ws, message) {
      if (!ws.data.publisher) {
        ws.data.publisher = true;
        ws.unsubscribe(TOPIC);
      }
      server.publish(TOPIC, message);
    },
  },
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.stop(true);
    process.exit(0);
  });
}
console.log(`listening 127.0.0.1:${server.port}`);
