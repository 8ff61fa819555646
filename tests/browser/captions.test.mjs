// Live captions in the real client: the host grants the caption right, the captioner types in
// the composer (partials as typed, a final line on Enter), a viewer who turned captions on (by
// keyboard) sees them over the stage and has them announced politely, a viewer who did not sees
// none; size, position and high contrast apply; axe-core finds no violation.
// CONVENE_CAPTION_SCREENSHOTS=1 saves the views in docs/screenshots/captions/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { startServer, launchChromium, openAs, ROOT, until, scaled } from "./harness.mjs";

const ROOM = "captions";
const STEP = { timeout: 90_000 };
const AXE = fs.readFileSync(path.join(ROOT, "node_modules/axe-core/axe.min.js"), "utf8");
const SHOTS = path.join(ROOT, "docs/screenshots/captions");
let server;
let browser;
const pages = {};
const errors = [];

const join = async (identity, role, name) => {
  pages[identity] = await openAs(browser, server, { room: ROOM, identity, role, name, errors });
  return pages[identity];
};
const send = (page, type, fields = {}) => page.evaluate(([t, f]) => convene.send(t, f), [type, fields]);
const shown = (page) => page.locator("#caption-lines .caption").allTextContents();

async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.evaluate(AXE);
  return page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => `${v.id}: ${v.nodes[0]?.target} ${v.nodes[0]?.failureSummary ?? ""}`);
  });
}

async function shot(page, name) {
  if (process.env.CONVENE_CAPTION_SCREENSHOTS !== "1") return;
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

before(async () => {
  server = await startServer();
  browser = await launchChromium();
  await join("hana", "host", "Hana Okafor");
  await join("cy", "participant", "Cy Tran");
  await join("ana", "participant", "Ana Ruiz");
  await join("bo", "participant", "Bo Lind");
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("a captioner's lines reach the viewer who turned captions on, and nobody else", STEP, async () => {
  const { hana, cy, ana, bo } = pages;
  // Ana turns captions on from the keyboard: the button is in the control bar's tab order.
  await ana.locator("#cc").focus();
  await ana.keyboard.press("Enter");
  await until(() => ana.locator("#cc").getAttribute("aria-pressed"), (v) => v === "true", { what: "captions on" });
  assert.equal(await ana.locator("#caption-announce").getAttribute("aria-live"), "polite");

  // Without the right there is no composer; the host grants it from the People tab.
  assert.equal(await cy.locator("#caption-composer").isHidden(), true);
  await hana.click("#tab-people");
  await hana.getByRole("button", { name: "Allow captioning: Cy Tran" }).click();
  await cy.locator("#caption-composer").waitFor({ state: "visible" });

  // Typed text goes out as partials while typing; Enter ends the line.
  await cy.locator("#caption-speaker").fill("Hana");
  await cy.locator("#caption-text").click();
  await cy.keyboard.type("Welcome to the launch of the network", { delay: 20 });
  await until(() => shown(ana), (lines) => lines.some((l) => l.includes("Welcome to the")), { what: "a partial on Ana's stage" });
  await cy.keyboard.press("Enter");
  await until(() => ana.locator("#caption-lines .caption.final").allTextContents(),
    (lines) => lines.includes("Hana: Welcome to the launch of the network"), { what: "the final line" });
  // One line: the partials were replaced by their final.
  assert.equal((await shown(ana)).length, 1);
  await until(() => ana.locator("#caption-announce").textContent(), (t) => t.includes("Welcome to the launch of the network"),
    { what: "the polite announcement" });
  assert.equal(await cy.locator("#caption-text").inputValue(), "");

  // Bo never turned captions on: a chat sent after the caption reaches him, the caption does not.
  await send(hana, "send_chat", { text: "after the caption" });
  await until(() => bo.evaluate(() => convene.state.chat.map((m) => m.text)), (t) => t.includes("after the caption"), { what: "Bo's chat" });
  assert.equal(await bo.locator("#captions").isHidden(), true);
  assert.deepEqual(await shown(bo), []);

  // Size, position and contrast are the viewer's own.
  await ana.click("#devices-open");
  await ana.selectOption("#cc-size", "large");
  await ana.selectOption("#cc-position", "top");
  await ana.check("#cc-contrast");
  const box = ana.locator("#captions");
  assert.deepEqual(
    await box.evaluate((el) => [el.dataset.size, el.dataset.position, el.dataset.contrast]),
    ["large", "top", "true"],
  );
  await ana.selectOption("#cc-position", "bottom");
  await ana.click("#devices-open");
  assert.deepEqual(await axeViolations(ana), []);
  assert.deepEqual(await axeViolations(cy), []);
  await cy.keyboard.type("Reading in the early grades", { delay: 20 });
  await until(() => shown(ana), (lines) => lines.some((l) => l.includes("early grades")), { what: "the second line", timeout: scaled(20_000) });
  await shot(ana, "viewer");
  await shot(cy, "captioner");
  assert.deepEqual(errors, []);
});
