// The Convene browser client: joins with ?token=, resumes after drops, renders people, chat and Q&A.
import { command, questionOrder, PROTOCOL_VERSION } from "/protocol.js";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const state = { you: null, members: new Map(), chat: [], questions: new Map(), myVotes: new Set(), seq: 0, sessionId: null, count: 0 };
let socket = null;
let retryMs = 500;

function connect() {
  if (!token) {
    $("status").textContent = "no token: open the join link you were given";
    return;
  }
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", token);
  if (state.sessionId) {
    url.searchParams.set("resume", state.sessionId);
    url.searchParams.set("last_seq", String(state.seq));
  }
  socket = new WebSocket(url);
  socket.onmessage = (e) => handle(JSON.parse(e.data));
  socket.onclose = (e) => {
    if (e.code === 4001 || e.code === 4003) {
      $("status").textContent = "removed from this room";
      return;
    }
    $("status").textContent = "reconnecting…";
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  };
}

function send(type, fields) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(command(type, fields)));
}

function handle(msg) {
  switch (msg.type) {
    case "welcome": {
      if (msg.protocol !== PROTOCOL_VERSION) console.warn("protocol", msg.protocol);
      state.sessionId = msg.session_id;
      state.seq = msg.seq;
      state.you = msg.you;
      const s = msg.snapshot;
      state.members = new Map(s.members.map((m) => [m.identity, m]));
      state.chat = s.chat;
      state.questions = new Map([...s.questions, ...s.answered].map((q) => [q.id, q]));
      state.myVotes = new Set(s.my_votes);
      state.count = s.participant_count;
      $("room").textContent = s.room;
      retryMs = 500;
      $("status").textContent = `connected as ${msg.you.name} (${msg.you.role})`;
      $("app").hidden = false;
      render();
      break;
    }
    case "resumed":
      state.sessionId = msg.session_id;
      retryMs = 500;
      $("status").textContent = `connected as ${state.you?.name ?? ""}`;
      break;
    case "event":
      state.seq = msg.seq;
      applyEvent(msg.event);
      render();
      break;
    case "error":
      $("notice").textContent = msg.message;
      break;
    case "server_shutdown":
      $("status").textContent = "server restarting…";
      retryMs = msg.reconnect_after_ms;
      break;
  }
}

function applyEvent(ev) {
  switch (ev.type) {
    case "member_joined":
    case "member_updated":
      state.members.set(ev.member.identity, ev.member);
      if (state.you && ev.member.identity === state.you.identity) state.you = ev.member;
      break;
    case "member_left":
      state.members.delete(ev.identity);
      break;
    case "participant_count":
      state.count = ev.count;
      break;
    case "chat_message":
      state.chat.push(ev.message);
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
    case "removed":
      $("notice").textContent = `You were removed: ${ev.reason}`;
      break;
    case "moved":
      state.chat = [];
      $("notice").textContent = `You are now in ${ev.name}`;
      break;
  }
}

function render() {
  const members = $("members");
  members.replaceChildren(...[...state.members.values()].map((m) => {
    const li = document.createElement("li");
    li.textContent = `${m.name} · ${m.role}${m.on_stage ? " · on stage" : ""}${m.hand_raised ? " ✋" : ""}${m.presence === "reconnecting" ? " (reconnecting)" : ""}`;
    return li;
  }));
  $("count").textContent = `(${state.count} participants)`;
  $("hand").textContent = state.you?.hand_raised ? "Lower hand" : "Raise hand";
  const chat = $("chat");
  chat.replaceChildren(...state.chat.map((m) => {
    const li = document.createElement("li");
    li.textContent = `${m.name}: ${m.text}`;
    return li;
  }));
  const questions = $("questions");
  const sorted = [...state.questions.values()].sort(questionOrder);
  questions.replaceChildren(...sorted.map((q) => {
    const li = document.createElement("li");
    li.dataset.state = q.state;
    const text = document.createElement("span");
    text.textContent = `${q.live ? "LIVE · " : ""}${q.text} — ${q.author_name ?? "anonymous"} (${q.votes})${q.state !== "approved" ? ` [${q.state}]` : ""}`;
    li.append(text);
    if (q.state === "approved" && q.author !== state.you?.identity) {
      const vote = document.createElement("button");
      const voted = state.myVotes.has(q.id);
      vote.textContent = voted ? "Unvote" : "Upvote";
      vote.onclick = () => {
        send(voted ? "remove_upvote" : "upvote", { question_id: q.id });
        voted ? state.myVotes.delete(q.id) : state.myVotes.add(q.id);
      };
      li.append(" ", vote);
    }
    return li;
  }));
}

$("chat-form").onsubmit = (e) => {
  e.preventDefault();
  const text = $("chat-text").value.trim();
  if (text) send("send_chat", { text });
  $("chat-text").value = "";
};
$("ask-form").onsubmit = (e) => {
  e.preventDefault();
  const text = $("ask-text").value.trim();
  if (text) send("ask_question", { text, anonymous: $("ask-anon").checked });
  $("ask-text").value = "";
};
$("hand").onclick = () => send(state.you?.hand_raised ? "lower_hand" : "raise_hand", {});

connect();
