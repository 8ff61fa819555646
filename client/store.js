// @ts-check
// The client's room state and the reducer over protocol messages: no DOM, no socket, so it is
// unit-tested with `node --test` (tests/browser/store.test.mjs). Views render from this state.

/**
 * @typedef {{identity: string, name: string, role: string, presence: string, on_stage: boolean,
 *   hand_raised: boolean, chat_muted: boolean, breakout: number|null, facilitator: boolean,
 *   attrs?: Record<string, string>, media_muted?: string[], captioner?: boolean}} Member
 * @typedef {{id: number, text: string, author: string|null, author_name: string|null, votes: number,
 *   state: string, live: boolean, edited: boolean, answer: string|null, duplicate_of: number|null,
 *   anonymous?: boolean, asked_at: number, updated_at: number, answered_at: number|null}} Question
 * @typedef {{text: string, kind?: string, code?: string, announce?: boolean}} Note
 */

export function createState() {
  return {
    /** @type {Member|null} */ you: null,
    /** @type {any} */ settings: null,
    room: "",
    /** @type {Map<string, Member>} */ members: new Map(),
    count: 0,
    /** @type {any[]} */ chat: [],
    /** @type {Map<number, Question>} */ questions: new Map(),
    /** @type {Set<number>} */ myVotes: new Set(),
    /** @type {Set<number>} */ myQuestions: new Set(),
    /** @type {any} */ breakouts: null,
    /** @type {string|null} */ placeName: null,
    /** @type {RTCIceServer[]} */ iceServers: [],
    /** @type {Map<string, any>} */ tracks: new Map(),
    /** @type {Map<number, any>} */ polls: new Map(),
    /** Your answers: poll id -> option indexes. @type {Map<number, number[]>} */ myPollAnswers: new Map(),
    /** @type {any[]} */ helpRequests: [],
    /** Raised hands in the order this client saw them go up: identity -> order number. */
    /** @type {Map<string, number>} */ handOrder: new Map(),
    handCounter: 0,
    /** Set when someone else put you on stage and you have not answered yet. */
    stageInvite: false,
    /** The breakout this person left while breakouts are open (they may go back). @type {number|null} */
    leftBreakout: null,
    /** A scheduled convening not started yet: attendees wait in its lobby. @type {any} */
    lobby: null,
    /** Why the server removed this person (the convening ended, or a moderator). @type {string|null} */
    removedReason: null,
    seq: 0,
    /** @type {string|null} */ sessionId: null,
    joins: 0,
    resumes: 0,
  };
}

/** @typedef {ReturnType<typeof createState>} State */

/** @param {State} state @param {Member} m */
function noteHand(state, m) {
  if (m.hand_raised && !state.handOrder.has(m.identity)) state.handOrder.set(m.identity, ++state.handCounter);
  if (!m.hand_raised) state.handOrder.delete(m.identity);
}

/**
 * A fresh `welcome`: replaces what the session knew. Returns notes for the person.
 * @param {State} state @param {any} msg @returns {Note[]}
 */
export function applyWelcome(state, msg) {
  applySnapshot(state, msg.snapshot);
  Object.assign(state, { sessionId: msg.session_id, seq: msg.seq, you: msg.you, iceServers: msg.ice_servers ?? [] });
  state.joins++;
  return msg.resume_failed ? [{ text: `Reconnected with a fresh view (${msg.resume_failed}).` }] : [];
}

/** The room as a snapshot shows it (`welcome`, or `admitted` from the lobby). @param {State} state @param {any} s */
function applySnapshot(state, s) {
  const questions = new Map([...s.questions, ...s.answered].map((q) => [q.id, q]));
  Object.assign(state, {
    settings: s.settings, room: s.room, lobby: s.lobby ?? null,
    members: new Map(s.members.map((/** @type {Member} */ m) => [m.identity, m])), count: s.participant_count,
    chat: s.chat, questions, myVotes: new Set(s.my_votes), myQuestions: new Set(s.my_questions),
    breakouts: s.breakouts, tracks: new Map(s.tracks.map((/** @type {any} */ t) => [t.id, t])), placeName: null,
    polls: new Map((s.polls ?? []).map((/** @type {any} */ p) => [p.id, p])),
    myPollAnswers: new Map(Object.entries(s.my_poll_answers ?? {}).map(([id, a]) => [Number(id), /** @type {number[]} */ (a)])),
  });
  state.handOrder = new Map([...state.handOrder].filter(([id]) => state.members.get(id)?.hand_raised));
  for (const m of state.members.values()) noteHand(state, m);
  const you = state.you && state.members.get(state.you.identity);
  if (you) state.you = you;
}

/**
 * The command `cmd` was applied (its `ack` came back). Returns notes for the person.
 * @param {State} state @param {any} cmd @param {any} ack @returns {Note[]}
 */
export function applyAck(state, cmd, ack) {
  if (!cmd) return [];
  if (cmd.type === "ask_question" && ack.id != null) state.myQuestions.add(ack.id);
  if (cmd.type === "upvote") state.myVotes.add(cmd.question_id);
  if (cmd.type === "remove_upvote") state.myVotes.delete(cmd.question_id);
  if (cmd.type === "vote_poll") state.myPollAnswers.set(cmd.poll_id, [...new Set(cmd.choices)].sort((a, b) => a - b));
  if (cmd.type === "ask_for_help") return [{ text: "Help requested: the hosts have been told.", announce: true }];
  return [];
}

/** @param {State} state @param {number|null} id */
export function roomName(state, id) {
  return state.breakouts?.rooms.find((/** @type {any} */ r) => r.id === id)?.name ?? state.placeName ?? `breakout ${id}`;
}

/** @param {State} state @param {Question} q */
export const isMine = (state, q) => q.author === state.you?.identity || state.myQuestions.has(q.id);

const short = (/** @type {string} */ text) => (text.length > 60 ? `${text.slice(0, 57)}…` : text);

/**
 * One room event. Returns notes worth telling the person (shown, and announced politely).
 * @param {State} state @param {any} ev @param {number} now @returns {Note[]}
 */
export function applyEvent(state, ev, now = Date.now()) {
  const you = state.you?.identity;
  /** @type {Note[]} */
  const notes = [];
  switch (ev.type) {
    case "member_joined":
    case "member_updated": {
      const m = ev.member;
      const before = state.members.get(m.identity) ?? (m.identity === you ? state.you : null);
      state.members.set(m.identity, m);
      noteHand(state, m);
      if (m.identity === you) {
        const had = before?.media_muted ?? [];
        for (const kind of m.media_muted ?? []) {
          if (!had.includes(kind)) notes.push({ text: `A moderator muted your ${kind === "audio" ? "microphone" : "camera"}.`, announce: true });
        }
        for (const kind of had) {
          if (!(m.media_muted ?? []).includes(kind)) notes.push({ text: `A moderator allows your ${kind === "audio" ? "microphone" : "camera"} again; turn it on when you are ready.`, announce: true });
        }
        // Put on stage by someone else: ask before publishing anything.
        if (m.on_stage && !before?.on_stage && m.role === "participant") {
          state.stageInvite = true;
          notes.push({ text: "You are invited to the stage." });
        }
        if (!m.on_stage) state.stageInvite = false;
        if (before?.hand_raised && !m.hand_raised && !m.on_stage) notes.push({ text: "Your hand was lowered." });
        state.you = m;
      } else if (m.hand_raised && !before?.hand_raised && state.you && state.you.role !== "participant") {
        notes.push({ text: `${m.name} raised their hand.`, announce: true });
      }
      break;
    }
    case "member_left":
      state.members.delete(ev.identity);
      state.handOrder.delete(ev.identity);
      break;
    case "removed":
      state.removedReason = ev.reason;
      notes.push(ev.reason.endsWith("has ended") ? { text: `${ev.reason}.`, announce: true } : { text: `You were removed: ${ev.reason}`, kind: "error" });
      break;
    case "participant_count":
      state.count = ev.count;
      break;
    case "settings_changed":
      state.settings = ev.settings;
      // A webcast turned meeting: its audience, hidden until now, comes along.
      if (Array.isArray(ev.members)) for (const m of ev.members) state.members.set(m.identity, m);
      break;
    case "chat_message":
      state.chat.push(ev.message);
      if (state.chat.length > 300) state.chat.shift();
      break;
    case "chat_deleted":
      state.chat = state.chat.filter((m) => m.id !== ev.message_id);
      break;
    case "question_updated": {
      const q = ev.question;
      const before = state.questions.get(q.id);
      state.questions.set(q.id, q);
      if (isMine(state, q) && before && before.state !== q.state) {
        const what = { approved: "was approved", answered: "was answered", dismissed: "was dismissed" }[/** @type {"approved"} */ (q.state)];
        if (what) notes.push({ text: `Your question ${what}: “${short(q.text)}”`, announce: true });
      }
      if (q.live && !before?.live) notes.push({ text: `Now answering: “${short(q.text)}”`, announce: true, kind: "quiet" });
      break;
    }
    case "question_votes": {
      const q = state.questions.get(ev.question_id);
      if (q) q.votes = ev.votes;
      break;
    }
    case "question_removed":
      state.questions.delete(ev.question_id);
      break;
    case "breakouts_updated":
      state.breakouts = ev.breakouts;
      break;
    case "moved":
      // The destination's recent chat, when the server sends it along; else it starts empty.
      state.chat = Array.isArray(ev.chat) ? ev.chat : [];
      state.placeName = ev.breakout == null ? null : ev.name;
      state.leftBreakout = ev.breakout == null && ev.from != null && !state.you?.facilitator ? ev.from : null;
      for (const t of state.tracks.values()) if ((t.breakout ?? null) !== ev.breakout) state.tracks.delete(t.id);
      // Media already published where we arrive (a visiting host sees the breakout's cameras).
      if (Array.isArray(ev.tracks)) for (const t of ev.tracks) state.tracks.set(t.id, t);
      if (state.you) state.you = { ...state.you, breakout: ev.breakout, hand_raised: false };
      // The lead's protocol change: the people at the destination come with the move.
      if (Array.isArray(ev.members)) for (const m of ev.members) state.members.set(m.identity, m);
      notes.push({ text: ev.breakout == null ? "You are back in the main room." : `You are in ${ev.name}.`, announce: true });
      break;
    case "media_muted":
      for (const identity of ev.identities ?? []) {
        const m = state.members.get(identity);
        if (!m) continue;
        const kinds = new Set(m.media_muted ?? []);
        if (ev.muted) kinds.add(ev.kind); else kinds.delete(ev.kind);
        const next = { ...m, media_muted: [...kinds] };
        state.members.set(identity, next);
        if (identity === you) state.you = next;
      }
      if (ev.muted && (ev.identities ?? []).includes(you)) notes.push({ text: `A moderator muted your ${ev.kind === "audio" ? "microphone" : "camera"}.`, announce: true });
      break;
    case "members_moved":
      for (const { identity, breakout } of ev.moves ?? []) {
        const m = state.members.get(identity);
        if (!m) continue;
        const moved = { ...m, breakout, hand_raised: false, on_stage: breakout == null ? m.role === "presenter" : m.on_stage };
        state.members.set(identity, moved);
        state.handOrder.delete(identity);
        if (identity === you) state.you = moved;
      }
      break;
    case "breakout_warning":
      notes.push({ text: `Breakouts end in ${clock(ev.ends_at - now)}.`, announce: true });
      break;
    case "breakout_broadcast":
      notes.push({ text: `${ev.from} to all breakouts: ${ev.text}`, kind: "broadcast", announce: true });
      break;
    case "help_requested":
      state.helpRequests = [...state.helpRequests.filter((r) => r.identity !== ev.identity), ev];
      notes.push({ text: `${ev.name} asks for help in ${ev.breakout_name}.`, kind: "help", announce: true });
      break;
    case "help_handled":
      state.helpRequests = state.helpRequests.filter((r) => r.identity !== ev.identity);
      if (ev.identity === you) notes.push({ text: `${ev.by_name} is coming to help.`, announce: true });
      break;
    case "breakouts_closing":
      if (state.breakouts) state.breakouts.closes_at = ev.closes_at;
      notes.push({ text: `Breakouts close in ${clock(ev.closes_at - now)}.`, announce: true });
      break;
    case "breakouts_closed":
      state.helpRequests = [];
      state.leftBreakout = null;
      notes.push({ text: "Breakouts are closed." });
      break;
    case "poll_updated": {
      const p = ev.poll;
      const before = state.polls.get(p.id);
      state.polls.set(p.id, p);
      if (!before && p.state === "open") notes.push({ text: `New poll: “${short(p.question)}”`, announce: true });
      else if (before?.state === "open" && p.state === "closed") notes.push({ text: `Poll closed: “${short(p.question)}”`, announce: true });
      else if (before && !before.shared && p.shared && state.you?.role === "participant") notes.push({ text: `Poll results: “${short(p.question)}”`, announce: true });
      break;
    }
    case "track_published":
      state.tracks.set(ev.track.id, ev.track);
      break;
    case "lobby":
      state.lobby = ev.lobby;
      break;
    case "convening_started":
      state.lobby = null;
      notes.push({ text: "The convening has started: attendees are coming in.", announce: true });
      break;
    case "admitted":
      applySnapshot(state, ev.snapshot);
      notes.push({ text: "The convening has started. Welcome in!", announce: true });
      break;
    case "track_unpublished":
      state.tracks.delete(ev.track_id);
      break;
  }
  return notes;
}

/** "4:05" for a number of milliseconds (never negative). @param {number} ms */
function clock(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** Raised hands, first raised first. @param {State} state */
export function handsInOrder(state) {
  return [...state.members.values()].filter((m) => m.hand_raised)
    .sort((a, b) => (state.handOrder.get(a.identity) ?? 0) - (state.handOrder.get(b.identity) ?? 0));
}
