// @ts-check
// Live captions: the overlay over the stage (on/off, size, position, high contrast; final
// lines announced politely), the person's caption settings, and a captioner's composer
// that streams the line as it is typed (partial, then final on Enter or a pause).
// Protocol: `subscribe_captions`, `send_caption`, the `caption` event (signaling/PROTOCOL.md).

/** Lines shown at once (a partial replaces its line in place). */
const SHOWN = 3;
/** A partial goes out at most this often while typing. */
const PARTIAL_EVERY_MS = 250;
/** A pause this long ends the line (sent as final). */
const PAUSE_MS = 2000;
const KEY = "convene.captions";

/** @typedef {{id: number, source: string, speaker?: string, text: string, final: boolean, start_ms: number, end_ms: number}} Caption */

/** The person's settings, kept in this browser. */
function loadSettings() {
  const fallback = { on: false, size: "medium", position: "bottom", contrast: false };
  try {
    return { ...fallback, ...JSON.parse(localStorage.getItem(KEY) ?? "{}") };
  } catch {
    return fallback;
  }
}

/**
 * The lines to show after `caption` arrived: a partial or final replaces the line with its
 * id, otherwise it is added; the newest `SHOWN` stay. Pure, for tests.
 * @param {Caption[]} lines @param {Caption} caption @returns {Caption[]}
 */
export function withCaption(lines, caption) {
  const at = lines.findIndex((l) => l.id === caption.id);
  const next = at >= 0 ? lines.map((l, i) => (i === at ? caption : l)) : [...lines, caption];
  return next.slice(-SHOWN);
}

export class Captions {
  /** @param {{send: (type: string, fields?: any) => any, byId: (id: string) => HTMLElement}} deps */
  constructor({ send, byId }) {
    this.send = send;
    this.$ = byId;
    this.settings = loadSettings();
    /** @type {Caption[]} */ this.lines = [];
    this.sentText = "";
    this.lastPartialAt = 0;
    /** @type {ReturnType<typeof setTimeout>|undefined} */ this.pause = undefined;
    /** @type {ReturnType<typeof setTimeout>|undefined} */ this.trailing = undefined;
    this.wire();
  }

  /** After `welcome` or `resumed`: the subscription is per socket, so say it again. */
  subscribe() {
    if (this.settings.on) this.send("subscribe_captions", { on: true });
  }

  save() {
    try { localStorage.setItem(KEY, JSON.stringify(this.settings)); } catch { /* private mode */ }
  }

  /** @param {boolean} on */
  toggle(on = !this.settings.on) {
    this.settings.on = on;
    this.save();
    this.send("subscribe_captions", { on });
    if (!on) this.lines = [];
    this.render(null);
  }

  /** @param {Caption} caption */
  apply(caption) {
    if (!this.settings.on) return;
    const before = this.lines.find((l) => l.id === caption.id);
    this.lines = withCaption(this.lines, caption);
    this.paint(caption.final && !before?.final ? caption : null);
  }

  /** @param {Caption|null} announce a final line to add to the polite live region */
  paint(announce) {
    const box = this.$("captions");
    box.hidden = !this.settings.on;
    box.dataset.size = this.settings.size;
    box.dataset.position = this.settings.position;
    box.dataset.contrast = String(!!this.settings.contrast);
    const shown = this.$("caption-lines");
    shown.replaceChildren(...this.lines.map((l) => {
      const p = document.createElement("p");
      p.className = l.final ? "caption final" : "caption partial";
      p.dataset.captionId = String(l.id);
      if (l.speaker) {
        const who = document.createElement("span");
        who.className = "speaker";
        who.textContent = `${l.speaker}: `;
        p.append(who);
      }
      p.append(l.text);
      return p;
    }));
    if (announce) {
      // Only finished lines are announced: partials would make a screen reader stutter.
      const live = this.$("caption-announce");
      const line = document.createElement("p");
      line.textContent = announce.speaker ? `${announce.speaker}: ${announce.text}` : announce.text;
      live.append(line);
      while (live.childElementCount > SHOWN) live.firstElementChild?.remove();
    }
  }

  /** @param {any} you the member this page is, or null to keep the composer as it is */
  render(you) {
    const button = this.$("cc");
    button.setAttribute("aria-pressed", String(this.settings.on));
    const label = button.querySelector(".label");
    if (label) label.textContent = this.settings.on ? "Hide captions" : "Captions";
    /** @type {HTMLSelectElement} */ (this.$("cc-size")).value = this.settings.size;
    /** @type {HTMLSelectElement} */ (this.$("cc-position")).value = this.settings.position;
    /** @type {HTMLInputElement} */ (this.$("cc-contrast")).checked = !!this.settings.contrast;
    if (you) this.$("caption-composer").hidden = !you.captioner;
    this.paint(null);
  }

  /** Sends the composer's line: partial while typing, final when done. @param {boolean} final */
  sendLine(final) {
    const input = /** @type {HTMLTextAreaElement} */ (this.$("caption-text"));
    const text = input.value.trim();
    clearTimeout(this.pause);
    clearTimeout(this.trailing);
    if (!text || (!final && text === this.sentText)) return;
    const speaker = /** @type {HTMLInputElement} */ (this.$("caption-speaker")).value.trim() || null;
    this.send("send_caption", { text, final, speaker });
    this.lastPartialAt = Date.now();
    this.sentText = final ? "" : text;
    if (final) input.value = "";
  }

  typed() {
    clearTimeout(this.pause);
    this.pause = setTimeout(() => this.sendLine(true), PAUSE_MS);
    const wait = this.lastPartialAt + PARTIAL_EVERY_MS - Date.now();
    clearTimeout(this.trailing);
    if (wait <= 0) this.sendLine(false);
    else this.trailing = setTimeout(() => this.sendLine(false), wait);
  }

  wire() {
    this.$("cc").addEventListener("click", () => this.toggle());
    this.$("cc-options").addEventListener("change", () => {
      this.settings.size = /** @type {HTMLSelectElement} */ (this.$("cc-size")).value;
      this.settings.position = /** @type {HTMLSelectElement} */ (this.$("cc-position")).value;
      this.settings.contrast = /** @type {HTMLInputElement} */ (this.$("cc-contrast")).checked;
      this.save();
      this.paint(null);
    });
    const input = this.$("caption-text");
    input.addEventListener("input", () => this.typed());
    input.addEventListener("keydown", (/** @type {any} */ e) => {
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        this.sendLine(true);
      }
    });
    this.$("caption-composer").addEventListener("submit", (/** @type {Event} */ e) => {
      e.preventDefault();
      this.sendLine(true);
    });
  }
}
