// @ts-check
// A scheduled convening before its start: the lobby attendees wait in (its title and start time)
// and the backstage bar staff rehearse under, with the host's and moderators' Start button.
import { $, text } from "/dom.js";
import { canModerate } from "/protocol.js";

/** "Monday 14 December 2026 at 18:00" in the person's own zone. @param {number} ms */
export function startTime(ms) {
  return new Date(ms).toLocaleString([], { dateStyle: "full", timeStyle: "short" });
}

/** "in 3 days", "in 5 minutes", "any moment now". @param {number} ms @param {number} now */
export function untilStart(ms, now = Date.now()) {
  const left = ms - now;
  if (left <= 60_000) return "any moment now";
  const minutes = Math.round(left / 60_000);
  if (minutes < 90) return `in ${minutes} minutes`;
  const hours = Math.round(left / 3_600_000);
  if (hours < 36) return `in ${hours} hours`;
  return `in ${Math.round(left / 86_400_000)} days`;
}

let waitingShown = false;

/**
 * Shows the lobby instead of the room to an attendee while the convening has not started, and
 * the backstage bar to staff. `start()` is the Start button's action.
 * @param {any} state @param {() => void} start
 */
export function renderLobby(state, start) {
  const lobby = state.lobby;
  const you = state.you;
  const waiting = lobby != null && you?.role === "participant";
  $("lobby").hidden = !waiting;
  if (waiting) {
    $("app").hidden = $("controlbar").hidden = true;
    text($("lobby-title"), lobby.title);
    text($("lobby-when"), `Starts ${startTime(lobby.starts_at)} (${untilStart(lobby.starts_at)}).`);
    text($("lobby-wait"), lobby.auto_start
      ? "You are in the lobby. The room opens at the start time and you will be let in automatically."
      : "You are in the lobby. You will be let in automatically when the host starts the convening.");
  } else if (waitingShown) {
    // Admitted: the room appears in the lobby's place.
    $("app").hidden = $("controlbar").hidden = false;
  }
  waitingShown = waiting;
  const backstage = lobby != null && !waiting && you != null;
  $("backstage").hidden = !backstage;
  if (backstage) {
    text($("backstage-text"), `“${lobby.title}” starts ${startTime(lobby.starts_at)}. Attendees wait in the lobby: they see and hear none of this.`);
    const button = $("convening-start");
    button.hidden = !canModerate(you.role);
    button.onclick = start;
  }
}
