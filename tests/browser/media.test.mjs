// Media against Chromium: WHIP publish + WHEP playback, and the browser client in a meeting, where
// each person sees the other's camera (and, with simulcast, changes the layer they receive).
// The server and Chromium run inside a network namespace of their own with only `lo`, so WebRTC
// stays on 127.0.0.1 (docs/architecture.md, "Test networking"). Needs root for `ip netns add`; skipped without.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mediaSuite, sleep, until } from "./harness.mjs";

const STEP = { timeout: 90_000 };
const suite = mediaSuite();
const { pageErrors, newPage } = suite;

// In a page: the inbound video stats of an RTCPeerConnection, summed over its video receivers.
const inboundVideo = async (pc) => {
  let framesDecoded = 0;
  let frameWidth = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      framesDecoded += s.framesDecoded ?? 0;
      frameWidth = Math.max(frameWidth, s.frameWidth ?? 0);
    }
  });
  return { framesDecoded, frameWidth };
};

// In a client page: how the video of `publisher` plays there.
const remoteStats = (page, publisher) => page.evaluate(async ({ publisher, inbound }) => {
  const video = document.querySelector(`#videos figure[data-publisher="${publisher}"] video`);
  const { framesDecoded, frameWidth } = await eval(inbound)(convene.media.pc);
  return { videoWidth: video?.videoWidth ?? 0, playing: video ? !video.paused : false, framesDecoded, frameWidth };
}, { publisher, inbound: inboundVideo.toString() });

test("WHIP publisher and WHEP viewer in Chromium", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server } = suite;
  const room = "launch-av";
  const presenter = server.token({ room, role: "presenter", name: "Pat", identity: "pat" }).token;
  const viewer = server.token({ room, role: "participant", name: "Vic", identity: "vic" }).token;

  const pub = await newPage("whip", `${server.base}/healthz`);
  const whip = await pub.evaluate(async ({ room, token }) => {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
    const pc = new RTCPeerConnection({ iceServers: [] });
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    await pc.setLocalDescription(await pc.createOffer());
    const res = await fetch(`/whip/${room}`, {
      method: "POST", headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` }, body: pc.localDescription.sdp,
    });
    const answer = await res.text();
    if (res.status !== 201) return { status: res.status, answer };
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    window.pc = pc;
    return { status: res.status, location: res.headers.get("Location"), type: res.headers.get("Content-Type") };
  }, { room, token: presenter });
  assert.equal(whip.status, 201, `WHIP: ${whip.answer}`);
  assert.match(whip.location, new RegExp(`^/whip/${room}/\\w+$`));
  assert.match(whip.type, /^application\/sdp/);
  await pub.waitForFunction(() => window.pc.connectionState === "connected");

  const view = await newPage("whep", `${server.base}/healthz`);
  const whep = await view.evaluate(async ({ room, token }) => {
    const pc = new RTCPeerConnection({ iceServers: [] });
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    await pc.setLocalDescription(await pc.createOffer());
    const started = performance.now();
    const res = await fetch(`/whep/${room}`, {
      method: "POST", headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` }, body: pc.localDescription.sdp,
    });
    const answer = await res.text();
    if (res.status !== 201) return { status: res.status, answer };
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    window.pc = pc;
    window.started = started;
    return { status: res.status, location: res.headers.get("Location"), codecs: [...answer.matchAll(/a=rtpmap:\d+ ([\w-]+)\//g)].map((m) => m[1]) };
  }, { room, token: viewer });
  assert.equal(whep.status, 201, `WHEP: ${whep.answer}`);

  // Time to first decoded frame, then a steady stream of them.
  const firstFrameMs = await view.evaluate(async (inbound) => {
    const stats = eval(inbound);
    for (;;) {
      if ((await stats(window.pc)).framesDecoded > 0) return Math.round(performance.now() - window.started);
      await new Promise((r) => setTimeout(r, 50));
    }
  }, inboundVideo.toString());
  const after = await until(() => view.evaluate((inbound) => eval(inbound)(window.pc), inboundVideo.toString()),
    (s) => s.framesDecoded > 30, { what: "30 decoded frames" });
  t.diagnostic(`WHEP viewer: first frame ${firstFrameMs} ms after POST; ${after.framesDecoded} frames at ${after.frameWidth}px; answer codecs ${[...new Set(whep.codecs)].join(",")}`);
  assert.ok(after.frameWidth > 0);

  // A webcast participant in the browser client cannot publish but watches the stage.
  const vera = await newPage("vera", server.token({ room, role: "participant", name: "Vera", identity: "vera" }).url);
  await vera.locator("#status[data-state=connected]").waitFor();
  const stage = await until(() => remoteStats(vera, "pat"), (s) => s.videoWidth > 0 && s.playing, { what: "the stage video in the client" });
  assert.equal(await vera.locator("#cam").isHidden(), true, "no camera button for a webcast participant");
  assert.equal(await vera.locator("#videos figure[data-publisher=pat] figcaption").textContent(), "Pat");
  t.diagnostic(`webcast participant in the client: stage video ${stage.videoWidth}px, ${stage.framesDecoded} frames decoded`);

  // DELETE ends both sessions.
  const del = (page, location, token) => page.evaluate(async ({ location, token }) =>
    (await fetch(location, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } })).status, { location, token });
  assert.equal(await del(view, whep.location, viewer), 200);
  assert.equal(await del(pub, whip.location, presenter), 200);
  assert.equal(await del(pub, whip.location, presenter), 404, "a second DELETE finds nothing");
  await vera.locator("#videos figure[data-publisher=pat]").waitFor({ state: "detached" });
  for (const page of [view, pub, vera]) await page.context().close();
});

// --- The browser client in a meeting ---------------------------------------------------------

const pages = {};

test("client: two people in a meeting see each other's camera", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server } = suite;
  const room = "exchange";
  const join = async (who, role, name) => {
    const page = await newPage(who, server.token({ room, role, name, identity: who }).url);
    await page.locator("#status[data-state=connected]").waitFor();
    pages[who] = page;
    return page;
  };
  const hana = await join("hana", "host", "Hana");
  await hana.click("#tab-console");
  await hana.selectOption("#set-kind", "meeting");
  const pia = await join("pia", "participant", "Pia");
  await pia.locator("#cam", { hasText: "Start camera" }).waitFor();

  const started = Date.now();
  await hana.click("#cam");
  await pia.click("#cam");
  await hana.locator("#cam[aria-pressed=true]", { hasText: "Stop camera" }).waitFor();
  for (const [page, other] of [[hana, "pia"], [pia, "hana"]]) {
    await page.locator(`#videos figure[data-publisher="${other}"] video`).waitFor();
    await until(() => remoteStats(page, other), (s) => s.videoWidth > 0 && s.playing, { every: 100, what: `${other}'s video playing` });
  }
  const bothPlayingMs = Date.now() - started;
  const first = { hana: await remoteStats(hana, "pia"), pia: await remoteStats(pia, "hana") };
  await sleep(2000);
  const second = { hana: await remoteStats(hana, "pia"), pia: await remoteStats(pia, "hana") };
  for (const who of ["hana", "pia"]) {
    assert.ok(second[who].framesDecoded > first[who].framesDecoded, `${who}'s view decodes frames: ${JSON.stringify([first[who], second[who]])}`);
    assert.ok(second[who].videoWidth > 0);
  }
  assert.equal(await pia.locator("#videos figure[data-publisher=hana] figcaption").textContent(), "Hana");
  t.diagnostic(`both cameras playing ${bothPlayingMs} ms after the clicks; over 2 s hana decoded ${second.hana.framesDecoded - first.hana.framesDecoded} frames of pia (${second.hana.frameWidth}px), pia ${second.pia.framesDecoded - first.pia.framesDecoded} of hana (${second.pia.frameWidth}px)`);
});

test("client: simulcast layers follow the viewer's quality choice", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { hana, pia } = pages;
  if (!hana) return t.skip("the meeting test did not run");
  const layers = await pia.evaluate(() => [...convene.state.tracks.values()].find((x) => x.publisher === "hana" && x.kind === "video")?.layers ?? []);
  if (layers.length < 2) return t.skip(`the SFU did not take simulcast (layers ${JSON.stringify(layers)})`);
  await pia.click("#devices-open");
  await pia.locator("#quality-box").waitFor();
  const widthAfter = async (quality) => {
    await pia.selectOption("#quality", quality);
    // Switches happen on a keyframe of the new layer; give it a moment and read what is decoded.
    let width = 0;
    for (let i = 0; i < 40; i++) {
      await sleep(250);
      width = (await remoteStats(pia, "hana")).frameWidth;
      if (quality === "low" ? width <= 400 : width >= 600) break;
    }
    return width;
  };
  const low = await widthAfter("low");
  const high = await widthAfter("high");
  t.diagnostic(`layers ${layers.join(",")}: pia receives hana at ${low}px on low, ${high}px on high`);
  assert.ok(low < high, `low (${low}px) is smaller than high (${high}px)`);
});

test("client: screenshot with two videos; stopping a camera removes it elsewhere", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { hana, pia } = pages;
  if (!hana) return t.skip("the meeting test did not run");
  await hana.screenshot({ path: "/tmp/convene-media.png", fullPage: true });
  await hana.click("#cam");
  await hana.locator("#cam[aria-pressed=false]", { hasText: "Start camera" }).waitFor();
  await pia.locator("#videos figure[data-publisher=hana]").waitFor({ state: "detached" });
  assert.equal(await hana.locator("#videos figure[data-publisher=pia]").count(), 1, "Hana still sees Pia");
});

// After "Stop camera" then "Start camera" on the same transceiver, the re-published track
// reaches the others and decodes.
test("client: a camera started again reaches the others", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server } = suite;
  const { hana, pia } = pages;
  if (!hana) return t.skip("the meeting test did not run");
  // On again: the same transceivers carry the new camera.
  await hana.click("#cam");
  try {
    await until(() => remoteStats(pia, "hana"), (s) => s.videoWidth > 0 && s.playing, { what: "Hana's video back on Pia's page" });
  } catch (e) {
    const rtp = (page) => page.evaluate(async () => {
      const out = [];
      (await convene.media.pc.getStats()).forEach((s) => {
        if (s.kind === "video" && (s.type === "inbound-rtp" || s.type === "outbound-rtp")) {
          out.push({ type: s.type, mid: s.mid, rid: s.rid, packets: s.packetsReceived ?? s.packetsSent, frames: s.framesDecoded ?? s.framesEncoded, keyFrames: s.keyFramesDecoded ?? s.keyFramesEncoded, pli: s.pliCount, nack: s.nackCount, width: s.frameWidth });
        }
      });
      return out;
    });
    t.diagnostic(`pia: ${JSON.stringify(await rtp(pia))}`);
    t.diagnostic(`hana: ${JSON.stringify(await rtp(hana))}`);
    t.diagnostic(`server log:\n${server.log().split("\n").slice(-15).join("\n")}`);
    throw e;
  }
});

test("client: media follows people into a breakout", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { hana, pia } = pages;
  if (!hana) return t.skip("the meeting test did not run");
  await hana.click("#tab-breakouts");
  await hana.check("#bo-by-names");
  await hana.fill("#bo-names", "Circle A");
  await hana.click("#bo-plan");
  await hana.click("#bo-open");
  await pia.locator("#place", { hasText: "In Circle A" }).waitFor();
  // Different places: each loses the other's video.
  await pia.locator("#videos figure[data-publisher=hana]").waitFor({ state: "detached" });
  await hana.locator("#videos figure[data-publisher=pia]").waitFor({ state: "detached" });
  // The host visits the breakout: the same peers meet again there.
  await hana.locator("#bo-rooms li", { hasText: "Circle A" }).getByRole("button", { name: "Visit Circle A" }).click();
  await hana.locator("#place", { hasText: "Visiting Circle A" }).waitFor();
  await until(() => remoteStats(hana, "pia"), (s) => s.videoWidth > 0 && s.playing, { what: "Pia's video for the visiting host" });
  await until(() => remoteStats(pia, "hana"), (s) => s.videoWidth > 0 && s.playing, { what: "the visiting host's video in the breakout" });
  assert.deepEqual(pageErrors, [], "no uncaught errors in any page");
  assert.deepEqual(pageErrors, [], "no uncaught errors in any page");
});

test("client: a presenter's camera, mic and screen share reach a webcast viewer as separate tiles", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server } = suite;
  const room = "launch-stage";
  const open = async (who, role, name) => {
    const page = await newPage(who, server.token({ room, role, name, identity: who }).url);
    await page.locator("#status[data-state=connected]").waitFor();
    return page;
  };
  const pat = await open("pat", "presenter", "Pat");
  const vic = await open("vic", "participant", "Vic");
  assert.equal(await vic.locator("#cam").isHidden(), true, "the audience has no camera button in a webcast");
  await pat.click("#mic");
  await pat.click("#cam");
  await pat.click("#share");
  await pat.locator("#share[aria-pressed=true]", { hasText: "Stop sharing" }).waitFor();
  await vic.locator('#videos figure[data-publisher=pat][data-screen] video').waitFor();
  await vic.locator('#videos figure[data-publisher=pat]:not([data-screen]) video').waitFor();
  const playing = (screen) => vic.evaluate((screen) => {
    const v = document.querySelector(`#videos figure[data-publisher=pat]${screen ? "[data-screen]" : ":not([data-screen])"} video`);
    return { width: v?.videoWidth ?? 0, audio: v?.srcObject?.getAudioTracks().length ?? 0 };
  }, screen);
  const screen = await until(() => playing(true), (s) => s.width > 0, { what: "the screen share playing" });
  const camera = await until(() => playing(false), (s) => s.width > 0 && s.audio === 1, { what: "the camera with its mic playing" });
  // Speaker view puts the screen share first and large.
  const featured = await vic.evaluate(() => [...document.querySelectorAll("#videos figure")].map((f) => `${f.className}|${f.dataset.publisher}|${"screen" in f.dataset}`));
  assert.equal(await vic.locator("#videos figure.featured[data-screen]").count(), 1, JSON.stringify(featured));
  t.diagnostic(`screen ${screen.width}px, camera ${camera.width}px with audio`);
  // Stopping the share leaves the camera.
  await pat.click("#share");
  await vic.locator("#videos figure[data-publisher=pat][data-screen]").waitFor({ state: "detached" });
  await vic.waitForTimeout(1000);
  const left = await vic.evaluate(() => ({ tracks: [...convene.state.tracks.values()].map((t) => `${t.source}:${t.id}`), tiles: [...convene.media.tiles.keys()] }));
  assert.equal(await vic.locator("#videos figure[data-publisher=pat]").count(), 1, JSON.stringify(left));
  assert.deepEqual(pageErrors, [], "no uncaught errors in any page");
});

test("client: speaker view follows the active speaker; gallery, full screen and device pickers", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server } = suite;
  const room = "circle";
  const open = async (who, role, name) => {
    const page = await newPage(who, server.token({ room, role, name, identity: who }).url);
    await page.locator("#status[data-state=connected]").waitFor();
    return page;
  };
  const host = await open("hal", "host", "Hal");
  await host.click("#tab-console");
  await host.selectOption("#set-kind", "meeting");
  const ada = await open("ada", "participant", "Ada");
  await ada.click("#mic");
  await ada.click("#cam");
  await host.locator("#videos figure[data-publisher=ada] video").waitFor();
  // Ada's (fake) microphone beeps: her tile is marked speaking and featured in speaker view.
  // Generous: the level is read from short beeps, and CI shares two cores with everything else.
  await host.locator("#videos figure.speaking.featured[data-publisher=ada]").waitFor({ timeout: 45000 });
  await host.click("#layout");
  await host.locator("#videos[data-layout=gallery]").waitFor();
  assert.equal(await host.locator("#videos figure.featured").count(), 0, "gallery features no one");
  await host.locator("#layout", { hasText: "Speaker view" }).waitFor();

  await host.click("#fullscreen");
  await host.locator("#fullscreen", { hasText: "Exit full screen" }).waitFor();
  const full = await host.evaluate(() => ({ el: document.fullscreenElement?.tagName, stage: document.getElementById("stage").getBoundingClientRect().width, panel: document.getElementById("tabs").offsetParent === null }));
  assert.deepEqual({ el: full.el, panel: full.panel }, { el: "HTML", panel: true }, "the side panel steps aside");
  await host.click("#fullscreen");
  await host.locator("#fullscreen", { hasText: "Full screen" }).waitFor();

  // Device pickers list the (fake) devices; choosing a camera swaps the live track.
  await ada.click("#devices-open");
  const cameras = await ada.locator("#dev-camera option").evaluateAll((os) => os.map((o) => o.value).filter(Boolean));
  assert.ok(cameras.length >= 1, "a camera to choose");
  assert.ok(await ada.locator("#dev-mic option").count() >= 2, "Default and at least one microphone");
  const before = await ada.evaluate(() => convene.media.cam.id);
  await ada.selectOption("#dev-camera", cameras[cameras.length - 1]);
  await until(() => ada.evaluate(() => convene.media.cam.id), (id) => id !== before, { what: "a new camera track" });
  assert.equal(await ada.evaluate(() => convene.media.cam.getSettings().deviceId), cameras[cameras.length - 1]);
  // The others keep receiving video after the swap.
  const decoded = async () => (await remoteStats(host, "ada")).framesDecoded;
  const f1 = await decoded();
  await until(decoded, (n) => n > f1 + 10, { what: "frames after the camera swap" });
  assert.deepEqual(pageErrors, [], "no uncaught errors in any page");
});
