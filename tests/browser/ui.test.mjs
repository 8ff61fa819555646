// The client's page for each role against the real server: layout (stage first, one control bar,
// tabs; no sideways scroll at 1280/1440 px; a phone's one-view-at-a-time tabs with 44 px targets),
// accessibility (axe-core on every view, focus kept across live updates, a visible focus ring,
// polite announcements), feedback (pending, refused text kept, clear pages for bad links), the
// invite panel, and the stage controls (go on stage, accept or decline an invitation, mic apart
// from camera). Media here is local only (fake devices); media.test.mjs covers delivery.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { startServer, launchChromium, openAs, ROOT } from "./harness.mjs";

const ROOM = "ui";
const STEP = { timeout: 60_000 };
const AXE = fs.readFileSync(path.join(ROOT, "node_modules/axe-core/axe.min.js"), "utf8");
let server;
let browser;
const pages = {};
const errors = [];

const join = async (identity, role, name, opts = {}) => {
  const page = await openAs(browser, server, { room: ROOM, identity, role, name, errors, ...opts });
  pages[identity] = page;
  return page;
};
const show = (page, tab) => page.click(`#tab-${tab}`);
const visible = (locator) => locator.first().waitFor({ state: "visible" });
/** The id of the question containing `text`, once this page knows it. */
const questionId = async (page, text) => (await page.waitForFunction(
  (t) => [...convene.state.questions.values()].find((q) => q.text.includes(t))?.id, text)).jsonValue();
const send = (page, type, fields = {}) => page.evaluate(([t, f]) => convene.send(t, f), [type, fields]);

/** axe-core's violations on the page as it is now (rule id and the first offending node). */
async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.evaluate(AXE);
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => `${v.id}: ${v.nodes[0]?.target} ${v.nodes[0]?.failureSummary ?? ""}`);
  });
  return result;
}

/** Each visible tab of the page in turn (the view it shows), then `fn(tabName)`. */
async function eachView(page, fn) {
  const tabs = await page.locator("#tabs [role=tab]:visible").evaluateAll((els) => els.map((e) => e.dataset.tab));
  for (const tab of tabs) {
    await show(page, tab);
    await fn(tab);
  }
  return tabs;
}

before(async () => {
  server = await startServer();
  browser = await launchChromium({ args: ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"] });
  await join("hana", "host", "Hana Okafor");
  await join("mo", "moderator", "Mo Reyes");
  await join("pat", "presenter", "Pat Lee");
  await join("pia", "participant", "Pia Novak", { attrs: { team: "Knox County" } });
  await send(pages.pia, "send_chat", { text: "Hello from Knox County" });
  await send(pages.pia, "ask_question", { text: "How do other districts schedule coaching cycles?", anonymous: false });
}, { timeout: 120_000 });

after(async () => {
  try {
    await browser?.close();
  } finally {
    await server?.stop();
  }
}, { timeout: 30_000 });

test("layout: stage first, one control bar, tabs by role; no sideways scroll at 1440 and 1280 px", STEP, async () => {
  const want = {
    hana: ["chat", "qa", "people", "polls", "presenter", "console", "breakouts"],
    mo: ["chat", "qa", "people", "polls", "console", "breakouts"],
    pat: ["chat", "qa", "people", "presenter"],
    pia: ["chat", "qa", "people"],
  };
  for (const [who, tabs] of Object.entries(want)) {
    const page = pages[who];
    const shown = await page.locator("#tabs [role=tab]:visible").evaluateAll((els) => els.map((e) => e.dataset.tab));
    assert.deepEqual(shown, tabs, `${who}'s tabs`);
    for (const width of [1440, 1280]) {
      await page.setViewportSize({ width, height: 860 });
      await eachView(page, async (tab) => {
        const m = await page.evaluate(() => ({
          scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
          stage: document.getElementById("stage").getBoundingClientRect().width,
          bars: document.querySelectorAll("#controlbar").length,
          bar: document.getElementById("controlbar").getBoundingClientRect(),
        }));
        assert.ok(m.scroll <= m.inner, `${who} at ${width}px on ${tab}: page is ${m.scroll}px wide`);
        assert.ok(m.stage >= width * 0.6, `${who} at ${width}px: stage is ${m.stage}px wide`);
        assert.equal(m.bars, 1);
        assert.ok(m.bar.bottom >= 855 && m.bar.height >= 44, `${who}: control bar at the bottom (${JSON.stringify(m.bar)})`);
      });
    }
  }
  // The presenter lands on the presenter view, moderators on the Q&A queue.
  const fresh = await join("pat2", "presenter", "Pat Two");
  assert.equal(await fresh.locator("#panel-presenter").isVisible(), true);
  await fresh.context().close();
});

test("axe-core: no violations on any view of host, moderator, presenter and participant", STEP, async () => {
  for (const who of ["hana", "mo", "pat", "pia"]) {
    const page = pages[who];
    await eachView(page, async (tab) => {
      assert.deepEqual(await axeViolations(page), [], `${who}, ${tab} view`);
    });
  }
  // The moderator's question dialog and the participant's device picker too.
  const mo = pages.mo;
  await show(mo, "qa");
  await mo.locator("#pending li", { hasText: "coaching cycles" }).getByRole("button", { name: /^Edit question/ }).click();
  await visible(mo.locator("#qa-dialog[open]"));
  assert.deepEqual(await axeViolations(mo), [], "question dialog");
  await mo.keyboard.press("Escape");
  await pages.pia.click("#devices-open");
  await visible(pages.pia.locator("#devices"));
  assert.deepEqual(await axeViolations(pages.pia), [], "device picker");
  await pages.pia.click("#devices-open");
});

test("phone 390x844: tabs show one view at a time; touch targets at least 44 px; axe-clean", STEP, async () => {
  const phone = await join("quinn", "participant", "Quinn Adams", { viewport: { width: 390, height: 844 }, attrs: { team: "Hamilton" } });
  const tabs = await eachView(phone, async (tab) => {
    const shown = await phone.evaluate(() => ["stage", "panel-chat", "panel-qa", "panel-people"]
      .filter((id) => { const r = document.getElementById(id).getBoundingClientRect(); return r.width > 0 && r.height > 0; }));
    assert.deepEqual(shown, [tab === "stage" ? "stage" : `panel-${tab}`], `only the ${tab} view shows`);
    const small = await phone.evaluate(() => [...document.querySelectorAll("button, select, input, textarea, [role=tab], summary")]
      .filter((el) => el.getClientRects().length && !(el.type === "checkbox" || el.type === "radio"))
      .map((el) => ({ el: el.id || el.textContent.trim(), r: el.getBoundingClientRect() }))
      .filter(({ r }) => r.width > 0 && (r.width < 44 || r.height < 44))
      .map(({ el, r }) => `${el} ${Math.round(r.width)}x${Math.round(r.height)}`));
    assert.deepEqual(small, [], `touch targets under 44 px on ${tab}`);
    const wide = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(wide <= 0, `no sideways scroll on ${tab}`);
    assert.deepEqual(await axeViolations(phone), [], `phone, ${tab} view`);
  });
  assert.deepEqual(tabs, ["stage", "chat", "qa", "people"]);
});

test("keyboard focus stays on a control while events re-render its list", STEP, async () => {
  const { hana, pia, mo } = pages;
  // An approved question with an Upvote button for Quinn's page, focused from the keyboard.
  const q = await questionId(mo, "coaching cycles");
  await send(mo, "approve_question", { question_id: q });
  const quinn = pages.quinn;
  await show(quinn, "qa");
  const vote = quinn.locator(`#questions li[data-id="${q}"]`).getByRole("button", { name: /^Upvote question/ });
  await vote.focus();
  await quinn.evaluate(() => { document.activeElement.dataset.probe = "focused"; });
  // Live traffic: votes on that very question, new questions above and below it, chat, presence.
  await send(hana, "upvote", { question_id: q });
  await send(pia, "ask_question", { text: "Will the slides be shared afterwards?", anonymous: false });
  const q2 = await questionId(mo, "slides");
  await send(mo, "approve_question", { question_id: q2 });
  // Votes count only on approved questions, and another session's commands may overtake the
  // approval: vote once the room has applied it (Quinn's page shows the question).
  await visible(quinn.locator(`#questions li[data-id="${q2}"]`));
  await send(pat(), "upvote", { question_id: q2 });
  await send(hana, "upvote", { question_id: q2 });
  await send(hana, "send_chat", { text: "Two minutes to go" });
  await send(hana, "raise_hand");
  await visible(quinn.locator(`#questions li[data-id="${q}"] .votes`, { hasText: "1 vote" }));
  await visible(quinn.locator(`#questions li[data-id="${q2}"] .votes`, { hasText: "2 votes" }));
  await quinn.waitForTimeout(300);
  const active = await quinn.evaluate(() => ({ probe: document.activeElement?.dataset.probe, text: document.activeElement?.textContent }));
  assert.deepEqual(active, { probe: "focused", text: "Upvote" });
  // Enter on the focused control still acts on the right question.
  await quinn.keyboard.press("Enter");
  await visible(quinn.locator(`#questions li[data-id="${q}"] button.vote[aria-pressed=true]`, { hasText: "Unvote" }));
  assert.equal(await quinn.evaluate(() => document.activeElement?.dataset.probe), "focused");
  await send(hana, "lower_hand");
});
const pat = () => pages.pat;

test("a visible focus ring on keyboard focus", STEP, async () => {
  const { pia } = pages;
  await show(pia, "chat");
  await pia.focus("#chat-text");
  await pia.keyboard.press("Tab");
  const ring = await pia.evaluate(() => {
    const s = getComputedStyle(document.activeElement);
    return { id: document.activeElement.id, style: s.outlineStyle, width: parseFloat(s.outlineWidth) };
  });
  assert.equal(ring.id, "chat-send");
  assert.notEqual(ring.style, "none");
  assert.ok(ring.width >= 2, `outline ${ring.width}px`);
});

test("feedback: the author hears their question was approved, answered or dismissed (politely)", STEP, async () => {
  const { pia, mo } = pages;
  const live = await pia.getAttribute("#announcer", "aria-live");
  assert.equal(live, "polite");
  await send(pia, "ask_question", { text: "What about rural districts?", anonymous: false });
  const id = await questionId(mo, "rural");
  await send(mo, "approve_question", { question_id: id });
  await visible(pia.locator("#announcer", { hasText: "Your question was approved" }));
  await visible(pia.locator("#notices li", { hasText: "Your question was approved" }));
  await send(mo, "answer_question", { question_id: id, answer: "Yes, a rural cohort starts in May." });
  await visible(pia.locator("#announcer", { hasText: "Your question was answered" }));
  await send(pia, "ask_question", { text: "Off-topic question", anonymous: false });
  const off = await questionId(mo, "Off-topic");
  await send(mo, "dismiss_question", { question_id: off });
  await visible(pia.locator("#announcer", { hasText: "Your question was dismissed" }));
});

test("feedback: a message sent offline shows as pending until acknowledged; a refused question keeps its text", STEP, async () => {
  const { pia, hana } = pages;
  await show(pia, "chat");
  await show(hana, "chat");
  await pia.context().setOffline(true);
  await pia.evaluate(() => convene.socket.close(3000, "test: network drop"));
  await visible(pia.locator("#banner[data-state=offline]"));
  await pia.fill("#chat-text", "Typed while offline");
  await pia.press("#chat-text", "Enter");
  const pending = pia.locator("#chat li[data-pending=true]", { hasText: "Typed while offline" });
  await visible(pending);
  assert.match(await pending.textContent(), /sending…/);
  assert.deepEqual(await axeViolations(pia), [], "offline banner and pending message");
  await pia.context().setOffline(false);
  await visible(pia.locator("#chat li:not([data-pending])", { hasText: "Typed while offline" }));
  assert.equal(await pia.locator("#chat li", { hasText: "Typed while offline" }).count(), 1);
  await visible(hana.locator("#chat li", { hasText: "Typed while offline" }));
  await pia.locator("#banner").waitFor({ state: "hidden" });

  // Questions are limited per minute: ask until one is refused; its text comes back to the box.
  await show(pia, "qa");
  let refused = null;
  for (let i = 0; i < 8 && !refused; i++) {
    const text = `Rate test question ${i}`;
    await pia.fill("#ask-text", text);
    await pia.click("#ask-send");
    // Settled: acknowledged or refused.
    await pia.waitForFunction(() => convene.conn.pendingOf("ask_question").length === 0);
    if ((await pia.inputValue("#ask-text")) === text) refused = text;
  }
  assert.ok(refused, "one question was refused and kept");
  await visible(pia.locator("#notices li.error"));
});

test("invite panel: a host mints links within their role; the link joins with that role and team", STEP, async () => {
  const { hana, mo } = pages;
  await show(hana, "console");
  await hana.fill("#invite-name", "Ines Park");
  await hana.selectOption("#invite-role", "presenter");
  await hana.fill("#invite-team", "Knox County");
  await hana.click("#invite-create");
  const link = hana.getByRole("textbox", { name: "Invite link for Ines Park" });
  await visible(link);
  const url = await link.inputValue();
  await hana.context().grantPermissions(["clipboard-read", "clipboard-write"]);
  await hana.locator("#invites li", { hasText: "Ines Park" }).getByRole("button", { name: "Copy link" }).click();
  assert.equal(await hana.evaluate(() => navigator.clipboard.readText()), url);
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/\?token=/);
  const ctx = await browser.newContext();
  const ines = await ctx.newPage();
  await ines.goto(url);
  await visible(ines.locator("#status[data-state=connected]", { hasText: "Ines Park · presenter" }));
  assert.deepEqual(await ines.evaluate(() => convene.state.you.attrs), { team: "Knox County" });
  await ctx.close();
  // A link without a name: the person is asked for one, once per tab.
  await hana.fill("#invite-name", "");
  await hana.fill("#invite-team", "");
  await hana.selectOption("#invite-role", "participant");
  await hana.click("#invite-create");
  const open = hana.getByRole("textbox", { name: "Invite link for a participant who chooses a name" });
  await visible(open);
  const guestCtx = await browser.newContext();
  const guest = await guestCtx.newPage();
  await guest.goto(await open.inputValue());
  await visible(guest.locator("#name-gate"));
  assert.deepEqual(await axeViolations(guest), [], "name prompt");
  assert.equal(await guest.evaluate(() => document.activeElement.id), "name-input");
  await guest.keyboard.type("Uma Diaz");
  await guest.keyboard.press("Enter");
  await visible(guest.locator("#status[data-state=connected]", { hasText: "Uma Diaz · participant" }));
  await guest.reload();
  await visible(guest.locator("#status[data-state=connected]", { hasText: "Uma Diaz · participant" }));
  assert.equal(await guest.locator("#name-gate").isHidden(), true);
  // Without a name the server refuses such a token before the upgrade.
  const bare = await guest.evaluate(async () => (await fetch(`/ws?token=${sessionStorage.getItem("convene-token")}`)).status);
  assert.equal(bare, 400);
  await guestCtx.close();

  // A moderator's form offers no host role, and the server refuses one anyway.
  await show(mo, "console");
  assert.equal(await mo.locator("#invite-role option[value=host]").isDisabled(), true);
  const status = await mo.evaluate(async (room) => (await fetch(`/api/v1/rooms/${room}/invites`, {
    method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${sessionStorage.getItem("convene-token")}` },
    body: JSON.stringify({ role: "host", name: "Sneaky" }),
  })).status, ROOM);
  assert.equal(status, 403);
  // A participant's token mints nothing.
  const denied = await pages.pia.evaluate(async (room) => (await fetch(`/api/v1/rooms/${room}/invites`, {
    method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${sessionStorage.getItem("convene-token")}` },
    body: JSON.stringify({ role: "participant", name: "X" }),
  })).status, ROOM);
  assert.equal(denied, 403);
});

test("stage: the host goes on stage from the control bar; an invited participant accepts or declines", STEP, async () => {
  const { hana, pia } = pages;
  await hana.click("#go-stage");
  await visible(hana.locator("#go-stage", { hasText: "Leave stage" }));
  await visible(hana.locator("#cam"));
  await hana.click("#go-stage");
  await visible(hana.locator("#go-stage", { hasText: "Go on stage" }));
  await hana.locator("#cam").waitFor({ state: "hidden" });

  // Invited: asked first; nothing is published until Pia accepts.
  await send(hana, "invite_to_stage", { identity: "pia" });
  await visible(pia.locator("#stage-invite"));
  assert.equal(await pia.evaluate(() => convene.media.publishing), false);
  assert.deepEqual(await axeViolations(pia), [], "stage invitation");
  await pia.click("#stage-decline");
  await show(hana, "people");
  await visible(hana.locator("#members li[data-identity=pia] .meta", { hasText: /^participant$/ }));
  await pia.locator("#stage-invite").waitFor({ state: "hidden" });

  await send(hana, "invite_to_stage", { identity: "pia" });
  await visible(pia.locator("#stage-invite"));
  await pia.click("#stage-accept");
  await visible(pia.locator("#cam[aria-pressed=true]", { hasText: "Stop camera" }));
  await visible(pia.locator("#mic[aria-pressed=true]", { hasText: "Mute" }));
  // Mic mutes on its own; the camera keeps going.
  await pia.click("#mic");
  await visible(pia.locator("#mic[aria-pressed=false]", { hasText: "Unmute" }));
  const tracks = await pia.evaluate(() => ({ mic: convene.media.mic.enabled, cam: convene.media.cam.readyState }));
  assert.deepEqual(tracks, { mic: false, cam: "live" });
  await pia.click("#cam");
  await visible(pia.locator("#cam[aria-pressed=false]", { hasText: "Start camera" }));
  assert.equal(await pia.evaluate(() => convene.media.mic.readyState), "live", "mic stays on when the camera stops");
  await send(hana, "remove_from_stage", { identity: "pia" });
  await pia.locator("#mic").waitFor({ state: "hidden" });
});

test("bad links get a page that says why, not endless retries", STEP, async () => {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(`${server.base}/?token=not-a-token`);
  await visible(page.locator("#gate", { hasText: "This link does not work" }));
  assert.equal(await page.locator("#app").isHidden(), true);
  assert.deepEqual(await axeViolations(page), []);
  // Removed: the page says so, and the same link says so again after a reload.
  const gone = await join("rex", "participant", "Rex");
  await show(pages.hana, "people");
  pages.hana.once("dialog", (d) => d.accept());
  await pages.hana.locator("#members li[data-identity=rex]").getByRole("button", { name: "Remove Rex" }).click();
  await visible(gone.locator("#gate", { hasText: "removed" }));
  await gone.reload();
  await visible(gone.locator("#gate", { hasText: "removed" }));
  await ctx.close();
  assert.deepEqual(errors, [], "no uncaught errors in any page");
});

test("moderator triage: edit, merge as duplicate, live, typed answer; the presenter view follows", { timeout: 60_000 }, async () => {
  const { mo, pat } = pages;
  const pia = await join("ria", "participant", "Ria Sol");
  const quinn = await join("sam", "participant", "Sam Ortiz");
  await show(mo, "qa");
  await show(pat, "presenter");
  await send(pia, "ask_question", { text: "How do we fund subs?", anonymous: false });
  await send(quinn, "ask_question", { text: "Is there money for substitute teachers?", anonymous: false });
  const row = (text) => mo.locator("#pending li, #questions li", { hasText: text });
  await visible(row("How do we fund subs?"));
  await visible(row("money for substitute"));

  // Edit the first into a clearer question, and approve it.
  await row("How do we fund subs?").getByRole("button", { name: /^Edit question/ }).click();
  await mo.fill("#qa-dialog-text", "How do districts fund substitute teachers?");
  await mo.click("#qa-dialog-ok");
  const edited = mo.locator("#pending li", { hasText: "How do districts fund substitute teachers?" });
  await visible(edited.locator(".meta", { hasText: "edited" }));
  await edited.getByRole("button", { name: /^Approve question/ }).click();
  await visible(pat.locator("#pv-queue li", { hasText: "How do districts fund substitute teachers?" }));

  // Merge Quinn's duplicate into it: it leaves the queue.
  await row("money for substitute").getByRole("button", { name: /^Merge question/ }).click();
  await mo.selectOption("#qa-dialog-dup", { label: "How do districts fund substitute teachers?" });
  await mo.click("#qa-dialog-ok");
  await row("money for substitute").waitFor({ state: "detached" });

  // Live: the presenter sees it in large type and on the stage banner.
  await mo.locator("#questions li", { hasText: "fund substitute" }).getByRole("button", { name: /^Mark live/ }).click();
  await visible(pat.locator("#pv-live .pv-text", { hasText: "How do districts fund substitute teachers?" }));
  await visible(pia.locator("#live-question", { hasText: "fund substitute" }));

  // A typed answer: everyone sees it under the answered question.
  await mo.locator("#questions li", { hasText: "fund substitute" }).getByRole("button", { name: /in writing$/ }).click();
  await mo.fill("#qa-dialog-text", "Title II funds cover substitutes; see the handout.");
  await mo.click("#qa-dialog-ok");
  await show(pia, "qa");
  await visible(pia.locator("#answered li", { hasText: "fund substitute" }).locator(".answer", { hasText: "Title II funds" }));
  await visible(pat.locator("#pv-live", { hasText: "No question is live" }));
  await pia.locator("#live-question").waitFor({ state: "hidden" });
});

test("a poll runs from launch to shared results; hidden results stay hidden until shared", { timeout: 60_000 }, async () => {
  const { mo, hana, pia, pat } = pages;
  await show(mo, "polls");
  await mo.fill("#poll-question", "Which strand next?");
  await mo.fill("#poll-options", "Coaching cycles\nData use\nFamily engagement");
  await mo.click("#poll-launch");
  // Everyone gets a Polls tab and hears of it.
  await visible(pia.locator("#announcer", { hasText: "New poll" }));
  await show(pia, "polls");
  const piaPoll = pia.locator("#polls li", { hasText: "Which strand next?" });
  await piaPoll.getByLabel("Data use").check();
  await piaPoll.getByRole("button", { name: "Submit answer" }).click();
  await visible(piaPoll.locator(".poll-status", { hasText: "you answered Data use" }));
  await show(pat, "polls");
  const patPoll = pat.locator("#polls li", { hasText: "Which strand next?" });
  await patPoll.getByLabel("Coaching cycles").check();
  await patPoll.getByRole("button", { name: "Submit answer" }).click();
  // Staff see counts; the participant sees none.
  const moPoll = mo.locator("#polls li", { hasText: "Which strand next?" });
  await visible(moPoll.locator(".poll-results li", { hasText: "Data use: 1 (50%)" }));
  assert.equal(await piaPoll.locator(".poll-results li").count(), 0);
  // Answering again replaces the answer: still one per person.
  await piaPoll.getByLabel("Coaching cycles").check();
  await piaPoll.getByRole("button", { name: "Change answer" }).click();
  await visible(moPoll.locator(".poll-results li", { hasText: "Coaching cycles: 2 (100%)" }));
  await visible(moPoll.locator(".poll-status", { hasText: "2 answered" }));
  assert.deepEqual(await axeViolations(mo), [], "moderator's polls view");
  assert.deepEqual(await axeViolations(pia), [], "participant's polls view");

  await moPoll.getByRole("button", { name: /^Close poll/ }).click();
  await piaPoll.locator("form").waitFor({ state: "hidden" });
  await visible(piaPoll.locator(".poll-status", { hasText: "results not shared yet" }));
  await moPoll.getByRole("button", { name: /^Share results/ }).click();
  await visible(piaPoll.locator(".poll-results li", { hasText: "Coaching cycles: 2 (100%)" }));
  await visible(pia.locator("#announcer", { hasText: "Poll results" }));
  await show(hana, "polls");
  await visible(hana.locator("#polls li .poll-status", { hasText: "results shared" }));
  // After the event: the host downloads the results.
  await show(hana, "console");
  const [download] = await Promise.all([hana.waitForEvent("download"), hana.click("#export-polls")]);
  assert.equal(download.suggestedFilename(), `${ROOM}-polls.csv`);
  const csv = fs.readFileSync(await download.path(), "utf8");
  assert.match(csv, /^poll_id,question,state,shared,voters,option,answers\n1,Which strand next\?,closed,true,2,Coaching cycles,2\n/);
});

/** Presses Tab until `selector` has focus (keyboard only); fails after 80 presses. */
async function tabTo(page, selector) {
  for (let i = 0; i < 80; i++) {
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) return;
    await page.keyboard.press("Tab");
  }
  throw new Error(`Tab never reached ${selector}`);
}

test("keyboard only: a participant joins, chats, asks, votes and raises a hand", { timeout: 60_000 }, async () => {
  const { mo, hana } = pages;
  const kim = await join("kim", "participant", "Kim Lee");
  await tabTo(kim, "#chat-text");
  await kim.keyboard.type("Hello, typed without a mouse");
  await kim.keyboard.press("Enter");
  await show(hana, "chat");
  await visible(hana.locator("#chat li", { hasText: "typed without a mouse" }));

  // Tabs: one tab stop, arrows move between them.
  await tabTo(kim, "#tab-chat");
  await kim.keyboard.press("ArrowRight");
  assert.equal(await kim.evaluate(() => document.activeElement.id), "tab-qa");
  await visible(kim.locator("#panel-qa"));
  await tabTo(kim, "#ask-text");
  await kim.keyboard.type("Can we get the recording?");
  await kim.keyboard.press("Enter");
  await show(mo, "qa");
  const pending = mo.locator("#pending li", { hasText: "Can we get the recording?" });
  await visible(pending);
  await pending.getByRole("button", { name: /^Approve question/ }).click();

  // Someone else's approved question: vote with the keyboard.
  const other = kim.locator("#questions li", { hasText: "How do other districts schedule coaching cycles?" });
  await visible(other);
  const id = await other.getAttribute("data-id");
  await tabTo(kim, `#questions li[data-id="${id}"] button.vote`);
  await kim.keyboard.press("Space");
  await visible(other.locator("button.vote[aria-pressed=true]"));

  await tabTo(kim, "#hand");
  await kim.keyboard.press("Enter");
  await visible(kim.locator("#hand[aria-pressed=true]"));
  await show(mo, "console");
  await visible(mo.locator("#hands li[data-identity=kim]"));
  await kim.context().close();
});

test("the host has the presenter view; Mute all mics asks first", STEP, async () => {
  const { hana, pia } = pages;
  await show(hana, "presenter");
  await visible(hana.locator("#panel-presenter"));
  assert.deepEqual(await axeViolations(hana), [], "host's presenter view");
  await show(hana, "console");
  await hana.click("#mute-all");
  const dialog = hana.locator("#confirm-dialog[open]");
  await visible(dialog);
  assert.match(await dialog.textContent(), /Mute all mics\?/);
  assert.equal(await hana.evaluate(() => document.activeElement?.textContent), "Cancel", "the safe choice has focus");
  assert.deepEqual(await axeViolations(hana), [], "confirmation");
  // Cancel (Escape): nothing is sent.
  await hana.keyboard.press("Escape");
  await dialog.waitFor({ state: "hidden" });
  assert.equal(await hana.evaluate(() => document.activeElement?.id), "mute-all", "focus returns to the button");
  assert.equal(await hana.evaluate(() => convene.conn.pendingOf("mute_media").length), 0);
  assert.equal(await pia.evaluate(() => convene.state.you.media_muted?.includes("audio") ?? false), false);
  await hana.click("#mute-all");
  await hana.click("#confirm-ok");
  await pia.waitForFunction(() => convene.state.you.media_muted?.includes("audio"));
  await send(hana, "mute_media", { kind: "audio", muted: false });
  await pia.waitForFunction(() => !convene.state.you.media_muted?.includes("audio"));
});

test("focus stays in the Q&A list when the focused question is answered", STEP, async () => {
  const { mo, hana } = pages;
  const pia = await join("fay", "participant", "Fay Cruz");
  await show(mo, "qa");
  const ids = [];
  for (const text of ["Focus test first", "Focus test second"]) {
    await send(pia, "ask_question", { text, anonymous: false });
    const id = await questionId(mo, text);
    await send(mo, "approve_question", { question_id: id });
    ids.push(id);
  }
  const answered = mo.locator(`#questions li[data-id="${ids[0]}"]`).getByRole("button", { name: /^Mark question \d+ answered/ });
  await answered.focus();
  await mo.keyboard.press("Enter");
  await mo.locator(`#answered li[data-id="${ids[0]}"]`).waitFor({ state: "attached" });
  const where = await mo.evaluate(() => ({ tag: document.activeElement?.tagName, list: document.activeElement?.closest("ol")?.id }));
  assert.equal(where.tag, "BUTTON", JSON.stringify(where));
  assert.equal(where.list, "questions", "focus on the question now in its place");
  // The presenter view (the host's): answering the live question moves focus to the queue.
  await show(hana, "presenter");
  await send(hana, "set_live_question", { question_id: ids[1] });
  const live = hana.locator("#pv-live").getByRole("button", { name: /^Answered/ });
  await visible(live);
  await live.focus();
  await hana.keyboard.press("Enter");
  await visible(hana.locator("#pv-live", { hasText: "No question is live" }));
  const pv = await hana.evaluate(() => ({ tag: document.activeElement?.tagName, inPanel: !!document.activeElement?.closest("#panel-presenter") }));
  assert.notEqual(pv.tag, "BODY", "focus is not dropped");
  assert.ok(pv.inPanel, `focus stays in the presenter view: ${JSON.stringify(pv)}`);
});

test("the stage invitation takes focus and is an alert dialog; Escape declines", STEP, async () => {
  const { hana, pia } = pages;
  await show(pia, "chat");
  await pia.focus("#chat-text");
  await send(hana, "invite_to_stage", { identity: "pia" });
  await visible(pia.locator("#stage-invite"));
  const dialog = await pia.evaluate(() => {
    const d = document.getElementById("stage-invite");
    return { role: d.getAttribute("role"), name: document.getElementById(d.getAttribute("aria-labelledby")).textContent, focused: d.contains(document.activeElement), active: document.activeElement.id };
  });
  assert.deepEqual(dialog, { role: "alertdialog", name: "You are invited to the stage", focused: true, active: "stage-accept" });
  assert.deepEqual(await axeViolations(pia), [], "stage invitation");
  await pia.keyboard.press("Escape");
  await pia.locator("#stage-invite").waitFor({ state: "hidden" });
  assert.equal(await pia.evaluate(() => document.activeElement.id), "chat-text", "focus goes back where it was");
  await pia.waitForFunction(() => !convene.state.you.on_stage);
});

test("audience link: one link, a name and an identity of their own for each person; revoked, it admits no one new", STEP, async () => {
  const { hana } = pages;
  await show(hana, "console");
  await hana.click("#audience-create");
  const box = hana.getByRole("textbox", { name: "Audience link 1" });
  await visible(box);
  const url = await box.inputValue();
  assert.deepEqual(await axeViolations(hana), [], "console with an audience link");
  const people = [];
  for (const name of ["Vera Lin", "Wes Ito"]) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.on("pageerror", (err) => errors.push(`${name}: ${err.message}`));
    await page.goto(url);
    await visible(page.locator("#name-gate"));
    if (!people.length) assert.deepEqual(await axeViolations(page), [], "audience name prompt");
    assert.equal(await page.evaluate(() => document.activeElement.id), "name-input");
    await page.keyboard.type(name);
    await page.keyboard.press("Enter");
    await visible(page.locator("#status[data-state=connected]", { hasText: `${name} · participant` }));
    people.push(page);
  }
  const [vera, wes] = people;
  const ids = await Promise.all(people.map((p) => p.evaluate(() => convene.state.you.identity)));
  assert.notEqual(ids[0], ids[1], "each person is someone of their own");
  await send(vera, "send_chat", { text: "Vera here" });
  await send(wes, "send_chat", { text: "Wes here" });
  await show(hana, "chat");
  await visible(hana.locator(`#chat li[data-from="${ids[0]}"]`, { hasText: "Vera Lin: Vera here" }));
  await visible(hana.locator(`#chat li[data-from="${ids[1]}"]`, { hasText: "Wes Ito: Wes here" }));
  // A reload is the same person, not a third.
  await vera.reload();
  await visible(vera.locator("#status[data-state=connected]", { hasText: "Vera Lin · participant" }));
  assert.equal(await vera.evaluate(() => convene.state.you.identity), ids[0]);

  // Revoked from the panel (after a confirmation): a newcomer is told, the people in stay.
  await show(hana, "console");
  await hana.locator("#audience-links li").getByRole("button", { name: "Revoke" }).click();
  await hana.click("#confirm-ok");
  await visible(hana.locator("#audience-links li[data-revoked]", { hasText: "revoked" }));
  const lateCtx = await browser.newContext();
  const late = await lateCtx.newPage();
  await late.goto(url);
  await late.fill("#name-input", "Xia Late");
  await late.press("#name-input", "Enter");
  await visible(late.locator("#gate", { hasText: "This link was revoked" }));
  assert.deepEqual(await axeViolations(late), [], "revoked link page");
  assert.equal(await wes.locator("#status[data-state=connected]").count(), 1);
  await Promise.all([lateCtx.close(), ...people.map((p) => p.context().close())]);
  // The page has an icon (no 404 in the console).
  assert.equal((await fetch(`${server.base}/favicon.ico`)).status, 200);
  assert.deepEqual(errors, [], "no uncaught errors in any page");
});
