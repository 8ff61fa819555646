#!/usr/bin/env node
// Join latency as a viewer perceives it: from opening a join link to the first decoded frame
// of the stage video, and to the first audible stage audio (the tile unmuted and playing, its
// audio above the RMS threshold). A presenter is on stage in a webcast with Chromium's fake
// camera and microphone; JOINS viewers join one after another, each in a fresh browser context.
// Times are the page's own clock (performance.now(), zero at navigation start). Server and
// Chromium run in a network namespace with only `lo` (needs root, like the media tests).
//
//   node scripts/bench-join.mjs            # JOINS=20 by default
import { launchChromium, startServer, until, MEDIA_ARGS } from "../tests/browser/harness.mjs";
import { createNetns } from "../tests/browser/netns.mjs";
import { HEARD_RMS } from "../tests/browser/perceive.mjs";

const JOINS = Number(process.env.JOINS ?? 20);
const ROOM = "bench-join";

// In each viewer page from its first script: watch for the presenter's tile and note when its
// first frame is presented and when its audio is first audible.
const WATCH = ({ publisher, threshold }) => {
  const seen = (window.__join = { frame: null, audible: null });
  const ctx = new AudioContext();
  let meter = null;
  const buf = new Float32Array(2048);
  const tick = () => {
    const v = document.querySelector(`#videos figure[data-publisher="${publisher}"] video`);
    if (v && seen.frame === null && !v.__watched && "requestVideoFrameCallback" in v) {
      v.__watched = true;
      v.requestVideoFrameCallback(() => { seen.frame ??= performance.now(); });
    }
    const track = v?.srcObject?.getAudioTracks().find((t) => t.readyState === "live");
    if (track && meter?.track !== track) {
      const analyser = ctx.createAnalyser();
      analyser.fftSize = buf.length;
      ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
      meter = { track, analyser };
    }
    if (meter && seen.audible === null && !v.muted && !v.paused && v.volume > 0) {
      meter.analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const x of buf) sum += x * x;
      if (Math.sqrt(sum / buf.length) > threshold) seen.audible = performance.now();
    }
    if (seen.frame === null || seen.audible === null) setTimeout(tick, 10);
  };
  tick();
};

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

const netns = createNetns();
const server = await startServer({ netns, env: { RUST_LOG: "warn" } });
// The meter's AudioContext must run without a gesture; the gesture path is journeys' business.
const browser = await launchChromium({ netns, args: [...MEDIA_ARGS, "--autoplay-policy=no-user-gesture-required"] });
try {
  const presenter = await (await browser.newContext()).newPage();
  await presenter.goto(server.token({ room: ROOM, role: "presenter", name: "Pat", identity: "pat" }).url);
  await presenter.locator("#status[data-state=connected]").waitFor();
  await presenter.click("#mic");
  await presenter.click("#cam");
  await presenter.locator("#cam[aria-pressed=true]").waitFor();
  const runs = [];
  for (let i = 0; i < JOINS; i++) {
    const context = await browser.newContext();
    await context.addInitScript(WATCH, { publisher: "pat", threshold: HEARD_RMS });
    const page = await context.newPage();
    await page.goto(server.token({ room: ROOM, role: "participant", name: `Viewer ${i}`, identity: `viewer-${i}` }).url);
    const seen = await until(() => page.evaluate(() => window.__join), (s) => s && s.frame !== null && s.audible !== null, { timeout: 30_000, every: 100, what: `viewer ${i}'s first frame and sound` });
    runs.push(seen);
    console.log(`join ${i + 1}: first frame ${seen.frame.toFixed(0)} ms, first audible ${seen.audible.toFixed(0)} ms`);
    await context.close();
  }
  for (const what of ["frame", "audible"]) {
    const sorted = runs.map((r) => r[what]).sort((a, b) => a - b);
    console.log(`${what === "frame" ? "first decoded stage frame" : "first audible stage audio"}: p50 ${pct(sorted, 50).toFixed(0)} ms, p95 ${pct(sorted, 95).toFixed(0)} ms, min ${sorted[0].toFixed(0)}, max ${sorted[sorted.length - 1].toFixed(0)} (n=${sorted.length})`);
  }
} finally {
  await browser.close();
  await server.stop();
  netns.delete();
}
