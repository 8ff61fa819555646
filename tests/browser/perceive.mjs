// What a person perceives in the browser client: whose video they see move and whose voice
// they hear, read from the page's own <video> tiles, not from server counters. Seeing: the
// element plays, its clock advances and it decodes new frames. Hearing: the element is not
// muted, not paused, has volume, and the audio it plays carries sound, measured with Web Audio
// (the element's audio track -> MediaStreamSource -> AnalyserNode) against the fake
// microphone's beep. Not element.captureStream(): in Chromium, when an element playing a
// MediaStream gets a new srcObject, its capture ends the remote tracks themselves (the page
// then loses the person for good). Not a test file itself.
import { sleep } from "./harness.mjs";

/** RMS over the last window above which a tile is heard (the fake mic's beep is ~0.1-0.3). */
export const HEARD_RMS = 0.01;
/** How long a meter remembers its loudest moment: the fake mic beeps about once a second. */
const WINDOW_MS = 1800;

// In the page: one meter per tile's audio, sampled every 50 ms; returns what each remote tile
// shows and plays. `measure` false reads the tiles only (no AudioContext: it must not need,
// or create, a user gesture).
const PROBE = ({ measure, windowMs }) => {
  const P = (window.__perceive ??= { ctx: null, meters: new Map() });
  if (measure && !P.ctx) P.ctx = new AudioContext();
  if (P.ctx && P.ctx.state !== "running") P.ctx.resume().catch(() => {});
  const tiles = [];
  for (const fig of document.querySelectorAll("#videos figure[data-publisher]")) {
    const publisher = fig.dataset.publisher;
    if (publisher === "you" || publisher === "you-screen") continue;
    const v = fig.querySelector("video");
    const src = v.srcObject;
    const key = `${publisher}${"screen" in fig.dataset ? ":screen" : ""}`;
    let rms = null;
    if (P.ctx) {
      // The audio the element plays: its source's live audio track.
      const track = src?.getAudioTracks().find((x) => x.readyState === "live");
      let m = P.meters.get(key);
      if (m && m.track !== track) {
        clearInterval(m.timer);
        m.source.disconnect();
        P.meters.delete(key);
        m = null;
      }
      if (!m) {
        if (track) {
          const analyser = P.ctx.createAnalyser();
          analyser.fftSize = 2048;
          const source = P.ctx.createMediaStreamSource(new MediaStream([track]));
          source.connect(analyser);
          const buf = new Float32Array(analyser.fftSize);
          m = { track, source, samples: [] };
          m.timer = setInterval(() => {
            analyser.getFloatTimeDomainData(buf);
            let sum = 0;
            for (const x of buf) sum += x * x;
            const now = performance.now();
            m.samples.push([now, Math.sqrt(sum / buf.length)]);
            while (m.samples.length && m.samples[0][0] < now - windowMs) m.samples.shift();
          }, 50);
          P.meters.set(key, m);
        }
      }
      if (m) rms = m.samples.reduce((a, [, r]) => Math.max(a, r), 0);
    }
    const q = v.getVideoPlaybackQuality();
    tiles.push({
      publisher,
      screen: "screen" in fig.dataset,
      caption: fig.querySelector("figcaption")?.textContent ?? "",
      paused: v.paused,
      muted: v.muted,
      volume: v.volume,
      width: v.videoWidth,
      time: v.currentTime,
      frames: q.totalVideoFrames,
      video: !!src?.getVideoTracks().some((t) => t.readyState === "live"),
      audio: !!src?.getAudioTracks().some((t) => t.readyState === "live"),
      rms,
      ctx: P.ctx?.state ?? null,
    });
  }
  return { tiles, soundOff: !(document.getElementById("sound-off")?.hidden ?? true) };
};

/**
 * Reads a page's tiles. With `gesture: false` it goes through a CDP session of its own, whose
 * evaluations carry no user activation (Playwright's do), and measures no sound.
 */
export async function probe(page, { gesture = true } = {}) {
  if (gesture) return page.evaluate(PROBE, { measure: true, windowMs: WINDOW_MS });
  page.__cdp ??= await page.context().newCDPSession(page);
  const r = await page.__cdp.send("Runtime.evaluate", {
    expression: `(${PROBE})(${JSON.stringify({ measure: false, windowMs: WINDOW_MS })})`,
    returnByValue: true,
  });
  if (r.exceptionDetails) throw new Error(`probe: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
  return r.result.value;
}

/**
 * `people`: identity -> display name. Returns `expect(page, viewer, want)`, which waits until
 * `viewer` (an identity) perceives exactly `want.sees` (video moving; `[]` for nobody),
 * hears everyone in `want.hears` and none in `want.notHears`, each captioned with their name;
 * with `want.screens`, sees exactly those people's screen shares move (`[]`: no screen tile).
 * It fails naming each pair, e.g. "Ana cannot hear Hana".
 */
export function perceiver(people) {
  const name = (id) => people[id] ?? id;
  /**
   * @param {import("playwright-core").Page} page
   * @param {string} viewer
   * @param {{sees: string[], hears?: string[], notHears?: string[], screens?: string[], gesture?: boolean, timeout?: number, soundOff?: boolean}} want
   */
  async function expect(page, viewer, want) {
    const { sees, hears = [], notHears = [], gesture = true, timeout = 45_000 } = want;
    const deadline = Date.now() + timeout;
    let problems = [];
    let last = null;
    for (;;) {
      const a = await probe(page, { gesture });
      await sleep(700);
      const b = await probe(page, { gesture });
      last = b;
      problems = judge(viewer, a, b, { sees, hears, notHears, screens: want.screens, soundOff: want.soundOff });
      if (problems.length === 0) return b;
      if (Date.now() > deadline) break;
      await sleep(300);
    }
    // What the page's peer connection carries, to tell a server fault from a page fault.
    const media = await page.evaluate(async () => {
      const pc = window.convene?.media?.pc;
      if (!pc) return "no peer connection";
      const tracks = [...window.convene.state.tracks.values()].map((t) => `${t.id}:${t.publisher}:${t.kind}`).join(",");
      const inbound = new Map();
      (await pc.getStats()).forEach((s) => { if (s.type === "inbound-rtp") inbound.set(s.mid, `${s.packetsReceived}pk${s.kind === "video" ? `/${s.framesDecoded}fr/${s.pliCount}pli` : ""}`); });
      const tx = pc.getTransceivers().map((x) => `${x.mid}:${x.currentDirection}:${x.receiver.track.kind[0]}:${x.receiver.track.id.slice(0, 8)}:${x.receiver.track.readyState}:${inbound.get(x.mid) ?? "-"}`).join(",");
      const notices = [...document.querySelectorAll("#notices li")].map((li) => li.textContent.trim()).join(" / ");
      return `${pc.connectionState}, signaling ${pc.signalingState}; room tracks ${tracks}; transceivers ${tx}; notices: ${notices || "none"}`;
    }).catch((e) => `unreadable: ${e.message}`);
    const seen = last.tiles.map((t) => `${t.publisher}${t.screen ? "(screen)" : ""}[${t.caption}] paused=${t.paused} muted=${t.muted} vol=${t.volume} ${t.width}px frames=${t.frames} video=${t.video} audio=${t.audio} rms=${t.rms?.toFixed(3)} ctx=${t.ctx}`);
    throw new Error(`${problems.join("; ")}\n    ${name(viewer)}'s tiles: ${seen.join(" | ") || "none"}\n    ${name(viewer)}'s media: ${media}`);
  }

  function judge(viewer, a, b, { sees, hears, notHears, screens, soundOff }) {
    const problems = [];
    const who = name(viewer);
    const camera = (s, id) => s.tiles.find((t) => t.publisher === id && !t.screen);
    const screen = (s, id) => s.tiles.find((t) => t.publisher === id && t.screen);
    const advancing = (t0, t1) => !!(t0 && t1 && t1.video && !t1.paused && t1.width > 0 && t1.frames > t0.frames && t1.time > t0.time);
    const moving = (id) => advancing(camera(a, id), camera(b, id));
    if (screens) {
      for (const id of screens) {
        if (!advancing(screen(a, id), screen(b, id))) problems.push(`${who} cannot see ${name(id)}'s screen`);
      }
      for (const t of b.tiles) {
        if (t.screen && !screens.includes(t.publisher)) problems.push(`${who} still has ${name(t.publisher)}'s screen tile`);
      }
    }
    const captioned = (id) => {
      const t = camera(b, id);
      if (t && t.caption !== name(id)) problems.push(`${who} sees ${name(id)}'s tile captioned "${t.caption}"`);
    };
    for (const id of sees) {
      if (!moving(id)) problems.push(`${who} cannot see ${name(id)}`);
      captioned(id);
    }
    for (const t of b.tiles) {
      if (!t.screen && !sees.includes(t.publisher) && moving(t.publisher)) problems.push(`${who} sees ${name(t.publisher)} but should not`);
    }
    for (const id of hears) {
      const t = camera(b, id);
      const why = !t ? "no tile" : !t.audio ? "no audio track" : t.muted ? "muted" : t.paused ? "paused" : t.volume === 0 ? "volume 0"
        : t.rms === null ? "nothing to measure" : t.rms < HEARD_RMS ? `silent (rms ${t.rms.toFixed(4)})` : null;
      if (why) problems.push(`${who} cannot hear ${name(id)} (${why})`);
      else captioned(id);
    }
    for (const id of notHears) {
      const t = camera(b, id);
      if (t && t.audio && !t.muted && !t.paused && t.volume > 0 && t.rms !== null && t.rms >= HEARD_RMS) {
        problems.push(`${who} still hears ${name(id)} (rms ${t.rms.toFixed(3)})`);
      }
    }
    if (soundOff !== undefined && b.soundOff !== soundOff) {
      problems.push(soundOff ? `${who}'s page does not say that sound is off` : `${who}'s page still says that sound is off`);
    }
    return problems;
  }

  return expect;
}
