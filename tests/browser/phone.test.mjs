// The client on a phone (390x844, touch) against the real server: a webcast viewer lands on the
// stage; notices never cover the chat composer or the control bar (in the main room and in a
// breakout); the control bar is one row, the rest in a keyboard-operable "More" menu; axe-core
// finds nothing on these views.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { startServer, launchChromium, openAs, until, ROOT } from "./harness.mjs";

const ROOM = "phone";
const STEP = { timeout: 60_000 };
const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true };
const AXE = fs.readFileSync(path.join(ROOT, "node_modules/axe-core/axe.min.js"), "utf8");
let server;
let browser;
let host;
let phone;
const errors = [];

async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.evaluate(AXE);
  return page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => `${v.id}: ${v.nodes[0]?.target} ${v.nodes[0]?.failureSummary ?? ""}`);
  });
}

/** A phone page (a mobile, touch context), joined as someone. */
async function openPhone(identity, name, attrs = {}) {
  const { url } = server.token({ room: ROOM, role: "participant", name, identity, attrs });
  const context = await browser.newContext(PHONE);
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.on("pageerror", (err) => errors.push(`${identity}: ${err.message}`));
  await page.goto(url);
  await page.locator("#status[data-state=connected]").waitFor();
  return page;
}

const send = (page, type, fields = {}) => page.evaluate(([t, f]) => convene.send(t, f), [type, fields]);
const box = (page, selector) => page.evaluate((s) => {
  const r = document.querySelector(s).getBoundingClientRect();
  return { top: r.top, bottom: r.bottom, left: r.left, right: r.right, height: r.height };
}, selector);
const overlaps = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;

/** Every shown notice's box, checked against the boxes of `selectors` (each must be shown). */
async function noticesClear(page, selectors) {
  const notices = await page.evaluate(() => [...document.querySelectorAll("#notices li")]
    .filter((li) => li.getClientRects().length)
    .map((li) => { const r = li.getBoundingClientRect(); return { text: li.textContent, top: r.top, bottom: r.bottom, left: r.left, right: r.right }; }));
  assert.ok(notices.length > 0, "notices are showing");
  for (const selector of selectors) {
    const target = await box(page, selector);
    assert.ok(target.height > 0, `${selector} is shown`);
    for (const n of notices) assert.ok(!overlaps(n, target), `notice "${n.text}" covers ${selector}: ${JSON.stringify({ n, target })}`);
  }
  return notices.length;
}

/** The control bar is one row: no taller than its tallest button plus its padding. */
async function oneRow(page) {
  const m = await page.evaluate(() => {
    const bar = document.getElementById("controlbar");
    const buttons = [...bar.children].filter((b) => b.tagName === "BUTTON" && b.getClientRects().length);
    const tops = new Set(buttons.map((b) => Math.round(b.getBoundingClientRect().top)));
    return { bar: bar.getBoundingClientRect().height, button: Math.max(...buttons.map((b) => b.getBoundingClientRect().height)), rows: tops.size, shown: buttons.map((b) => b.id) };
  });
  assert.equal(m.rows, 1, `buttons on one row: ${JSON.stringify(m)}`);
  assert.ok(m.bar < m.button * 1.5, `bar ${m.bar}px for ${m.button}px buttons (${m.shown})`);
  return m.shown;
}

before(async () => {
  server = await startServer();
  browser = await launchChromium({ args: ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"] });
  host = await openAs(browser, server, { room: ROOM, identity: "hana", role: "host", name: "Hana Okafor", errors });
}, { timeout: 120_000 });

after(async () => {
  try {
    await browser?.close();
  } finally {
    await server?.stop();
  }
}, { timeout: 30_000 });

test("a webcast viewer on a phone lands on the stage; the control bar is one row", STEP, async () => {
  phone = await openPhone("quinn", "Quinn Adams", { team: "Hamilton" });
  await phone.locator("#stage").waitFor({ state: "visible" });
  assert.equal(await phone.getAttribute("#tab-stage", "aria-selected"), "true");
  assert.equal(await phone.locator("#panel-chat").isVisible(), false);
  const shown = await oneRow(phone);
  assert.deepEqual(shown, ["hand", "more", "leave"]);
  assert.deepEqual(await axeViolations(phone), [], "phone stage");
});

test("notices never cover the chat composer or the control bar", STEP, async () => {
  await phone.click("#tab-chat");
  // Three notices at once (refusals, as a flood of questions gets).
  for (const text of ["one", "two", "three"]) await send(phone, "delete_chat", { message_id: 999_000 + text.length });
  await until(() => phone.locator("#notices li").count(), (n) => n >= 3, { what: "three notices" });
  const n = await noticesClear(phone, ["#chat-form", "#chat-text", "#chat-send", "#controlbar"]);
  assert.ok(n >= 1 && n <= 2, `at most two notices show at once on a phone (${n})`);
  // The composer still works under them.
  await phone.fill("#chat-text", "Typed with notices showing");
  await phone.click("#chat-send");
  await host.locator("#chat li", { hasText: "Typed with notices showing" }).waitFor({ state: "attached" });
  // Dismissible: the next one comes up.
  await phone.locator("#notices li .dismiss").first().click();
  assert.deepEqual(await axeViolations(phone), [], "phone chat with notices");
});

test("in a breakout (cameras on), a notice leaves Mute, Stop camera and Raise hand uncovered", STEP, async () => {
  await send(host, "set_breakout_plan", {
    plan: { rooms: { from_attribute: "team" }, assignment: { mode: "by_attribute", key: "team" }, duration_s: 600, allow_leave: true },
  });
  await send(host, "open_breakouts");
  await phone.locator("#place", { hasText: "In Hamilton" }).waitFor();
  await phone.locator("#mic").waitFor({ state: "visible" });
  await send(host, "broadcast_to_breakouts", { text: "Five minutes left, then share one idea back" });
  await phone.locator("#notices li", { hasText: "Five minutes left" }).waitFor();
  await noticesClear(phone, ["#mic", "#cam", "#hand", "#more", "#controlbar"]);
  const shown = await oneRow(phone);
  assert.deepEqual(shown, ["mic", "cam", "hand", "more", "leave"]);
  // Mic and camera on: longer labels, still one row.
  await phone.click("#cam");
  await phone.locator("#cam[aria-pressed=true]").waitFor();
  await phone.click("#mic");
  await phone.locator("#mic[aria-pressed=true]").waitFor();
  await oneRow(phone);
  await noticesClear(phone, ["#mic", "#cam", "#hand", "#controlbar"]);
  assert.deepEqual(await axeViolations(phone), [], "phone in a breakout");
  await phone.click("#cam");
  await phone.click("#mic");
  await send(host, "close_breakouts", { countdown_s: 0 });
  await phone.locator("#place", { hasText: "Main room" }).waitFor();
});

test("the More menu: a button with aria-expanded, keyboard-operable, Escape closes it", STEP, async () => {
  const more = phone.locator("#more");
  assert.equal(await more.getAttribute("aria-expanded"), "false");
  assert.equal(await more.getAttribute("aria-controls"), "more-menu");
  await more.focus();
  await phone.keyboard.press("Enter");
  await phone.locator("#more-menu").waitFor({ state: "visible" });
  assert.equal(await more.getAttribute("aria-expanded"), "true");
  assert.equal(await phone.evaluate(() => document.getElementById("more-menu").contains(document.activeElement)), true, "focus moves into the menu");
  const items = await phone.locator("#more-menu > button:visible").evaluateAll((els) => els.map((e) => e.id));
  assert.deepEqual(items, ["layout", "fullscreen", "cc", "devices-open"]);
  assert.deepEqual(await axeViolations(phone), [], "More menu open");
  await phone.keyboard.press("Escape");
  await phone.locator("#more-menu").waitFor({ state: "hidden" });
  assert.equal(await more.getAttribute("aria-expanded"), "false");
  assert.equal(await phone.evaluate(() => document.activeElement.id), "more", "focus returns to More");
  // Choose from the keyboard: the menu acts and closes.
  await phone.keyboard.press("Enter");
  await phone.locator("#more-menu").waitFor({ state: "visible" });
  assert.equal(await phone.evaluate(() => document.activeElement.id), "layout");
  await phone.keyboard.press("Enter");
  await phone.locator("#more-menu").waitFor({ state: "hidden" });
  await phone.locator("#layout", { hasText: "Speaker view" }).waitFor({ state: "attached" });
  assert.equal(await phone.evaluate(() => document.activeElement.id), "more");
  // A tap elsewhere closes it too.
  await phone.click("#more");
  await phone.locator("#more-menu").waitFor({ state: "visible" });
  await phone.click("#tab-chat");
  await phone.locator("#more-menu").waitFor({ state: "hidden" });
  // Wider than a phone: everything is back in the bar and there is no More button.
  await phone.setViewportSize({ width: 1200, height: 844 });
  await phone.locator("#more").waitFor({ state: "hidden" });
  const bar = await phone.locator("#controlbar > button:visible").evaluateAll((els) => els.map((e) => e.id));
  assert.deepEqual(bar, ["hand", "layout", "fullscreen", "cc", "devices-open", "leave"]);
  await phone.setViewportSize(PHONE.viewport);
  await phone.locator("#more").waitFor({ state: "visible" });
  assert.deepEqual(errors, [], "no uncaught errors in any page");
});
