// Socket.IO broadcast peer server for crier's fan-out comparison.
//
//   node server.mjs --port 0
//
// Listens on 127.0.0.1 only (port 0 = pick a free one) and prints exactly one
// line `listening 127.0.0.1:PORT` on stdout once ready. Protocol:
//   client -> server  "sub"  (room[, ack])      join the room, ack("ok")
//   client -> server  "pub"  ({room, data})     io.to(room).emit("msg", data)
// WebSocket transport only, no per-message compression. Exits on SIGTERM/SIGINT.

import { createServer } from "node:http";
import { Server } from "socket.io";

function parseArgs(argv) {
  const out = { port: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--port") {
      out.port = Number(argv[++i]);
    } else if (a.startsWith("--port=")) {
      out.port = Number(a.slice("--port=".length));
    } else if (a === "-h" || a === "--help") {
      process.stdout.write("usage: node server.mjs --port PORT   (0 = pick a free one)\n");
      process.exit(0);
    } else {
      process.stderr.write(`server.mjs: unknown argument ${a}\n`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(out.port) || out.port < 0 || out.port > 65535) {
    process.stderr.write("server.mjs: --port must be an integer in 0..65535\n");
    process.exit(2);
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const HOST = "127.0.0.1";

const httpServer = createServer((req, res) => {
  res.writeHead(404).end();
});

const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
  cors: undefined,
});

io.on("connection", (socket) => {
  socket.on("sub", (room, ack) => {
    if (typeof room === "string" && room.length > 0) {
      socket.join(room);
      if (typeof ack === "function") ack("ok");
    } else if (typeof ack === "function") {
      ack("error: room must be a non-empty string");
    }
  });
  socket.on("pub", (msg) => {
    if (msg && typeof msg.room === "string") {
      io.to(msg.room).emit("msg", msg.data);
    }
  });
});

let stopping = false;
function stop(signal) {
  if (stopping) return;
  stopping = true;
  // Never hang on shutdown: close what we can, then exit regardless.
  const force = setTimeout(() => process.exit(0), 1000);
  force.unref();
  io.close(() => process.exit(0));
  void signal;
}
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));

httpServer.on("error", (err) => {
  process.stderr.write(`server.mjs: ${err.message}\n`);
  process.exit(1);
});

httpServer.listen(args.port, HOST, () => {
  const addr = httpServer.address();
  process.stdout.write(`listening ${HOST}:${addr.port}\n`);
});
