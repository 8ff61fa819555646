// @ts-check
// The views: each renders one part of the page from the store and updates lists by key, so a
// control that holds focus keeps it while events arrive. Role pages differ only in which views
// and controls are shown; the server checks every command anyway.
import { $, h, attr, text, keyed, controls } from "/dom.js";
import { isStaff, canModerate, questionOrder, answeredOrder, countdown, canPublish } from "/protocol.js";
import { roomName, isMine, handsInOrder } from "/store.js";

/**
 * @typedef {{state: import("/store.js").State, send: (type: string, fields?: any) => string,
 *   pending: (type: string) => any[], media: import("/media.js").Media, ui: any,
 *   editQuestion: (q: any, mode: string) => void}} Ctx
 */

/** @type {Record<string, number>} */
const rank = { host: 0, moderator: 1, presenter: 2, participant: 3 };

/** @param {Ctx} c */
export function renderPeople(c) {
  const { state } = c;
  const you = /** @type {any} */ (state.you);
  const staff = isStaff(you.role);
  const moderator = canModerate(you.role);
  const webcastViewer = !staff && state.settings.kind === "webcast" && you.breakout == null;
  text($("people-title"), webcastViewer ? "On stage and hosts" : "People");
  text($("count"), `${state.count} participant${state.count === 1 ? "" : "s"}`);
  $("people-search").hidden = !staff;
  const q = staff ? $("people-search").value.trim().toLowerCase() : "";
  const people = [...state.members.values()]
    .filter((m) => !q || m.name.toLowerCase().includes(q))
    .sort((a, b) => (Number(b.hand_raised) - Number(a.hand_raised)) || (rank[a.role] - rank[b.role]) || a.name.localeCompare(b.name))
    .slice(0, 500); // thousands in a room: search narrows it
  keyed($("members"), people, (m) => m.identity, () => h("li", {},
    h("span", { class: "name" }), h("span", { class: "meta" }), h("span", { class: "controls" })),
  (li, m) => {
    const self = m.identity === you.identity;
    attr(li, "data-identity", m.identity);
    attr(li, "data-presence", m.presence);
    attr(li, "data-hand", m.hand_raised);
    attr(li, "class", m.presence);
    text(li.children[0], m.name + (self ? " (you)" : ""));
    const bits = [m.role];
    if (m.hand_raised) bits.push("hand raised");
    if (m.on_stage) bits.push("on stage");
    if (m.breakout != null) bits.push(`${m.facilitator ? "visiting" : "in"} ${roomName(state, m.breakout)}`);
    if (m.presence === "reconnecting") bits.push("reconnecting");
    if (m.chat_muted) bits.push("chat muted");
    if (m.captioner) bits.push("captioner");
    if ((m.media_muted ?? []).includes("audio")) bits.push("mic muted by a moderator");
    if ((m.media_muted ?? []).includes("video")) bits.push("camera stopped by a moderator");
    text(li.children[1], bits.join(" · "));
    /** @type {import("/dom.js").Control[]} */
    const specs = [];
    if (!self && staff && m.hand_raised) specs.push({ key: "hand", label: "Lower hand", name: `Lower hand of ${m.name}`, onclick: () => c.send("lower_hand", { identity: m.identity }) });
    if (!self && moderator) {
      if (!canModerate(m.role)) specs.push({ key: "mute", label: m.chat_muted ? "Unmute chat" : "Mute chat", name: `${m.chat_muted ? "Unmute chat" : "Mute chat"}: ${m.name}`, onclick: () => c.send("mute_chat", { identity: m.identity, muted: !m.chat_muted }) });
      if (!canModerate(m.role)) {
        // A moderator's mute is enforced by the server; allowing again never unmutes anyone.
        for (const [kind, on, off] of [["audio", "Mute mic", "Allow mic"], ["video", "Mute camera", "Allow camera"]]) {
          const muted = (m.media_muted ?? []).includes(kind);
          const label = muted ? off : on;
          specs.push({ key: kind, label, name: `${label}: ${m.name}`, onclick: () => c.send("mute_media", { identity: m.identity, kind, muted: !muted }) });
        }
      }
      specs.push({ key: "captions", label: m.captioner ? "Stop captioning" : "Allow captioning", name: `${m.captioner ? "Stop captioning" : "Allow captioning"}: ${m.name}`, onclick: () => c.send("grant_captions", { identity: m.identity, granted: !m.captioner }) });
      specs.push({ key: "stage", label: m.on_stage ? "Remove from stage" : "Invite to stage", name: m.on_stage ? `Remove from stage: ${m.name}` : `Invite to stage: ${m.name}`, onclick: () => c.send(m.on_stage ? "remove_from_stage" : "invite_to_stage", { identity: m.identity }) });
      if (!canModerate(m.role)) specs.push({ key: "remove", label: "Remove", name: `Remove ${m.name}`, onclick: () => confirm(`Remove ${m.name} from the room?`) && c.send("remove_participant", { identity: m.identity }) });
    }
    controls(li.children[2], specs);
  });
}

/** @param {Ctx} c */
export function renderChat(c) {
  const { state } = c;
  const you = /** @type {any} */ (state.you);
  const moderator = canModerate(you.role);
  const list = $("chat");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  text($("chat-title"), you.breakout == null ? "Chat" : `Chat · ${roomName(state, you.breakout)}`);
  // Sent but not yet acknowledged: shown at the end, marked as sending.
  const pending = c.pending("send_chat").map((cmd) => ({ pending: true, id: cmd.request_id, text: cmd.text, from: you.identity, name: you.name, at: Date.now() }));
  keyed(list, [...state.chat, ...pending], (m) => (m.pending ? `p-${m.id}` : m.id), () => h("li", {},
    h("time", {}), " ", h("b", {}), ": ", h("span", { class: "text" }), h("span", { class: "controls" })),
  (li, m) => {
    const mine = m.from === you.identity;
    attr(li, "data-id", m.pending ? null : m.id);
    attr(li, "data-from", m.from);
    attr(li, "data-pending", m.pending ? "true" : null);
    attr(li, "class", [mine && "mine", m.pending && "pending"].filter(Boolean).join(" ") || null);
    const at = new Date(m.at);
    text(li.children[0], at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    attr(li.children[0], "datetime", at.toISOString());
    text(li.children[1], m.name);
    text(li.children[2], m.text);
    controls(li.children[3], m.pending ? [] : (mine || moderator) ? [{ key: "del", label: "Delete", name: `Delete message from ${m.name}`, onclick: () => c.send("delete_chat", { message_id: m.id }), className: "small" }] : []);
    if (m.pending) li.children[3].replaceChildren(h("span", { class: "sending" }, "sending…"));
  });
  if (atBottom) list.scrollTop = list.scrollHeight;
  const off = !state.settings.chat_enabled && !isStaff(you.role);
  const muted = you.chat_muted;
  $("chat-text").disabled = $("chat-send").disabled = off || muted;
  $("chat-text").placeholder = muted ? "A moderator muted your chat" : off ? "Chat is off" : "Say something";
}

/** @param {Ctx} c @param {any} q @returns {import("/dom.js").Control[]} */
function questionControls(c, q) {
  const { state } = c;
  const role = /** @type {any} */ (state.you).role;
  const staff = isStaff(role);
  const moderator = canModerate(role);
  const specs = [];
  const mine = isMine(state, q);
  if (q.state === "approved" && !mine) {
    const voted = state.myVotes.has(q.id);
    specs.push({ key: "vote", label: voted ? "Unvote" : "Upvote", name: `${voted ? "Unvote" : "Upvote"} question ${q.id}`, pressed: voted, className: "vote", onclick: () => c.send(voted ? "remove_upvote" : "upvote", { question_id: q.id }) });
  }
  if (mine && q.state !== "answered") specs.push({ key: "withdraw", label: "Withdraw", name: `Withdraw question ${q.id}`, onclick: () => c.send("withdraw_question", { question_id: q.id }) });
  if (moderator && q.state === "pending") specs.push({ key: "approve", label: "Approve", name: `Approve question ${q.id}`, onclick: () => c.send("approve_question", { question_id: q.id }) });
  if (moderator && (q.state === "pending" || q.state === "approved")) {
    specs.push({ key: "edit", label: "Edit", name: `Edit question ${q.id}`, onclick: () => c.editQuestion(q, "edit") });
    specs.push({ key: "merge", label: "Merge", name: `Merge question ${q.id} as a duplicate`, onclick: () => c.editQuestion(q, "merge") });
  }
  if (staff && q.state === "approved") {
    specs.push({ key: "live", label: q.live ? "Not live" : "Live", name: `${q.live ? "Not live" : "Mark live"} question ${q.id}`, onclick: () => c.send("set_live_question", { question_id: q.live ? null : q.id }) });
    specs.push({ key: "answered", label: "Answered", name: `Mark question ${q.id} answered`, onclick: () => c.send("answer_question", { question_id: q.id }) });
    if (moderator) specs.push({ key: "answer", label: "Answer", name: `Answer question ${q.id} in writing`, onclick: () => c.editQuestion(q, "answer") });
  }
  if (moderator && (q.state === "pending" || q.state === "approved")) specs.push({ key: "dismiss", label: "Dismiss", name: `Dismiss question ${q.id}`, onclick: () => c.send("dismiss_question", { question_id: q.id }) });
  if (moderator && q.state === "dismissed") specs.push({ key: "restore", label: "Restore", name: `Restore question ${q.id}`, onclick: () => c.send("restore_question", { question_id: q.id }) });
  if (staff && q.state === "answered") specs.push({ key: "reopen", label: "Reopen", name: `Reopen question ${q.id}`, onclick: () => c.send("reopen_question", { question_id: q.id }) });
  return specs;
}

/** @param {Ctx} c @param {Element} list @param {any[]} qs */
function questionList(c, list, qs) {
  keyed(list, qs, (q) => q.id, () => h("li", {},
    h("strong", { class: "badge" }, "LIVE"), h("span", { class: "votes" }), h("span", { class: "text" }), h("span", { class: "meta" }),
    h("p", { class: "answer" }), h("span", { class: "controls" })),
  (li, q) => {
    const mine = isMine(c.state, q);
    attr(li, "data-id", q.id);
    attr(li, "data-state", q.state);
    attr(li, "data-live", q.live);
    attr(li, "class", q.live ? "live" : null);
    li.children[0].hidden = !q.live;
    text(li.children[1], `${q.votes} ${q.votes === 1 ? "vote" : "votes"}`);
    text(li.children[2], q.text);
    text(li.children[3], `${q.anonymous ? "anonymous" : q.author_name ?? ""}${mine ? " (you)" : ""}${q.edited ? " · edited" : ""}`);
    li.children[4].hidden = !q.answer;
    text(li.children[4], q.answer ? `Answer: ${q.answer}` : "");
    controls(li.children[5], questionControls(c, q));
  });
}

/** The Q&A lists a focused control may sit in, and where its question moves when answered. */
const QA_LISTS = ["pending", "questions", "dismissed", "answered", "pv-live", "pv-queue"];

/**
 * Runs `render`; if it removed the focused control from a Q&A list (its question was answered,
 * merged or dismissed and moved to another list), focus stays in that list: on the question now
 * in its place, or on the list itself when it emptied. Never on <body>.
 * @param {() => void} render
 */
function keepFocusInLists(render) {
  const active = document.activeElement;
  const list = QA_LISTS.map($).find((l) => l.contains(active));
  const row = active?.closest("li");
  const index = list && row ? [...list.children].indexOf(row) : 0;
  render();
  if (!list || !active || active.isConnected) return;
  const rows = /** @type {HTMLElement[]} */ ([...list.children]).filter((el) => el.tagName === "LI" && el.offsetParent !== null);
  const next = rows[Math.min(index, rows.length - 1)];
  /** @type {HTMLElement|null} */
  let target = next?.querySelector("button") ?? null;
  // The live question answered in the presenter view: on to the queue.
  if (!target && list.id === "pv-live") target = $("pv-queue").querySelector("button");
  if (!target && list.offsetParent !== null) {
    list.tabIndex = -1;
    target = list;
  }
  target?.focus();
}

/** @param {Ctx} c */
export function renderQuestions(c) {
  keepFocusInLists(() => renderQuestionLists(c));
}

/** @param {Ctx} c */
function renderQuestionLists(c) {
  const { state } = c;
  const moderator = canModerate(/** @type {any} */ (state.you).role);
  const qs = [...state.questions.values()];
  const pending = qs.filter((q) => q.state === "pending").sort(questionOrder);
  $("pending-title").hidden = pending.length === 0;
  questionList(c, $("pending"), pending);
  questionList(c, $("questions"), qs.filter((q) => q.state === "approved").sort(questionOrder));
  const dismissed = qs.filter((q) => q.state === "dismissed").sort(questionOrder);
  $("dismissed-box").hidden = !moderator || dismissed.length === 0;
  questionList(c, $("dismissed"), dismissed);
  questionList(c, $("answered"), qs.filter((q) => q.state === "answered").sort(answeredOrder));
  // Asked but not yet acknowledged: the text stays in the box, marked as sending.
  $("ask-send").textContent = c.pending("ask_question").length ? "Sending…" : "Ask";

  const live = qs.find((q) => q.live);
  $("live-question").hidden = !live;
  text($("live-text"), live?.text ?? "");

  // Presenter view: the live question and the queue in large type.
  // Built once; its parts change in place, so a focused button survives a new live question.
  const pv = $("pv-live");
  if (!pv.children.length) pv.append(h("p", { class: "pv-label" }), h("p", { class: "pv-text" }), h("span", { class: "controls" }));
  text(pv.children[0], live ? "Answering now" : "No question is live. Pick one from the queue.");
  text(pv.children[1], live?.text ?? "");
  pv.children[1].hidden = !live;
  controls(pv.children[2], live ? [
    { key: "answered", label: "Answered", name: `Answered: question ${live.id}`, onclick: () => c.send("answer_question", { question_id: live.id }) },
    { key: "clear", label: "Not live", name: `Not live: question ${live.id}`, onclick: () => c.send("set_live_question", { question_id: null }) },
  ] : []);
  keyed($("pv-queue"), qs.filter((q) => q.state === "approved" && !q.live).sort(questionOrder), (q) => q.id,
    () => h("li", {}, h("span", { class: "pv-text" }), h("span", { class: "meta" }), h("span", { class: "controls" })),
    (li, q) => {
      text(li.children[0], q.text);
      text(li.children[1], `${q.votes} ${q.votes === 1 ? "vote" : "votes"}`);
      controls(li.children[2], [
        { key: "live", label: "Live", name: `Live: question ${q.id}`, onclick: () => c.send("set_live_question", { question_id: q.id }) },
        { key: "answered", label: "Answered", name: `Answered: question ${q.id}`, onclick: () => c.send("answer_question", { question_id: q.id }) },
      ]);
    });
}

/** @param {Ctx} c */
export function renderConsole(c) {
  const { state } = c;
  const you = /** @type {any} */ (state.you);
  keyed($("hands"), handsInOrder(state), (m) => m.identity, () => h("li", {}, h("span", { class: "name" }), h("span", { class: "controls" })),
    (li, m) => {
      attr(li, "data-identity", m.identity);
      text(li.children[0], m.name);
      controls(li.children[1], [
        { key: "stage", label: "Invite to stage", name: `Invite to stage: ${m.name}`, onclick: () => c.send("invite_to_stage", { identity: m.identity }) },
        { key: "lower", label: "Lower hand", name: `Lower hand of ${m.name}`, onclick: () => c.send("lower_hand", { identity: m.identity }) },
      ]);
    });
  if (!$("hands").children.length) $("hands").dataset.empty = "No hands raised."; else delete $("hands").dataset.empty;
  $("settings").hidden = you.role !== "host";
  // Invite roles only below the inviter's own (the server refuses others).
  for (const opt of $("invite-role").options) opt.hidden = opt.disabled = rank[/** @type {"host"} */ (opt.value)] <= rank[/** @type {"host"} */ (you.role)];
  $("set-chat").checked = state.settings.chat_enabled;
  $("set-qa").value = state.settings.qa_mode;
  $("set-kind").value = state.settings.kind;
}

/** @param {Ctx} c */
export function renderBreakouts(c) {
  const { state } = c;
  const you = /** @type {any} */ (state.you);
  const staff = isStaff(you.role);
  const moderator = canModerate(you.role);
  const b = state.breakouts;
  const here = you.breakout;
  const open = b?.phase === "open" || b?.phase === "closing";
  let status = "No breakouts.";
  if (here != null) status = you.facilitator ? `You are visiting ${roomName(state, here)}` : `You are in ${roomName(state, here)}`;
  else if (b && staff) status = `${b.phase === "draft" ? "Planned" : b.phase === "open" ? "Open" : "Closing"}: ${b.rooms.length} room${b.rooms.length === 1 ? "" : "s"}`;
  else if (b?.phase === "draft") status = "Breakouts are being planned.";
  else if (open) status = b.plan.assignment.mode === "self_select" ? "Choose a breakout room." : "You are in the main room.";
  text($("bo-status"), status);
  $("bo-mine").hidden = here == null;
  $("bo-help").hidden = you.facilitator;
  $("bo-leave").hidden = !you.facilitator && b?.plan.allow_leave === false;
  text($("bo-leave"), you.facilitator ? "Return to main room" : "Leave breakout");
  // Left a breakout (the plan allows it): offer the way back while breakouts run.
  const back = b?.phase === "open" && here == null && b.plan.allow_leave ? state.leftBreakout : null;
  $("bo-back").hidden = back == null;
  if (back != null) text($("bo-back"), `Go back to ${roomName(state, back)}`);
  renderTimer(state);
  const selfSelect = open && b.plan.assignment.mode === "self_select" && !staff;
  keyed($("bo-rooms"), b && (staff || selfSelect) ? b.rooms : [], (r) => r.id, () => h("li", {}, h("b", {}), h("span", { class: "meta" }), h("span", { class: "controls" })),
    (li, r) => {
      attr(li, "data-breakout", r.id);
      const names = Object.entries(b.assignments).filter(([, id]) => id === r.id).map(([who]) => state.members.get(who)?.name ?? who);
      text(li.children[0], r.name);
      text(li.children[1], staff ? ` (${names.length}) ${names.join(", ")}` : "");
      controls(li.children[2], [
        ...(staff && open && here !== r.id ? [{ key: "visit", label: "Visit", name: `Visit ${r.name}`, onclick: () => c.send("join_breakout", { breakout: r.id }) }] : []),
        ...(selfSelect && here !== r.id ? [{ key: "join", label: "Join", name: `Join ${r.name}`, onclick: () => c.send("choose_breakout", { breakout: r.id }) }] : []),
      ]);
    });
  if (moderator) {
    $("bo-plan-form").hidden = open;
    $("bo-controls").hidden = !b;
    $("bo-open").hidden = $("bo-cancel").hidden = b?.phase !== "draft";
    $("bo-extend").hidden = b?.phase !== "open" || b.ends_at == null;
    $("bo-close").hidden = b?.phase !== "open";
    $("bo-countdown-box").hidden = b?.phase !== "open";
    $("bo-broadcast-form").hidden = !open;
  }
  const requests = staff ? state.helpRequests : [];
  $("bo-help-title").hidden = requests.length === 0;
  keyed($("bo-help-requests"), requests, (r) => r.identity, () => h("li", {}, h("span", {}), h("span", { class: "controls" })), (li, r) => {
    text(li.children[0], `${r.name} needs help in ${r.breakout_name} `);
    controls(li.children[1], [
      // Taking it on clears it for every staff member and tells the asker who comes.
      { key: "go", label: "Go", name: `Go: visit ${r.breakout_name} to help ${r.name}`, onclick: () => { c.send("handle_help", { identity: r.identity }); c.send("join_breakout", { breakout: r.breakout }); } },
      { key: "done", label: "Done", name: `Done: clear help request from ${r.name}`, onclick: () => c.send("handle_help", { identity: r.identity }) },
    ]);
  });
}

/** @param {import("/store.js").State} state */
export function renderTimer(state) {
  const b = state.breakouts;
  const at = b?.phase === "closing" ? b.closes_at : b?.phase === "open" ? b.ends_at : null;
  $("bo-timer").hidden = at == null;
  if (at != null) text($("bo-timer"), `${b.phase === "closing" ? "Closing in" : "Time left"} ${countdown(at - Date.now())}`);
}

/** The stage: speaker view (the active speaker large) or gallery. @param {Ctx} c */
export function renderStage(c) {
  const { state, media, ui } = c;
  const you = /** @type {any} */ (state.you);
  const remote = [...media.tiles.values()];
  for (const t of remote) text(/** @type {Element} */ (t.el.querySelector("figcaption")), `${state.members.get(t.publisher)?.name ?? "Guest"}${t.screen ? " (screen)" : ""}`);
  if (media.local) text(/** @type {Element} */ (media.local.el.querySelector("figcaption")), `You${media.micMuted || !media.mic ? " (muted)" : ""}`);
  if (media.localScreen) text(/** @type {Element} */ (media.localScreen.el.querySelector("figcaption")), "Your screen");
  // Speaker view puts a screen share first, else the active speaker.
  const tiles = [media.localScreen, ...remote.filter((t) => t.screen), media.local, ...remote.filter((t) => !t.screen)].filter(Boolean);
  const focus = tiles.find((t) => t?.screen) ?? remote.find((t) => t.publisher === media.activeSpeaker) ?? remote[0] ?? tiles[0];
  const ordered = ui.layout === "speaker" && focus ? [focus, ...tiles.filter((t) => t !== focus)] : tiles;
  const grid = $("videos");
  attr(grid, "data-layout", ui.layout);
  const els = ordered.map((t) => /** @type {any} */ (t).el);
  for (const el of els) el.classList.toggle("featured", ui.layout === "speaker" && el === focus?.el);
  for (const t of remote) t.el.classList.toggle("speaking", t.publisher === media.activeSpeaker);
  if (els.length !== grid.children.length || els.some((el, i) => grid.children[i] !== el)) grid.replaceChildren(...els);
  $("stage-empty").hidden = els.length > 0;
  $("sound-off").hidden = !media.soundBlocked;
  const may = canPublish(you, state.settings);
  const pcState = media.pc?.connectionState;
  text($("stage-empty"), may && !media.publishing ? "You can go live: start your camera or mic below." : "Nothing on stage yet.");
  attr($("stage"), "data-media", pcState ?? "none");
  $("quality-box").hidden = ![...state.tracks.values()].some((t) => t.layers?.length > 1 && t.publisher !== you.identity);
}

/** A control bar button: its visible label and pressed state. @param {string} id @param {string} label @param {boolean} [pressed] */
export function barButton(id, label, pressed) {
  const b = $(id);
  text(b.querySelector(".label"), label);
  if (pressed != null) attr(b, "aria-pressed", String(pressed));
}

/**
 * Polls: answer form while open, results where the viewer may see them, and for moderators
 * close and share. Each poll's element (and its inputs) lives as long as the poll.
 * @param {Ctx} c
 */
export function renderPolls(c) {
  const { state } = c;
  const moderator = canModerate(/** @type {any} */ (state.you).role);
  $("poll-form").hidden = !moderator;
  const polls = [...state.polls.values()].sort((a, b) => b.id - a.id);
  keyed($("polls"), polls, (p) => p.id, (p) => {
    const form = h("form", { class: "poll-answer" },
      h("fieldset", {}, h("legend", { class: "poll-question" }, p.question),
        ...p.options.map((/** @type {string} */ o, /** @type {number} */ i) => h("label", { class: "check" },
          h("input", { type: p.multiple ? "checkbox" : "radio", name: `poll-${p.id}`, value: i }), o))),
      h("button", { type: "submit", class: "primary" }, "Submit answer"));
    form.addEventListener("submit", (/** @type {Event} */ e) => {
      e.preventDefault();
      const choices = [...form.querySelectorAll("input:checked")].map((el) => Number(/** @type {HTMLInputElement} */ (el).value));
      if (choices.length) c.send("vote_poll", { poll_id: p.id, choices });
    });
    return h("li", { class: "poll" }, h("p", { class: "poll-status meta" }), form, h("ul", { class: "poll-results" }), h("span", { class: "controls" }));
  }, (li, p) => {
    const mine = state.myPollAnswers.get(p.id);
    attr(li, "data-id", p.id);
    attr(li, "data-state", p.state);
    const [status, form, results, row] = li.children;
    const answered = mine ? ` · you answered ${mine.map((i) => p.options[i]).join(", ")}` : "";
    text(status, `${p.state === "open" ? "Open" : "Closed"}${p.counts ? ` · ${p.voters} answered` : ""}${p.shared ? " · results shared" : !p.live_results && moderator ? " · results hidden from participants" : ""}${answered}`);
    form.hidden = p.state !== "open";
    // Show your answer once acknowledged, unless you are choosing again.
    if (mine && !form.contains(document.activeElement)) {
      for (const input of form.querySelectorAll("input")) input.checked = mine.includes(Number(input.value));
    }
    text(form.querySelector("button"), mine ? "Change answer" : "Submit answer");
    const counts = p.counts ?? [];
    const total = counts.reduce((/** @type {number} */ a, /** @type {number} */ b) => a + b, 0);
    keyed(results, p.counts ? p.options.map((/** @type {string} */ o, /** @type {number} */ i) => ({ o, i, n: counts[i] })) : [], (r) => r.i,
      () => h("li", {}, h("span", { class: "poll-option" }), h("span", { class: "bar", "aria-hidden": "true" }, h("span", {}))),
      (el, r) => {
        const pct = total ? Math.round((r.n / total) * 100) : 0;
        text(el.children[0], `${r.o}: ${r.n} (${pct}%)`);
        el.children[1].firstChild.style.width = `${pct}%`;
      });
    if (!p.counts && p.state === "closed") text(status, `Closed · results not shared yet${answered}`);
    controls(row, moderator ? [
      ...(p.state === "open" ? [{ key: "close", label: "Close poll", name: `Close poll: ${p.question}`, onclick: () => c.send("close_poll", { poll_id: p.id }) }] : []),
      ...(!p.shared ? [{ key: "share", label: "Share results", name: `Share results: ${p.question}`, onclick: () => c.send("share_poll_results", { poll_id: p.id }) }] : []),
    ] : []);
  });
}
