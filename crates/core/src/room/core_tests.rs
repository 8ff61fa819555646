//! `RoomCore` tests: which inputs get answered, and what the room remembers of its answers (and so keeps in its snapshot).

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use convene_signaling::{CloseReason, Command, Role};
use uuid::Uuid;

use super::actor::{ActorConfig, NoHooks, Reply, RoomCommand, RoomCore, RoomInput};
use super::attendance::AttendanceBook;
use super::{Joiner, RoomLimits};
use crate::wire::{ConnectionId, RoomOutput, SessionSink};

/// Every reply the core sends, by connection.
#[derive(Default)]
struct Replies(Mutex<Vec<(ConnectionId, String)>>);

impl SessionSink for Replies {
    fn deliver(&self, _room: &str, output: RoomOutput) {
        if let RoomOutput::Reply { to, frame } = output {
            self.0.lock().unwrap().push((to, frame.to_string()));
        }
    }
    fn room_ended(&self, _room: &str) {}
    fn connections_in(&self, _room: &str) -> usize {
        0
    }
    fn close_room(&self, _room: &str, _reason: CloseReason) {}
}

impl Replies {
    fn take(&self) -> Vec<(ConnectionId, String)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn config(session_bytes: usize, room_bytes: usize) -> ActorConfig {
    ActorConfig {
        limits: RoomLimits::default(),
        event_log_len: 1000,
        idempotency_window: 256,
        idempotency_bytes: session_bytes,
        idempotency_room_bytes: room_bytes,
        empty_room_ttl: Duration::from_secs(60),
        attendance: AttendanceBook::new(60_000),
        hooks: Arc::new(NoHooks),
    }
}

fn core(config: ActorConfig) -> (RoomCore, Arc<Replies>) {
    let replies = Arc::new(Replies::default());
    let core = RoomCore::new(
        "launch",
        config,
        replies.clone(),
        Arc::new(AtomicUsize::new(0)),
        1_000,
    );
    (core, replies)
}

/// Joins (or resumes `resume`) on `connection`; the session id.
fn join(
    core: &mut RoomCore,
    identity: &str,
    role: Role,
    connection: ConnectionId,
    resume: Option<(Uuid, u64)>,
) -> Uuid {
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let joiner = Joiner {
        identity: identity.into(),
        name: identity.to_uppercase(),
        role,
        attrs: Default::default(),
        on_stage: false,
        credentials_until: None,
    };
    core.handle(
        RoomCommand {
            input: RoomInput::Join {
                joiner,
                connection,
                resume,
                new_session: Uuid::new_v4(),
                terms: Default::default(),
            },
            reply: Some(Reply::Join(tx)),
        },
        2_000,
    );
    rx.try_recv().unwrap().expect("joined").session_id
}

fn send(core: &mut RoomCore, session: Uuid, connection: ConnectionId, id: &str, cmd: Command) {
    core.handle(
        RoomInput::Client {
            session_id: session,
            connection,
            request_id: Some(id.into()),
            command: cmd,
        }
        .into(),
        3_000,
    );
}

fn chat(text: &str) -> Command {
    Command::SendChat { text: text.into() }
}

/// A command read from a socket its session has left (it resumed on another socket and
/// resent there) is not answered again: each request gets exactly one answer.
#[test]
fn a_command_from_a_replaced_socket_is_not_answered() {
    let (mut core, replies) = core(config(16 * 1024, 1 << 20));
    let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
    let session = join(&mut core, "ann", Role::Participant, old, None);
    assert_eq!(
        join(&mut core, "ann", Role::Participant, new, Some((session, 0))),
        session
    );
    replies.take();
    send(&mut core, session, new, "r1", chat("hello"));
    let answered = replies.take();
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0].0, new);
    // The old socket's buffered copy of the same request, and a new one, arrive late.
    send(&mut core, session, old, "r1", chat("hello"));
    send(&mut core, session, old, "r2", chat("late"));
    assert_eq!(replies.take(), Vec::new());
    let snapshot = serde_json::to_string(&core.snapshot()).unwrap();
    assert!(
        !snapshot.contains("late"),
        "nothing from the old socket applied"
    );
}

/// Refusals are not remembered (a resend is judged again); acks are, within the session's
/// bytes and the room's.
#[test]
fn only_acks_are_remembered_within_the_sessions_and_the_rooms_bytes() {
    let (mut core, replies) = core(config(2_000, 6_000));
    join(&mut core, "host", Role::Host, Uuid::new_v4(), None);
    let (conn, person) = {
        let c = Uuid::new_v4();
        (c, join(&mut core, "ann", Role::Participant, c, None))
    };
    replies.take();
    // Refused (no such message yet), then it is sent, then resent: judged again, and acked.
    let delete = || Command::DeleteChat { message_id: 1 };
    send(&mut core, person, conn, "d1", delete());
    assert!(replies.take()[0].1.contains(r#""type":"error""#));
    send(&mut core, person, conn, "c1", chat("oops"));
    let sent = replies.take();
    assert!(sent[0].1.contains(r#""id":1"#), "{sent:?}");
    send(&mut core, person, conn, "d1", delete());
    let acked = replies.take();
    assert!(acked[0].1.contains(r#""type":"ack""#), "{acked:?}");
    // A resend of an acked request: the same ack, nothing applied again.
    send(&mut core, person, conn, "d1", delete());
    assert_eq!(replies.take(), acked);

    // Many sessions each acked many times: each keeps at most its bytes, the room its own.
    let mut people = Vec::new();
    for i in 0..30 {
        let c = Uuid::new_v4();
        people.push((
            c,
            join(&mut core, &format!("p{i}"), Role::Participant, c, None),
        ));
    }
    for round in 0..60 {
        for (c, s) in &people {
            send(&mut core, *s, *c, &format!("chat-{round:0>40}"), chat("hi"));
        }
    }
    let snapshot: serde_json::Value = serde_json::to_value(core.snapshot()).unwrap();
    let remembered = |s: &serde_json::Value| -> usize {
        s["recent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| pair[0].as_str().unwrap().len() + pair[1].as_str().unwrap().len())
            .sum()
    };
    let sessions = snapshot["sessions"].as_array().unwrap();
    let total: usize = sessions.iter().map(remembered).sum();
    assert!(sessions.iter().all(|s| remembered(s) <= 2_000));
    assert!(total <= 6_000, "the room remembers {total} bytes");
    assert!(
        total > 5_000,
        "the room's bound is used, not emptied: {total}"
    );
    // The newest ack of the last sender is still answered from memory.
    let (c, s) = people[29];
    replies.take();
    send(&mut core, s, c, &format!("chat-{:0>40}", 59), chat("hi"));
    let again = replies.take();
    assert!(again[0].1.contains(r#""type":"ack""#));
    assert_eq!(
        serde_json::to_value(core.snapshot()).unwrap()["state"],
        snapshot["state"],
        "the resend applied nothing"
    );
}

/// 500 sessions each sending 70 refused commands with 64-byte request ids leave the room's
/// snapshot exactly as it was.
#[test]
fn a_flood_of_refused_commands_leaves_the_snapshot_as_it_was() {
    let (mut core, replies) = core(config(64 * 1024, 4 << 20));
    let mut people = Vec::new();
    for i in 0..500 {
        let c = Uuid::new_v4();
        people.push((
            c,
            join(&mut core, &format!("p{i}"), Role::Participant, c, None),
        ));
    }
    let before = serde_json::to_string(&core.snapshot()).unwrap().len();
    replies.take();
    for n in 0..70 {
        for (c, s) in &people {
            // Participants may not open breakouts: forbidden.
            send(
                &mut core,
                *s,
                *c,
                &format!("{n:0>64}"),
                Command::OpenBreakouts,
            );
        }
    }
    assert_eq!(replies.take().len(), 500 * 70);
    let after = serde_json::to_string(&core.snapshot()).unwrap().len();
    assert_eq!(after, before, "refusals are not kept in the snapshot");
}
