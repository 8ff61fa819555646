// HTTPS out of the box: `convene serve` with a self-signed certificate, Chromium trusting exactly
// that key (--ignore-certificate-errors-spki-list), two people joining over https:// and wss:// in a
// meeting, each publishing the fake camera and seeing the other's. Runs in a network namespace
// (docs/architecture.md, "Test networking"); skipped without root.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mediaSuite, until } from "./harness.mjs";

const suite = mediaSuite({ server: { tls: true } });

test("client over https:// and wss:// publishes its camera in a meeting", { timeout: 90_000 }, async () => {
  if (suite.skip) return;
  const { server } = suite;
  const room = "secure";
  const join = async (who, role, name) => {
    const { url } = server.token({ room, role, name, identity: who });
    assert.match(url, /^https:\/\/127\.0\.0\.1:\d+\//, "join links are https");
    const page = await suite.newPage(who, url, { viewport: { width: 1200, height: 800 } });
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
    await until(() => playing(page, other), (seen) => seen.width > 0 && seen.playing && seen.time > 0.2,
      { timeout: 30000, what: `${other}'s camera playing`, log: suite.log });
  }
  assert.deepEqual(suite.pageErrors, []);
});
