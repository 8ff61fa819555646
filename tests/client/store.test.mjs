// Unit tests for the client's store (client/store.js): the reducer over protocol events, no browser.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createState, applyWelcome, applyEvent, applyAck, handsInOrder } from "../../client/store.js";

const member = (identity, fields = {}) => ({
  identity, name: identity.toUpperCase(), role: "participant", presence: "online", on_stage: false,
  hand_raised: false, chat_muted: false, breakout: null, facilitator: false, ...fields,
});
const welcome = (you, members = [], extra = {}) => ({
  type: "welcome", protocol: 1, session_id: "s1", seq: 5, you,
  snapshot: {
    room: "r", settings: { kind: "webcast", chat_enabled: true, qa_mode: "moderated" }, members, participant_count: 1,
    chat: [], questions: [], answered: [], my_votes: [], my_questions: [], breakouts: null, tracks: [], ...extra,
  },
});
const question = (id, fields = {}) => ({ id, text: `q${id}`, author: "ana", author_name: "ANA", votes: 0, state: "pending", live: false, edited: false, answer: null, duplicate_of: null, asked_at: id, updated_at: id, answered_at: null, ...fields });

test("the author is told when their question is approved, answered or dismissed; others are not", () => {
  const s = createState();
  applyWelcome(s, welcome(member("ana")));
  applyEvent(s, { type: "question_updated", question: question(1) });
  const approved = applyEvent(s, { type: "question_updated", question: question(1, { state: "approved" }) });
  assert.match(approved[0].text, /Your question was approved/);
  assert.equal(approved[0].announce, true);
  assert.match(applyEvent(s, { type: "question_updated", question: question(1, { state: "answered" }) })[0].text, /was answered/);
  const other = createState();
  applyWelcome(other, welcome(member("ben")));
  applyEvent(other, { type: "question_updated", question: question(1) });
  assert.deepEqual(applyEvent(other, { type: "question_updated", question: question(1, { state: "dismissed" }) }), []);
  // Anonymous questions are known as the author's by the ack of ask_question.
  applyAck(other, { type: "ask_question" }, { id: 7 });
  applyEvent(other, { type: "question_updated", question: question(7, { author: null }) });
  assert.match(applyEvent(other, { type: "question_updated", question: question(7, { author: null, state: "dismissed" }) })[0].text, /was dismissed/);
});

test("hands are listed in the order they went up; lowering drops them", () => {
  const s = createState();
  applyWelcome(s, welcome(member("host", { role: "host" }), [member("ana"), member("ben")]));
  applyEvent(s, { type: "member_updated", member: member("ben", { hand_raised: true }) });
  applyEvent(s, { type: "member_updated", member: member("ana", { hand_raised: true }) });
  assert.deepEqual(handsInOrder(s).map((m) => m.identity), ["ben", "ana"]);
  applyEvent(s, { type: "member_updated", member: member("ben") });
  applyEvent(s, { type: "member_updated", member: member("ben", { hand_raised: true }) });
  assert.deepEqual(handsInOrder(s).map((m) => m.identity), ["ana", "ben"]);
});

test("put on stage by someone else is an invitation; stepping off clears it", () => {
  const s = createState();
  applyWelcome(s, welcome(member("ana")));
  applyEvent(s, { type: "member_updated", member: member("ana", { on_stage: true }) });
  assert.equal(s.stageInvite, true);
  applyEvent(s, { type: "member_updated", member: member("ana") });
  assert.equal(s.stageInvite, false);
});

test("bulk moves (members_moved) place people, clear hands and reset the stage on return", () => {
  const s = createState();
  applyWelcome(s, welcome(member("host", { role: "host" }), [member("ana", { hand_raised: true }), member("pres", { role: "presenter", on_stage: true })]));
  applyEvent(s, { type: "members_moved", moves: [{ identity: "ana", breakout: 1 }, { identity: "pres", breakout: 1 }] });
  assert.equal(s.members.get("ana").breakout, 1);
  assert.equal(s.members.get("ana").hand_raised, false);
  applyEvent(s, { type: "members_moved", moves: [{ identity: "pres", breakout: null }] });
  assert.equal(s.members.get("pres").on_stage, true);
  // `moved` with the people at the destination: teammates moved earlier are known.
  const t = createState();
  applyWelcome(t, welcome(member("ana")));
  applyEvent(t, { type: "moved", from: null, breakout: 2, name: "Knox County", ends_at: null, members: [member("cy", { breakout: 2 })] });
  assert.equal(t.members.get("cy").breakout, 2);
  assert.equal(t.you.breakout, 2);
});

test("help: the asker hears who comes; staff lists clear; a person who left may go back", () => {
  const staff = createState();
  applyWelcome(staff, welcome(member("host", { role: "host" }), [member("ana", { breakout: 1 })]));
  applyEvent(staff, { type: "help_requested", identity: "ana", name: "ANA", breakout: 1, breakout_name: "Knox" });
  assert.equal(staff.helpRequests.length, 1);
  applyEvent(staff, { type: "help_handled", identity: "ana", by_name: "HOST" });
  assert.equal(staff.helpRequests.length, 0);
  const ana = createState();
  applyWelcome(ana, welcome(member("ana", { breakout: 1 })));
  assert.match(applyAck(ana, { type: "ask_for_help" }, {})[0].text, /Help requested/);
  assert.match(applyEvent(ana, { type: "help_handled", identity: "ana", by_name: "HOST" })[0].text, /HOST is coming to help/);
  applyEvent(ana, { type: "moved", from: 1, breakout: null, name: "", ends_at: null });
  assert.equal(ana.leftBreakout, 1);
  applyEvent(ana, { type: "breakouts_closed" });
  assert.equal(ana.leftBreakout, null);
});

test("a webcast turned meeting brings the audience it hid into the roster", () => {
  const s = createState();
  applyWelcome(s, welcome(member("ana"), [member("host", { role: "host" })]));
  assert.deepEqual([...s.members.keys()].sort(), ["host"], "a webcast shows its audience only staff");
  applyEvent(s, { type: "settings_changed", settings: { kind: "meeting", chat_enabled: true, qa_mode: "moderated" }, members: [member("ana"), member("pia"), member("quinn")] });
  assert.equal(s.settings.kind, "meeting");
  assert.deepEqual([...s.members.keys()].sort(), ["ana", "host", "pia", "quinn"]);
  assert.equal(s.members.get("pia").name, "PIA");
});

test("an attendee in the lobby is admitted with the room's snapshot; staff hear the start", () => {
  const lobby = { convening_id: "c1", title: "Launch", starts_at: 1_800_000_000_000, auto_start: false };
  const s = createState();
  applyWelcome(s, welcome(member("ana"), [member("ana")], { lobby }));
  assert.deepEqual(s.lobby, lobby);
  applyEvent(s, { type: "lobby", lobby: { ...lobby, title: "Launch (moved)" } });
  assert.equal(s.lobby.title, "Launch (moved)");
  const pat = member("pat", { role: "presenter", on_stage: true });
  const notes = applyEvent(s, {
    type: "admitted",
    snapshot: {
      room: "r", settings: { kind: "webcast", chat_enabled: true, qa_mode: "open" }, members: [member("ana"), pat],
      participant_count: 1, chat: [], questions: [], answered: [], my_votes: [], my_questions: [], breakouts: null,
      tracks: [{ id: "t1", publisher: "pat", kind: "video", source: "camera", breakout: null }],
    },
  });
  assert.equal(s.lobby, null);
  assert.equal(s.members.get("pat").role, "presenter");
  assert.equal(s.tracks.size, 1);
  assert.equal(s.you.identity, "ana");
  assert.equal(notes[0].announce, true);
  const host = createState();
  applyWelcome(host, welcome(member("host", { role: "host" }), [], { lobby }));
  applyEvent(host, { type: "convening_started" });
  assert.equal(host.lobby, null);
});
