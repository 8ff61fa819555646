// A second origin for the WHIP/WHEP interop test: serves a player page and three npm clients
// (@eyevinn/whip-web-client, @eyevinn/webrtc-player, whip-whep) from 127.0.0.1:<port>, run
// inside the test's network namespace, so the page calls Convene (another port, so another
// origin) through CORS. The two @eyevinn builds are CommonJS: bundled here at start by a small
// CommonJS wrapper (no bundler in the tree); whip-whep ships ES modules, served as they are.
// Prints "ready" when listening. Not a test file itself.
import fs from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "../..");
const port = Number(process.argv[2]);
const rootRequire = createRequire(path.join(ROOT, "package.json"));

/**
 * One script defining `window[name]` as the CommonJS package `pkg`: every module it requires,
 * found as Node finds it (a bare name resolved as a package, so `events` is the npm package, not
 * Node's), wrapped in a function; a module that cannot be found is an empty object (only the
 * ad-insertion code the players never run here needs those).
 */
function bundle(pkg, name) {
  const ids = new Map();
  const defs = [];
  const visit = (file) => {
    if (ids.has(file)) return ids.get(file);
    const id = defs.length;
    ids.set(file, id);
    const def = { code: fs.readFileSync(file, "utf8"), deps: {} };
    defs.push(def);
    if (file.endsWith(".json")) {
      def.code = `module.exports = ${def.code};`;
      return id;
    }
    const req = createRequire(file);
    for (const [, spec] of def.code.matchAll(/\brequire\(\s*["']([^"']+)["']\s*\)/g)) {
      const asPackage = spec.startsWith(".") || spec.includes("/") && !spec.startsWith("@") ? spec : `${spec}/`;
      let resolved = null;
      for (const s of [asPackage, spec]) {
        try {
          resolved = req.resolve(s);
          break;
        } catch {
          // not installed, or a Node built-in the page does not need
        }
      }
      if (resolved && path.isAbsolute(resolved)) def.deps[spec] = visit(resolved);
    }
    return id;
  };
  visit(rootRequire.resolve(pkg));
  const modules = defs.map((d) => `[function (module, exports, require) {\n${d.code}\n}, ${JSON.stringify(d.deps)}]`);
  return `(function () {
  var process = { env: { NODE_ENV: "production" }, nextTick: function (f) { Promise.resolve().then(f); } };
  var global = globalThis;
  var modules = [${modules.join(",\n")}];
  var cache = {};
  function load(id) {
    if (id === undefined) return {};
    if (cache[id]) return cache[id].exports;
    var module = (cache[id] = { exports: {} });
    var deps = modules[id][1];
    modules[id][0].call(module.exports, module, module.exports, function (spec) { return load(deps[spec]); });
    return module.exports;
  }
  window[${JSON.stringify(name)}] = load(0);
})();\n`;
}

const files = {
  "/lib/eyevinn-whip.js": bundle("@eyevinn/whip-web-client", "EyevinnWHIP"),
  "/lib/eyevinn-player.js": bundle("@eyevinn/webrtc-player", "EyevinnPlayer"),
  "/lib/whip-whep/whip.js": fs.readFileSync(rootRequire.resolve("whip-whep/whip.js"), "utf8"),
  "/lib/whip-whep/whep.js": fs.readFileSync(rootRequire.resolve("whip-whep/whep.js"), "utf8"),
  "/": `<!doctype html>
<meta charset="utf-8">
<title>interop</title>
<video id="v" autoplay playsinline muted></video>
<script src="/lib/eyevinn-whip.js"></script>
<script src="/lib/eyevinn-player.js"></script>
<script type="module">
  import { WHIPClient } from "/lib/whip-whep/whip.js";
  import { WHEPClient } from "/lib/whip-whep/whep.js";
  window.WhipWhep = { WHIPClient, WHEPClient };
  window.libsReady = true;
</script>
`,
};

http.createServer((req, res) => {
  const body = files[new URL(req.url, "http://x").pathname];
  if (body === undefined) {
    res.writeHead(404).end();
    return;
  }
  const type = req.url === "/" ? "text/html" : "text/javascript";
  res.writeHead(200, { "Content-Type": `${type}; charset=utf-8`, "Cache-Control": "no-store" }).end(body);
}).listen(port, "127.0.0.1", () => console.log("ready"));
