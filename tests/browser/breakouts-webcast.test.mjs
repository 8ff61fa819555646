// Breakouts by team in a webcast room: people moved into a breakout see their teammates (the
// webcast hides its audience elsewhere), and a visiting host sees and hears them. Server and
// Chromium run in a network namespace with only `lo` (docs/architecture.md, "Test networking"). Needs
// root; skipped without.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mediaSuite, openAs, until } from "./harness.mjs";

const suite = mediaSuite();

// What this page receives: decoded video frames and audio packets, over its peer connection.
const received = (page) => page.evaluate(async () => {
  const out = { frames: 0, audio: 0 };
  if (!convene.media.pc) return out;
  (await convene.media.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") out.frames += s.framesDecoded ?? 0;
    if (s.type === "inbound-rtp" && s.kind === "audio") out.audio += s.packetsReceived ?? 0;
  });
  return out;
});

test("webcast breakouts by team: teammates see each other; a visiting host sees and hears them", { timeout: 120_000 }, async (t) => {
  if (suite.skip) return t.skip(suite.skip);
  const { server, browser } = suite;
  const errors = [];
  const room = "launch-teams";
  const open = (identity, role, name, team) => openAs(browser, server, { room, identity, role, name, attrs: team ? { team } : {}, errors });
  const hana = await open("hana", "host", "Hana");
  const pia = await open("pia", "participant", "Pia", "Knox County");
  const ana = await open("ana", "participant", "Ana", "Knox County");
  const quinn = await open("quinn", "participant", "Quinn", "Hamilton");
  await hana.click("#tab-console");
  assert.equal(await hana.locator("#set-kind").inputValue(), "webcast");

  // A webcast audience does not see itself in the main room.
  await pia.click("#tab-people");
  assert.equal(await pia.locator("#members li[data-identity=ana]").count(), 0, "the main room hides the audience");

  await hana.click("#tab-breakouts");
  await hana.check("#bo-by-attr");
  await hana.fill("#bo-attr", "team");
  await hana.click("#bo-plan");
  await hana.locator("#bo-rooms li", { hasText: "Knox County" }).first().waitFor();
  await hana.click("#bo-open");

  // In the breakout, teammates appear; the other team does not.
  await pia.locator("#members li[data-identity=ana]").waitFor();
  await ana.click("#tab-people");
  await ana.locator("#members li[data-identity=pia]").waitFor();
  assert.equal(await pia.locator("#members li[data-identity=quinn]").count(), 0, "another team's member stays hidden");
  assert.equal(await ana.locator("#members li[data-identity=pia] .name").textContent(), "Pia", "named, not a raw identity");

  // Breakouts are meetings: Pia turns on her camera and microphone.
  await pia.locator("#cam", { hasText: "Start camera" }).waitFor();
  await pia.click("#cam");
  await pia.click("#mic");
  await until(() => received(ana), (r) => r.frames > 10 && r.audio > 50, { what: "Ana seeing and hearing Pia" });

  // The host visits Knox County and sees and hears Pia there.
  await hana.locator("#bo-rooms li", { hasText: "Knox County" }).getByRole("button", { name: "Visit Knox County" }).click();
  const first = await until(() => received(hana), (r) => r.frames > 10 && r.audio > 50, { what: "the visiting host seeing and hearing Pia" });
  await hana.locator('#videos figure[data-publisher="pia"] video').waitFor();
  const later = await until(() => received(hana), (r) => r.frames > first.frames + 10 && r.audio > first.audio + 25, { what: "Pia's media still flowing to the host" });
  t.diagnostic(`visiting host: ${later.frames} frames decoded, ${later.audio} audio packets from Pia`);
  assert.equal(await quinn.locator("#members li[data-identity=pia]").count(), 0);
  assert.deepEqual(errors, [], "no uncaught errors in any page");
});
