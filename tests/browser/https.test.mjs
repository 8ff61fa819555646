// HTTPS out of the box: `convene serve` with a self-signed certificate, Chromium trusting exactly
// that key (--ignore-certificate-errors-spki-list), two people joining over https:// and wss:// in a
// meeting, each publishing the fake camera and seeing the other's. Runs in a network namespace
// (docs/architecture.md, "Test networking"); skipped without root.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchChromium } from "./harness.mjs";
import { createNetns } from "./netns.mjs";

let netns;
let skip = null;
let server;
let browser;
const pageErrors = [];

before(async () => {
  try {
    netns = createNetns();
  } catch (e) {
    if (!e.skip) throw e;
    skip = e.skip;
    return;
  }
  server = await startServer({ netns, tls: true });
  browser = await launchChromium({
    netns,
    args: [
      "--allow-loopback-in-peer-connection", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      `--ignore-certificate-errors-spki-list=${server.tls.spki}`,
    ],
  });
}, { timeout: 120_000 });

after(async () => {
  try {
    await browser?.close();
  } finally {
    try {
      await server?.stop();
    } finally {
      netns?.delete();
    }
  }
}, { timeout: 30_000 });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("client over https:// and wss:// publishes its camera in a meeting", { timeout: 90_000 }, async () => {
  if (skip) return;
  const room = "secure";
  const join = async (who, role, name) => {
    const { url } = server.token({ room, role, name, identity: who });
    assert.match(url, /^https:\/\/127\.0\.0\.1:\d+\//, "join links are https");
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    page.on("pageerror", (err) => pageErrors.push(`${who}: ${err.message}`));
    await page.goto(url);
    await page.locator("#status[data-state=connected]").waitFor();
    return page;
  };
  const hana = await join("hana", "host", "Hana");
  await hana.click("#tab-console");
  await hana.selectOption("#set-kind", "meeting");
  const pia = await join("pia", "participant", "Pia");
  for (const page of [hana, pia]) {
    const where = await page.evaluate(() => ({ secure: window.isSecureContext, page: location.protocol, socket: convene.socket.url }));
    assert.equal(where.secure, true, "a secure context, so getUserMedia is allowed");
    assert.equal(where.page, "https:");
    assert.match(where.socket, /^wss:\/\//);
  }
  await pia.locator("#cam", { hasText: "Start camera" }).waitFor();
  await hana.click("#cam");
  await pia.click("#cam");
  const playing = (page, publisher) => page.evaluate((publisher) => {
    const v = document.querySelector(`#videos figure[data-publisher="${publisher}"] video`);
    return { width: v?.videoWidth ?? 0, playing: v ? !v.paused : false, time: v?.currentTime ?? 0 };
  }, publisher);
  for (const [page, other] of [[hana, "pia"], [pia, "hana"]]) {
    const deadline = Date.now() + 30000;
    let seen;
    for (;;) {
      seen = await playing(page, other);
      if (seen.width > 0 && seen.playing && seen.time > 0.2) break;
      if (Date.now() > deadline) throw new Error(`${other}'s camera never played: ${JSON.stringify(seen)}\n${server.log().slice(-3000)}`);
      await sleep(200);
    }
  }
  assert.deepEqual(pageErrors, []);
});
