// The Convene browser client: joins with ?token=, resumes after drops, and renders people,
// chat, hands, Q&A and breakouts. Plain DOM, no framework; the server checks every command,
// the client only hides what a role cannot use. Media: one RTCPeerConnection to the server's SFU.
import {
  PROTOCOL_VERSION, CLOSE, isFinalClose, socketUrl, command, isStaff, canModerate,
  questionOrder, answeredOrder, breakoutPlan, countdown, canPublish, SIMULCAST_LAYERS, publisherOf,
} from "/protocol.js";
import { watchPath } from "/diagnostics.js";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");

const state = {
  you: null, settings: null, members: new Map(), count: 0, chat: [],
  questions: new Map(), myVotes: new Set(), myQuestions: new Set(),
  breakouts: null, placeName: null, tracks: new Map(), helpRequests: [],
  seq: 0, sessionId: null, joins: 0, resumes: 0,
};
let socket = null;
let retryMs = 500;
let retryTimer = null;
let failures = 0;
/** Commands not yet acknowledged, by request_id; resent after a resume (the server applies each id once). */
const unacked = new Map();

// --- Connection -------------------------------------------------------------------

function setStatus(kind, text) {
  $("status").dataset.state = kind;
  $("status").textContent = text;
}

function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (!token) {
    setStatus("closed", "No token: open the join link you were given (`convene token` prints one).");
    return;
  }
  const resume = state.sessionId ? { sessionId: state.sessionId, lastSeq: state.seq } : null;
  const ws = new WebSocket(socketUrl(location.href, token, resume));
  socket = ws;
  ws.onmessage = (e) => {
    let msg;
    try { msg = JSON.parse(e.data); } catch { return; }
    handle(msg);
  };
  ws.onclose = (e) => {
    if (socket !== ws) return;
    socket = null;
    if (isFinalClose(e.code)) {
      const why = { [CLOSE.REMOVED]: "You were removed from this room.", [CLOSE.REPLACED]: "This session continued in another tab.", [CLOSE.REFUSED]: "The server refused this session." };
      setStatus("closed", why[e.code]);
      return;
    }
    failures++;
    // Never admitted after several tries: most likely an expired or mistyped link (HTTP 401 before the upgrade).
    setStatus("reconnecting", !state.you && failures >= 3 ? "Cannot join yet: the link may be invalid or expired. Retrying…" : "reconnecting…");
    reconnectLater(retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  };
}

function reconnectLater(ms) {
  if (!retryTimer) retryTimer = setTimeout(connect, ms + Math.random() * 250);
}

// Back online: try now rather than at the end of the backoff.
window.addEventListener("online", () => { if (!socket) connect(); });

function send(type, fields = {}) {
  const entry = { msg: command(type, fields), sent: false };
  unacked.set(entry.msg.request_id, entry);
  if (unacked.size > 200) unacked.delete(unacked.keys().next().value);
  transmit(entry);
}

function transmit(entry) {
  if (socket?.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify(entry.msg));
    entry.sent = true;
  }
}

function connected() {
  retryMs = 500;
  failures = 0;
  setStatus("connected", `${state.you.name} · ${state.you.role}`);
  $("app").hidden = false;
}

// --- Server messages ---------------------------------------------------------------

function handle(msg) {
  switch (msg.type) {
    case "welcome": {
      if (msg.protocol !== PROTOCOL_VERSION) notice(`Server speaks protocol ${msg.protocol}; this page expects ${PROTOCOL_VERSION}. Reload.`, "error");
      if (msg.resume_failed) notice(`Reconnected with a fresh view (${msg.resume_failed}).`);
      const s = msg.snapshot;
      Object.assign(state, {
        sessionId: msg.session_id, seq: msg.seq, you: msg.you, settings: s.settings,
        members: new Map(s.members.map((m) => [m.identity, m])), count: s.participant_count,
        chat: s.chat, questions: new Map([...s.questions, ...s.answered].map((q) => [q.id, q])),
        myVotes: new Set(s.my_votes), myQuestions: new Set(s.my_questions), breakouts: s.breakouts,
        tracks: new Map(s.tracks.map((t) => [t.id, t])), placeName: null,
        iceServers: msg.ice_servers ?? [],
      });
      state.joins++;
      $("room").textContent = s.room;
      // A fresh session does not know earlier request ids: resend only what never left.
      for (const [id, entry] of unacked) entry.sent ? unacked.delete(id) : transmit(entry);
      connected();
      restartMedia(); // a new session has no peer on the server
      break;
    }
    case "resumed":
      state.sessionId = msg.session_id;
      state.resumes++;
      connected();
      for (const entry of unacked.values()) transmit(entry);
      break;
    case "ack": {
      const entry = unacked.get(msg.request_id);
      unacked.delete(msg.request_id);
      const { type, question_id } = entry?.msg ?? {};
      if (type === "ask_question" && msg.id != null) state.myQuestions.add(msg.id);
      if (type === "upvote") state.myVotes.add(question_id);
      if (type === "remove_upvote") state.myVotes.delete(question_id);
      break;
    }
    case "error": {
      if (msg.request_id && msg.request_id === media.awaiting?.id) answered(null, msg.message);
      unacked.delete(msg.request_id);
      const wait = msg.retry_after_ms ? ` (try again in ${Math.ceil(msg.retry_after_ms / 1000)} s)` : "";
      notice(`${msg.message}${wait}`, "error", msg.code);
      break;
    }
    case "event":
      if (msg.seq <= state.seq) return;
      state.seq = msg.seq;
      applyEvent(msg.event);
      break;
    case "server_shutdown":
      notice("The server is restarting; reconnecting shortly.");
      retryMs = msg.reconnect_after_ms;
      break;
    case "rtc_answer":
      answered(msg.sdp);
      return;
    case "rtc_offer":
      serverOffer(msg.sdp);
      return;
    default:
      return; // pong
  }
  scheduleRender();
}

function applyEvent(ev) {
  const you = state.you?.identity;
  switch (ev.type) {
    case "member_joined":
    case "member_updated":
      state.members.set(ev.member.identity, ev.member);
      if (ev.member.identity === you) state.you = ev.member;
      break;
    case "member_left":
      state.members.delete(ev.identity);
      break;
    case "removed":
      notice(`You were removed: ${ev.reason}`, "error");
      break;
    case "participant_count":
      state.count = ev.count;
      break;
    case "settings_changed":
      state.settings = ev.settings;
      break;
    case "chat_message":
      state.chat.push(ev.message);
      if (state.chat.length > 300) state.chat.shift();
      break;
    case "chat_deleted":
      state.chat = state.chat.filter((m) => m.id !== ev.message_id);
      break;
    case "question_updated":
      state.questions.set(ev.question.id, ev.question);
      break;
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
      state.chat = [];
      state.placeName = ev.breakout == null ? null : ev.name;
      // Media follows the place: the server renegotiates the peer; tracks of the old place go.
      for (const t of state.tracks.values()) if ((t.breakout ?? null) !== ev.breakout) state.tracks.delete(t.id);
      if (state.you) state.you = { ...state.you, breakout: ev.breakout };
      notice(ev.breakout == null ? "You are back in the main room." : `You are in ${ev.name}.`);
      break;
    case "breakout_warning":
      notice(`Breakouts end in ${countdown(ev.ends_at - Date.now())}.`);
      break;
    case "breakout_broadcast":
      notice(`${ev.from} to all breakouts: ${ev.text}`, "broadcast");
      break;
    case "help_requested":
      state.helpRequests = [...state.helpRequests.filter((r) => r.identity !== ev.identity), ev];
      notice(`${ev.name} asks for help in ${ev.breakout_name}.`, "help");
      break;
    case "breakouts_closing":
      if (state.breakouts) state.breakouts.closes_at = ev.closes_at;
      notice(`Breakouts close in ${countdown(ev.closes_at - Date.now())}.`);
      break;
    case "breakouts_closed":
      state.helpRequests = [];
      notice("Breakouts are closed.");
      break;
    case "track_published":
      state.tracks.set(ev.track.id, ev.track);
      startReceiving();
      break;
    case "track_unpublished":
      state.tracks.delete(ev.track_id);
      dropRemoteTrack(ev.track_id);
      break;
  }
}

// --- Notices ----------------------------------------------------------------------

function notice(text, kind = "info", code) {
  const li = h("li", { class: kind, "data-code": code }, h("span", {}, text),
    button("×", () => li.remove(), "Dismiss notice"));
  $("notices").prepend(li);
  while ($("notices").children.length > 6) $("notices").lastChild.remove();
  setTimeout(() => li.remove(), kind === "error" ? 30000 : 15000);
}

// --- Rendering --------------------------------------------------------------------

function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  el.append(...children.flat().filter((c) => c != null && c !== false));
  return el;
}

const button = (label, onclick, ariaLabel, extra = {}) => h("button", { type: "button", "aria-label": ariaLabel, onclick, ...extra }, label);

let renderQueued = false;
function scheduleRender() {
  if (!renderQueued) {
    renderQueued = true;
    setTimeout(() => { renderQueued = false; render(); }, 0);
  }
}

const myRole = () => state.you?.role ?? "participant";
const roomName = (id) => state.breakouts?.rooms.find((r) => r.id === id)?.name ?? state.placeName ?? `breakout ${id}`;

function render() {
  if (!state.you) return;
  const staff = isStaff(myRole());
  const moderator = canModerate(myRole());
  for (const el of document.querySelectorAll(".staff-only")) el.hidden = !staff;
  for (const el of document.querySelectorAll(".mod-only")) el.hidden = !moderator;
  $("settings").hidden = myRole() !== "host";
  $("set-chat").checked = state.settings.chat_enabled;
  $("set-qa").value = state.settings.qa_mode;
  $("place").textContent = state.you.breakout == null ? "Main room" : `${state.you.facilitator ? "Visiting" : "In"} ${roomName(state.you.breakout)}`;
  renderPeople(staff, moderator);
  renderChat(moderator);
  renderQuestions(staff, moderator);
  renderBreakouts(staff, moderator);
  $("set-kind").value = state.settings.kind;
  renderMedia();
}

function renderPeople(staff, moderator) {
  const webcastViewer = !staff && state.settings.kind === "webcast" && state.you.breakout == null;
  $("people-title").textContent = webcastViewer ? "On stage" : "People";
  $("count").textContent = `${state.count} participant${state.count === 1 ? "" : "s"}`;
  const rank = { host: 0, moderator: 1, presenter: 2, participant: 3 };
  const people = [...state.members.values()].sort((a, b) =>
    (b.hand_raised - a.hand_raised) || (rank[a.role] - rank[b.role]) || a.name.localeCompare(b.name));
  $("members").replaceChildren(...people.map((m) => {
    const you = m.identity === state.you.identity;
    const bits = [m.role];
    if (m.on_stage) bits.push("on stage");
    if (m.breakout != null) bits.push(`${m.facilitator ? "visiting" : "in"} ${roomName(m.breakout)}`);
    if (m.presence === "reconnecting") bits.push("reconnecting");
    if (m.chat_muted) bits.push("chat muted");
    const controls = [];
    if (!you && staff && m.hand_raised) controls.push(button("Lower hand", () => send("lower_hand", { identity: m.identity }), `Lower ${m.name}'s hand`));
    if (!you && moderator) {
      if (!canModerate(m.role)) controls.push(button(m.chat_muted ? "Unmute" : "Mute", () => send("mute_chat", { identity: m.identity, muted: !m.chat_muted }), `${m.chat_muted ? "Unmute" : "Mute"} ${m.name} in chat`));
      controls.push(button(m.on_stage ? "Off stage" : "On stage", () => send(m.on_stage ? "remove_from_stage" : "invite_to_stage", { identity: m.identity }), `${m.on_stage ? "Remove" : "Invite"} ${m.name} ${m.on_stage ? "from" : "to"} stage`));
      if (!canModerate(m.role)) controls.push(button("Remove", () => confirm(`Remove ${m.name} from the room?`) && send("remove_participant", { identity: m.identity }), `Remove ${m.name}`));
    }
    return h("li", { "data-identity": m.identity, "data-presence": m.presence, "data-hand": m.hand_raised, class: m.presence },
      h("span", { class: "name" }, m.name + (you ? " (you)" : "")),
      m.hand_raised && h("span", { class: "hand", role: "img", "aria-label": "hand raised" }, "✋"),
      h("span", { class: "meta" }, bits.join(" · ")),
      controls.length > 0 && h("span", { class: "controls" }, controls));
  }));
  $("hand").textContent = state.you.hand_raised ? "Lower hand" : "Raise hand";
  $("hand").setAttribute("aria-pressed", String(state.you.hand_raised));
}

function renderChat(moderator) {
  const list = $("chat");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  $("chat-title").textContent = state.you.breakout == null ? "Chat" : `Chat · ${roomName(state.you.breakout)}`;
  list.replaceChildren(...state.chat.map((m) => {
    const mine = m.from === state.you.identity;
    const time = new Date(m.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return h("li", { "data-id": m.id, "data-from": m.from, class: mine ? "mine" : null },
      h("time", { datetime: new Date(m.at).toISOString() }, time), " ",
      h("b", {}, m.name), ": ", h("span", { class: "text" }, m.text),
      (mine || moderator) && button("Delete", () => send("delete_chat", { message_id: m.id }), `Delete message from ${m.name}`, { class: "small" }));
  }));
  if (atBottom) list.scrollTop = list.scrollHeight;
  const off = !state.settings.chat_enabled && !isStaff(myRole());
  const muted = state.you.chat_muted;
  $("chat-text").disabled = $("chat-send").disabled = off || muted;
  $("chat-text").placeholder = muted ? "A moderator muted your chat" : off ? "Chat is off" : "Say something";
}

function renderQuestions(staff, moderator) {
  const qs = [...state.questions.values()];
  const mine = (q) => q.author === state.you.identity || state.myQuestions.has(q.id);
  const item = (q) => {
    const controls = [];
    if (q.state === "approved" && !mine(q)) {
      const voted = state.myVotes.has(q.id);
      controls.push(button(voted ? "Unvote" : "Upvote", () => send(voted ? "remove_upvote" : "upvote", { question_id: q.id }),
        `${voted ? "Remove upvote from" : "Upvote"} question ${q.id}`, { "aria-pressed": String(voted), class: "vote" }));
    }
    if (mine(q) && q.state !== "answered") controls.push(button("Withdraw", () => send("withdraw_question", { question_id: q.id }), `Withdraw question ${q.id}`));
    if (moderator && q.state === "pending") controls.push(button("Approve", () => send("approve_question", { question_id: q.id }), `Approve question ${q.id}`));
    if (staff && q.state === "approved") {
      controls.push(button(q.live ? "Not live" : "Live", () => send("set_live_question", { question_id: q.live ? null : q.id }), `${q.live ? "Clear live" : "Mark live"} question ${q.id}`));
      controls.push(button("Answered", () => send("answer_question", { question_id: q.id }), `Mark question ${q.id} answered`));
    }
    if (moderator && (q.state === "pending" || q.state === "approved")) controls.push(button("Dismiss", () => send("dismiss_question", { question_id: q.id }), `Dismiss question ${q.id}`));
    if (moderator && q.state === "dismissed") controls.push(button("Restore", () => send("restore_question", { question_id: q.id }), `Restore question ${q.id}`));
    if (staff && q.state === "answered") controls.push(button("Reopen", () => send("reopen_question", { question_id: q.id }), `Reopen question ${q.id}`));
    return h("li", { "data-id": q.id, "data-state": q.state, "data-live": q.live, class: q.live ? "live" : null },
      q.live && h("strong", { class: "badge" }, "LIVE"),
      h("span", { class: "votes", "aria-label": `${q.votes} votes` }, String(q.votes)),
      h("span", { class: "text" }, q.text),
      h("span", { class: "meta" }, `${q.anonymous ? "anonymous" : q.author_name ?? ""}${mine(q) ? " (you)" : ""}${q.edited ? " · edited" : ""}`),
      q.answer && h("p", { class: "answer" }, q.answer),
      controls.length > 0 && h("span", { class: "controls" }, controls));
  };
  const pending = qs.filter((q) => q.state === "pending").sort(questionOrder);
  $("pending-title").hidden = pending.length === 0;
  $("pending").replaceChildren(...pending.map(item));
  $("questions").replaceChildren(...qs.filter((q) => q.state === "approved").sort(questionOrder).map(item));
  $("dismissed-box").hidden = !moderator || !qs.some((q) => q.state === "dismissed");
  $("dismissed").replaceChildren(...qs.filter((q) => q.state === "dismissed").sort(questionOrder).map(item));
  $("answered").replaceChildren(...qs.filter((q) => q.state === "answered").sort(answeredOrder).map(item));
}

function renderBreakouts(staff, moderator) {
  const b = state.breakouts;
  const here = state.you.breakout;
  const open = b?.phase === "open" || b?.phase === "closing";
  let status = "No breakouts.";
  if (here != null) status = state.you.facilitator ? `You are visiting ${roomName(here)}` : `You are in ${roomName(here)}`;
  else if (b && staff) status = `${b.phase === "draft" ? "Planned" : b.phase === "open" ? "Open" : "Closing"}: ${b.rooms.length} room${b.rooms.length === 1 ? "" : "s"}`;
  else if (b?.phase === "draft") status = "Breakouts are being planned.";
  else if (open) status = b.plan.assignment.mode === "self_select" ? "Choose a breakout room." : "You are in the main room.";
  $("bo-status").textContent = status;
  $("bo-mine").hidden = here == null;
  $("bo-help").hidden = state.you.facilitator;
  $("bo-leave").hidden = !state.you.facilitator && b?.plan.allow_leave === false;
  $("bo-leave").textContent = state.you.facilitator ? "Return to main room" : "Leave breakout";
  renderTimer();

  const selfSelect = open && b.plan.assignment.mode === "self_select" && !staff;
  $("bo-rooms").replaceChildren(...(b && (staff || selfSelect) ? b.rooms : []).map((r) => {
    const names = Object.entries(b.assignments).filter(([, id]) => id === r.id).map(([who]) => state.members.get(who)?.name ?? who);
    return h("li", { "data-breakout": r.id },
      h("b", {}, r.name), staff && ` (${names.length}) ${names.join(", ")}`,
      staff && open && here !== r.id && button("Visit", () => send("join_breakout", { breakout: r.id }), `Visit ${r.name}`),
      selfSelect && here !== r.id && button("Join", () => send("choose_breakout", { breakout: r.id }), `Join ${r.name}`));
  }));
  if (moderator) {
    $("bo-plan-form").hidden = open;
    $("bo-controls").hidden = !b;
    $("bo-open").hidden = $("bo-cancel").hidden = b?.phase !== "draft";
    $("bo-extend").hidden = b?.phase !== "open" || b.ends_at == null;
    $("bo-close").hidden = b?.phase !== "open";
    $("bo-broadcast-form").hidden = !open;
  }
  $("bo-help-requests").replaceChildren(...(staff ? state.helpRequests : []).map((r) =>
    h("li", {}, `${r.name} needs help in ${r.breakout_name} `,
      button("Go", () => send("join_breakout", { breakout: r.breakout }), `Visit ${r.breakout_name} to help ${r.name}`),
      button("Done", () => { state.helpRequests = state.helpRequests.filter((x) => x !== r); render(); }, `Clear help request from ${r.name}`))));
}

function renderTimer() {
  const b = state.breakouts;
  const at = b?.phase === "closing" ? b.closes_at : b?.phase === "open" ? b.ends_at : null;
  $("bo-timer").hidden = at == null;
  if (at != null) $("bo-timer").textContent = `${b.phase === "closing" ? "Closing in" : "Time left"} ${countdown(at - Date.now())}`;
}
setInterval(renderTimer, 1000);

// --- Media ------------------------------------------------------------------------
// One RTCPeerConnection per session. The client makes the first offer (to publish, or with
// recvonly m-lines to watch); the server then offers to add or stop remote tracks and the client
// answers. A client offer cancels a server offer in flight, so a server offer that arrives while
// ours is outstanding is stale and dropped (the server makes it again). The server is ICE-lite
// and puts its host candidates (UDP and TCP) in its SDP, nothing to trickle; a TURN relay, when
// configured, comes with `welcome`.

const media = {
  pc: null,
  camera: null, // MediaStream while publishing
  sending: [], // our sendonly transceivers (audio, video), kept for the next "Start camera"
  offers: 0, // client offers queued or waiting for rtc_answer
  awaiting: null, // { id, resolve, reject } for the offer on the wire
  chain: Promise.resolve(), // signaling steps, one at a time
  tiles: new Map(), // remote MediaStream id (the publisher's peer) -> { stream, el }
  local: null, // the preview tile
};

function signal(step) {
  media.chain = media.chain.then(step).catch((e) => notice(`Media: ${e.message}`, "error", "media_error"));
  return media.chain;
}

function peer() {
  if (media.pc) return media.pc;
  // UDP first, then the server's TCP candidate, then the relay: the browser ranks them so.
  const pc = new RTCPeerConnection({ iceServers: state.iceServers ?? [] });
  watchPath(pc);
  pc.ontrack = (e) => addRemoteTrack(e.track, e.streams[0]);
  pc.onconnectionstatechange = scheduleRender;
  media.pc = pc;
  return pc;
}

/** Offers the peer's current m-lines and applies the server's `rtc_answer`. */
function offer() {
  media.offers++;
  return signal(async () => {
    const pc = peer();
    const msg = command("rtc_offer");
    const answer = new Promise((resolve, reject) => { media.awaiting = { id: msg.request_id, resolve, reject }; });
    answer.catch(() => {}); // awaited below, unless we fail first
    const timer = setTimeout(() => answered(null, "no answer from the server"), 15000);
    try {
      await pc.setLocalDescription(await pc.createOffer());
      if (socket?.readyState !== WebSocket.OPEN) throw new Error("not connected");
      socket.send(JSON.stringify({ ...msg, sdp: pc.localDescription.sdp }));
      await pc.setRemoteDescription({ type: "answer", sdp: await answer });
    } catch (e) {
      if (pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" });
      throw e;
    } finally {
      clearTimeout(timer);
      if (media.awaiting?.id === msg.request_id) answered(null);
    }
  });
}

/** The server's answer (or refusal) to our offer; counted at once, so later server offers are current. */
function answered(sdp, refusal) {
  const waiting = media.awaiting;
  if (!waiting) return;
  media.awaiting = null;
  media.offers--;
  sdp ? waiting.resolve(sdp) : waiting.reject(new Error(refusal ?? "offer abandoned"));
}

function serverOffer(sdp) {
  if (media.offers > 0 || !media.pc) return; // stale: our offer replaces it
  signal(async () => {
    const pc = media.pc;
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    socket?.send(JSON.stringify(command("rtc_answer", { sdp: pc.localDescription.sdp })));
  });
}

/** Watchers (who may not publish) connect once there is something to watch. */
function startReceiving() {
  if (media.pc || ![...state.tracks.values()].some((t) => t.publisher !== state.you?.identity)) return;
  // A data channel is enough to connect; the server then offers each track with its msid.
  peer().createDataChannel("convene");
  offer();
}

async function startCamera() {
  $("cam").disabled = true;
  try {
    media.camera = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: { ideal: 1280 }, height: { ideal: 720 } } });
  } catch (e) {
    notice(`Camera: ${e.message}`, "error");
    return;
  } finally {
    $("cam").disabled = false;
  }
  const pc = peer();
  const [audio] = media.camera.getAudioTracks();
  const [video] = media.camera.getVideoTracks();
  if (media.sending.length) {
    await media.sending[0].sender.replaceTrack(audio ?? null);
    await media.sending[1].sender.replaceTrack(video ?? null);
  } else {
    const streams = [media.camera];
    media.sending = [
      pc.addTransceiver(audio ?? "audio", { direction: "sendonly", streams }),
      pc.addTransceiver(video ?? "video", { direction: "sendonly", streams, sendEncodings: SIMULCAST_LAYERS }),
    ];
  }
  media.local = tile("you", "You", media.camera, true);
  offer(); // also tells the server we publish again after "Stop camera"
  scheduleRender();
}

function stopCamera() {
  for (const t of media.camera?.getTracks() ?? []) t.stop();
  for (const tr of media.sending) tr.sender.replaceTrack(null);
  media.camera = media.local = null;
  send("unpublish");
  scheduleRender();
}

/** After a fresh welcome the server has no peer for us: start over with what we had. */
function restartMedia() {
  const publishing = media.camera != null;
  media.pc?.close();
  for (const t of media.camera?.getTracks() ?? []) t.stop();
  Object.assign(media, { pc: null, camera: null, sending: [], local: null, chain: Promise.resolve() });
  if (media.awaiting) answered(null);
  media.tiles.clear();
  if (publishing && canPublish(state.you, state.settings)) startCamera();
  else startReceiving();
}

function tile(key, caption, stream, mirrored) {
  const video = h("video", { autoplay: true, playsinline: true, muted: mirrored, class: mirrored ? "mirrored" : null });
  video.muted = mirrored;
  video.srcObject = stream;
  // Autoplay with sound needs a user gesture; without one, play muted until the video is clicked.
  video.play().catch(() => { video.muted = true; video.play().catch(() => {}); });
  video.onclick = () => { video.muted = false; };
  return { stream, video, el: h("figure", { class: "tile", "data-publisher": key }, video, h("figcaption", {}, caption)) };
}

function addRemoteTrack(track, stream) {
  stream ??= new MediaStream([track]);
  if (!media.tiles.has(stream.id)) {
    media.tiles.set(stream.id, tile(publisherOf(state.tracks, track.id, stream.id), "", stream, false));
    stream.onremovetrack = () => { if (stream.getTracks().length === 0) dropTile(stream.id); };
  }
  scheduleRender();
}

function dropRemoteTrack(trackId) {
  for (const [id, t] of media.tiles) {
    for (const track of t.stream.getTracks()) if (track.id === trackId) t.stream.removeTrack(track);
    if (t.stream.getTracks().length === 0) dropTile(id);
  }
}

function dropTile(id) {
  media.tiles.delete(id);
  scheduleRender();
}

function renderMedia() {
  const may = canPublish(state.you, state.settings);
  if (media.camera && !may) stopCamera(); // taken off stage
  $("cam").hidden = !may;
  $("cam").textContent = media.camera ? "Stop camera" : "Start camera";
  $("cam").setAttribute("aria-pressed", String(media.camera != null));
  $("quality-box").hidden = ![...state.tracks.values()].some((t) => t.layers?.length > 1 && t.publisher !== state.you.identity);
  const remote = [...media.tiles.values()];
  for (const t of remote) {
    const who = t.el.dataset.publisher;
    t.el.querySelector("figcaption").textContent = state.members.get(who)?.name ?? who;
  }
  const tiles = [media.local, ...remote].filter(Boolean).map((t) => t.el);
  const grid = $("videos");
  if (tiles.length !== grid.children.length || tiles.some((el, i) => grid.children[i] !== el)) grid.replaceChildren(...tiles);
  const pcState = media.pc?.connectionState;
  $("media-status").textContent = !media.pc ? (may ? "Camera off." : "Nothing on stage yet.")
    : pcState === "connected" ? `${remote.length} on video${media.camera ? " · you are live" : ""}`
      : `media ${pcState}…`;
}

// --- Controls ---------------------------------------------------------------------

function onSubmit(id, fn) {
  $(id).addEventListener("submit", (e) => { e.preventDefault(); fn(); });
}

onSubmit("chat-form", () => {
  const text = $("chat-text").value.trim();
  if (text) send("send_chat", { text });
  $("chat-text").value = "";
});
onSubmit("ask-form", () => {
  const text = $("ask-text").value.trim();
  if (text) send("ask_question", { text, anonymous: $("ask-anon").checked });
  $("ask-text").value = "";
});
$("hand").onclick = () => send(state.you?.hand_raised ? "lower_hand" : "raise_hand");
$("set-chat").onchange = (e) => send("update_settings", { chat_enabled: e.target.checked });
$("set-qa").onchange = (e) => send("update_settings", { qa_mode: e.target.value });
$("set-kind").onchange = (e) => send("update_settings", { kind: e.target.value });
$("cam").onclick = () => (media.camera ? stopCamera() : startCamera());
$("quality").onchange = (e) => send("set_video_quality", { quality: e.target.value });

onSubmit("bo-plan-form", () => {
  const byAttribute = $("bo-by-attr").checked;
  const names = $("bo-names").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (byAttribute ? !$("bo-attr").value.trim() : names.length === 0) {
    notice(byAttribute ? "Name the attribute to group by (e.g. team)." : "Name at least one room.", "error");
    return;
  }
  send("set_breakout_plan", {
    plan: breakoutPlan({
      attribute: byAttribute ? $("bo-attr").value.trim() : null,
      names, selfSelect: $("bo-self").checked,
      minutes: Number($("bo-minutes").value), allowLeave: $("bo-allow-leave").checked,
    }),
  });
});
$("bo-open").onclick = () => send("open_breakouts");
$("bo-cancel").onclick = () => send("cancel_breakout_plan");
$("bo-extend").onclick = () => send("extend_breakouts", { seconds: 300 });
$("bo-close").onclick = () => send("close_breakouts", {});
$("bo-help").onclick = () => send("ask_for_help");
$("bo-leave").onclick = () => send("leave_breakout");
onSubmit("bo-broadcast-form", () => {
  const text = $("bo-broadcast-text").value.trim();
  if (text) send("broadcast_to_breakouts", { text });
  $("bo-broadcast-text").value = "";
});

// For the console and for tests: the live state and socket (read-only use).
window.convene = { state, media, get socket() { return socket; } };

connect();
