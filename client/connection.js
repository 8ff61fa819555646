// @ts-check
// The connection to the server: one WebSocket, reconnect with backoff and resume, and the
// commands not yet acknowledged (kept, resent after a resume, and shown as pending by views).
import { CLOSE, isFinalClose, socketUrl, command } from "/protocol.js";

/**
 * @typedef {{msg: any, sent: boolean}} Pending
 * @typedef {{
 *   onMessage: (msg: any) => void,
 *   onStatus: (state: "connecting"|"connected"|"reconnecting"|"offline"|"closed", text: string) => void,
 *   onRefused: (title: string, text: string) => void,
 *   resumeFrom: () => ({sessionId: string, lastSeq: number}|null),
 *   admitted: () => boolean,
 * }} Hooks
 */

export class Connection {
  /** @param {string} token @param {Hooks} hooks */
  constructor(token, hooks) {
    this.token = token;
    this.hooks = hooks;
    /** @type {WebSocket|null} */
    this.socket = null;
    this.retryMs = 500;
    /** @type {any} */
    this.retryTimer = null;
    this.failures = 0;
    this.closed = false;
    /** The display name chosen at join, for tokens without one. @type {string|null} */
    this.name = null;
    /** Commands not yet acknowledged, by request_id; the server applies each id once. @type {Map<string, Pending>} */
    this.unacked = new Map();
    window.addEventListener("offline", () => {
      if (!this.closed) hooks.onStatus("offline", "You are offline. Reconnecting when the network is back…");
    });
    // Back online: try now rather than at the end of the backoff.
    window.addEventListener("online", () => { if (!this.socket && !this.closed) this.connect(); });
  }

  get open() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const ws = new WebSocket(socketUrl(location.href, this.token, this.hooks.resumeFrom(), this.name));
    this.socket = ws;
    ws.onmessage = (e) => {
      let msg;
      try { msg = JSON.parse(e.data); } catch { return; }
      this.hooks.onMessage(msg);
    };
    ws.onclose = (e) => {
      if (this.socket !== ws) return;
      this.socket = null;
      if (isFinalClose(e.code)) {
        this.closed = true;
        const why = {
          [CLOSE.REMOVED]: ["You were removed from this room", "A host or moderator removed you. This link no longer admits you."],
          [CLOSE.REPLACED]: ["Opened in another tab", "This session continued in another tab or window. Close this one."],
          [CLOSE.REFUSED]: ["The server refused this session", "Try the link again later, or ask the host for a new one."],
          // Not retried: reconnecting would take the seat back and the two windows would fight.
          [CLOSE.SESSION_REPLACED]: ["You joined from another window", "You are in this convening in another tab, window or device. Reload this page to continue here instead."],
          [CLOSE.REVOKED]: ["This link was revoked", "The organisers revoked the link you joined with. Ask them for a new one."],
        }[e.code];
        this.hooks.onRefused(why[0], why[1]);
        return;
      }
      this.failures++;
      if (!this.hooks.admitted()) this.checkLink();
      this.hooks.onStatus(navigator.onLine ? "reconnecting" : "offline",
        navigator.onLine ? "Connection lost. Reconnecting…" : "You are offline. Reconnecting when the network is back…");
      this.later(this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 10000);
    };
  }

  /**
   * Never admitted: ask the endpoint over plain HTTP why. It answers 401 (invalid or expired
   * token) or 403 (removed) before any upgrade; 426 means the token is fine (keep retrying).
   */
  async checkLink() {
    try {
      const res = await fetch(socketUrl(location.href, this.token, null, this.name).replace(/^ws/, "http"));
      if (res.status !== 401 && res.status !== 403) return;
      const body = await res.json().catch(() => ({}));
      this.closed = true;
      clearTimeout(this.retryTimer);
      this.socket?.close();
      this.hooks.onRefused(res.status === 403 ? "You were removed from this room" : "This link does not work",
        res.status === 403 ? "A host or moderator removed you, so this link no longer admits you."
          : `The link is invalid or has expired (${body.message ?? "token refused"}). Ask the host for a new one.`);
    } catch {
      // Network trouble: the reconnect loop goes on.
    }
  }

  /** @param {number} ms */
  later(ms) {
    if (!this.retryTimer && !this.closed) this.retryTimer = setTimeout(() => this.connect(), ms + Math.random() * 250);
  }

  /** The server said hello: reset backoff. */
  admittedNow() {
    this.retryMs = 500;
    this.failures = 0;
  }

  /** Sends a command now or when connected; returns its request_id. @param {string} type @param {any} [fields] */
  send(type, fields = {}) {
    const entry = { msg: command(type, fields), sent: false };
    this.unacked.set(entry.msg.request_id, entry);
    if (this.unacked.size > 200) this.unacked.delete(/** @type {string} */ (this.unacked.keys().next().value));
    this.transmit(entry);
    return entry.msg.request_id;
  }

  /** A raw message outside the acked-command bookkeeping (media signaling). @param {any} msg */
  sendRaw(msg) {
    if (!this.open) return false;
    /** @type {WebSocket} */ (this.socket).send(JSON.stringify(msg));
    return true;
  }

  /** @param {Pending} entry */
  transmit(entry) {
    if (this.open) {
      /** @type {WebSocket} */ (this.socket).send(JSON.stringify(entry.msg));
      entry.sent = true;
    }
  }

  /** After `resumed`: the server remembers ids, so resend everything unacked. */
  resendAll() {
    for (const entry of this.unacked.values()) this.transmit(entry);
  }

  /** After a fresh `welcome`: the new session does not know earlier ids; resend only what never left. */
  resendUnsent() {
    for (const [id, entry] of this.unacked) entry.sent ? this.unacked.delete(id) : this.transmit(entry);
  }

  /**
   * The server could not take the command yet (`unavailable`, e.g. a cluster's store is
   * away): resend it, same request_id, after `ms`. False once it has tried long enough.
   * @param {string} id @param {number} ms
   */
  retryLater(id, ms) {
    const entry = /** @type {(Pending & {retries?: number})|undefined} */ (this.unacked.get(id));
    if (!entry) return false;
    entry.retries = (entry.retries ?? 0) + 1;
    if (entry.retries > 5) return false;
    setTimeout(() => { if (this.unacked.get(id) === entry) this.transmit(entry); }, ms);
    return true;
  }

  /** The reply to `request_id` came: forget the command and return it. @param {string} id */
  settle(id) {
    const entry = this.unacked.get(id);
    this.unacked.delete(id);
    return entry?.msg;
  }

  /** Commands of a type still waiting for their ack. @param {string} type */
  pendingOf(type) {
    return [...this.unacked.values()].filter((e) => e.msg.type === type).map((e) => e.msg);
  }

  /** Leaving on purpose: close code 1000, the server frees the seat at once. */
  leave() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.socket?.close(1000, "left");
  }
}
