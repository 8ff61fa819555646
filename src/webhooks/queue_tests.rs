//! The queue's rules with time as an argument: coalescing, the per-identity cap, fair turns, and drops that stay in their room.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

fn limits() -> QueueLimits {
    QueueLimits {
        total: 100,
        room_events: 10,
        room_bytes: 1 << 20,
        in_flight_per_room: 2,
        presence_window: Duration::from_secs(2),
        presence_per_minute: 0,
    }
}

fn presence(room: &str, identity: &str, joined: bool) -> Ready {
    let kind = if joined { JOINED } else { LEFT };
    Ready::new(&WebhookEvent::new(
        kind,
        room,
        0,
        json!({ "identity": identity }),
    ))
}

fn other(room: &str, kind: &'static str) -> Ready {
    Ready::new(&WebhookEvent::new(kind, room, 0, json!({})))
}

/// Everything `next` hands out now, marked done at once; as (room, type, identity).
fn drain(s: &mut Scheduler) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    while let Some(r) = s.next() {
        s.done(&r.room);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        out.push((
            r.room.clone(),
            v["type"].as_str().unwrap().to_string(),
            v["data"]["identity"].as_str().unwrap_or("").to_string(),
        ));
    }
    out
}

#[test]
fn join_leave_churn_sends_the_first_state_then_the_latest_once_per_window() {
    let mut s = Scheduler::new(limits());
    let t0 = Instant::now();
    let mut counted = Counted::default();
    for i in 0..2000u32 {
        let at = t0 + Duration::from_millis(u64::from(i) * 3);
        counted.coalesced += s.push(presence("a", "ana", true), at).coalesced;
        counted.coalesced += s.push(presence("a", "ana", false), at).coalesced;
        counted.coalesced += s.tick(at).coalesced;
    }
    let mut sent = drain(&mut s);
    // Let every window run out.
    let end = t0 + Duration::from_secs(30);
    counted.coalesced += s.tick(end).coalesced;
    sent.extend(drain(&mut s));
    assert!(
        sent.len() <= 6,
        "{} events for 2,000 cycles: {sent:?}",
        sent.len()
    );
    assert_eq!(sent.first().unwrap().1, JOINED);
    assert_eq!(sent.last().unwrap().1, LEFT, "the final state is sent");
    // States alternate: nothing is said twice in a row.
    assert!(sent.windows(2).all(|w| w[0].1 != w[1].1), "{sent:?}");
    assert_eq!(sent.len() + counted.coalesced, 4000);
    // Quiet identities and rooms are forgotten.
    s.tick(end + Duration::from_secs(120));
    assert!(s.rooms.is_empty() && s.timers.is_empty(), "{s:?}");
}

#[test]
fn presence_per_identity_is_capped_per_minute_and_the_last_state_follows() {
    let mut s = Scheduler::new(QueueLimits {
        presence_window: Duration::ZERO,
        presence_per_minute: 3,
        room_events: 100,
        ..limits()
    });
    let t0 = Instant::now();
    for i in 0..10u64 {
        let at = t0 + Duration::from_millis(i * 100);
        s.push(presence("a", "ana", i % 2 == 0), at);
        s.push(presence("a", &format!("p{i}"), true), at);
        s.tick(at);
    }
    let sent = drain(&mut s);
    let ana: Vec<_> = sent.iter().filter(|e| e.2 == "ana").collect();
    assert_eq!(ana.len(), 3, "capped at 3 a minute: {sent:?}");
    assert_eq!(sent.len(), 13, "other identities are not held back");
    // A minute after the first, ana's latest state (left, after ten toggles) goes out.
    s.tick(t0 + Duration::from_secs(61));
    let later = drain(&mut s);
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!((later[0].1.as_str(), later[0].2.as_str()), (LEFT, "ana"));
}

#[test]
fn rooms_take_turns_and_a_busy_room_does_not_hold_the_others() {
    let mut s = Scheduler::new(limits());
    let now = Instant::now();
    for _ in 0..8 {
        s.push(other("a", "question.asked"), now);
    }
    s.push(other("b", "room.started"), now);
    let first = s.next().unwrap();
    let second = s.next().unwrap();
    assert_eq!((first.room.as_str(), second.room.as_str()), ("a", "b"));
    // Room a may have two in flight; a third waits until one is done.
    assert_eq!(s.next().unwrap().room, "a");
    assert!(s.next().is_none(), "a at its in-flight cap");
    s.push(other("c", "room.started"), now);
    assert_eq!(s.next().unwrap().room, "c", "c is not held back by a");
    s.done("a");
    assert_eq!(s.next().unwrap().room, "a");
}

#[test]
fn a_full_room_drops_its_own_oldest_presence_first_never_another_rooms() {
    let mut s = Scheduler::new(QueueLimits {
        total: 15,
        room_events: 10,
        ..limits()
    });
    let now = Instant::now();
    s.push(other("b", "room.started"), now);
    s.push(other("b", "question.asked"), now);
    s.push(other("a", "room.started"), now);
    let mut dropped = 0;
    for i in 0..40 {
        dropped += s.push(presence("a", &format!("p{i}"), true), now).dropped;
    }
    dropped += s.push(other("a", "question.asked"), now).dropped;
    // 42 events for a room of 10: the 32 oldest presence events go.
    assert_eq!(dropped, 32);
    assert_eq!(s.waiting(), 12);
    let sent = drain(&mut s);
    let of = |room: &str, kind: &str| sent.iter().filter(|e| e.0 == room && e.1 == kind).count();
    assert_eq!(
        of("b", "room.started") + of("b", "question.asked"),
        2,
        "{sent:?}"
    );
    assert_eq!(of("a", "room.started"), 1, "kept: not a presence event");
    assert_eq!(of("a", "question.asked"), 1);
    // The newest presence events are the ones kept.
    assert!(sent.iter().any(|e| e.2 == "p39") && !sent.iter().any(|e| e.2 == "p0"));
}

#[test]
fn all_rooms_together_over_the_bound_take_from_the_longest() {
    let mut s = Scheduler::new(QueueLimits {
        total: 6,
        room_events: 10,
        ..limits()
    });
    let now = Instant::now();
    s.push(other("b", "room.started"), now);
    for _ in 0..10 {
        s.push(other("a", "question.asked"), now);
    }
    assert_eq!(s.waiting(), 6);
    let sent = drain(&mut s);
    assert!(sent.iter().any(|e| e.0 == "b"), "{sent:?}");
}

#[test]
fn bytes_bound_a_room_too() {
    let one = other("a", "question.asked").body.len();
    let mut s = Scheduler::new(QueueLimits {
        room_bytes: one * 3,
        ..limits()
    });
    let now = Instant::now();
    for _ in 0..5 {
        s.push(other("a", "question.asked"), now);
    }
    assert_eq!(s.waiting(), 3);
}

#[test]
fn the_end_of_a_room_sends_held_presence_first() {
    let mut s = Scheduler::new(limits());
    let now = Instant::now();
    s.push(presence("a", "ana", true), now);
    s.push(presence("a", "ana", false), now);
    s.push(other("a", "room.ended"), now);
    let kinds: Vec<String> = drain(&mut s).into_iter().map(|e| e.1).collect();
    assert_eq!(kinds, [JOINED, LEFT, "room.ended"]);
}
