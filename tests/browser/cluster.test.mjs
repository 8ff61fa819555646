// Two Convene nodes sharing one room through their own redis-server, driven as people would:
// a host on node 1, a participant and a moderator on node 2. Chat and Q&A cross nodes both
// ways and the pages agree; then the room's owner node is killed (SIGKILL): the pages on the
// survivor carry on once its lease lapses, and the host's page (no load balancer to send it
// elsewhere) says it is reconnecting instead of pretending to be connected. Screenshots of the
// pages go to a temp dir removed at the end (CONVENE_KEEP_SCREENSHOTS=1 keeps it and prints it).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { startServer, launchChromium, openAs, until, freePort, scaled, ROOT, MEDIA_ARGS } from "./harness.mjs";
import { perceiver } from "./perceive.mjs";

const ROOM = "launch";
const LEASE_MS = 1500;
const HAVE_REDIS = !spawnSync("redis-server", ["--version"]).error;
const SKIP = HAVE_REDIS ? false : "redis-server is not installed (scripts/test installs it; apt-get install redis-server)";
const STEP = { timeout: 30_000, skip: SKIP };
const AXE = fs.readFileSync(path.join(ROOT, "node_modules/axe-core/axe.min.js"), "utf8");

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "convene-cluster-browser-"));
let redis;
let browser;
const nodes = {};
const pages = {};
const errors = [];

/** Answers "+PONG" to PING: the redis-server on `port` is up. */
function pong(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1");
    let got = "";
    sock.setTimeout(1000, () => { sock.destroy(); resolve(false); });
    sock.on("error", () => resolve(false));
    sock.on("connect", () => sock.write("PING\r\n"));
    sock.on("data", (d) => { got += d; if (got.includes("\r\n")) { sock.end(); resolve(got.startsWith("+PONG")); } });
  });
}

/** This test's own redis-server on a free port (no persistence: nothing here restarts it; it is only paused). */
async function startRedis() {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
    { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (d) => { log = (log + d).slice(-5000); });
  child.stderr.on("data", (d) => { log = (log + d).slice(-5000); });
  const kill = () => child.kill("SIGKILL");
  process.on("exit", kill);
  await until(() => pong(port), Boolean, { timeout: 10_000, every: 100, what: `redis-server on ${port}:\n${log}` });
  return {
    url: `redis://127.0.0.1:${port}`,
    /** SIGSTOP / SIGCONT: Redis unreachable for a while, its data kept. */
    signal: (sig) => child.kill(sig),
    stop: () => { process.off("exit", kill); if (child.exitCode === null) kill(); },
  };
}

/** The nodes the cluster lists as alive, asked of `node` with the API key. */
async function liveNodes(node, apiKey) {
  const res = await fetch(`${node.base}/api/v1/nodes`, { headers: { Authorization: `Bearer ${apiKey}` } });
  assert.equal(res.status, 200, `GET /api/v1/nodes on ${node.base}`);
  return (await res.json()).nodes;
}

/** The rooms each live node owns, by node id, as node 2 lists them. */
const owners = async () => Object.fromEntries((await liveNodes(nodes.n2, apiKey)).map((n) => [n.id, n.rooms_owned]));

const join = async (node, identity, role, name) => {
  pages[identity] = await openAs(browser, nodes[node], { room: ROOM, identity, role, name, errors });
  return pages[identity];
};
const show = (page, tab) => page.click(`#tab-${tab}`);
const visible = (locator) => locator.first().waitFor({ state: "visible" });
/** Types `text` into the chat box and sends it, as a person would. */
async function chat(page, text) {
  await show(page, "chat");
  await page.fill("#chat-text", text);
  await page.press("#chat-text", "Enter");
}
/** The chat message with `text`, delivered (an id from the room, not a pending "sending…" copy). */
const delivered = (page, text) => page.locator("#chat li[data-id]:not([data-pending])", { hasText: text });
/** Opens the chat view and waits there for the delivered message with `text`. */
async function seesChat(page, text) {
  await show(page, "chat");
  await visible(delivered(page, text));
}

let apiKey;
before(async () => {
  if (SKIP) return;
  redis = await startRedis();
  apiKey = randomBytes(16).toString("hex");
  const shared = {
    CONVENE_REDIS_URL: redis.url,
    CONVENE_JWT_SECRET: randomBytes(24).toString("hex"),
    CONVENE_API_KEY: apiKey,
    CONVENE_CLUSTER_LEASE_MS: String(LEASE_MS),
  };
  // startServer sets CONVENE_LISTEN and CONVENE_PUBLIC_URL from the port given.
  nodes.n1 = await startServer({ port: await freePort(), env: { ...shared, CONVENE_NODE_ID: "n1" } });
  nodes.n2 = await startServer({ port: await freePort(), env: { ...shared, CONVENE_NODE_ID: "n2" } });
  // A fake camera and microphone: the media test hears and sees people across the nodes.
  browser = await launchChromium({ args: MEDIA_ARGS });
}, { timeout: 60_000 });

after(async () => {
  try {
    await browser?.close();
  } finally {
    try {
      await nodes.n1?.stop();
      await nodes.n2?.stop();
    } finally {
      redis?.stop();
      if (process.env.CONVENE_KEEP_SCREENSHOTS !== "1") fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}, { timeout: 30_000 });

test("both nodes are live in one cluster", STEP, async () => {
  const listed = await until(() => liveNodes(nodes.n2, apiKey), (ns) => ns.length === 2, { what: "two live nodes" });
  assert.deepEqual(listed.map((n) => [n.id, n.http]).sort(), [["n1", nodes.n1.base], ["n2", nodes.n2.base]]);
});

test("a host on node 1, a participant and a moderator on node 2: chat and Q&A cross nodes both ways", STEP, async () => {
  const hana = await join("n1", "hana", "host", "Hana Okafor");
  const pia = await join("n2", "pia", "participant", "Pia Novak");
  const mo = await join("n2", "mo", "moderator", "Mo Reyes");
  for (const [who, page] of Object.entries(pages)) {
    assert.equal(await page.locator("#room").textContent(), ROOM, `${who}'s page names the room`);
  }

  // The participant chats and asks; the host (other node) and moderator (same node) see both.
  await chat(pia, "Hello from Knox County");
  await seesChat(pia, "Hello from Knox County");
  await show(pia, "qa");
  await pia.fill("#ask-text", "How do other districts schedule coaching cycles?");
  await pia.click("#ask-send");
  await visible(pia.locator("#pending li", { hasText: "coaching cycles" }));
  await seesChat(hana, "Hello from Knox County");
  await show(hana, "qa");
  const pending = hana.locator("#pending li", { hasText: "coaching cycles" });
  await visible(pending);
  await visible(mo.locator("#pending li", { hasText: "coaching cycles" }));
  const qid = await pending.getAttribute("data-id");

  // The host approves it and puts it live: the participant hears so and sees it on stage.
  await hana.getByRole("button", { name: `Approve question ${qid}` }).click();
  await visible(pia.locator(`#questions li[data-id="${qid}"]`));
  await visible(pia.locator("#notices li", { hasText: "Your question was approved" }));
  await hana.getByRole("button", { name: `Mark live question ${qid}` }).click();
  await visible(pia.locator("#live-question", { hasText: "coaching cycles" }));
  await visible(mo.locator("#live-question", { hasText: "coaching cycles" }));

  // The host chats back.
  await chat(hana, "Welcome, everyone: we start in two minutes");
  await seesChat(pia, "Welcome, everyone");
  await seesChat(mo, "Welcome, everyone");

  // One ordered stream: every page shows the same messages in the same order, and the same count.
  const order = (page) => page.locator("#chat li[data-id]").evaluateAll((els) => els.map((e) => e.dataset.id));
  const chatOrder = await order(hana);
  assert.equal(chatOrder.length, 2);
  assert.deepEqual(await order(pia), chatOrder);
  assert.deepEqual(await order(mo), chatOrder);
  for (const page of [hana, pia, mo]) await show(page, "people");
  const count = (page) => page.locator("#count").textContent();
  await until(() => Promise.all([hana, pia, mo].map(count)), (c) => c.every((t) => t === c[0] && /^\d+ participants?$/.test(t)),
    { what: "the same participant count on every page" });
  const members = (page) => page.locator("#members li").evaluateAll((els) => els.map((e) => e.dataset.identity).sort());
  assert.deepEqual(await members(hana), ["hana", "mo", "pia"]);
  assert.deepEqual(await members(pia), await members(hana));
});

test("people joined through two nodes see and hear each other", { ...STEP, timeout: 180_000 }, async () => {
  const room = "cluster-meet";
  const people = { hal: "Hal", pam: "Pam", val: "Val", vic: "Vic" };
  const expect = perceiver(people);
  const open = (node, identity, role) => openAs(browser, nodes[node], { room, identity, role, name: people[identity], errors });
  // Hal (host) and Val on node 1, Pam and Vic on node 2; Hal and Pam publish, Val and Vic watch.
  const hal = await open("n1", "hal", "host");
  await hal.click("#tab-console");
  await hal.selectOption("#set-kind", "meeting");
  const pam = await open("n2", "pam", "participant");
  const val = await open("n1", "val", "participant");
  const vic = await open("n2", "vic", "participant");
  try {
    for (const page of [hal, pam]) {
      await page.click("#mic");
      await page.click("#cam");
      await page.locator("#cam[aria-pressed=true]").waitFor();
    }
    const timeout = scaled(45_000);
    const results = await Promise.allSettled([
      expect(hal, "hal", { sees: ["pam"], hears: ["pam"], timeout }),
      expect(pam, "pam", { sees: ["hal"], hears: ["hal"], timeout }),
      expect(val, "val", { sees: ["hal", "pam"], hears: ["hal", "pam"], timeout }),
      expect(vic, "vic", { sees: ["hal", "pam"], hears: ["hal", "pam"], timeout }),
    ]);
    const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
    assert.deepEqual(failed, [], "what people on two nodes perceive");
    // Pam mutes: nobody hears her any more, on either node, and everyone still sees her.
    await pam.click("#mic");
    await expect(hal, "hal", { sees: ["pam"], notHears: ["pam"], timeout });
    await expect(val, "val", { sees: ["hal", "pam"], hears: ["hal"], notHears: ["pam"], timeout });
  } finally {
    for (const page of [hal, pam, val, vic]) await page.context().close();
  }
});

test("the owner node dies: the survivor's pages carry on, the dead node's page says it is reconnecting", STEP, async () => {
  const { hana, pia, mo } = pages;
  // The room is owned by one node; the host's node is expected to be it (the host joined first).
  // (The node list is refreshed by each node's heartbeat, so it may lag a moment.)
  await until(() => owners(), (o) => o.n1?.includes(ROOM) && !o.n2?.includes(ROOM), { timeout: 5000, what: "node 1 listed as the room's owner" });
  const resumesBefore = await pia.evaluate(() => convene.state.resumes);
  await nodes.n1.kill("SIGKILL");
  const killedAt = Date.now();

  // The host's socket is gone and there is nowhere else to go: the page must say so.
  await hana.locator("#status[data-state=reconnecting]").waitFor();
  assert.equal(await hana.locator("#status").textContent(), "reconnecting…");
  await visible(hana.locator("#banner", { hasText: "Reconnecting" }));

  // The participant chats at once: the command waits in Redis for the room's next owner, which
  // node 2 becomes once the dead owner's lease lapses; then it is delivered, never refused.
  await chat(pia, "Is anyone else still here?");
  await seesChat(pia, "Is anyone else still here?");
  const tookMs = Date.now() - killedAt;
  assert.equal(await pia.locator("#notices li.error").count(), 0, "no command refused during the takeover");
  await seesChat(mo, "Is anyone else still here?");

  // Node 2 now owns the room, and moderation goes on there.
  await until(() => owners(), (o) => Object.keys(o).join() === "n2" && o.n2.includes(ROOM), { what: "node 2 alone, owning the room" });
  await show(mo, "qa");
  const qid = await mo.locator("#questions li", { hasText: "coaching cycles" }).getAttribute("data-id");
  await mo.getByRole("button", { name: `Mark question ${qid} answered` }).click();
  await show(pia, "qa");
  await visible(pia.locator(`#answered li[data-id="${qid}"]`));
  await visible(pia.locator("#notices li", { hasText: "Your question was answered" }));

  // Once the survivor has let the dead node go, people see the host's seat waiting for them to come back.
  await show(pia, "people");
  await visible(pia.locator("#members li[data-identity=hana][data-presence=reconnecting]", { hasText: "reconnecting" }));
  console.log(`# the host shown as reconnecting ${Date.now() - killedAt} ms after the kill`);

  // The survivor's pages stayed connected all along (no resume needed), the host's did not recover.
  for (const page of [pia, mo]) assert.equal(await page.locator("#status").getAttribute("data-state"), "connected");
  assert.equal(await pia.evaluate(() => convene.state.resumes), resumesBefore);
  assert.equal(await hana.locator("#status").getAttribute("data-state"), "reconnecting");
  console.log(`# owner killed: the participant's chat was accepted ${tookMs} ms later`);
});

test("Redis pauses: a message sent meanwhile is retried with its request_id and delivered once", STEP, async () => {
  const { pia, mo } = pages;
  redis.signal("SIGSTOP");
  try {
    await chat(pia, "Sent while the store was away");
    // The server answered `unavailable`: the page says it retries instead of giving up.
    await visible(pia.locator("#notices li", { hasText: "retrying" }));
  } finally {
    redis.signal("SIGCONT");
  }
  await seesChat(mo, "Sent while the store was away");
  await seesChat(pia, "Sent while the store was away");
  assert.equal(await delivered(mo, "Sent while the store was away").count(), 1, "delivered once");
  assert.equal(await pia.locator("#notices li.error").count(), 0, "nothing refused for good");
  assert.equal(await pia.locator("#chat-text").inputValue(), "", "the text was not handed back as failed");
});

test("what people see: screenshots of each page, axe-core clean on the participant's", STEP, async () => {
  for (const [who, page] of Object.entries(pages)) {
    const file = path.join(dir, `cluster-${who}.png`);
    await page.screenshot({ path: file });
    assert.ok(fs.statSync(file).size > 10_000, `${who}'s screenshot`);
  }
  if (process.env.CONVENE_KEEP_SCREENSHOTS === "1") console.log(`# screenshots in ${dir}`);
  const pia = pages.pia;
  await pia.evaluate(AXE);
  for (const tab of ["chat", "qa", "people"]) {
    await show(pia, tab);
    const violations = await pia.evaluate(async () => (await window.axe.run(document, { resultTypes: ["violations"] }))
      .violations.map((v) => `${v.id}: ${v.nodes[0]?.target} ${v.nodes[0]?.failureSummary ?? ""}`));
    assert.deepEqual(violations, [], `participant, ${tab} view`);
  }
  assert.deepEqual(errors, [], "no uncaught errors on any page");
});
