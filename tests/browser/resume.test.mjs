// A drop longer than the reconnect grace: the server forgets the seat and the client joins afresh.
// The raised hand is kept (the client raises it again); the banner shows while away.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, launchChromium, openAs } from "./harness.mjs";

let server;
let browser;

before(async () => {
  server = await startServer({ config: "[limits]\nreconnect_grace_s = 1\n" });
  browser = await launchChromium();
}, { timeout: 120_000 });

after(async () => {
  try {
    await browser?.close();
  } finally {
    await server?.stop();
  }
}, { timeout: 30_000 });

test("a raised hand survives a drop longer than the grace period", { timeout: 60_000 }, async () => {
  const opts = { room: "hands" };
  const host = await openAs(browser, server, { ...opts, identity: "hana", role: "host", name: "Hana" });
  const pia = await openAs(browser, server, { ...opts, identity: "pia", role: "participant", name: "Pia" });
  await host.click("#tab-people");
  await pia.click("#hand");
  await host.locator("#members li[data-identity=pia][data-hand]").waitFor();
  await pia.context().setOffline(true);
  await pia.evaluate(() => convene.socket.close(3000, "test: long drop"));
  await pia.locator("#banner:not([hidden])").waitFor();
  // Past the grace period the seat (and its hand) is gone on the server.
  await host.locator("#members li[data-identity=pia]").waitFor({ state: "detached" });
  const joins = await pia.evaluate(() => convene.state.joins);
  await pia.context().setOffline(false);
  // The client's backoff grew while it was offline (up to 10 s between tries): allow for it.
  await host.locator("#members li[data-identity=pia][data-hand]").waitFor({ timeout: 30_000 });
  assert.equal(await pia.evaluate(() => convene.state.joins), joins + 1, "a fresh welcome, not a resume");
  await pia.locator("#hand[aria-pressed=true]", { hasText: "Lower hand" }).waitFor();
  await pia.locator("#banner").waitFor({ state: "hidden" });
});
