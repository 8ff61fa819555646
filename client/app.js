// @ts-check
// The Convene browser client: joins with ?token=, composes the role's page from the views, and
// wires the control bar. Stage first, one control bar, a side panel of tabs (on a phone: one tab
// at a time, the stage being one of them). The server checks every command; the client only
// hides what a role cannot use.
import { PROTOCOL_VERSION, canModerate, breakoutPlan, canPublish, tokenClaims } from "/protocol.js";
import { $, h } from "/dom.js";
import { createState, applyWelcome, applyEvent, applyAck } from "/store.js";
import { Connection } from "/connection.js";
import { Media } from "/media.js";
import { Captions } from "/captions.js";
import {
  renderPeople, renderChat, renderQuestions, renderConsole, renderBreakouts, renderTimer, renderStage, renderPolls, barButton,
} from "/views.js";
import { renderLobby } from "/lobby.js";

const token = takeToken();

/**
 * The join token, taken out of the address bar (it would stay in history, bookmarks and
 * screenshots) into this tab's sessionStorage, where a reload finds it again.
 * @returns {string|null}
 */
function takeToken() {
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get("token");
  if (!fromUrl) return sessionStorage.getItem("convene-token");
  sessionStorage.setItem("convene-token", fromUrl);
  params.delete("token");
  const rest = params.toString();
  history.replaceState(history.state, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
  return fromUrl;
}
const state = createState();
const ui = { tab: "chat", layout: "speaker", render: () => scheduleRender(), chosenTab: false };

// --- Feedback: status, banner, notices, polite announcements -----------------------

/** @param {string} kind @param {string} message */
function setStatus(kind, message) {
  $("status").dataset.state = kind;
  $("status").textContent = kind === "connected" ? message : kind === "closed" ? "disconnected" : kind === "offline" ? "offline" : "reconnecting…";
  const banner = $("banner");
  banner.hidden = kind === "connected" || kind === "connecting";
  banner.dataset.state = kind;
  if (!banner.hidden) banner.textContent = message;
}

/** Says `text` to screen readers without moving focus. @param {string} text */
function announce(text) {
  const el = $("announcer");
  el.textContent = "";
  // A new text node in a fresh task is read even when the same words repeat.
  setTimeout(() => { el.textContent = text; }, 50);
}

/** @param {string} text @param {string} [kind] @param {string} [code] */
function notice(text, kind = "info", code) {
  if (kind === "quiet") return;
  const li = h("li", { class: kind, "data-code": code }, h("span", {}, text));
  li.append(h("button", { type: "button", class: "dismiss", "aria-label": "Dismiss notice", onclick: () => li.remove() }, "×"));
  $("notices").prepend(li);
  while ($("notices").children.length > 4) $("notices").lastChild.remove();
  setTimeout(() => li.remove(), kind === "error" ? 20000 : 10000);
}

/** @param {import("/store.js").Note[]} notes */
function tell(notes) {
  for (const n of notes) {
    notice(n.text, n.kind);
    if (n.announce || n.kind === "error") announce(n.text);
  }
}

/** A page instead of the room: invalid, expired or removed links. @param {string} title @param {string} textContent */
function gate(title, textContent) {
  $("gate-title").textContent = title;
  $("gate-text").textContent = textContent;
  $("gate").hidden = false;
  $("name-gate").hidden = true;
  $("app").hidden = $("controlbar").hidden = true;
  $("banner").hidden = true;
  $("status").dataset.state = "closed";
  $("status").textContent = "not connected";
  media?.stopAll();
}

// --- Connection ---------------------------------------------------------------------

const conn = new Connection(token ?? "", {
  onMessage: handle,
  onStatus: setStatus,
  // Removed because the convening ended: say so, not that a moderator removed them.
  onRefused: (title, text) => (state.removedReason?.endsWith("has ended")
    ? gate("This convening has ended", `${state.removedReason}. Thank you for taking part.`)
    : gate(title, text)),
  resumeFrom: () => (state.sessionId ? { sessionId: state.sessionId, lastSeq: state.seq } : null),
  admitted: () => state.you != null,
});
/** @param {string} type @param {any} [fields] */
const send = (type, fields = {}) => { const id = conn.send(type, fields); scheduleRender(); return id; };
const media = new Media({ conn, state, notice, changed: () => scheduleRender() });
const captions = new Captions({ send, byId: $ });

/** Typed text waiting for the ack of the command it was sent with: kept if the command is refused. */
/** @type {Map<string, {input: string, text: string}>} */
const drafts = new Map();

function connected() {
  conn.admittedNow();
  setStatus("connected", `${state.you?.name} · ${state.you?.role}`);
  $("app").hidden = $("controlbar").hidden = false;
}

/** @param {any} msg */
function handle(msg) {
  switch (msg.type) {
    case "welcome": {
      if (msg.protocol !== PROTOCOL_VERSION) notice(`Server speaks protocol ${msg.protocol}; this page expects ${PROTOCOL_VERSION}. Reload.`, "error");
      const hadHand = state.you?.hand_raised && state.you.identity === msg.you.identity;
      tell(applyWelcome(state, msg));
      $("room").textContent = state.room;
      conn.resendUnsent();
      captions.subscribe();
      // A fresh session after a long drop lost the raised hand: raise it again.
      if (hadHand && !msg.you.hand_raised) send("raise_hand");
      connected();
      if (!ui.chosenTab) ui.tab = defaultTab();
      media.restart(canPublish(state.you, state.settings));
      break;
    }
    case "resumed":
      state.sessionId = msg.session_id;
      state.resumes++;
      captions.subscribe();
      connected();
      conn.resendAll();
      break;
    case "ack": {
      const cmd = conn.settle(msg.request_id);
      tell(applyAck(state, cmd, msg));
      drafts.delete(msg.request_id);
      break;
    }
    case "error": {
      // Not refused, only not yet: the same command goes again after the wait (it applies once).
      if (msg.code === "unavailable" && msg.retry_after_ms && msg.request_id && conn.retryLater(msg.request_id, msg.retry_after_ms)) {
        notice("The server is busy; retrying…", "info", "unavailable");
        break;
      }
      if (msg.request_id && msg.request_id === media.awaiting?.id) media.answered(null, msg.message);
      conn.settle(msg.request_id);
      // Refused: put the typed text back where it was typed, unless something new is there.
      const draft = drafts.get(msg.request_id);
      drafts.delete(msg.request_id);
      if (draft && !$(draft.input).value) $(draft.input).value = draft.text;
      const wait = msg.retry_after_ms ? ` (try again in ${Math.ceil(msg.retry_after_ms / 1000)} s)` : "";
      notice(`${msg.message}${wait}`, "error", msg.code);
      announce(`Not done: ${msg.message}`);
      break;
    }
    case "event": {
      if (msg.seq <= state.seq) return;
      state.seq = msg.seq;
      const ev = msg.event;
      // Captions change only the overlay: no page render for each partial.
      if (ev.type === "caption") return captions.apply(ev.caption);
      tell(applyEvent(state, ev));
      if (ev.type === "track_published") {
        media.placeTrack(ev.track.id);
        media.startReceiving();
      }
      if (ev.type === "moved" && ev.tracks?.length) {
        for (const t of ev.tracks) media.placeTrack(t.id);
        media.startReceiving();
      }
      if (ev.type === "track_unpublished") media.dropRemoteTrack(ev.track_id);
      if (ev.type === "admitted") {
        // Out of the lobby (where nothing was received): the room's media as it is now.
        for (const t of ev.snapshot.tracks) media.placeTrack(t.id);
        media.startReceiving();
        if (!ui.chosenTab) ui.tab = defaultTab();
      }
      break;
    }
    case "server_shutdown":
      notice("The server is restarting; reconnecting shortly.");
      conn.retryMs = msg.reconnect_after_ms;
      break;
    case "rtc_answer":
      media.answered(msg.sdp);
      return;
    case "rtc_offer":
      media.serverOffer(msg.sdp);
      return;
    default:
      return; // pong
  }
  scheduleRender();
}

// --- Page composition ----------------------------------------------------------------

const role = () => state.you?.role ?? "participant";
const isPhone = () => matchMedia("(max-width: 700px)").matches;
function defaultTab() {
  if (role() === "presenter") return "presenter";
  if (canModerate(role())) return "qa";
  // A webcast's audience came to watch: on a phone, the stage first.
  if (isPhone() && state.settings?.kind === "webcast" && state.you?.breakout == null) return "stage";
  return "chat";
}

/** Which tabs this person sees: everyone chat, Q&A, people; by role the rest. */
function tabsFor() {
  const b = state.breakouts;
  return {
    stage: true, chat: true, qa: true, people: true,
    polls: canModerate(role()) || state.polls.size > 0,
    presenter: role() === "presenter" || role() === "host",
    console: canModerate(role()),
    breakouts: canModerate(role()) || b != null || state.you?.breakout != null,
  };
}

let renderQueued = false;
function scheduleRender() {
  if (!renderQueued) {
    renderQueued = true;
    setTimeout(() => { renderQueued = false; render(); }, 0);
  }
}

function render() {
  if (!state.you) return;
  const you = state.you;
  renderLobby(state, startConvening);
  const shown = tabsFor();
  const phone = isPhone();
  // The stage tab exists on phones only; elsewhere the stage is always in view.
  if (!shown[/** @type {"chat"} */ (ui.tab)] || (ui.tab === "stage" && !phone)) ui.tab = defaultTab();
  for (const tab of /** @type {HTMLElement[]} */ ([...$("tabs").children])) {
    const name = /** @type {string} */ (tab.dataset.tab);
    tab.hidden = !shown[/** @type {"chat"} */ (name)];
    const selected = name === ui.tab;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    if (name !== "stage") $(`panel-${name}`).hidden = !selected;
  }
  $("app").dataset.tab = ui.tab;
  $("place").textContent = state.lobby && you.role === "participant" ? "Lobby" : state.lobby ? "Backstage"
    : you.breakout == null ? "Main room" : `${you.facilitator ? "Visiting" : "In"} ${roomNameOf(you.breakout)}`;
  const ctx = { state, send, pending: (/** @type {string} */ t) => conn.pendingOf(t), media, ui, editQuestion };
  renderPeople(ctx);
  renderChat(ctx);
  renderQuestions(ctx);
  renderBreakouts(ctx);
  renderPolls(ctx);
  if (canModerate(you.role)) renderConsole(ctx);
  renderBar();
  renderStage(ctx);
  captions.render(you);
  renderStageInvite();
}

/** Focus taken into the stage invitation when it opens (so it is announced), given back after. */
/** @type {HTMLElement|null} */
let focusBeforeInvite = null;
function renderStageInvite() {
  const dialog = $("stage-invite");
  if (dialog.hidden === !state.stageInvite) return;
  dialog.hidden = !state.stageInvite;
  if (state.stageInvite) {
    focusBeforeInvite = /** @type {HTMLElement|null} */ (document.activeElement);
    $("stage-accept").focus();
  } else if (!document.activeElement || document.activeElement === document.body || dialog.contains(document.activeElement)) {
    (focusBeforeInvite?.isConnected && focusBeforeInvite.offsetParent !== null ? focusBeforeInvite : $("hand")).focus();
  }
}

/** @param {number} id */
const roomNameOf = (id) => state.breakouts?.rooms.find((/** @type {any} */ r) => r.id === id)?.name ?? state.placeName ?? `breakout ${id}`;

function renderBar() {
  const you = /** @type {any} */ (state.you);
  const may = canPublish(you, state.settings);
  if (media.publishing && !may) media.stopAll(); // taken off stage
  for (const id of ["mic", "cam", "share"]) $(id).hidden = !may;
  // A moderator's mute: the server stops forwarding that kind; only a moderator lifts it.
  const held = /** @type {string[]} */ (you.media_muted ?? []);
  const micHeld = held.includes("audio");
  const camHeld = held.includes("video");
  // Muted here too, so that when a moderator allows the mic again nothing is heard until
  // the person unmutes it themselves.
  if (micHeld && media.mic && !media.micMuted) media.toggleMic();
  barButton("mic", micHeld ? "Mic muted by a moderator" : !media.mic ? "Start mic" : media.micMuted ? "Unmute" : "Mute", !!media.mic && !media.micMuted && !micHeld);
  barButton("cam", camHeld ? "Camera stopped by a moderator" : media.cam ? "Stop camera" : "Start camera", !!media.cam && !camHeld);
  /** @type {HTMLButtonElement} */ ($("mic")).disabled = micHeld;
  /** @type {HTMLButtonElement} */ ($("cam")).disabled = camHeld && !media.cam;
  barButton("share", media.screen ? "Stop sharing" : "Share screen", !!media.screen);
  // Staff step onto the stage of a webcast themselves (presenters are always on it).
  const webcast = state.settings.kind === "webcast" && you.breakout == null;
  $("go-stage").hidden = !webcast || !(canModerate(you.role) || you.on_stage && you.role === "participant");
  barButton("go-stage", you.on_stage ? "Leave stage" : "Go on stage");
  barButton("hand", you.hand_raised ? "Lower hand" : "Raise hand", you.hand_raised);
  barButton("layout", ui.layout === "speaker" ? "Gallery view" : "Speaker view");
  barButton("fullscreen", document.fullscreenElement ? "Exit full screen" : "Full screen");
}

// --- Question dialog: edit, merge, answer in writing ----------------------------------

const qaDialog = h("dialog", { id: "qa-dialog", "aria-labelledby": "qa-dialog-title" },
  h("form", { method: "dialog", class: "stack" },
    h("h2", { id: "qa-dialog-title" }),
    h("p", { id: "qa-dialog-question", class: "meta" }),
    h("label", { id: "qa-dialog-text-box" }, h("span", { id: "qa-dialog-label" }, "Text"), h("textarea", { id: "qa-dialog-text", rows: "3", maxlength: "500" })),
    h("label", { id: "qa-dialog-dup-box" }, "Duplicate of", h("select", { id: "qa-dialog-dup" })),
    h("div", { class: "row" },
      h("button", { type: "submit", value: "ok", class: "primary", id: "qa-dialog-ok" }, "Save"),
      h("button", { type: "submit", value: "cancel" }, "Cancel"))));
document.body.append(qaDialog);

/** @param {any} q @param {string} mode */
function editQuestion(q, mode) {
  $("qa-dialog-title").textContent = { edit: "Edit question", merge: "Merge as duplicate", answer: "Answer in writing" }[mode];
  $("qa-dialog-question").textContent = q.text;
  $("qa-dialog-text-box").hidden = mode === "merge";
  $("qa-dialog-dup-box").hidden = mode !== "merge";
  $("qa-dialog-label").textContent = mode === "answer" ? "Answer" : "Question";
  $("qa-dialog-text").value = mode === "edit" ? q.text : "";
  $("qa-dialog-ok").textContent = mode === "answer" ? "Send answer" : mode === "merge" ? "Merge" : "Save";
  const others = [...state.questions.values()].filter((o) => o.id !== q.id && (o.state === "approved" || o.state === "pending"));
  $("qa-dialog-dup").replaceChildren(...others.map((o) => h("option", { value: o.id }, o.text)));
  qaDialog.returnValue = "";
  qaDialog.onclose = () => {
    if (qaDialog.returnValue !== "ok") return;
    const value = $("qa-dialog-text").value.trim();
    if (mode === "edit" && value) send("edit_question", { question_id: q.id, text: value });
    if (mode === "answer") send("answer_question", { question_id: q.id, answer: value || null });
    if (mode === "merge" && $("qa-dialog-dup").value) send("mark_duplicate", { question_id: q.id, duplicate_of: Number($("qa-dialog-dup").value) });
  };
  qaDialog.showModal();
}

/**
 * Asks before something that cannot be taken back in one click; resolves true on the OK button.
 * @param {string} title @param {string} text @param {string} ok @returns {Promise<boolean>}
 */
function confirmAction(title, text, ok) {
  const dialog = /** @type {HTMLDialogElement} */ ($("confirm-dialog"));
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = ok;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.onclose = () => resolve(dialog.returnValue === "ok");
    dialog.showModal();
  });
}

// --- Controls -----------------------------------------------------------------------

/** @param {string} id @param {() => void} fn */
function onSubmit(id, fn) {
  $(id).addEventListener("submit", (/** @type {Event} */ e) => { e.preventDefault(); fn(); });
}

/** Sends typed text; the box empties now and gets the text back if the server refuses it. @param {string} input @param {(text: string) => string|null} sendIt */
function submitText(input, sendIt) {
  const text = $(input).value.trim();
  if (!text) return;
  const id = sendIt(text);
  if (id) drafts.set(id, { input, text });
  $(input).value = "";
}

onSubmit("chat-form", () => submitText("chat-text", (text) => send("send_chat", { text })));
onSubmit("ask-form", () => submitText("ask-text", (text) => send("ask_question", { text, anonymous: $("ask-anon").checked })));
$("hand").onclick = () => send(state.you?.hand_raised ? "lower_hand" : "raise_hand");
$("set-chat").onchange = (/** @type {any} */ e) => send("update_settings", { chat_enabled: e.target.checked });
$("set-qa").onchange = (/** @type {any} */ e) => send("update_settings", { qa_mode: e.target.value });
$("set-kind").onchange = (/** @type {any} */ e) => send("update_settings", { kind: e.target.value });
$("mic").onclick = () => media.toggleMic();
$("mute-all").onclick = async () => {
  if (await confirmAction("Mute all mics?", "Everyone's microphone goes off, and each person can turn theirs on again only when a moderator allows it.", "Mute all")) {
    send("mute_media", { kind: "audio", muted: true });
  }
};
$("cam").onclick = () => media.toggleCamera();
$("share").onclick = () => media.toggleScreen();
$("go-stage").onclick = () => {
  const you = /** @type {any} */ (state.you);
  send(you.on_stage ? "remove_from_stage" : "invite_to_stage", { identity: you.identity });
};
$("stage-accept").onclick = async () => {
  state.stageInvite = false;
  render();
  await media.toggleMic();
  await media.startCamera();
};
$("stage-decline").onclick = () => {
  state.stageInvite = false;
  send("remove_from_stage", { identity: state.you?.identity });
};
$("stage-invite").addEventListener("keydown", (/** @type {KeyboardEvent} */ e) => { if (e.key === "Escape") $("stage-decline").click(); });
$("layout").onclick = () => { ui.layout = ui.layout === "speaker" ? "gallery" : "speaker"; render(); };
// Full screen: the stage and the control bar fill the screen (the side panel steps aside).
$("fullscreen").onclick = () => (document.fullscreenElement ? document.exitFullscreen() : document.documentElement.requestFullscreen()).catch((/** @type {Error} */ e) => notice(`Full screen: ${e.message}`, "error"));
document.addEventListener("fullscreenchange", () => render());
$("leave").onclick = () => {
  media.stopAll();
  conn.leave();
  gate("You left the convening", "Open your link again to rejoin.");
};
$("quality").onchange = (/** @type {any} */ e) => send("set_video_quality", { quality: e.target.value });
$("people-search").oninput = () => render();

// Device pickers: filled when opened (labels need a granted permission).
$("devices-open").onclick = async () => {
  const open = $("devices").hidden;
  $("devices").hidden = !open;
  $("devices-open").setAttribute("aria-expanded", String(open));
  if (!open) return;
  const list = await navigator.mediaDevices?.enumerateDevices?.() ?? [];
  /** @param {string} id @param {string} kind @param {string} current @param {string} fallback */
  const fill = (id, kind, current, fallback) => {
    const devices = list.filter((d) => d.kind === kind);
    $(id).replaceChildren(h("option", { value: "" }, "Default"), ...devices.map((d, i) => h("option", { value: d.deviceId, selected: d.deviceId === current }, d.label || `${fallback} ${i + 1}`)));
  };
  fill("dev-camera", "videoinput", media.devices.camera, "Camera");
  fill("dev-mic", "audioinput", media.devices.mic, "Microphone");
  fill("dev-speaker", "audiooutput", media.devices.speaker, "Speaker");
};
$("dev-camera").onchange = (/** @type {any} */ e) => media.useDevice("camera", e.target.value);
$("dev-mic").onchange = (/** @type {any} */ e) => media.useDevice("mic", e.target.value);
$("dev-speaker").onchange = (/** @type {any} */ e) => media.useDevice("speaker", e.target.value);

// The control bar is one row: on a phone, the less used controls live in a "More" menu (a
// disclosure: Escape or a choice closes it, and focus goes back to its button).
const BAR = ["mic", "cam", "share", "go-stage", "hand", "layout", "fullscreen", "cc", "devices-open", "more", "leave"];
const OVERFLOW = new Set(["share", "go-stage", "cc", "layout", "fullscreen", "devices-open"]);
/** @param {boolean} open */
function setMoreMenu(open) {
  const menu = $("more-menu");
  if (menu.hidden === !open) return;
  menu.hidden = !open;
  $("more").setAttribute("aria-expanded", String(open));
  if (open) /** @type {HTMLElement|undefined} */ ([...menu.children].find((b) => !b.hidden))?.focus();
  else if (!document.activeElement || document.activeElement === document.body || menu.contains(document.activeElement)) $("more").focus();
}
function placeControls() {
  const phone = isPhone();
  const home = (/** @type {string} */ id) => (phone && OVERFLOW.has(id) ? $("more-menu") : $("controlbar"));
  // The connection panel (diagnostics.js puts it in the bar once media starts) goes last in the menu.
  const diag = document.getElementById("diagnostics");
  if (diag && diag.parentElement !== (phone ? $("more-menu") : $("controlbar"))) (phone ? $("more-menu") : $("controlbar")).append(diag);
  if (BAR.every((id) => $(id).parentElement === home(id))) return;
  setMoreMenu(false);
  // In bar order: each goes to the end of where it belongs (the bar's panels stay last).
  for (const id of BAR) home(id).insertBefore($(id), home(id) === $("controlbar") ? $("devices") : null);
  $("more").hidden = !phone;
}
$("more").onclick = () => setMoreMenu($("more-menu").hidden);
// A choice closes the menu (after its own handler ran).
$("more-menu").addEventListener("click", (/** @type {any} */ e) => { if (e.target.closest("button")) setMoreMenu(false); });
for (const id of ["more", "more-menu"]) {
  $(id).addEventListener("keydown", (/** @type {KeyboardEvent} */ e) => {
    if (e.key === "Escape" && !$("more-menu").hidden) {
      e.preventDefault();
      setMoreMenu(false);
      $("more").focus();
    }
  });
}
document.addEventListener("click", (/** @type {any} */ e) => {
  if (!$("more-menu").hidden && !$("more-menu").contains(e.target) && !$("more").contains(e.target)) setMoreMenu(false);
});
placeControls();
matchMedia("(max-width: 700px)").addEventListener("change", () => placeControls());
new MutationObserver(() => placeControls()).observe($("controlbar"), { childList: true });

// Notices sit just above the control bar, however tall it is (on a phone they are in the flow).
new ResizeObserver(() => document.documentElement.style.setProperty("--bar-h", `${$("controlbar").offsetHeight}px`)).observe($("controlbar"));

// Tabs: click, or arrow keys between them (one tab stop for the whole list).
$("tabs").addEventListener("click", (/** @type {any} */ e) => {
  const tab = e.target.closest("[role=tab]");
  if (!tab) return;
  ui.tab = tab.dataset.tab;
  ui.chosenTab = true;
  render();
});
$("tabs").addEventListener("keydown", (/** @type {KeyboardEvent} */ e) => {
  const tabs = /** @type {HTMLElement[]} */ ([...$("tabs").children]).filter((t) => t.offsetParent !== null);
  const i = tabs.indexOf(/** @type {HTMLElement} */ (document.activeElement));
  if (i < 0) return;
  const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
  if (next == null) return;
  e.preventDefault();
  const tab = tabs[(next + tabs.length) % tabs.length];
  ui.tab = /** @type {string} */ (tab.dataset.tab);
  ui.chosenTab = true;
  render();
  tab.focus();
});

onSubmit("invite-form", async () => {
  const teamValue = $("invite-team").value.trim();
  const body = { role: $("invite-role").value, name: $("invite-name").value.trim(), ttl_s: Number($("invite-ttl").value), attrs: teamValue ? { team: teamValue } : {} };
  try {
    const res = await fetch(`/api/v1/rooms/${encodeURIComponent(state.room)}/invites`, {
      method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify(body),
    });
    const out = await res.json();
    if (!res.ok) throw new Error(out.message ?? res.statusText);
    const url = `${location.origin}/?token=${out.token}`;
    const li = h("li", { "data-role": body.role },
      h("span", { class: "name" }, `${body.name || "They choose a name"} (${body.role}${teamValue ? `, ${teamValue}` : ""})`),
      h("input", { readonly: true, value: url, "aria-label": `Invite link for ${body.name || `a ${body.role} who chooses a name`}` }),
      copyButton(url, () => li.querySelector("input")));
    $("invites").prepend(li);
    $("invite-name").value = "";
    announce(`Invite link for ${body.name || `a ${body.role}`} created.`);
  } catch (e) {
    notice(`Invite: ${/** @type {Error} */ (e).message}`, "error");
  }
});

/** A "Copy link" button; when the clipboard is refused, the link's box is selected instead. @param {string} url @param {() => HTMLInputElement} box */
function copyButton(url, box) {
  return h("button", { type: "button", onclick: async () => {
    try { await navigator.clipboard.writeText(url); announce("Link copied."); notice("Link copied."); } catch { box().select(); notice("Select the link and copy it.", "error"); }
  } }, "Copy link");
}

/** A host or moderator starts the scheduled convening: the lobby's attendees come in. */
async function startConvening() {
  const id = state.lobby?.convening_id;
  if (!id) return;
  try {
    const res = await fetch(`/api/v1/convenings/${encodeURIComponent(id)}/start`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
    if (!res.ok) throw new Error((await res.json().catch(() => ({}))).message ?? res.statusText);
  } catch (e) {
    notice(`Start: ${/** @type {Error} */ (e).message}`, "error");
  }
}

/** The room's admin API with this page's token. @param {string} method @param {string} path @param {any} [body] */
async function api(method, path, body) {
  const res = await fetch(`/api/v1/rooms/${encodeURIComponent(state.room)}/${path}`, {
    method, headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: body && JSON.stringify(body),
  });
  const out = res.status === 204 ? {} : await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(out.message ?? res.statusText);
  return out;
}

// Audience links: one link for everyone, revocable from here.
let audienceCount = 0;
$("audience-create").onclick = async () => {
  try {
    const out = await api("POST", "audience-link", {});
    const url = `${location.origin}/?token=${out.token}`;
    const n = ++audienceCount;
    const until = new Date(out.expires_at * 1000).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
    const li = h("li", { "data-link": out.id },
      h("span", { class: "name", tabindex: "-1" }, `Audience link ${n}: up to ${out.max_people} people, until ${until}`),
      h("input", { readonly: true, value: url, "aria-label": `Audience link ${n}` }),
      h("span", { class: "controls" }));
    const revoke = h("button", { type: "button", onclick: async () => {
      if (!(await confirmAction(`Revoke audience link ${n}?`, "No one new can join with it. People already in the room stay.", "Revoke"))) return;
      try {
        await api("DELETE", `audience-link/${encodeURIComponent(out.id)}`);
        li.dataset.revoked = "true";
        li.querySelector("input").disabled = true;
        li.querySelector(".controls").replaceChildren();
        li.querySelector(".name").textContent = `Audience link ${n}: revoked`;
        li.querySelector(".name").focus();
        announce(`Audience link ${n} revoked.`);
      } catch (e) {
        notice(`Revoke: ${/** @type {Error} */ (e).message}`, "error");
      }
    } }, "Revoke");
    li.querySelector(".controls").append(copyButton(url, () => li.querySelector("input")), revoke);
    $("audience-links").prepend(li);
    announce(`Audience link ${n} created.`);
  } catch (e) {
    notice(`Audience link: ${/** @type {Error} */ (e).message}`, "error");
  }
};

onSubmit("poll-form", () => {
  const question = $("poll-question").value.trim();
  const options = $("poll-options").value.split("\n").map((/** @type {string} */ o) => o.trim()).filter(Boolean);
  if (!question || options.length < 2) {
    notice("A poll needs a question and at least two options.", "error");
    return;
  }
  const id = send("launch_poll", { question, options, multiple: $("poll-multiple").checked, live_results: $("poll-live").checked });
  drafts.set(id, { input: "poll-question", text: question });
  $("poll-question").value = "";
  $("poll-options").value = "";
});
/** Downloads an export (it needs the host's token, so not a plain link). @param {string} what */
async function download(what) {
  try {
    const res = await fetch(`/api/v1/rooms/${encodeURIComponent(state.room)}/${what}?format=csv`, { headers: { authorization: `Bearer ${token}` } });
    if (!res.ok) throw new Error((await res.json().catch(() => ({}))).message ?? res.statusText);
    const a = h("a", { href: URL.createObjectURL(await res.blob()), download: `${state.room}-${what}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
  } catch (e) {
    notice(`Download: ${/** @type {Error} */ (e).message}`, "error");
  }
}
$("export-questions").onclick = () => download("questions");
$("export-polls").onclick = () => download("polls");

onSubmit("bo-plan-form", () => {
  const byAttribute = $("bo-by-attr").checked;
  const names = $("bo-names").value.split(",").map((/** @type {string} */ s) => s.trim()).filter(Boolean);
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
// The countdown people get to wrap up (0 closes at once).
$("bo-close").onclick = () => send("close_breakouts", { countdown_s: Math.max(0, Math.min(600, Math.round(Number($("bo-countdown").value) || 0))) });
$("bo-help").onclick = () => send("ask_for_help");
$("bo-leave").onclick = () => send("leave_breakout");
$("bo-back").onclick = () => send("choose_breakout", { breakout: state.leftBreakout });
onSubmit("bo-broadcast-form", () => submitText("bo-broadcast-text", (text) => send("broadcast_to_breakouts", { text })));
setInterval(() => { renderTimer(state); if (state.lobby) renderLobby(state, startConvening); }, 1000);
matchMedia("(max-width: 700px)").addEventListener("change", () => render());

// For the console and for tests: the live state (read-only use) and the command sender.
Object.assign(window, { convene: { state, media, send, conn, get socket() { return conn.socket; } } });

/** Asks for a display name; `use(name)` resolves to a reason when the name is refused. @param {(name: string) => Promise<string|null>} use */
function askName(use) {
  $("name-gate").hidden = false;
  $("status").textContent = "not joined yet";
  $("name-input").focus();
  onSubmit("name-form", async () => {
    const name = $("name-input").value.trim();
    if (!name) return;
    $("name-join").disabled = true;
    const refused = await use(name);
    $("name-join").disabled = false;
    $("name-error").hidden = !refused;
    $("name-error").textContent = refused ?? "";
    if (refused) $("name-input").focus();
    else $("name-gate").hidden = true;
  });
}

/**
 * An audience link: each person exchanges it, with their name, for a token of their own (kept
 * for this tab's reloads, so a reload is the same person).
 * @param {{link: string, room: string}} link
 */
function joinAudience(link) {
  const key = `convene-audience:${link.link}`;
  const saved = sessionStorage.getItem(key);
  if (saved) {
    conn.token = saved;
    conn.connect();
    return;
  }
  askName(async (name) => {
    try {
      const res = await fetch(`/api/v1/rooms/${encodeURIComponent(link.room)}/audience-link/join`, {
        method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify({ name }),
      });
      const out = await res.json().catch(() => ({}));
      if (res.status === 400) return out.message ?? "Choose another name.";
      if (!res.ok) {
        gate({ 410: "This link was revoked", 403: "This link is full" }[res.status] ?? "This link does not work",
          `${out.message ?? res.statusText}`);
        return null;
      }
      sessionStorage.setItem(key, out.token);
      conn.token = out.token;
      conn.connect();
      return null;
    } catch {
      return "Could not reach the server. Check your connection and try again.";
    }
  });
}

/** Joins; a token minted without a name asks for one first (kept for this tab's reloads). */
function start() {
  if (!token) {
    gate("No join link", "Open the join link you were given (`convene token` prints one).");
    return;
  }
  const claims = tokenClaims(token);
  if (claims?.link) {
    joinAudience(claims);
    return;
  }
  if (!claims || claims.name?.trim()) {
    conn.connect();
    return;
  }
  const key = `convene-name:${claims.sub}`;
  const saved = sessionStorage.getItem(key);
  if (saved) {
    conn.name = saved;
    conn.connect();
    return;
  }
  askName(async (name) => {
    sessionStorage.setItem(key, name);
    conn.name = name;
    conn.connect();
    return null;
  });
}
start();
