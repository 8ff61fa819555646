// Screenshots of each role's main view, for looking at the client (not a test):
//   node tests/browser/screenshots.mjs [OUT_DIR]      (default docs/screenshots)
// Starts the real server, joins a host, moderator, presenter and participant to one webcast room
// with a little activity (chat, a question, a raised hand), and saves desktop and phone PNGs.
import path from "node:path";
import fs from "node:fs";
import { startServer, launchChromium, ROOT, openAs } from "./harness.mjs";

const out = path.resolve(process.argv[2] ?? path.join(ROOT, "docs/screenshots"));
fs.mkdirSync(out, { recursive: true });
const server = await startServer();
const browser = await launchChromium();
try {
  const room = "launch";
  const join = (identity, role, name, viewport = { width: 1440, height: 900 }, attrs = {}) =>
    openAs(browser, server, { room, identity, role, name, attrs, viewport });
  const host = await join("hana", "host", "Hana Okafor");
  const mod = await join("mo", "moderator", "Mo Reyes");
  const pres = await join("pat", "presenter", "Pat Lee");
  const pia = await join("pia", "participant", "Pia Novak", undefined, { team: "Knox County" });
  const phone = await join("quinn", "participant", "Quinn Adams", { width: 390, height: 844 }, { team: "Hamilton" });
  const act = async (page, fn) => { await page.evaluate(fn); await page.waitForTimeout(150); };
  // Through the page's own connection, so the views show real protocol state.
  await act(pia, () => convene.send("send_chat", { text: "Hello from Knox County!" }));
  await act(host, () => convene.send("send_chat", { text: "Welcome, everyone. We start in two minutes." }));
  await act(pia, () => convene.send("ask_question", { text: "How do other districts schedule coaching cycles?", anonymous: false }));
  await act(phone, () => convene.send("ask_question", { text: "Is there funding for substitutes during the institute?", anonymous: false }));
  await act(pia, () => convene.send("raise_hand"));
  await act(mod, () => convene.send("approve_question", { question_id: [...convene.state.questions.values()][0].id }));
  await act(host, () => convene.send("invite_to_stage", { identity: "pat" }));
  await mod.waitForTimeout(500);
  for (const [name, page] of Object.entries({ host, moderator: mod, presenter: pres, participant: pia, phone })) {
    await page.screenshot({ path: path.join(out, `${name}.png`) });
    const wide = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    console.log(`${name}: ${path.join(out, `${name}.png`)}${wide ? " (scrolls sideways)" : ""}`);
  }
  await host.setViewportSize({ width: 1280, height: 800 });
  await host.screenshot({ path: path.join(out, "host-1280.png") });
} finally {
  await browser.close();
  await server.stop();
}
