// Screenshots of each role's main view, for looking at the client (not a test):
//   node tests/browser/screenshots.mjs [OUT_DIR]      (default docs/screenshots)
// Starts the real server, joins a host, moderator, presenter and participant to one webcast room
// with a little activity (chat, a question, a raised hand), and saves desktop and phone PNGs.
import path from "node:path";
import fs from "node:fs";
import { startServer, launchChromium, ROOT, openAs } from "./harness.mjs";
import { createNetns } from "./netns.mjs";

const out = path.resolve(process.argv[2] ?? path.join(ROOT, "docs/screenshots"));
fs.mkdirSync(out, { recursive: true });
// With root, a network namespace lets the presenter's (fake) camera and screen reach the stage.
let netns = null;
try { netns = createNetns(); } catch (e) { if (!e.skip) throw e; console.log(`no video: ${e.skip}`); }
const server = await startServer({ netns });
const browser = await launchChromium({ netns, args: ["--allow-loopback-in-peer-connection", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"] });
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
  await act(mod, () => convene.send("launch_poll", { question: "Which strand should we start with?", options: ["Coaching cycles", "Data use", "Family engagement"], multiple: false, live_results: true }));
  await act(pia, () => convene.send("vote_poll", { poll_id: 1, choices: [0] }));
  await act(phone, () => convene.send("vote_poll", { poll_id: 1, choices: [1] }));
  await act(mod, () => convene.send("set_live_question", { question_id: [...convene.state.questions.values()][0].id }));
  if (netns) {
    await pres.click("#mic");
    await pres.click("#cam");
    await pres.click("#share");
    for (const page of [host, mod, pia, phone]) await page.locator("#videos figure[data-screen] video").waitFor({ state: "attached", timeout: 20000 });
    await pia.waitForFunction(() => [...document.querySelectorAll("#videos video")].every((v) => v.videoWidth > 0));
  }
  await mod.waitForTimeout(500);
  await host.click("#tab-polls");
  await mod.click("#tab-console");
  // A webcast viewer's phone opens on the stage; the chat view first, then the stage.
  await phone.click("#tab-chat");
  for (const [name, page] of Object.entries({ host, moderator: mod, presenter: pres, participant: pia, phone })) {
    await page.screenshot({ path: path.join(out, `${name}.png`) });
    const wide = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    console.log(`${name}: ${path.join(out, `${name}.png`)}${wide ? " (scrolls sideways)" : ""}`);
  }
  await phone.click("#tab-stage");
  await phone.screenshot({ path: path.join(out, "phone-stage.png") });
  await phone.click("#more");
  await phone.locator("#more-menu").waitFor();
  await phone.screenshot({ path: path.join(out, "phone-controls.png") });
} finally {
  await browser.close();
  await server.stop();
  netns?.delete();
}
