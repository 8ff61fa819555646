// A TCP proxy for browser tests, run inside the test's network namespace: forwards
// 127.0.0.1:<listen> to 127.0.0.1:<target>. A line "drop <ms>" on stdin cuts every open
// connection and refuses new ones for <ms> (a network that goes away), then accepts again.
// Prints "ready" on stdout whenever it listens. Not a test file itself.
import net from "node:net";
import readline from "node:readline";

const [listen, target] = process.argv.slice(2).map(Number);
const open = new Set();
let server = null;

function start() {
  server = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1");
    open.add(client);
    open.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  server.listen(listen, "127.0.0.1", () => console.log("ready"));
}

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const [cmd, ms] = line.trim().split(/\s+/);
  if (cmd !== "drop") return;
  server.close();
  for (const socket of open) socket.destroy();
  open.clear();
  console.log("dropped");
  setTimeout(start, Number(ms));
});
start();
