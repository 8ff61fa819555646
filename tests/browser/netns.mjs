// A private network namespace for media tests: only `lo`, so the server and Chromium inside it
// can reach each other on 127.0.0.1 and nothing else (docs/architecture.md, "Test networking").
// Needs root (CAP_SYS_ADMIN) and `ip` from iproute2. Not a test file itself.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const PREFIX = "convene-media-";

function ip(...args) {
  return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** Namespaces left by earlier runs whose process is gone (a test killed with SIGKILL). */
function removeStale() {
  let names = [];
  try {
    names = ip("netns", "list").split("\n").map((l) => l.split(" ")[0]).filter((n) => n.startsWith(PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(name.slice(PREFIX.length));
    let alive = false;
    try { process.kill(pid, 0); alive = true; } catch { /* gone */ }
    if (!alive) spawnSync("ip", ["netns", "delete", name]);
  }
}

/**
 * Drops traffic inside namespace `ns` with nftables (`nft`), for firewall tests: `udp` drops every
 * UDP packet; `{ allowTcpPorts }` drops everything but TCP to those ports (and their replies), and
 * UDP between the port pairs in `allowUdp` (`[[portsA, portsB]]`, either direction).
 * Throws an Error whose `skip` is a reason to skip when `nft` is missing.
 */
export function firewall(ns, { udp = false, allowTcpPorts = null, allowUdp = [] }) {
  if (spawnSync("sh", ["-c", "command -v nft"]).status !== 0) {
    throw Object.assign(new Error("no `nft` command"), { skip: "needs `nft` from nftables (apt-get install nftables)" });
  }
  const rules = ["table inet convene_fw {", "  chain output {", "    type filter hook output priority 0; policy accept;"];
  if (udp) rules.push("    meta l4proto udp drop");
  if (allowTcpPorts) {
    const ports = allowTcpPorts.join(", ");
    rules.push(`    tcp dport { ${ports} } accept`, `    tcp sport { ${ports} } accept`);
    for (const [a, b] of allowUdp) {
      rules.push(`    udp sport ${a} udp dport ${b} accept`, `    udp sport ${b} udp dport ${a} accept`);
    }
    rules.push("    drop");
  }
  rules.push("  }", "}");
  const file = path.join(os.tmpdir(), `convene-fw-${process.pid}.nft`);
  fs.writeFileSync(file, rules.join("\n") + "\n");
  try {
    ns.run(["nft", "-f", file]);
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/**
 * Creates `convene-media-<pid>` with loopback up. Returns `{ name, exec(argv), wrapper(exe), delete() }`,
 * or throws an Error whose `skip` is a reason to skip (not root, no `ip`).
 */
export function createNetns() {
  if (spawnSync("sh", ["-c", "command -v ip"]).status !== 0) {
    throw Object.assign(new Error("no `ip` command"), { skip: "needs `ip` from iproute2 (apt-get install iproute2)" });
  }
  removeStale();
  const name = `${PREFIX}${process.pid}`;
  spawnSync("ip", ["netns", "delete", name]);
  try {
    ip("netns", "add", name);
  } catch (e) {
    const why = String(e.stderr || e.message).trim();
    throw Object.assign(new Error(why), { skip: `cannot create a network namespace (run as root): ${why}` });
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "convene-netns-"));
  let deleted = false;
  const ns = {
    name,
    /** argv prefixed so it runs inside the namespace (`ip netns exec` execs, so the pid is the program's). */
    exec: (argv) => ["ip", ["netns", "exec", name, ...argv]],
    /** Runs argv inside the namespace and returns its stdout (throws on failure). */
    run: (argv) => execFileSync("ip", ["netns", "exec", name, ...argv], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }),
    /** An executable script that runs `exe` inside the namespace, for tools that take a program path. */
    wrapper(exe) {
      const file = path.join(dir, path.basename(exe));
      fs.writeFileSync(file, `#!/bin/sh\nexec ip netns exec ${name} ${exe} "$@"\n`, { mode: 0o755 });
      return file;
    },
    delete() {
      if (deleted) return;
      deleted = true;
      spawnSync("ip", ["netns", "delete", name]);
      fs.rmSync(dir, { recursive: true, force: true });
      process.off("exit", ns.delete);
    },
  };
  process.on("exit", ns.delete);
  try {
    ip("netns", "exec", name, "ip", "link", "set", "lo", "up");
  } catch (e) {
    ns.delete();
    throw e;
  }
  return ns;
}
