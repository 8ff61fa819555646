// @ts-check
// Convene wire protocol helpers; mirrors signaling/src/lib.rs (prose: signaling/PROTOCOL.md).
// Pure functions only: no DOM, no socket, so they can be read (and tested) on their own.
export const PROTOCOL_VERSION = 1;
export const MAX_CHAT_CHARS = 2000;
export const MAX_QUESTION_CHARS = 500;

// WebSocket close codes the server uses (src/session/outbox.rs) and what the client does.
export const CLOSE = {
  NORMAL: 1000,
  RESTARTING: 1012,
  SLOW: 1013,
  IDLE: 4000,
  REMOVED: 4001,
  REPLACED: 4002,
  REFUSED: 4003,
  // The same person joined from another tab, window or device; this one yields.
  SESSION_REPLACED: 4004,
  REVOKED: 4005,
};

/** Close codes after which reconnecting makes no sense. @param {number} code */
export function isFinalClose(code) {
  return code === CLOSE.REMOVED || code === CLOSE.REPLACED || code === CLOSE.REFUSED
    || code === CLOSE.SESSION_REPLACED || code === CLOSE.REVOKED;
}

/**
 * The `/ws` URL for a page at `base`: a fresh join, or a resume after `lastSeq`. `name` is the
 * display name chosen by the person when their token was minted without one.
 * @param {string} base @param {string} token
 * @param {{sessionId: string, lastSeq: number}|null} resume @param {string|null} [name]
 */
export function socketUrl(base, token, resume, name = null) {
  const url = new URL("/ws", base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", token);
  if (name) url.searchParams.set("name", name);
  if (resume) {
    url.searchParams.set("resume", resume.sessionId);
    url.searchParams.set("last_seq", String(resume.lastSeq));
  }
  return url.toString();
}

let nextRequest = 1;
/** A client message: `{type, request_id, ...fields}`; the server's `ack`/`error` echoes the id. */
/** @param {string} type @param {Record<string, any>} [fields] @returns {{type: string, request_id: string, [k: string]: any}} */
export function command(type, fields = {}) {
  return { type, request_id: `c${Date.now().toString(36)}-${nextRequest++}`, ...fields };
}

export const isStaff = (/** @type {string} */ role) => role !== "participant";
export const canModerate = (/** @type {string} */ role) => role === "host" || role === "moderator";

/** Display order every client agrees on: live, approved by votes desc then asked time asc, pending, the rest. */
/** @param {any} a @param {any} b */
export function questionOrder(a, b) {
  const rank = (/** @type {any} */ q) => (q.live ? 0 : q.state === "approved" ? 1 : q.state === "pending" ? 2 : 3);
  return rank(a) - rank(b) || b.votes - a.votes || a.asked_at - b.asked_at || a.id - b.id;
}

/** Answered questions: most recent first. */
/** @param {any} a @param {any} b */
export function answeredOrder(a, b) {
  return (b.answered_at ?? 0) - (a.answered_at ?? 0) || b.id - a.id;
}

/**
 * A breakout plan (`set_breakout_plan`).
 * by attribute: `{ attribute: "team" }`; named rooms: `{ names: ["A", "B"], selfSelect }`.
 */
/** @param {{attribute?: string|null, names?: string[], selfSelect?: boolean, minutes: number, allowLeave?: boolean}} plan */
export function breakoutPlan({ attribute, names, selfSelect = false, minutes, allowLeave = true }) {
  const duration_s = minutes > 0 ? Math.round(minutes * 60) : null;
  if (attribute) {
    return {
      rooms: { from_attribute: attribute },
      assignment: { mode: "by_attribute", key: attribute },
      duration_s,
      allow_leave: allowLeave,
    };
  }
  return {
    rooms: names,
    assignment: selfSelect ? { mode: "self_select", cap: null } : { mode: "auto" },
    duration_s,
    allow_leave: allowLeave,
  };
}

/** "4:05" for a number of milliseconds (never negative). @param {number} ms */
export function countdown(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

/** May this member publish media now? Meetings and breakouts: everyone; webcasts: the stage. */
/** @param {any} you @param {any} settings */
export function canPublish(you, settings) {
  return you.breakout != null || settings.kind === "meeting" || you.on_stage;
}

/** Camera simulcast: three layers the SFU picks from per viewer (`set_video_quality`). */
export const SIMULCAST_LAYERS = [
  { rid: "h" },
  { rid: "m", scaleResolutionDownBy: 2 },
  { rid: "l", scaleResolutionDownBy: 4 },
];

/**
 * The publisher of a remote track, from the room's track list. Track and stream ids are opaque
 * (`t<n>`, `p<n>`): until `track_published` names the publisher, the stream id stands in, and
 * the track is placed again when it arrives (`Media.placeTrack`).
 * @param {Map<string, any>} tracks @param {string} trackId @param {string} [streamId] @returns {string}
 */
export function publisherOf(tracks, trackId, streamId) {
  return tracks.get(trackId)?.publisher ?? streamId ?? "";
}

/** The claims of a JWT, read without checking it (the server checks); `null` if unreadable. */
/** @param {string} token @returns {any} */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replaceAll("-", "+").replaceAll("_", "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}
