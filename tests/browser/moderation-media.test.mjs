// A moderator mutes a participant's microphone in a meeting: the SFU stops forwarding it, the
// others stop receiving it, the participant is told and cannot turn it back on; allowed again,
// it stays muted until they unmute it themselves. Server and Chromium run in a network
// namespace with only `lo` (docs/architecture.md, "Test networking"). Needs root; skipped without.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mediaSuite, openAs, sleep, until } from "./harness.mjs";

const suite = mediaSuite();

// Audio packets received on this page's peer connection (each page here hears only Pia).
const audioIn = (page) => page.evaluate(async () => {
  if (!convene.media.pc) return 0;
  let packets = 0;
  (await convene.media.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") packets += s.packetsReceived ?? 0;
  });
  return packets;
});

test("a moderator mutes a participant's microphone; the others stop receiving it", { timeout: 120_000 }, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server, browser } = suite;
  const errors = [];
  const room = "muting";
  const hana = await openAs(browser, server, { room, identity: "hana", role: "host", name: "Hana", errors });
  await hana.click("#tab-console");
  await hana.selectOption("#set-kind", "meeting");
  const pia = await openAs(browser, server, { room, identity: "pia", role: "participant", name: "Pia", errors });
  const ben = await openAs(browser, server, { room, identity: "ben", role: "participant", name: "Ben", errors });
  await pia.locator("#mic", { hasText: "Start mic" }).waitFor();
  await pia.click("#mic");
  // Ben receives Pia's microphone (a receive-only peer once a track is offered).
  await until(() => audioIn(ben), (n) => n > 50, { what: "Ben receiving Pia's audio" });

  await hana.click("#tab-people");
  await hana.getByRole("button", { name: "Mute mic: Pia" }).click();
  await pia.locator("#mic[disabled]", { hasText: "Mic muted by a moderator" }).waitFor();
  await hana.getByRole("button", { name: "Allow mic: Pia" }).waitFor();
  // Forwarding stops: after a moment to settle, Ben's count holds still.
  await sleep(1000);
  const stopped = await audioIn(ben);
  await sleep(2000);
  const later = await audioIn(ben);
  assert.ok(later - stopped <= 5, `Ben still received ${later - stopped} audio packets after the mute`);
  // Pia cannot turn it back on herself.
  assert.equal(await pia.locator("#mic").isDisabled(), true);

  // Allowed again: nothing is heard until Pia unmutes herself.
  await hana.getByRole("button", { name: "Allow mic: Pia" }).click();
  await pia.locator("#mic:not([disabled])", { hasText: "Unmute" }).waitFor();
  await pia.click("#mic");
  const resumed = await audioIn(ben);
  await until(() => audioIn(ben), (n) => n > resumed + 50, { what: "Pia's audio back at Ben after she unmuted" });
  t.diagnostic(`Ben's audio packets: ${stopped} at the mute, ${later} 2 s later; flowing again after Pia unmuted`);
  assert.deepEqual(errors, [], "no uncaught errors in any page");
});
