// Media belongs to the session, not the socket: a participant publishing and watching in a
// meeting loses its WebSocket for 3 s (a proxy cuts it and refuses reconnects), resumes, and
// its media keeps flowing both ways with no new `welcome` and no second peer connection.
// Server, proxy and Chromium run in a network namespace with only `lo` (docs/architecture.md, "Test
// networking"). Needs root for `ip netns add`; skipped without.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mediaSuite, sleep, until } from "./harness.mjs";

const suite = mediaSuite({ proxy: 8081 });

// Counts what the page's client does: peer connections made and first messages received.
const INSTRUMENT = () => {
  window.__peerConnections = 0;
  window.__first = [];
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    window.__peerConnections += 1;
    return new PC(...args);
  };
  window.RTCPeerConnection.prototype = PC.prototype;
  const WS = window.WebSocket;
  window.WebSocket = function (...args) {
    const ws = new WS(...args);
    ws.addEventListener("message", (e) => {
      const m = String(e.data).match(/^\{"type":"(welcome|resumed)"/);
      if (m) window.__first.push(m[1]);
    });
    return ws;
  };
  Object.assign(window.WebSocket, WS);
  window.WebSocket.prototype = WS.prototype;
};

// Decoded video frames on this page's peer connection (each page receives one other camera).
const framesFrom = (page) => page.evaluate(async () => {
  if (!convene.media.pc) return 0;
  let frames = 0;
  (await convene.media.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") frames += s.framesDecoded ?? 0;
  });
  return frames;
});

test("a session's media survives a 3 s loss of its socket", { timeout: 120_000 }, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server, browser, proxy } = suite;
  const room = "resume-av";
  const open = async (who, role, viaProxy) => {
    const { url } = server.token({ room, role, name: who, identity: who });
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    await context.addInitScript(INSTRUMENT);
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    await page.goto(viaProxy ? url.replace(`:${server.port}/`, `:${proxy.port}/`) : url);
    await page.locator("#status[data-state=connected]").waitFor();
    return page;
  };
  const host = await open("hana", "host", false);
  await host.click("#tab-console");
  await host.selectOption("#set-kind", "meeting");
  const pia = await open("pia", "participant", true);
  await pia.locator("#cam", { hasText: "Start camera" }).waitFor();
  await host.click("#cam");
  await pia.click("#cam");
  await until(() => framesFrom(host), (n) => n > 10, { what: "hana decoding pia" });
  await until(() => framesFrom(pia), (n) => n > 10, { what: "pia decoding hana" });

  proxy.send("drop 3000");
  await until(async () => proxy.lines.includes("dropped"), (ok) => ok, { what: "the drop" });
  // While the socket is gone, media still flows: it never went through the WebSocket.
  const during = { pia: await framesFrom(pia), hana: await framesFrom(host) };
  await until(() => framesFrom(pia), (n) => n > during.pia + 5, { timeout: 2500, every: 100, what: "pia decoding hana with no socket" });
  await until(() => framesFrom(host), (n) => n > during.hana + 5, { timeout: 2500, every: 100, what: "hana decoding pia while pia has no socket" });

  // The client reconnects once the network is back, and resumes.
  await until(() => pia.evaluate(() => window.__first), (f) => f.includes("resumed"), { timeout: 30000, what: "a resumed session" });
  await pia.locator("#status[data-state=connected]").waitFor();
  const after = { pia: await framesFrom(pia), hana: await framesFrom(host) };
  await sleep(2000);
  const later = { pia: await framesFrom(pia), hana: await framesFrom(host) };
  assert.ok(later.pia > after.pia, `pia decodes hana after the resume: ${JSON.stringify([after, later])}`);
  assert.ok(later.hana > after.hana, `hana decodes pia after the resume: ${JSON.stringify([after, later])}`);
  const first = await pia.evaluate(() => window.__first);
  assert.deepEqual(first.filter((m) => m === "welcome"), ["welcome"], `one welcome only: ${first}`);
  assert.equal(await pia.evaluate(() => window.__peerConnections), 1, "no second peer connection");
  t.diagnostic(`first messages on pia's sockets: ${first.join(", ")}; frames pia<-hana ${after.pia}->${later.pia}, hana<-pia ${after.hana}->${later.hana}`);
});
