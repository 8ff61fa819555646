// @ts-check
// DOM helpers for views that update in place: `h` builds elements, `keyed` reconciles a list by
// key (an item's element lives as long as the item), `controls` does the same for a row of
// buttons. Nothing is rebuilt under the keyboard: focus survives live updates.

/** @param {string} id @returns {any} */
export const $ = (id) => document.getElementById(id);

/**
 * @param {string} tag @param {Record<string, any>} [props] @param {...any} children
 * @returns {any}
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  el.append(...children.flat().filter((c) => c != null && c !== false));
  return el;
}

/** Sets an attribute, or removes it for null/undefined/false. @param {Element} el @param {string} name @param {any} value */
export function attr(el, name, value) {
  if (value == null || value === false) el.removeAttribute(name);
  else if (el.getAttribute(name) !== String(value === true ? "" : value)) el.setAttribute(name, value === true ? "" : String(value));
}

/** Sets text only when it changed (no needless mutations for screen readers). @param {Element} el @param {string} text */
export function text(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/**
 * Makes `parent`'s children match `items` by key: new items get `create(item)`, every item gets
 * `update(el, item)`, gone items are removed, and elements are moved only when out of order.
 * If a move takes focus away from a control that is still in the page, focus goes back to it.
 * @template T
 * @param {Element} parent @param {T[]} items @param {(item: T) => string|number} keyOf
 * @param {(item: T) => HTMLElement} create @param {(el: any, item: T) => void} update
 */
export function keyed(parent, items, keyOf, create, update) {
  const active = /** @type {HTMLElement|null} */ (document.activeElement);
  /** @type {Map<string, HTMLElement>} */
  const existing = new Map();
  for (const el of /** @type {HTMLElement[]} */ ([...parent.children])) existing.set(el.dataset.key ?? "", el);
  const wanted = items.map((item) => {
    const key = String(keyOf(item));
    let el = existing.get(key);
    existing.delete(key);
    if (!el) {
      el = create(item);
      el.dataset.key = key;
    }
    update(el, item);
    return el;
  });
  for (const el of existing.values()) el.remove();
  let ref = parent.firstElementChild;
  for (const el of wanted) {
    if (el === ref) ref = ref.nextElementSibling;
    else parent.insertBefore(el, ref);
  }
  if (active && active.isConnected && document.activeElement !== active) active.focus({ preventScroll: true });
}

/**
 * @typedef {{key: string, label: string, name?: string, onclick: () => void, pressed?: boolean,
 *   className?: string}} Control
 */

/**
 * A row of buttons reconciled by key: a button keeps its node (and focus) while its label changes.
 * `name` is the accessible name; it always contains the visible label (WCAG 2.5.3).
 * @param {Element} row @param {Control[]} specs
 */
export function controls(row, specs) {
  keyed(row, specs, (c) => c.key, (c) => {
    const b = h("button", { type: "button" });
    b.addEventListener("click", () => b._spec?.onclick());
    return b;
  }, (b, c) => {
    b._spec = c;
    text(b, c.label);
    attr(b, "aria-label", c.name && c.name !== c.label ? c.name : null);
    attr(b, "aria-pressed", c.pressed == null ? null : String(c.pressed));
    attr(b, "class", c.className ?? null);
  });
}
