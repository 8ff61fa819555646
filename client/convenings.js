// @ts-check
// The staff page for convenings scheduled ahead: list, schedule, invite links per role, start,
// end, and the link to each one's report. It speaks the admin API with the API key, which the
// person types in and which stays in this tab's sessionStorage.
import { $, h } from "/dom.js";

const KEY = "convene-api-key";
/** Where the Report page (report.js) looks for its bearer in this tab: signing in here opens it too. */
const REPORT_KEY = "convene.report.token";

/** @param {string} text */
function announce(text) {
  const el = $("announcer");
  el.textContent = "";
  setTimeout(() => { el.textContent = text; }, 50);
}

/** The admin API: JSON in and out; refusals throw with the server's sentence. @param {string} method @param {string} path @param {any} [body] */
async function api(method, path, body) {
  const headers = { authorization: `Bearer ${sessionStorage.getItem(KEY) ?? ""}` };
  if (body) Object.assign(headers, { "content-type": "application/json" });
  const res = await fetch(`/api/v1${path}`, { method, headers, body: body && JSON.stringify(body) });
  const out = res.status === 204 ? {} : await res.json().catch(() => ({}));
  if (res.status === 401 || res.status === 403) signOut();
  if (!res.ok) throw new Error(out.message ?? res.statusText);
  return out;
}

/** "Mon 14 Dec 2026, 18:00" in this browser's zone. @param {string} rfc3339 */
const when = (rfc3339) => new Date(rfc3339).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
/** A comma list of identities. @param {string} text */
const identities = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

function signOut() {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(REPORT_KEY);
  show();
}

function show() {
  const signedIn = !!sessionStorage.getItem(KEY);
  $("signin").hidden = signedIn;
  $("list-section").hidden = $("schedule-section").hidden = !signedIn;
  if (signedIn) refresh();
}

async function refresh() {
  try {
    const { convenings } = await api("GET", "/convenings");
    $("empty").hidden = convenings.length > 0;
    $("convenings").replaceChildren(...convenings.map(item));
  } catch (e) {
    announce(`Could not list convenings: ${/** @type {Error} */ (e).message}`);
  }
}

/** One convening with its actions. @param {any} c */
function item(c) {
  const titleId = `c-${c.id}`;
  const status = h("p", { class: "status", role: "status" });
  const links = h("ul", { class: "links", "aria-label": `Invite links for ${c.title}` });
  /** @param {string} what @param {() => Promise<any>} action */
  const act = async (what, action) => {
    try {
      await action();
      announce(`${c.title}: ${what}.`);
      await refresh();
    } catch (e) {
      status.textContent = `${what}: ${/** @type {Error} */ (e).message}`;
    }
  };
  const role = h("select", { "aria-label": `Role of the invite for ${c.title}` },
    ...["participant", "presenter", "moderator", "host"].map((r) => h("option", { value: r }, r)));
  const name = h("input", { "aria-label": `Name on the invite for ${c.title} (optional)`, placeholder: "Name (optional)", maxlength: "200", autocomplete: "off" });
  const mint = h("button", { type: "button", onclick: async () => {
    try {
      const out = await api("POST", `/convenings/${c.id}/invites`, { role: role.value, name: name.value.trim() });
      const url = `${location.origin}/?token=${out.token}`;
      const box = h("input", { readonly: true, value: url, "aria-label": `${role.value} invite link for ${c.title}` });
      links.prepend(h("li", { "data-role": role.value }, h("span", {}, `${role.value}${name.value.trim() ? ` (${name.value.trim()})` : ""}`), box,
        h("button", { type: "button", onclick: async () => {
          try { await navigator.clipboard.writeText(url); announce("Link copied."); } catch { box.select(); }
        } }, "Copy")));
      announce(`A ${role.value} invite link for ${c.title} is ready.`);
    } catch (e) {
      status.textContent = `Invite: ${/** @type {Error} */ (e).message}`;
    }
  } }, "Mint invite link");
  const actions = h("div", { class: "controls" });
  if (c.state === "scheduled") {
    actions.append(
      h("button", { type: "button", class: "primary", onclick: () => act("started", () => api("POST", `/convenings/${c.id}/start`)) }, "Start"),
      h("button", { type: "button", onclick: () => act("cancelled", () => api("DELETE", `/convenings/${c.id}`)) }, "Cancel"),
    );
  }
  if (c.state !== "ended") actions.append(h("button", { type: "button", class: "danger", onclick: () => act("ended", () => api("POST", `/convenings/${c.id}/end`)) }, "End"));
  actions.append(h("a", { href: c.report_url }, "Report"));
  return h("li", { class: "convening", "data-id": c.id, "data-state": c.state, "aria-labelledby": titleId },
    h("h3", { id: titleId }, c.title),
    h("p", {}, h("span", { class: `state ${c.state}` }, c.state), ` · ${c.kind} · room ${c.room} · ${when(c.starts_at)} – ${when(c.ends_at)}`),
    actions,
    c.state === "ended" ? null : h("div", { class: "invite" }, role, name, mint),
    links, status);
}

$("signin-form").addEventListener("submit", (/** @type {Event} */ e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("api-key").value.trim());
  sessionStorage.setItem(REPORT_KEY, $("api-key").value.trim());
  $("api-key").value = "";
  show();
  $("list-title").focus?.();
});
$("signout").onclick = signOut;

/** `Team: a, b` lines to `{Team: [a, b]}`. @param {string} text */
function teams(text) {
  /** @type {Record<string, string[]>} */
  const out = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf(":");
    if (at < 1) throw new Error(`“${line}” is not “Team: identity, identity”`);
    out[line.slice(0, at).trim()] = identities(line.slice(at + 1));
  }
  return out;
}

$("schedule-form").addEventListener("submit", async (/** @type {Event} */ e) => {
  e.preventDefault();
  const error = $("schedule-error");
  error.hidden = true;
  try {
    const start = $("f-start").value;
    const end = $("f-end").value;
    if (!$("f-title").value.trim() || !$("f-room").value.trim() || !start || !end) throw new Error("Title, room, start and end are needed.");
    const c = await api("POST", "/convenings", {
      title: $("f-title").value.trim(),
      room: $("f-room").value.trim(),
      kind: $("f-kind").value,
      starts_at: new Date(start).toISOString(),
      ends_at: new Date(end).toISOString(),
      presenters: identities($("f-presenters").value),
      moderators: identities($("f-moderators").value),
      breakouts: { teams: teams($("f-teams").value) },
      settings: { qa_moderated: $("f-moderated").checked, chat_enabled: $("f-chat").checked, auto_start: $("f-auto").checked },
      retention_days: Number($("f-retention").value) || 90,
    });
    /** @type {HTMLFormElement} */ ($("schedule-form")).reset();
    announce(`${c.title} is scheduled.`);
    await refresh();
  } catch (err) {
    error.textContent = /** @type {Error} */ (err).message;
    error.hidden = false;
  }
});

show();
