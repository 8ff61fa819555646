// Scheduled convenings in Chromium: the host schedules one on the Convenings page, mints invite
// links per role, attendees join and wait in the lobby while the presenter rehearses backstage,
// the host starts it from the room, attendees are let in and see and hear the presenter
// (perceive.mjs), the host ends it from the Convenings page and downloads the attendance CSV
// from its Report page (the record's). axe-core finds nothing on the
// new pages (Convenings, the lobby, the backstage bar); with CONVENE_CONVENINGS_SCREENSHOTS=DIR
// desktop and phone screenshots are saved there (docs/screenshots/convenings). Server and
// Chromium run in a network namespace with only `lo`: needs root; skipped without.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { startServer, launchChromium, newPage, until, scaled, MEDIA_ARGS, ROOT } from "./harness.mjs";
import { createNetns } from "./netns.mjs";
import { perceiver } from "./perceive.mjs";

const AXE = fs.readFileSync(path.join(ROOT, "node_modules/axe-core/axe.min.js"), "utf8");
const API_KEY = "convenings-browser-test-key";
const PHONE = { width: 390, height: 844 };
const SHOTS = process.env.CONVENE_CONVENINGS_SCREENSHOTS;
let netns;
let skip = null;
let server;
let browser;

before(async () => {
  try {
    netns = createNetns();
  } catch (e) {
    if (!e.skip) throw e;
    skip = e.skip;
    return;
  }
  server = await startServer({ netns, env: { CONVENE_API_KEY: API_KEY } });
  browser = await launchChromium({ netns, args: MEDIA_ARGS });
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

async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.evaluate(AXE);
  return page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target).join(" ")} ${v.nodes[0]?.failureSummary ?? ""}`);
  });
}

async function shoot(page, name) {
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** A `datetime-local` value `minutes` from now, in the page's own zone. */
const localIn = (page, minutes) => page.evaluate((m) => {
  const d = new Date(Date.now() + m * 60_000);
  d.setSeconds(0, 0);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
}, minutes);

test("a host schedules a convening, attendees wait in the lobby, the host starts and ends it", { timeout: 600_000 }, async (t) => {
  if (skip) return t.skip(skip);
  const errors = [];

  // --- The Convenings page: sign in, schedule -------------------------------------------
  const admin = await newPage(browser, `${server.base}/convenings`, { who: "admin", errors });
  await admin.fill("#api-key", API_KEY);
  await admin.click("#signin-form button[type=submit]");
  await admin.locator("#schedule-form").waitFor();
  await admin.fill("#f-title", "Literacy strand launch");
  await admin.fill("#f-room", "launch");
  await admin.selectOption("#f-kind", "webcast");
  await admin.fill("#f-start", await localIn(admin, 60));
  await admin.fill("#f-end", await localIn(admin, 150));
  await admin.fill("#f-presenters", "pat");
  await admin.fill("#f-moderators", "mo");
  await admin.fill("#f-teams", "Knox County: ana\nHamilton: ben");
  await admin.click("#schedule-form button[type=submit]");
  const item = admin.locator("li.convening[data-state=scheduled]");
  await item.waitFor();
  assert.match(await item.locator("h3").textContent(), /Literacy strand launch/);
  assert.deepEqual(await axeViolations(admin), [], "axe on the Convenings page");

  // --- Invite links per role -----------------------------------------------------------
  const mint = async (role, name) => {
    const before = await item.locator(".links li").count();
    await item.locator(".invite select").selectOption(role);
    await item.locator(".invite input").fill(name);
    await item.locator(".invite button").click();
    await until(() => item.locator(".links li").count(), (n) => n > before, { what: `the ${role} link` });
    return item.locator(".links li input").first().inputValue();
  };
  const links = {
    pat: await mint("presenter", "Pat"),
    hana: await mint("host", "Hana"),
    ana: await mint("participant", "Ana"),
    ben: await mint("participant", "Ben"),
  };
  assert.equal(await item.locator(".links li[data-role=participant]").count(), 2);
  await shoot(admin, "convenings-desktop");

  // --- Attendees wait in the lobby; the presenter rehearses backstage ----------------------
  const open = async (who, viewport) => {
    const page = await newPage(browser, links[who], { who, errors, viewport });
    await page.locator("#status[data-state=connected]").waitFor();
    return page;
  };
  const ana = await open("ana");
  const ben = await open("ben", PHONE);
  for (const page of [ana, ben]) {
    await page.locator("#lobby").waitFor();
    assert.equal(await page.locator("#lobby-title").textContent(), "Literacy strand launch");
    assert.match(await page.locator("#lobby-when").textContent(), /^Starts .+\(in (\d+ minutes|1 hours)\)\.$/);
    assert.equal(await page.locator("#app").isHidden(), true);
  }
  assert.deepEqual(await axeViolations(ana), [], "axe on the lobby");
  await shoot(ana, "lobby-desktop");
  await shoot(ben, "lobby-phone");

  const pat = await open("pat");
  await pat.locator("#backstage").waitFor();
  assert.equal(await pat.locator("#convening-start").isHidden(), true, "a presenter has no Start button");
  await pat.click("#mic");
  await pat.click("#cam");
  const hana = await open("hana");
  await hana.locator("#convening-start").waitFor();
  const patId = await pat.evaluate(() => convene.state.you.identity);
  const expect = perceiver({ [patId]: "Pat" });
  const within = { timeout: scaled(45_000) };
  await expect(hana, "hana", { sees: [patId], hears: [patId], ...within });
  await pat.evaluate(() => convene.send("send_chat", { text: "Mic check, one two" }));
  await hana.locator("#chat li", { hasText: "Mic check" }).waitFor({ state: "attached" });
  // Backstage stays backstage: the attendees hold no media, no tracks, no chat.
  for (const page of [ana, ben]) {
    const seen = await page.evaluate(() => ({ pc: !!convene.media.pc, tracks: convene.state.tracks.size, chat: convene.state.chat.length, members: convene.state.members.size }));
    assert.deepEqual(seen, { pc: false, tracks: 0, chat: 0, members: 1 });
  }
  assert.deepEqual(await axeViolations(hana), [], "axe on the backstage bar");
  await shoot(hana, "backstage-desktop");

  // --- The host starts it: attendees come in and see and hear the presenter ----------------
  await hana.click("#convening-start");
  await hana.locator("#backstage").waitFor({ state: "hidden" });
  for (const page of [ana, ben]) {
    await page.locator("#lobby").waitFor({ state: "hidden" });
    await page.locator("#app").waitFor();
  }
  await Promise.all([
    expect(ana, "ana", { sees: [patId], hears: [patId], ...within }),
    expect(ben, "ben", { sees: [patId], hears: [patId], ...within }),
  ]);
  assert.equal(await ana.locator("#chat li", { hasText: "Mic check" }).count(), 0, "the rehearsal's chat stays backstage");
  await shoot(ana, "started-desktop");
  await shoot(ben, "started-phone");

  // --- The host ends it from the Convenings page -------------------------------------------
  await admin.reload();
  await admin.locator("li.convening[data-state=live]").waitFor();
  await admin.locator("li.convening[data-state=live] button.danger").click();
  await admin.locator("li.convening[data-state=ended]").waitFor();
  for (const page of [ana, ben, pat]) {
    await page.locator("#gate").waitFor();
    assert.equal(await page.locator("#gate-title").textContent(), "This convening has ended");
  }
  await shoot(ana, "ended-desktop");
  await shoot(admin, "convenings-ended-desktop");
  const adminPhone = await newPage(browser, `${server.base}/convenings`, { who: "admin-phone", errors, viewport: PHONE });
  await adminPhone.fill("#api-key", API_KEY);
  await adminPhone.click("#signin-form button[type=submit]");
  await adminPhone.locator("li.convening").waitFor();
  assert.deepEqual(await axeViolations(adminPhone), [], "axe on the Convenings page (phone)");
  const wide = await adminPhone.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  assert.equal(wide, false, "the Convenings page fits a phone");
  await shoot(adminPhone, "convenings-phone");
  // The report is the record's page, linked from here; signing in here opened it too.
  await admin.locator("li.convening a", { hasText: "Report" }).click();
  await admin.waitForURL(/\/report\/[0-9a-f-]{36}$/);
  await admin.locator("#content").waitFor();
  const [download] = await Promise.all([
    admin.waitForEvent("download"),
    admin.click("button[data-file='attendance.csv']"),
  ]);
  const csv = fs.readFileSync(await download.path(), "utf8");
  for (const name of ["Ana", "Ben"]) assert.match(csv, new RegExp(`^"?${name}"?,`, "m"), `${name} in the attendance CSV:\n${csv}`);
  await shoot(admin, "report-desktop");
  assert.deepEqual(errors, []);
});
