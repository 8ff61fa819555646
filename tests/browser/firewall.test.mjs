// Media through a firewall that drops every UDP packet: Chromium reaches the SFU over ICE-TCP
// (RFC 6544) alone. A WHIP publisher and a WHEP viewer, then two people in a meeting, all play
// with UDP dropped by nftables inside the test's network namespace (docs/architecture.md, "Test
// networking"). Needs root, `ip` and `nft`; skipped without.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mediaSuite, until } from "./harness.mjs";

const STEP = { timeout: 90_000 };
const suite = mediaSuite({ firewall: { udp: true } });
const newPage = (who, url) => suite.newPage(who, url, { viewport: { width: 1200, height: 800 } });
const waitFor = (probe, ok, options) => until(probe, ok, { timeout: 30000, log: suite.log, ...options });

// In a page: the transport of the selected candidate pair and the decoded video frames.
const pathOf = async (pc) => {
  const stats = await pc.getStats();
  let framesDecoded = 0;
  let pair = null;
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") framesDecoded += s.framesDecoded ?? 0;
    if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  const local = pair && stats.get(pair.localCandidateId);
  const remote = pair && stats.get(pair.remoteCandidateId);
  return { framesDecoded, protocol: local?.protocol ?? null, remoteType: remote?.candidateType ?? null, remotePort: remote?.port ?? null };
};

test("UDP dropped: WHIP publisher and WHEP viewer connect over ICE-TCP", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server } = suite;
  const room = "tcp-stage";
  const presenter = server.token({ room, role: "presenter", name: "Pat", identity: "pat" }).token;
  const viewer = server.token({ room, role: "participant", name: "Vic", identity: "vic" }).token;
  const post = (page, kind, token, setup) => page.evaluate(async ({ room, kind, token, setup }) => {
    const pc = new RTCPeerConnection({ iceServers: [] });
    if (setup === "publish") {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
      for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    } else {
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    await pc.setLocalDescription(await pc.createOffer());
    window.started = performance.now();
    const res = await fetch(`/${kind}/${room}`, {
      method: "POST", headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` }, body: pc.localDescription.sdp,
    });
    const answer = await res.text();
    if (res.status !== 201) return { status: res.status, answer };
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    window.pc = pc;
    return { status: res.status, tcpCandidate: /a=candidate:\S+ 1 tcp \d+ \S+ \d+ typ host tcptype passive/.test(answer) };
  }, { room, kind, token, setup });

  const pub = await newPage("whip", `${server.base}/healthz`);
  const whip = await post(pub, "whip", presenter, "publish");
  assert.equal(whip.status, 201, whip.answer);
  assert.ok(whip.tcpCandidate, "the answer offers a passive TCP candidate");
  const view = await newPage("whep", `${server.base}/healthz`);
  const whep = await post(view, "whep", viewer, "play");
  assert.equal(whep.status, 201, whep.answer);
  const firstFrameMs = await view.evaluate(async (pathOf) => {
    const stats = eval(pathOf);
    for (;;) {
      if ((await stats(window.pc)).framesDecoded > 0) return Math.round(performance.now() - window.started);
      await new Promise((r) => setTimeout(r, 50));
    }
  }, pathOf.toString());
  const seen = await waitFor(() => view.evaluate((p) => eval(p)(window.pc), pathOf.toString()), (s) => s.framesDecoded > 30, { what: "30 frames over TCP" });
  const sent = await pub.evaluate((p) => eval(p)(window.pc), pathOf.toString());
  t.diagnostic(`WHEP over ICE-TCP: first frame ${firstFrameMs} ms after POST; ${seen.framesDecoded} frames; path ${JSON.stringify(seen)}`);
  for (const s of [seen, sent]) {
    assert.equal(s.protocol, "tcp", `selected pair is TCP: ${JSON.stringify(s)}`);
    assert.equal(s.remotePort, 7881, "the server's ICE-TCP port");
  }
  for (const page of [pub, view]) await page.context().close();
});

test("UDP dropped: two people in a meeting see each other over ICE-TCP", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server } = suite;
  const room = "tcp-meeting";
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
    assert.equal(path.protocol, "tcp", `${JSON.stringify(path)}`);
    // The diagnostics panel tells the participant (and their IT staff) the same.
    await page.locator("#diag-path[data-transport=tcp]", { hasText: "direct TCP" }).waitFor();
  }
  assert.deepEqual(suite.pageErrors, []);
});
