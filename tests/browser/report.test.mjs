// The Report page against the real server: a host and a participant (team north) chat in the
// room; staff open /report/{id} with the host token (from the address once, then off it), see
// the attendance table, the Q&A, poll and chat sections, and download the attendance CSV; no CSP
// violation, axe-core finds nothing; the page is saved to docs/screenshots/report/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { startServer, launchChromium, openAs, newPage, until, ROOT } from "./harness.mjs";

const ROOM = "report";
const STEP = { timeout: 90_000 };
const AXE = fs.readFileSync(path.join(ROOT, "node_modules/axe-core/axe.min.js"), "utf8");
let server;
let browser;
const errors = [];

before(async () => {
  server = await startServer();
  browser = await launchChromium();
}, { timeout: 120_000 });

after(async () => {
  try {
    await browser?.close();
  } finally {
    await server?.stop();
  }
}, { timeout: 30_000 });

async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe !== "undefined"))) await page.evaluate(AXE);
  return page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => `${v.id}: ${v.nodes[0]?.target} ${v.nodes[0]?.failureSummary ?? ""}`);
  });
}

async function say(page, text) {
  await page.click("#tab-chat");
  await page.fill("#chat-text", text);
  await page.keyboard.press("Enter");
  await page.locator("#chat li", { hasText: text }).first().waitFor();
}

test("staff open the report, read the attendance and download its CSV", STEP, async () => {
  const host = await openAs(browser, server, { room: ROOM, identity: "hana", role: "host", name: "Hana Host", errors });
  const ana = await openAs(browser, server, { room: ROOM, identity: "ana", role: "participant", name: "Ana Ruiz", attrs: { team: "north" }, errors });
  await say(ana, "Hello from the north team");
  await say(host, "=SUM(1,2) welcome everyone");
  const { token } = server.token({ room: ROOM, role: "host", name: "Hana Host", identity: "hana" });
  const auth = { Authorization: `Bearer ${token}` };
  const list = await until(
    async () => (await fetch(`${server.base}/api/v1/convenings?room=${ROOM}&state=live`, { headers: auth })).json(),
    (v) => v.convenings?.length === 1,
    { what: "the live convening" },
  );
  const id = list.convenings[0].id;
  // The record commits just after the acks: wait until both messages are in it.
  await until(
    async () => (await fetch(`${server.base}/api/v1/convenings/${id}/report`, { headers: auth })).json(),
    (r) => r.chat?.length === 2,
    { what: "the chat in the record" },
  );

  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  await context.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on("pageerror", (err) => errors.push(`report: ${err.message}`));
  await page.goto(`${server.base}/report/${id}#token=${token}`);
  await page.locator("#attendance tbody tr").nth(1).waitFor();
  assert.doesNotMatch(await page.evaluate(() => location.href), /token/);
  const rows = await page.locator("#attendance tbody tr").allInnerTexts();
  assert.equal(rows.length, 2, rows.join("\n"));
  assert.match(rows[0], /Ana Ruiz\s+ana\s+north/);
  assert.match(rows[1], /Hana Host\s+hana/);
  assert.match(await page.locator("#chat").innerText(), /Hello from the north team/);
  assert.match(await page.locator("h1").innerText(), new RegExp(`Report: ${ROOM}`));

  assert.deepEqual(await axeViolations(page), [], "the report page");
  const shot = path.join(ROOT, "docs/screenshots/report/report.png");
  fs.mkdirSync(path.dirname(shot), { recursive: true });
  await page.screenshot({ path: shot, fullPage: true });

  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click("button[data-file='attendance.csv']"),
  ]);
  assert.equal(download.suggestedFilename(), `${ROOM}-attendance.csv`);
  const csv = fs.readFileSync(await download.path(), "utf8").split("\n");
  assert.equal(csv[0], "name,identity,team,minutes,minutes_in_breakouts,date,first_join,last_leave");
  assert.match(csv[1], /^Ana Ruiz,ana,north,\d+,0,\d{4}-\d{2}-\d{2},/);
  const [chatDownload] = await Promise.all([
    page.waitForEvent("download"),
    page.click("button[data-file='chat.csv']"),
  ]);
  const chat = fs.readFileSync(await chatDownload.path(), "utf8");
  assert.match(chat, /,"'=SUM\(1,2\) welcome everyone"\n/, "formula-safe");

  // A reload keeps the token in this tab; a wrong token is refused with a clear message.
  await page.reload();
  await page.locator("#attendance tbody tr").nth(1).waitFor();
  const stranger = await newPage(browser, `${server.base}/report/${id}#token=not-a-token`, { who: "stranger", errors });
  await stranger.locator("#access-error").waitFor();
  assert.match(await stranger.locator("#access-error").innerText(), /Cannot open the report/);
  assert.equal(await stranger.locator("#content").isHidden(), true);
  assert.deepEqual(await axeViolations(stranger), [], "the access form");

  assert.deepEqual(await page.evaluate(() => window.__violations), []);
  assert.deepEqual(errors, []);
  await context.close();
});
