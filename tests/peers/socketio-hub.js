// A minimal Socket.IO 4 chat hub, the baseline `scripts/bench-hub` measures Convene against.
//
// Every client joins one room (`?room=`, default "load") and each `chat` event is relayed to
// the whole room with io.to(room).emit, sender included, as Convene's chat does. The relayed
// object has the same fields as Convene's ChatMessage, so both servers send similar bytes.
//
//   PORT=9000 node tests/peers/socketio-hub.js      (listens on 127.0.0.1 only)
//   REDIS_URL=redis://127.0.0.1:6379 PORT=9001 node tests/peers/socketio-hub.js
//
// With REDIS_URL, several hubs share rooms through `@socket.io/redis-adapter` (Redis pub/sub):
// the multi-node baseline of `scripts/bench-cluster`. Each hub keeps its own message counter
// (ids may repeat across hubs): the baseline does no more Redis work than the adapter's own.
//
// Needs `socket.io` 4.x (npm), and with REDIS_URL `@socket.io/redis-adapter` and `redis`.
// Prints "listening <port>" once ready.
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? process.argv[2] ?? 0);
const http = createServer((req, res) => {
  if (req.url === "/healthz") {
    res.end("ok");
    return;
  }
  res.statusCode = 404;
  res.end();
});
const io = new Server(http, {
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 65536,
});

let nextId = 0;
if (process.env.REDIS_URL) {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  for (const client of [pub, sub]) {
    client.on("error", (error) => console.error(`redis: ${error.message}`));
  }
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}

io.on("connection", (socket) => {
  const room = String(socket.handshake.query.room || "load");
  const name = String(socket.handshake.query.name || socket.id);
  socket.join(room);
  socket.on("chat", (msg) => {
    if (!msg || typeof msg.text !== "string" || msg.text.length === 0 || msg.text.length > 2000) {
      return;
    }
    nextId += 1;
    io.to(room).emit("chat", { id: nextId, from: socket.id, name, text: msg.text, at: Date.now(), breakout: null });
  });
});

http.listen(port, "127.0.0.1", () => {
  console.log(`listening ${http.address().port}`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    io.close();
    process.exit(0);
  });
}
