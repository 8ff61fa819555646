// @ts-check
// The Report page for staff: a convening's attendance, Q&A, polls and chat, read from
// GET /api/v1/convenings/{id}/report with the API key or a host token (from #token= once, then
// this tab's sessionStorage), and its CSVs downloaded through the same authorisation.

import { $ } from "/dom.js";

const id = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] ?? "");
const KEY = "convene.report.token";

/** Takes a token from the address (#token=...) into this tab's storage, off the address bar. */
function token() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const given = hash.get("token");
  if (given) {
    sessionStorage.setItem(KEY, given);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem(KEY);
}

/** @param {number | null | undefined} ms */
const when = (ms) => (ms == null ? "" : new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC");

/** @param {string} tag @param {unknown} [text] @param {string} [className] */
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

/** @param {unknown[]} cells @param {number[]} [numeric] columns right-aligned */
function row(cells, numeric = []) {
  const tr = document.createElement("tr");
  cells.forEach((c, i) => tr.append(el("td", c, numeric.includes(i) ? "num" : undefined)));
  return tr;
}

/** A refusal, with the HTTP status it came with. */
class ApiError extends Error {
  /** @param {string} message @param {number} status */
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

/** @param {string} path */
async function api(path) {
  const res = await fetch(`/api/v1/convenings/${encodeURIComponent(id)}${path}`, {
    headers: { Authorization: `Bearer ${token()}` },
  });
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    throw new ApiError(body.message ?? `the server answered ${res.status}`, res.status);
  }
  return res;
}

/**
 * The report's JSON (src/record/report.rs).
 * @typedef {{ title: string, kind: string, room: string, state: string, started_at?: number | null,
 *   ended_at?: number | null, retention_days: number }} ConveningInfo
 * @typedef {{ name: string, identity: string, team: string, minutes_present: number,
 *   minutes_in_breakouts: number, first_join?: number | null, last_leave?: number | null }} Attendee
 * @typedef {{ team: string, people: number, minutes_present: number, minutes_in_breakouts: number }} TeamRow
 * @typedef {{ text: string, state: string, votes: number, author_name?: string | null, answer?: string | null }} QuestionRow
 * @typedef {{ question: string, options: string[], counts?: number[] | null, voters?: number | null, state: string }} PollRow
 * @typedef {{ name: string, text: string, at: number, breakout?: string | null }} ChatLine
 * @typedef {{ convening: ConveningInfo, gaps: [number, number][], attendance: Attendee[], teams: TeamRow[],
 *   questions: QuestionRow[], polls: PollRow[], chat: ChatLine[] }} Report
 */

/** @param {Report} report */
function render(report) {
  const c = report.convening;
  document.title = `Report: ${c.title} · Convene`;
  $("title").textContent = `Report: ${c.title}`;
  $("summary").textContent = `${c.kind} in room ${c.room}; ${c.state}` +
    (c.started_at ? `, from ${when(c.started_at)}` : "") + (c.ended_at ? ` to ${when(c.ended_at)}` : "") +
    `. The record is kept ${c.retention_days} days after the end.`;
  $("gaps").textContent = report.gaps.length
    ? `The server was down ${report.gaps.length} time(s) (${report.gaps.map(([a, b]) => `${Math.round((b - a) / 1000)} s at ${when(a)}`).join("; ")}): not counted as present, not as leaving.`
    : "";
  const people = $("attendance").tBodies[0];
  people.replaceChildren(...report.attendance.map((p) => row(
    [p.name, p.identity, p.team, p.minutes_present, p.minutes_in_breakouts, when(p.first_join), p.last_leave == null ? "still present" : when(p.last_leave)],
    [3, 4],
  )));
  const teams = $("teams").tBodies[0];
  teams.replaceChildren(...report.teams.map((t) => row([t.team || "(no team)", t.people, t.minutes_present, t.minutes_in_breakouts], [1, 2, 3])));
  $("questions").replaceChildren(...report.questions.map((q) => {
    const li = el("li");
    li.append(el("span", q.text), el("span", ` · ${q.state}, ${q.votes} vote(s), ${q.author_name ?? "anonymous"}`, "meta"));
    if (q.answer) li.append(el("p", `Answer: ${q.answer}`));
    return li;
  }));
  if (!report.questions.length) $("questions").replaceChildren(el("li", "No questions.", "empty"));
  $("polls").replaceChildren(...report.polls.map((p) => {
    const box = el("div", null, "poll");
    box.append(el("h3", p.question));
    const list = el("ul");
    p.options.forEach((o, i) => list.append(el("li", `${o}: ${p.counts?.[i] ?? "?"}`)));
    box.append(list, el("p", `${p.voters ?? 0} voter(s), ${p.state}`, "meta"));
    return box;
  }));
  if (!report.polls.length) $("polls").replaceChildren(el("p", "No polls."));
  $("chat").replaceChildren(...report.chat.map((m) => {
    const li = el("li");
    li.append(el("span", `${m.name}: `), el("span", m.text), el("span", ` · ${when(m.at)}${m.breakout ? `, ${m.breakout}` : ""}`, "meta"));
    return li;
  }));
  if (!report.chat.length) $("chat").replaceChildren(el("li", "No messages.", "empty"));
  $("content").hidden = false;
  $("access").hidden = true;
  $("state").textContent = "Report loaded";
}

/** Fetches a CSV with the token and saves it under the server's file name. */
/** @param {string} file */
async function download(file) {
  const res = await api(`/report/${file}`);
  const disposition = res.headers.get("content-disposition") ?? "";
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? file;
  const url = URL.createObjectURL(await res.blob());
  const a = /** @type {HTMLAnchorElement} */ (el("a"));
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

async function load() {
  if (!token()) {
    $("access").hidden = false;
    $("state").textContent = "Staff access needed";
    return;
  }
  try {
    render(await (await api("/report")).json());
  } catch (error) {
    const status = error instanceof ApiError ? error.status : 0;
    if (status === 401 || status === 403) sessionStorage.removeItem(KEY);
    $("access").hidden = false;
    $("access-error").hidden = false;
    $("access-error").textContent = `Cannot open the report: ${error instanceof Error ? error.message : error}`;
    $("state").textContent = "Not loaded";
  }
}

$("access").addEventListener("submit", (/** @type {Event} */ e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("access-token").value.trim());
  load();
});
document.querySelector(".downloads")?.addEventListener("click", (e) => {
  const target = /** @type {Element | null} */ (e.target);
  const file = target?.closest("button")?.dataset.file;
  if (file) download(file).catch((error) => { $("state").textContent = `Download failed: ${error.message}`; });
});
load();
