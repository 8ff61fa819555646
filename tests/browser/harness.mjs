// Shared by the browser tests: the real `convene serve` on a free 127.0.0.1 port, tokens from
// `convene token`, and Debian's Chromium through playwright-core. Not a test file itself.
import { spawn, spawnSync, execFileSync, execFile } from "node:child_process";
import { createHash, randomBytes, X509Certificate } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { chromium } from "playwright-core";
import { before, after } from "node:test";
import { createNetns, firewall } from "./netns.mjs";

export const ROOT = path.resolve(import.meta.dirname, "../..");
const BIN = process.env.CONVENE_BIN ?? path.join(ROOT, "target/debug/convene");
const CHROMIUM = process.env.CONVENE_CHROMIUM ?? "/usr/bin/chromium";

/** Builds the server when the binary is missing or older than the client files it embeds. */
export function ensureBinary() {
  if (process.env.CONVENE_BIN) return BIN;
  const built = fs.existsSync(BIN) ? fs.statSync(BIN).mtimeMs : 0;
  const clientDir = path.join(ROOT, "client");
  const newest = Math.max(...fs.readdirSync(clientDir).map((f) => fs.statSync(path.join(clientDir, f)).mtimeMs));
  if (built < newest) {
    const r = spawnSync("cargo", ["build", "--bin", "convene"], { cwd: ROOT, stdio: "inherit" });
    if (r.status !== 0) throw new Error("cargo build --bin convene failed");
  }
  return BIN;
}

/** A port on 127.0.0.1 nothing listens on right now (the kernel's pick). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A deadline of `ms` on an idle machine, stretched by how loaded it is now (load average per
 * core, up to 10x, as the Rust tests do): CI shares two cores between servers, Chromium and builds.
 */
export const scaled = (ms) => Math.round(ms * Math.min(10, Math.max(1, os.loadavg()[0] / os.cpus().length)));

/**
 * Is `url` answering 200, asked by a short-lived node (inside network namespace `netns` when given,
 * trusting certificate file `ca` when given)?
 */
function readyProbe(netns, url, ca) {
  const probe = `fetch(${JSON.stringify(url)}).then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))`;
  const argv = [process.execPath, "-e", probe];
  const [cmd, args] = netns ? netns.exec(argv) : [argv[0], argv.slice(1)];
  const env = ca ? { ...process.env, NODE_EXTRA_CA_CERTS: ca } : process.env;
  return new Promise((resolve) => execFile(cmd, args, { timeout: 5000, env }, (err) => resolve(!err)));
}

/**
 * A self-signed certificate for 127.0.0.1 made with the openssl CLI in `dir`: its files, and the
 * base64 SHA-256 of its public key (what Chromium's --ignore-certificate-errors-spki-list takes).
 */
export function selfSignedCert(dir) {
  const cert = path.join(dir, "cert.pem");
  const key = path.join(dir, "key.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
    "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
  ], { stdio: "ignore" });
  const spki = new X509Certificate(fs.readFileSync(cert)).publicKey.export({ type: "spki", format: "der" });
  return { cert, key, spki: createHash("sha256").update(spki).digest("base64") };
}

/**
 * A running `convene serve`; `stop()` always ends it. With `netns` (from netns.mjs) it runs inside
 * that namespace, where only processes in the same namespace (Chromium started there) reach it.
 * With `tls` it serves HTTPS with a fresh self-signed certificate (`server.tls.spki` for Chromium);
 * `port` fixes the listening port (in a namespace); `env` adds or overrides environment variables.
 */
export async function startServer({ netns = null, tls = false, port: fixedPort = null, env: extraEnv = {}, config: extra = "" } = {}) {
  const bin = ensureBinary();
  // Inside a fresh namespace every port is free; outside, ask the kernel for one.
  const port = fixedPort ?? (netns ? 8080 : await freePort());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "convene-browser-"));
  const config = path.join(dir, "test.toml");
  // Media sockets on loopback too: nothing in these tests listens beyond 127.0.0.1.
  // `extra`: more TOML from the test (e.g. a shorter [limits] grace period).
  fs.writeFileSync(config, `[rtc]\nbind_ip = "127.0.0.1"\n${extra}`);
  const cert = tls ? selfSignedCert(dir) : null;
  const scheme = tls ? "https" : "http";
  const env = {
    ...process.env,
    CONVENE_LISTEN: `127.0.0.1:${port}`,
    // Join links as printed by `convene token` then point at 127.0.0.1, not "localhost".
    CONVENE_PUBLIC_URL: `${scheme}://127.0.0.1:${port}`,
    CONVENE_JWT_SECRET: randomBytes(24).toString("hex"),
    // In a namespace of its own the port is surely free; elsewhere let the server pick one.
    CONVENE_RTC_UDP_PORT: netns ? "3478" : "0",
    CONVENE_RTC_TCP_PORT: netns ? "7881" : "0",
    CONVENE_RTC_ADVERTISE_IP: "127.0.0.1",
    RUST_LOG: process.env.RUST_LOG ?? "info",
    // Each server its own durable store (SQLite), never the checkout's ./data.
    CONVENE_DATA_DIR: path.join(dir, "data"),
    ...(cert ? { CONVENE_TLS_CERT: cert.cert, CONVENE_TLS_KEY: cert.key } : {}),
    ...extraEnv,
  };
  // Single node unless the test itself asks for a cluster.
  if (!("CONVENE_REDIS_URL" in extraEnv)) delete env.CONVENE_REDIS_URL;
  const [cmd, args] = netns ? netns.exec([bin, "serve", "--config", config]) : [bin, ["serve", "--config", config]];
  const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  // CONVENE_TEST_SERVER_LOG=<file>: the whole log there too, for a failure seen in a long run.
  const whole = process.env.CONVENE_TEST_SERVER_LOG;
  const keep = (chunk) => {
    log = (log + chunk).slice(-20000);
    if (whole) fs.appendFileSync(whole, chunk);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  let exited = null;
  child.on("exit", (code, signal) => { exited = { code, signal }; });
  // The server never outlives the test process, however it ends.
  const kill = () => { if (exited === null) child.kill("SIGKILL"); };
  const onSignal = (signal) => { kill(); process.exit(signal === "SIGINT" ? 130 : 143); };
  process.on("exit", kill);
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const base = `${scheme}://127.0.0.1:${port}`;
  const server = {
    base,
    port,
    tls: cert,
    log: () => log,
    /** `convene token ...`: returns { token, url } (line 1 and line 2 of its output). */
    token({ room, role, name, identity, attrs = {} }) {
      const args = ["token", "--config", config, "--room", room, "--role", role, "--name", name, "--identity", identity];
      for (const [k, v] of Object.entries(attrs)) args.push("--attr", `${k}=${v}`);
      const [token, url] = execFileSync(bin, args, { env, encoding: "utf8" }).trim().split("\n");
      return { token, url };
    },
    /** The server's pid (`ip netns exec` execs, so it is convene's own). */
    pid: child.pid,
    /** Sends `signal` and returns at once: SIGSTOP / SIGCONT freeze and thaw the server. */
    signal: (signal) => { if (exited === null) child.kill(signal); },
    /** Sends `signal` (SIGKILL: a node dying) and waits until the process is gone. */
    async kill(signal = "SIGKILL") {
      if (exited === null) child.kill(signal);
      for (let i = 0; i < 100 && exited === null; i++) await sleep(50);
      if (exited === null) throw new Error(`convene serve did not exit on ${signal}`);
    },
    async stop() {
      if (exited === null) {
        // A server left frozen (SIGSTOP) would not act on SIGTERM.
        child.kill("SIGCONT");
        child.kill("SIGTERM");
        for (let i = 0; i < 50 && exited === null; i++) await sleep(100);
        kill();
      }
      process.off("exit", kill);
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  const deadline = Date.now() + 20000;
  for (;;) {
    if (exited !== null) throw new Error(`convene serve exited (${JSON.stringify(exited)}):\n${log}`);
    if (netns || cert) {
      if (await readyProbe(netns, `${base}/readyz`, cert?.cert)) break;
    } else {
      try {
        const res = await fetch(`${base}/readyz`);
        if (res.status === 200) break;
      } catch {
        // not listening yet
      }
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`convene serve was not ready within 20 s:\n${log}`);
    }
    await sleep(100);
  }
  return server;
}

/**
 * Debian's Chromium, headless, with the flags this machine needs (no background network traffic).
 * With `netns` it runs inside that namespace (playwright drives it over a pipe, so control still works).
 */
export function launchChromium({ netns = null, args = [] } = {}) {
  return chromium.launch({
    executablePath: netns ? netns.wrapper(CHROMIUM) : CHROMIUM,
    headless: true,
    // playwright-core gives every launch a fresh temporary profile (--user-data-dir) of its own.
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      // Pages fulfilled from disk (CONVENE_CLIENT_FROM_DISK) count as public: let them reach 127.0.0.1.
      ...(process.env.CONVENE_CLIENT_FROM_DISK === "1" ? ["--disable-features=LocalNetworkAccessChecks"] : []),
      ...args,
    ],
  });
}

/**
 * A page joined as someone: a token from `convene token`, a fresh browser context (newPage), the
 * join link. Waits for the connection unless `wait` is false.
 */
export async function openAs(browser, server, { room, identity, role, name, attrs = {}, viewport, wait = true, errors = null }) {
  const { url } = server.token({ room, role, name, identity, attrs });
  const page = await newPage(browser, url, { who: identity, viewport, errors });
  if (wait) await page.locator("#status[data-state=connected]").waitFor();
  return page;
}

/**
 * A page at `url` in a fresh browser context (one person); uncaught errors are pushed to `errors`
 * as "who: message". With CONVENE_CLIENT_FROM_DISK=1 the client's files are served from client/ on
 * disk (edit and rerun without rebuilding the server; never in CI).
 */
export async function newPage(browser, url, { who = "page", viewport = { width: 1400, height: 900 }, timeout = 15000, errors = null } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  // Generous: CI shares two cores between the server, several Chromium contexts and the tests.
  page.setDefaultTimeout(timeout);
  if (errors) page.on("pageerror", (err) => errors.push(`${who}: ${err.message}`));
  if (process.env.CONVENE_CLIENT_FROM_DISK === "1") {
    await context.route(/\/[a-z-]*\.(js|css)$|\/(\?.*)?$/, async (route) => {
      const file = new URL(route.request().url()).pathname.slice(1) || "index.html";
      const p = path.join(ROOT, "client", file);
      if (!fs.existsSync(p)) return route.continue();
      const type = file.endsWith(".js") ? "text/javascript" : file.endsWith(".css") ? "text/css" : "text/html";
      return route.fulfill({ body: fs.readFileSync(p), contentType: type });
    });
  }
  await page.goto(url);
  return page;
}

/**
 * Polls `probe` until `ok(value)`; returns the value, or throws with the last one seen (and
 * `log()`, e.g. the server's, so a timeout in CI says why).
 */
export async function until(probe, ok, { timeout = 20000, every = 200, what = "condition", log = null } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await probe();
    if (ok(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(value)}${log ? `\n${log()}` : ""}`);
    }
    await sleep(every);
  }
}

/** Chromium flags for media tests: loopback candidates, a fake camera and microphone, no prompts. */
export const MEDIA_ARGS = ["--allow-loopback-in-peer-connection", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"];

/**
 * A media suite's network namespace, server and Chromium, made in `before` and removed in `after`,
 * with what a suite adds to them:
 * - `server`: startServer's options; with `tls` Chromium trusts exactly that certificate's key
 *   (for the page and for TURN over TLS alike).
 * - `firewall`: nftables rules for netns.mjs's `firewall()`, set before the server starts.
 * - `coturn`: `{ address, port, relayPorts: [min, max] }`: coturn's TURN over TLS (needs `tls`,
 *   whose certificate it uses) on its own loopback address, sharing a fresh secret with the server.
 * - `proxy`: a port where proxy.mjs forwards to the server; `suite.proxy.send("drop 3000")`
 *   cuts it, and `suite.proxy.lines` holds what it printed.
 * The returned object fills in then: `{ netns, server, browser, proxy, skip, pageErrors, log(),
 * newPage(who, url, options) }`. `skip` says why, when a namespace, `nft` or `turnserver` is missing.
 */
export function mediaSuite({ server: serverOptions = {}, firewall: rules = null, coturn: relay = null, proxy: proxyPort = null } = {}) {
  const suite = {
    netns: null, server: null, browser: null, proxy: null, skip: null, pageErrors: [],
    /** The server's recent log, and coturn's: for timeouts. */
    log: () => [suite.server && `server:\n${suite.server.log().slice(-2000)}`, coturn && `coturn:\n${coturnLog.slice(-1500)}`].filter(Boolean).join("\n"),
    /** A page whose uncaught errors land in `suite.pageErrors`. */
    newPage: (who, url, options = {}) => newPage(suite.browser, url, { who, errors: suite.pageErrors, ...options }),
  };
  let coturn = null;
  let coturnLog = "";
  const killCoturn = () => coturn?.kill("SIGKILL");
  before(async () => {
    if (relay && spawnSync("sh", ["-c", "command -v turnserver"]).status !== 0) {
      suite.skip = "needs `turnserver` from coturn (apt-get install coturn)";
      return;
    }
    try {
      suite.netns = createNetns();
      if (rules) firewall(suite.netns, rules);
    } catch (e) {
      suite.netns?.delete();
      suite.netns = null;
      if (!e.skip) throw e;
      suite.skip = e.skip;
      return;
    }
    const secret = randomBytes(16).toString("hex");
    const env = relay
      ? { CONVENE_TURN_URLS: `turns:${relay.address}:${relay.port}?transport=tcp`, CONVENE_TURN_SECRET: secret, ...serverOptions.env }
      : serverOptions.env;
    suite.server = await startServer({ ...serverOptions, netns: suite.netns, env });
    if (relay) {
      const { address, port, relayPorts: [min, max] } = relay;
      const { cert, key } = suite.server.tls;
      const [cmd, args] = suite.netns.exec([
        "turnserver", "-n", "--no-cli", "--no-dtls", "--no-udp", "--no-tcp", "--simple-log", "--log-file=stdout",
        `--listening-ip=${address}`, `--relay-ip=${address}`, "--allow-loopback-peers",
        `--tls-listening-port=${port}`, `--cert=${cert}`, `--pkey=${key}`, `--min-port=${min}`, `--max-port=${max}`,
        "--use-auth-secret", `--static-auth-secret=${secret}`, "--realm=convene.test",
      ]);
      coturn = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
      const keep = (chunk) => { coturnLog = (coturnLog + chunk).slice(-20000); };
      coturn.stdout.on("data", keep);
      coturn.stderr.on("data", keep);
      process.on("exit", killCoturn);
    }
    if (proxyPort) {
      const argv = [process.execPath, path.join(import.meta.dirname, "proxy.mjs"), String(proxyPort), String(suite.server.port)];
      const [cmd, args] = suite.netns.exec(argv);
      const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "inherit"] });
      const lines = [];
      readline.createInterface({ input: child.stdout }).on("line", (l) => lines.push(l));
      suite.proxy = { port: proxyPort, lines, send: (line) => child.stdin.write(`${line}\n`), kill: () => child.kill() };
      await until(async () => lines.includes("ready"), (ok) => ok, { what: "the proxy" });
    }
    const trust = suite.server.tls ? [`--ignore-certificate-errors-spki-list=${suite.server.tls.spki}`] : [];
    suite.browser = await launchChromium({ netns: suite.netns, args: [...MEDIA_ARGS, ...trust] });
  }, { timeout: 120_000 });
  after(async () => {
    try {
      await suite.browser?.close();
    } finally {
      try {
        suite.proxy?.kill();
        killCoturn();
        process.off("exit", killCoturn);
        await suite.server?.stop();
      } finally {
        suite.netns?.delete();
      }
    }
  }, { timeout: 30_000 });
  return suite;
}
