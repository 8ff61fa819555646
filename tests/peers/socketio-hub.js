// A minimal Socket.IO 4 chat hub, the baseline `scripts/bench-hub` measures Convene against.
//
// Every client joins one room (`?room=`, default "load") and each `chat` event is relayed to
// the whole room with io.to(room).emit, sender included, as Convene's chat does. The relayed
// object has the same fields as Convene's ChatMessage, so both servers send similar bytes.
//
//   PORT=9000 node tests/peers/socketio-hub.js      (listens on 127.0.0.1 only)
//
// Needs `socket.io` 4.x (npm). Prints "listening <port>" once ready.
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
