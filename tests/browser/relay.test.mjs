// Media through a network that lets through nothing but TCP to port 443: Convene's HTTPS on
// 127.0.0.1:443 and its embedded TURN relay's TLS listener on 127.0.0.2:443 (an address of its
// own, as in the README; the server's certificate). UDP and ICE-TCP are dropped by nftables, so
// Chromium must relay: a WHEP viewer plays the WHIP-published stage, and two people in a
// meeting see each other, all through the embedded relay, which reaches only the SFU. The
// relay's own UDP to the SFU is the one other flow let through (its relay port range <-> the
// SFU's UDP port). Everything runs inside the test's network namespace on loopback addresses
// (docs/architecture.md, "Test networking"). Needs root, `ip` and `nft`; skipped without.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mediaSuite, until } from "./harness.mjs";

const STEP = { timeout: 120_000 };
const TLS_PORT = 443; // Convene's HTTPS and the relay's TURN/TLS, on two addresses
const RELAY_PORTS = [20000, 20019];
const SFU_UDP_PORT = 3478; // harness: the SFU's UDP port inside a namespace
const API_KEY = "relay-test-api-key";
const suite = mediaSuite({
  firewall: { allowTcpPorts: [TLS_PORT], allowUdp: [[`${RELAY_PORTS[0]}-${RELAY_PORTS[1]}`, String(SFU_UDP_PORT)]] },
  // The API key opens the room before the publisher asks for relay credentials: none are
  // handed out for a room that is not running.
  server: {
    tls: true,
    port: TLS_PORT,
    env: { CONVENE_API_KEY: API_KEY },
    config: [
      "[rtc.turn.embedded]",
      "enabled = true",
      "udp = false",
      'listen_ip = "127.0.0.2"',
      'host = "127.0.0.2"',
      `tcp_port = ${TLS_PORT}`,
      'relay_ip = "127.0.0.2"',
      `relay_min_port = ${RELAY_PORTS[0]}`,
      `relay_max_port = ${RELAY_PORTS[1]}`,
    ].join("\n"),
  },
});
const newPage = (who, url) => suite.newPage(who, url, { viewport: { width: 1200, height: 800 }, timeout: 20000 });
const waitFor = (probe, ok, options) => until(probe, ok, { timeout: 45000, every: 250, log: suite.log, ...options });

// In a page: the selected candidate pair's local candidate and the decoded video frames.
const pathOf = async (pc) => {
  const stats = await pc.getStats();
  let framesDecoded = 0;
  let pair = null;
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") framesDecoded += s.framesDecoded ?? 0;
    if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  const local = pair && stats.get(pair.localCandidateId);
  return { framesDecoded, type: local?.candidateType ?? null, relayProtocol: local?.relayProtocol ?? null };
};

test("only TCP to port 443: WHIP and WHEP through the relay", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server } = suite;
  const room = "relay-stage";
  const presenter = server.token({ room, role: "presenter", name: "Pat", identity: "pat" }).token;
  const viewer = server.token({ room, role: "participant", name: "Vic", identity: "vic" }).token;
  // RFC 9725 section 4.4: the relay comes in Link headers; OPTIONS first, since the offer must
  // already carry the relay candidates (the server takes no trickle).
  const post = (page, kind, token, setup) => page.evaluate(async ({ room, kind, token, setup }) => {
    const opts = await fetch(`/${kind}/${room}`, { method: "OPTIONS", headers: { Authorization: `Bearer ${token}` } });
    const iceServers = (opts.headers.get("Link") ?? "").split(/,\s*(?=<)/).filter((l) => /rel="ice-server"/.test(l)).map((l) => ({
      urls: l.match(/<([^>]+)>/)[1], username: l.match(/username="([^"]*)"/)?.[1], credential: l.match(/credential="([^"]*)"/)?.[1],
    }));
    const pc = new RTCPeerConnection({ iceServers });
    if (setup === "publish") {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
      for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    } else {
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    const t0 = performance.now();
    await pc.setLocalDescription(await pc.createOffer());
    // Wait for the relay candidate: no trickle, so the offer must carry it.
    if (pc.iceGatheringState !== "complete") {
      await new Promise((r) => {
        pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r());
        setTimeout(r, 10000);
      });
    }
    window.started = performance.now();
    const gatherMs = Math.round(window.started - t0);
    const res = await fetch(`/${kind}/${room}`, {
      method: "POST", headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` }, body: pc.localDescription.sdp,
    });
    const answer = await res.text();
    if (res.status !== 201) return { status: res.status, answer };
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    window.pc = pc;
    return { status: res.status, gatherMs, servers: iceServers.length, relayCandidate: / typ relay /.test(pc.localDescription.sdp) };
  }, { room, kind, token, setup });

  const pub = await newPage("whip", `${server.base}/healthz`);
  const opened = await pub.evaluate(async ({ room, key }) => (await fetch("/api/v1/rooms", {
    method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` }, body: JSON.stringify({ name: room }),
  })).status, { room, key: API_KEY });
  assert.equal(opened, 201, "the room is opened before the publisher comes");
  const whip = await post(pub, "whip", presenter, "publish");
  assert.equal(whip.status, 201, whip.answer);
  assert.equal(whip.servers, 1, "one ice-server Link: TURN over TLS");
  assert.ok(whip.relayCandidate, "the offer carries a relay candidate");
  const view = await newPage("whep", `${server.base}/healthz`);
  const whep = await post(view, "whep", viewer, "play");
  assert.equal(whep.status, 201, whep.answer);
  const firstFrameMs = await view.evaluate(async (pathOf) => {
    const stats = eval(pathOf);
    const deadline = performance.now() + 45000;
    while (performance.now() < deadline) {
      if ((await stats(window.pc)).framesDecoded > 0) return Math.round(performance.now() - window.started);
      await new Promise((r) => setTimeout(r, 50));
    }
    return null;
  }, pathOf.toString());
  const seen = await waitFor(() => view.evaluate((p) => eval(p)(window.pc), pathOf.toString()), (s) => s.framesDecoded > 30, { what: "30 frames through the relay" });
  const sent = await pub.evaluate((p) => eval(p)(window.pc), pathOf.toString());
  t.diagnostic(`WHEP through TURN/TLS: relay allocated in ${whep.gatherMs} ms before the POST, first frame ${firstFrameMs} ms after it; viewer ${JSON.stringify(seen)}, publisher ${JSON.stringify(sent)}`);
  for (const s of [seen, sent]) {
    assert.equal(s.type, "relay", `relayed: ${JSON.stringify(s)}`);
    assert.equal(s.relayProtocol, "tls");
  }
  for (const page of [pub, view]) await page.context().close();
});

test("only TCP to port 443: two people in a meeting see each other through the relay", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server } = suite;
  const room = "relay-meeting";
  const join = async (who, role, name) => {
    const page = await newPage(who, server.token({ room, role, name, identity: who }).url);
    await page.locator("#status[data-state=connected]").waitFor();
    return page;
  };
  const hana = await join("hana", "host", "Hana");
  await hana.click("#tab-console");
  await hana.selectOption("#set-kind", "meeting");
  const pia = await join("pia", "participant", "Pia");
  await pia.locator("#cam", { hasText: "Start camera" }).waitFor();
  await hana.click("#cam");
  await pia.click("#cam");
  for (const [page, other] of [[hana, "pia"], [pia, "hana"]]) {
    await waitFor(() => page.evaluate((publisher) => {
      const v = document.querySelector(`#videos figure[data-publisher="${publisher}"] video`);
      return { width: v?.videoWidth ?? 0, time: v?.currentTime ?? 0 };
    }, other), (s) => s.width > 0 && s.time > 0.2, { what: `${other}'s camera playing` });
    const path = await page.evaluate((p) => eval(p)(convene.media.pc), pathOf.toString());
    assert.equal(path.type, "relay", JSON.stringify(path));
    await page.locator("#diag-path[data-transport=relay]", { hasText: "relay over TLS" }).waitFor();
  }
  assert.deepEqual(suite.pageErrors, []);
});
