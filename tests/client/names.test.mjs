// The client speaks the protocol's names: every command it sends is a ClientMessage type in
// signaling/schema.json, and every event and server message it handles is one the server sends.
// Reads the client's source, so a renamed or misspelt message fails here, not in a live room.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";

const ROOT = path.resolve(import.meta.dirname, "../..");
const schema = JSON.parse(fs.readFileSync(path.join(ROOT, "signaling/schema.json"), "utf8"));
const consts = (variants) => new Set(variants.map((v) => v.properties?.type?.const).filter(Boolean));
const clientTypes = consts(schema.client_message.oneOf);
const serverTypes = consts(schema.server_message.oneOf);
const eventTypes = consts(schema.server_message.$defs.RoomEvent.oneOf);
// Announced by the lead (issue 11), handled ahead of the server change.
const COMING = new Set(["members_moved"]);

const source = (file) => fs.readFileSync(path.join(ROOT, "client", file), "utf8");
const files = fs.readdirSync(path.join(ROOT, "client")).filter((f) => f.endsWith(".js"));

/** String literals in the first argument of send(...) and command(...) calls. */
function sentTypes(code) {
  const out = new Set();
  for (const m of code.matchAll(/\b(?:send|command)\(([^,)]*)/g)) {
    for (const lit of m[1].matchAll(/"([a-z_]+)"/g)) out.add(lit[1]);
  }
  return out;
}

test("every command the client sends is a ClientMessage type", () => {
  const sent = new Set(files.flatMap((f) => [...sentTypes(source(f))]));
  assert.ok(sent.size >= 30, `found ${sent.size} command names: the scan works`);
  const unknown = [...sent].filter((t) => !clientTypes.has(t));
  assert.deepEqual(unknown, []);
});

test("every event the store handles is a RoomEvent; every message app.js handles is a ServerMessage", () => {
  const cases = (code) => [...code.matchAll(/case "([a-z_]+)":/g)].map((m) => m[1]);
  const events = cases(source("store.js"));
  assert.ok(events.length >= 20);
  assert.deepEqual(events.filter((t) => !eventTypes.has(t) && !COMING.has(t)), []);
  const messages = cases(source("app.js"));
  assert.deepEqual(messages.filter((t) => !serverTypes.has(t)), []);
});
