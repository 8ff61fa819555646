// The browser client against the real server: a host and two participants in headless Chromium.
// Chat, moderated Q&A with votes, hands, a dropped socket that resumes, breakouts by team.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchChromium, openAs } from "./harness.mjs";

const ROOM = "launch";
const STEP = { timeout: 60_000 };
let server;
let browser;
const pages = {};
const pageErrors = [];

async function join(who, { role, name, attrs }) {
  const page = await openAs(browser, server, { room: ROOM, identity: who, role, name, attrs, errors: pageErrors });
  // The page takes the join token out of the address bar once loaded.
  assert.doesNotMatch(page.url(), /token=/);
  pages[who] = page;
  return page;
}

/** Opens a side panel tab (the page shows one at a time). */
const show = (page, tab) => page.click(`#tab-${tab}`).catch(async (e) => { await page.screenshot({ path: `/tmp/fail-${tab}.png` }); throw e; });
const item = (page, list, text) => page.locator(`${list} li`, { hasText: text });
const visible = (locator) => locator.first().waitFor({ state: "visible" });
const gone = (locator) => locator.first().waitFor({ state: "detached" });

before(async () => {
  server = await startServer();
  browser = await launchChromium();
  await join("hana", { role: "host", name: "Hana" });
  await join("pia", { role: "participant", name: "Pia", attrs: { team: "Knox County" } });
  await join("quinn", { role: "participant", name: "Quinn", attrs: { team: "Hamilton" } });
}, { timeout: 120_000 });

after(async () => {
  try {
    await browser?.close();
  } finally {
    await server?.stop();
  }
}, { timeout: 30_000 });

test("everyone joins and sees who is there", STEP, async () => {
  const { hana, pia } = pages;
  await show(hana, "people");
  await show(pia, "people");
  await visible(hana.locator("#count", { hasText: "2 participants" }));
  await visible(pia.locator("#count", { hasText: "2 participants" }));
  await visible(hana.locator("#members li[data-identity=pia]", { hasText: "participant" }));
  await visible(hana.locator("#members li[data-identity=quinn]"));
  // Webcast: participants see the stage and staff, not each other.
  assert.equal(await pia.locator("#people-title").textContent(), "On stage and hosts");
  await visible(pia.locator("#members li[data-identity=hana]", { hasText: "host" }));
  assert.equal(await pia.locator("#members li[data-identity=quinn]").count(), 0);
  assert.equal(await hana.locator("#room").textContent(), ROOM);
});

test("chat: a participant's message reaches the host; own messages can be deleted", STEP, async () => {
  const { hana, pia, quinn } = pages;
  for (const page of [hana, pia, quinn]) await show(page, "chat");
  await pia.fill("#chat-text", "Hello from Pia");
  await pia.press("#chat-text", "Enter");
  await visible(item(hana, "#chat", "Hello from Pia"));
  await visible(item(quinn, "#chat", "Hello from Pia"));

  await pia.fill("#chat-text", "typo mesage");
  await pia.click("#chat-send");
  await visible(item(hana, "#chat", "typo mesage"));
  assert.equal(await item(quinn, "#chat", "Hello from Pia").getByRole("button", { name: /Delete/ }).count(), 0, "no delete on others' messages");
  await item(pia, "#chat", "typo mesage").getByRole("button", { name: "Delete message from Pia" }).click();
  await gone(item(hana, "#chat", "typo mesage"));
  await gone(item(quinn, "#chat", "typo mesage"));
});

test("Q&A: moderated question is approved by the host, then upvoted", STEP, async () => {
  const { hana, pia, quinn } = pages;
  const text = "When does the next cohort start?";
  for (const page of [hana, pia, quinn]) await show(page, "qa");
  await pia.fill("#ask-text", text);
  await pia.click("#ask-send");
  // Pending: the author and staff see it, other participants do not.
  await visible(item(pia, "#pending", text));
  const pending = item(hana, "#pending", text);
  await visible(pending);
  assert.equal(await item(quinn, "#pending", text).count(), 0);
  assert.equal(await item(quinn, "#questions", text).count(), 0);

  await pending.getByRole("button", { name: /^Approve question/ }).click();
  await visible(pia.locator("#questions li[data-state=approved]", { hasText: text }));
  const forQuinn = quinn.locator("#questions li[data-state=approved]", { hasText: text });
  await visible(forQuinn);
  // Authors cannot vote on their own question.
  assert.equal(await item(pia, "#questions", text).getByRole("button", { name: /^Upvote/ }).count(), 0);

  await forQuinn.getByRole("button", { name: /^Upvote question/ }).click();
  await visible(forQuinn.locator("button.vote[aria-pressed=true]", { hasText: "Unvote" }));
  await visible(item(hana, "#questions", text).locator(".votes", { hasText: "1" }));
  await visible(item(pia, "#questions", text).locator(".votes", { hasText: "1" }));

  // Anonymous question: the host sees it pending without a name.
  await quinn.check("#ask-anon");
  await quinn.fill("#ask-text", "Is there funding for substitutes?");
  await quinn.click("#ask-send");
  const anon = item(hana, "#pending", "Is there funding for substitutes?");
  await visible(anon);
  assert.match(await anon.locator(".meta").textContent(), /anonymous/);
  assert.doesNotMatch(await anon.textContent(), /Quinn/);

  // Live, then answered.
  await item(hana, "#questions", text).getByRole("button", { name: /^Mark live/ }).click();
  await visible(quinn.locator("#questions li.live", { hasText: text }));
  await item(hana, "#questions", text).getByRole("button", { name: /answered$/ }).click();
  await visible(item(quinn, "#answered", text));
});

test("hands: the host sees a participant's raised hand and can lower it", STEP, async () => {
  const { hana, pia } = pages;
  await show(hana, "people");
  await pia.click("#hand");
  await visible(pia.locator("#hand[aria-pressed=true]", { hasText: "Lower hand" }));
  const row = hana.locator("#members li[data-identity=pia][data-hand]");
  await visible(row);
  await visible(row.locator(".meta", { hasText: "hand raised" }));
  await row.getByRole("button", { name: "Lower hand of Pia" }).click();
  await visible(pia.locator("#hand[aria-pressed=false]", { hasText: "Raise hand" }));
});

test("a dropped connection resumes and shows chat sent meanwhile", STEP, async () => {
  const { hana, pia } = pages;
  const before = await pia.evaluate(() => ({ id: convene.state.sessionId, joins: convene.state.joins, resumes: convene.state.resumes }));
  const context = pia.context();
  await context.setOffline(true);
  // Not a clean leave (1000): the server keeps Pia's seat for the grace period.
  await pia.evaluate(() => convene.socket.close(3000, "test: network drop"));
  // The banner says so (offline: the browser's offline event; else reconnecting).
  await visible(pia.locator("#banner[data-state=offline]"));
  await visible(hana.locator("#members li[data-identity=pia][data-presence=reconnecting]"));
  await show(hana, "chat");
  await show(pia, "chat");

  await hana.fill("#chat-text", "Sent while Pia was away");
  await hana.press("#chat-text", "Enter");
  await visible(item(hana, "#chat", "Sent while Pia was away"));
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(await item(pia, "#chat", "Sent while Pia was away").count(), 0, "offline page got the message early");

  await context.setOffline(false);
  await visible(pia.locator("#status[data-state=connected]"));
  assert.equal(await pia.locator("#banner").isHidden(), true, "banner gone once connected");
  await visible(item(pia, "#chat", "Sent while Pia was away"));
  await show(hana, "people");
  await visible(hana.locator("#members li[data-identity=pia][data-presence=online]"));
  const after = await pia.evaluate(() => ({ id: convene.state.sessionId, joins: convene.state.joins, resumes: convene.state.resumes }));
  assert.equal(after.id, before.id, "same session after resume");
  assert.equal(after.joins, before.joins, "resumed, not a fresh welcome");
  assert.equal(after.resumes, before.resumes + 1);
  // Earlier chat is still there, exactly once.
  assert.equal(await item(pia, "#chat", "Hello from Pia").count(), 1);
});

test("moderation: the host mutes a participant's chat", STEP, async () => {
  const { hana, quinn } = pages;
  await show(hana, "people");
  await show(quinn, "chat");
  await hana.locator("#members li[data-identity=quinn]").getByRole("button", { name: "Mute chat: Quinn" }).click();
  await visible(quinn.locator("#chat-text[disabled]"));
  await hana.locator("#members li[data-identity=quinn]").getByRole("button", { name: "Unmute chat: Quinn" }).click();
  await visible(quinn.locator("#chat-text:not([disabled])"));
});

test("breakouts by team: open, timer, help, broadcast, leave, close", STEP, async () => {
  const { hana, pia, quinn } = pages;
  await show(hana, "breakouts");
  await hana.check("#bo-by-attr");
  await hana.fill("#bo-attr", "team");
  await hana.fill("#bo-minutes", "10");
  await hana.click("#bo-plan");
  await visible(hana.locator("#bo-status", { hasText: "Planned: 2 rooms" }));
  await visible(item(hana, "#bo-rooms", "Knox County"));
  await hana.click("#bo-open");

  for (const page of [pia, quinn]) await show(page, "breakouts");
  await visible(pia.locator("#bo-status", { hasText: "You are in Knox County" }));
  await visible(quinn.locator("#bo-status", { hasText: "You are in Hamilton" }));
  assert.match(await pia.locator("#bo-timer").textContent(), /^Time left (9:[0-5]\d|10:00)$/);
  await show(hana, "people");
  await visible(hana.locator("#members li[data-identity=pia]", { hasText: "in Knox County" }));
  await show(hana, "breakouts");

  // Chat is per breakout.
  await show(quinn, "chat");
  await quinn.fill("#chat-text", "Hamilton only");
  await quinn.press("#chat-text", "Enter");
  await visible(item(quinn, "#chat", "Hamilton only"));
  await show(quinn, "breakouts");

  await pia.click("#bo-help");
  await visible(item(pia, "#notices", "Help requested"));
  const request = item(hana, "#bo-help-requests", "Pia needs help in Knox County");
  await visible(request);
  // Taken on: cleared for staff, and Pia hears who is coming.
  await request.getByRole("button", { name: /^Done/ }).click();
  await gone(request);
  await visible(item(pia, "#notices", "Hana is coming to help"));

  await hana.fill("#bo-broadcast-text", "Five minutes to wrap up");
  await hana.click("#bo-broadcast");
  await visible(item(pia, "#notices", "Five minutes to wrap up"));
  await visible(item(quinn, "#notices", "Five minutes to wrap up"));

  await show(pia, "chat");
  assert.equal(await item(pia, "#chat", "Hamilton only").count(), 0, "breakout chat stays in its room");
  await show(pia, "breakouts");
  await pia.click("#bo-leave");
  await visible(pia.locator("#place", { hasText: "Main room" }));
  await visible(pia.locator("#bo-status", { hasText: "main room" }));
  // The plan lets people leave, so Pia may go back to her team's room, and leave again.
  await pia.getByRole("button", { name: "Go back to Knox County" }).click();
  await visible(pia.locator("#place", { hasText: "In Knox County" }));
  await pia.click("#bo-leave");
  await visible(pia.locator("#place", { hasText: "Main room" }));

  // A two-minute wrap-up instead of the default 30 s.
  await hana.fill("#bo-countdown", "120");
  await hana.click("#bo-close");
  await visible(hana.locator("#bo-status", { hasText: "Closing" }));
  await visible(quinn.locator("#bo-timer", { hasText: /Closing in (1:5\d|2:00)/ }));
});

test("screenshot of the host's page", STEP, async () => {
  await pages.hana.screenshot({ path: "/tmp/convene-client.png", fullPage: true });
  await pages.quinn.screenshot({ path: "/tmp/convene-client-participant.png", fullPage: true });
  assert.deepEqual(pageErrors, [], "no uncaught errors in any page");
});
