// Convene wire protocol helpers; mirrors signaling/src/lib.rs (see signaling/PROTOCOL.md).
export const PROTOCOL_VERSION = 1;

let nextRequest = 1;
export function command(type, fields = {}) {
  return { type, request_id: `c${nextRequest++}`, ...fields };
}

// Display order every client agrees on: live, approved by votes then age, pending, dismissed.
export function questionOrder(a, b) {
  const rank = (q) => (q.live ? 0 : q.state === "approved" ? 1 : q.state === "pending" ? 2 : 3);
  return rank(a) - rank(b) || b.votes - a.votes || a.asked_at - b.asked_at || a.id - b.id;
}
