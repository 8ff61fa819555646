// Unit tests for the client's pure protocol helpers (client/protocol.js): no browser, no server.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  questionOrder, answeredOrder, breakoutPlan, socketUrl, command, countdown, isFinalClose, CLOSE,
} from "../../client/protocol.js";

const q = (id, fields) => ({ id, state: "approved", live: false, votes: 0, asked_at: 1000 + id, answered_at: null, ...fields });

test("questions: live first, then votes desc, then asked time asc, pending after", () => {
  const list = [
    q(1, { votes: 2 }),
    q(2, { votes: 5 }),
    q(3, { votes: 2, asked_at: 500 }),
    q(4, { votes: 0, live: true }),
    q(5, { state: "pending", votes: 9 }),
    q(6, { state: "dismissed" }),
  ];
  assert.deepEqual(list.sort(questionOrder).map((x) => x.id), [4, 2, 3, 1, 5, 6]);
});

test("answered questions: most recent first", () => {
  const list = [q(1, { answered_at: 10 }), q(2, { answered_at: 30 }), q(3, { answered_at: 20 })];
  assert.deepEqual(list.sort(answeredOrder).map((x) => x.id), [2, 3, 1]);
});

test("breakout plans match the protocol's shapes", () => {
  assert.deepEqual(breakoutPlan({ attribute: "team", minutes: 10 }), {
    rooms: { from_attribute: "team" },
    assignment: { mode: "by_attribute", key: "team" },
    duration_s: 600,
    allow_leave: true,
  });
  assert.deepEqual(breakoutPlan({ names: ["A", "B"], minutes: 0, allowLeave: false }), {
    rooms: ["A", "B"],
    assignment: { mode: "auto" },
    duration_s: null,
    allow_leave: false,
  });
  assert.deepEqual(breakoutPlan({ names: ["A"], selfSelect: true, minutes: 1.5 }).assignment, { mode: "self_select", cap: null });
});

test("socket URLs: fresh join and resume", () => {
  assert.equal(socketUrl("http://127.0.0.1:8080/?token=x", "t k"), "ws://127.0.0.1:8080/ws?token=t+k");
  const resume = new URL(socketUrl("https://example.org/", "tok", { sessionId: "abc", lastSeq: 42 }));
  assert.equal(resume.protocol, "wss:");
  assert.equal(resume.searchParams.get("resume"), "abc");
  assert.equal(resume.searchParams.get("last_seq"), "42");
});

test("commands carry unique request ids", () => {
  const a = command("send_chat", { text: "hi" });
  const b = command("raise_hand");
  assert.equal(a.type, "send_chat");
  assert.equal(a.text, "hi");
  assert.notEqual(a.request_id, b.request_id);
});

test("countdown and close codes", () => {
  assert.equal(countdown(65_000), "1:05");
  assert.equal(countdown(-5), "0:00");
  assert.equal(isFinalClose(CLOSE.REMOVED), true);
  assert.equal(isFinalClose(CLOSE.SLOW), false);
  // Another window took the seat, or the token was revoked: reconnecting would only fight.
  assert.equal(isFinalClose(CLOSE.SESSION_REPLACED), true);
  assert.equal(isFinalClose(CLOSE.REVOKED), true);
  assert.equal(isFinalClose(1006), false);
});

test("socket URLs carry a chosen display name; token claims read without verifying", async () => {
  const { socketUrl, tokenClaims } = await import("../../client/protocol.js");
  const url = new URL(socketUrl("http://127.0.0.1:8080/?token=t", "t", null, "Ana Ruiz"));
  assert.equal(url.searchParams.get("name"), "Ana Ruiz");
  assert.equal(new URL(socketUrl("http://h/", "t", null)).searchParams.has("name"), false);
  const payload = Buffer.from(JSON.stringify({ sub: "u1", name: "", room: "r" })).toString("base64url");
  assert.deepEqual(tokenClaims(`h.${payload}.s`), { sub: "u1", name: "", room: "r" });
  assert.equal(tokenClaims("garbage"), null);
});
