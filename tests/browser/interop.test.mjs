// WHIP/WHEP interop with third-party npm clients in Chromium (issue 21): publish with one
// library, play with another, from a page on a second origin (interop-page.mjs, another port),
// so every request goes through CORS. What is checked is what a person perceives in the
// player's <video>: frames advancing, and sound in its audio measured with Web Audio.
// Runs inside a network namespace like the other media suites; skipped without root.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import { mediaSuite, until } from "./harness.mjs";
import { HEARD_RMS } from "./perceive.mjs";

const STEP = { timeout: 120_000 };
const PAGE_PORT = 8090;
const suite = mediaSuite();
const { pageErrors } = suite;
let pageServer = null;

before(async () => {
  if (suite.skip) return;
  const argv = [process.execPath, path.join(import.meta.dirname, "interop-page.mjs"), String(PAGE_PORT)];
  const [cmd, args] = suite.netns.exec(argv);
  pageServer = spawn(cmd, args, { stdio: ["ignore", "pipe", "inherit"] });
  const lines = [];
  readline.createInterface({ input: pageServer.stdout }).on("line", (l) => lines.push(l));
  await until(async () => lines.includes("ready"), (ok) => ok, { what: "the interop page server" });
}, { timeout: 60_000 });

after(() => pageServer?.kill());

/** A fresh page on the second origin, its libraries loaded. */
async function playerPage(who) {
  const page = await suite.newPage(who, `http://127.0.0.1:${PAGE_PORT}/`);
  await page.waitForFunction(() => window.libsReady && window.EyevinnWHIP && window.EyevinnPlayer);
  return page;
}

// In the page: what its <video> shows and plays. Sound: the RMS of the element's audio track
// through an AnalyserNode, the loudest of the last ~2 s (the fake microphone beeps each second).
const PERCEIVE = () => {
  const v = document.getElementById("v");
  const P = (window.__p ??= { ctx: new AudioContext(), track: null, samples: [] });
  if (P.ctx.state !== "running") P.ctx.resume().catch(() => {});
  const track = v.srcObject?.getAudioTracks().find((t) => t.readyState === "live") ?? null;
  if (track && track !== P.track) {
    clearInterval(P.timer);
    P.track = track;
    P.samples = [];
    const analyser = P.ctx.createAnalyser();
    analyser.fftSize = 2048;
    P.ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    P.timer = setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const x of buf) sum += x * x;
      const now = performance.now();
      P.samples.push([now, Math.sqrt(sum / buf.length)]);
      while (P.samples.length && P.samples[0][0] < now - 1800) P.samples.shift();
    }, 50);
  }
  const q = v.getVideoPlaybackQuality();
  return {
    frames: q.totalVideoFrames,
    time: v.currentTime,
    width: v.videoWidth,
    paused: v.paused,
    rms: P.samples.reduce((a, [, r]) => Math.max(a, r), 0),
    origin: location.origin,
  };
};

/** Waits until the player's video moves (frames and clock advance) and its audio carries sound. */
async function perceives(page, what) {
  let prev = await page.evaluate(PERCEIVE);
  return until(async () => {
    const now = await page.evaluate(PERCEIVE);
    const moving = now.width > 0 && !now.paused && now.frames > prev.frames && now.time > prev.time;
    prev = now;
    return { ...now, moving };
  }, (s) => s.moving && s.rms > HEARD_RMS, { timeout: 45_000, every: 700, what, log: suite.log });
}

// In the page: the camera and microphone (Chromium's fake devices).
const CAMERA = `navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } })`;

test("publish with @eyevinn/whip-web-client, play with whip-whep (sendrecv offer), cross-origin", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server } = suite;
  const room = "interop-a";
  const publisher = server.token({ room, role: "presenter", name: "Pat", identity: "pat" }).token;
  const viewer = server.token({ room, role: "participant", name: "Vic", identity: "vic" }).token;

  const pub = await playerPage("eyevinn-whip");
  const resource = await pub.evaluate(async ({ endpoint, token, camera }) => {
    const stream = await eval(camera);
    const client = new window.EyevinnWHIP.WHIPClient({ endpoint, opts: { iceServers: [], authkey: token } });
    await client.ingest(stream);
    window.client = client;
    return client.getResourceUrl();
  }, { endpoint: `${server.base}/whip/${room}`, token: publisher, camera: CAMERA });
  assert.match(resource, new RegExp(`/whip/${room}/\\w+$`));

  const view = await playerPage("whip-whep-viewer");
  const offered = await view.evaluate(async ({ url, token }) => {
    const pc = new RTCPeerConnection({ iceServers: [] });
    // As the library's README does: transceivers with the default direction, sendrecv.
    pc.addTransceiver("video");
    pc.addTransceiver("audio");
    pc.ontrack = (e) => {
      const v = document.getElementById("v");
      v.srcObject ??= new MediaStream();
      v.srcObject.addTrack(e.track);
    };
    const whep = new window.WhipWhep.WHEPClient();
    await whep.view(pc, url, token);
    window.pc = pc;
    return pc.getTransceivers().map((x) => x.direction);
  }, { url: `${server.base}/whep/${room}`, token: viewer });
  assert.deepEqual(offered, ["sendrecv", "sendrecv"]);
  const seen = await perceives(view, "the whip-whep viewer to see and hear the Eyevinn publisher");
  assert.notEqual(seen.origin, server.base, "the page is on another origin");
  assert.deepEqual(pageErrors, []);
});

test("publish with whip-whep, play with @eyevinn/webrtc-player, cross-origin", STEP, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server } = suite;
  const room = "interop-b";
  const publisher = server.token({ room, role: "presenter", name: "Pia", identity: "pia" }).token;
  const viewer = server.token({ room, role: "participant", name: "Val", identity: "val" }).token;

  const pub = await playerPage("whip-whep-publisher");
  await pub.evaluate(async ({ url, token, camera }) => {
    const stream = await eval(camera);
    const pc = new RTCPeerConnection({ iceServers: [] });
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly" });
    const whip = new window.WhipWhep.WHIPClient();
    await whip.publish(pc, url, token);
    window.pc = pc;
  }, { url: `${server.base}/whip/${room}`, token: publisher, camera: CAMERA });
  await pub.waitForFunction(() => window.pc.connectionState === "connected");

  const view = await playerPage("eyevinn-player");
  await view.evaluate(async ({ url, token }) => {
    const player = new window.EyevinnPlayer.WebRTCPlayer({ video: document.getElementById("v"), type: "whep", iceServers: [] });
    await player.load(new URL(url), `Bearer ${token}`);
    window.player = player;
  }, { url: `${server.base}/whep/${room}`, token: viewer });
  const seen = await perceives(view, "the Eyevinn player to see and hear the whip-whep publisher");
  assert.notEqual(seen.origin, server.base, "the page is on another origin");
  assert.deepEqual(pageErrors, []);
});
