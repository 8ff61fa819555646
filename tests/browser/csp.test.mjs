// The page under its Content-Security-Policy, and the join token out of the address bar: headless
// Chromium against the real server. No CSP violation while a host joins and uses the page; the
// token leaves location.href and a reload still joins; a second window with the same token takes
// the seat, and the first says so and stays closed (no reconnect loop between the two).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchChromium, until } from "./harness.mjs";

const STEP = { timeout: 90_000 };
let server;
let browser;

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

/** A fresh tab that records CSP violations and console errors from its first script on. */
async function watchedPage() {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  const problems = [];
  page.on("console", (msg) => { if (msg.type() === "error") problems.push(msg.text()); });
  page.on("pageerror", (err) => problems.push(err.message));
  return { page, problems };
}

test("the page runs under its CSP and keeps no token in the address bar", STEP, async () => {
  const { url } = server.token({ room: "csp", role: "host", name: "Hana", identity: "hana" });
  const { page, problems } = await watchedPage();
  const response = await page.goto(url);
  const csp = response.headers()["content-security-policy"] ?? "";
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  await page.locator("#status[data-state=connected]").waitFor();
  // Use the page a little: chat, the console (the invite panel), people.
  await page.click("#tab-chat");
  await page.fill("#chat-text", "hello under CSP");
  await page.keyboard.press("Enter");
  await page.locator("#chat li", { hasText: "hello under CSP" }).first().waitFor();
  await page.click("#tab-console");
  await page.click("#tab-people");
  assert.doesNotMatch(await page.evaluate(() => location.href), /token/);
  // A reload finds the token in this tab's sessionStorage.
  await page.reload();
  await page.locator("#status[data-state=connected]").waitFor();
  assert.doesNotMatch(await page.evaluate(() => location.href), /token/);
  assert.deepEqual(await page.evaluate(() => window.__violations), []);
  assert.deepEqual(problems.filter((p) => /Content Security Policy|Refused to/i.test(p)), []);
  await page.context().close();
});

test("a second window takes the seat; the first says so and does not reconnect", STEP, async () => {
  const { url } = server.token({ room: "csp", role: "participant", name: "Pia", identity: "pia" });
  const first = await watchedPage();
  await first.page.goto(url);
  await first.page.locator("#status[data-state=connected]").waitFor();
  const second = await watchedPage();
  await second.page.goto(url);
  await second.page.locator("#status[data-state=connected]").waitFor();
  await first.page.locator("#gate-title", { hasText: "You joined from another window" }).waitFor();
  // The first tab stays closed: it opens no socket, so the second keeps its seat.
  const sockets = await until(
    () => first.page.evaluate(() => ({ socket: convene.conn?.socket ?? null, closed: convene.conn?.closed })),
    (v) => v.socket === null && v.closed === true,
    { what: "the first tab closed for good" },
  );
  assert.equal(sockets.closed, true);
  assert.equal(await second.page.locator("#status").getAttribute("data-state"), "connected");
  await first.page.context().close();
  await second.page.context().close();
});
