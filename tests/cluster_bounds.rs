//! What crosses a cluster's nodes is bounded and answered once: a request resent after a
//! resume elsewhere is answered once when the stopped node wakes (`convene serve` processes
//! and SIGSTOP), a flood from one node leaves the owner's Redis streams under their byte
//! budget while another room works, joins refused with 503 before the upgrade while Redis
//! is away, and Redis credentials (ACL users) that work and are never printed.

mod cluster_support;
mod common;

use std::time::{Duration, Instant};

use cluster_support::Cluster;
use common::{token, Client};
use convene_signaling::{Command, Presence, Role, RoomEvent, ServerMessage};

const ROOM: &str = "launch";

/// Joins through node `ws` (its `/ws` URL) and reads the welcome.
async fn join_at(ws: &str, identity: &str, role: Role) -> Client {
    let token = token(ROOM, role, identity, &[]);
    let mut client = Client::connect(&format!("{ws}?token={token}")).await;
    client.token = token;
    client.base = ws.to_string();
    match client.recv().await {
        ServerMessage::Welcome { .. } => client,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// A counter's value in a node's `/metrics` text.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn answered(message: &ServerMessage) -> Option<&str> {
    match message {
        ServerMessage::Ack { request_id, .. } => Some(request_id),
        ServerMessage::Error {
            request_id: Some(r),
            ..
        } => Some(r),
        _ => None,
    }
}

/// A client's socket to n2 is cut while n2 is stopped with the client's commands in its
/// socket; the client resumes on n1 (the owner) and resends them there; when n2 wakes and
/// reads the dead socket's commands, nobody answers them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_resent_after_a_resume_elsewhere_is_answered_once_when_the_stopped_node_wakes()
{
    let cluster = Cluster::start(2).await;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut host = join_at(&n1.ws(), "host", Role::Host).await;
    assert_eq!(
        cluster.wait_owner(ROOM, None, Duration::from_secs(10)).await,
        0
    );
    let mut ann = join_at(&n2.ws(), "ann", Role::Participant).await;
    ann.ok(Command::SendChat {
        text: "before".into(),
    })
    .await;

    n2.stop();
    let requests: Vec<String> = (0..5).map(|i| format!("late-{i}")).collect();
    for (i, id) in requests.iter().enumerate() {
        let text = format!("message {i}");
        ann.send_with_id(Command::SendChat { text }, id).await;
    }
    let (token, session_id, last_seq) = ann.drop_connection();
    // n2 stopped heartbeating: the owner lets its sessions wait out the grace.
    host.expect_event(|e| {
        matches!(e, RoomEvent::MemberUpdated { member }
            if member.identity == "ann" && member.presence == Presence::Reconnecting)
    })
    .await;
    let mut resumed = Client::connect(&format!(
        "{}?token={token}&resume={session_id}&last_seq={last_seq}",
        n1.ws()
    ))
    .await;
    assert!(
        matches!(resumed.recv().await, ServerMessage::Resumed { .. }),
        "ann resumed on n1"
    );
    for (i, id) in requests.iter().enumerate() {
        let text = format!("message {i}");
        resumed.send_with_id(Command::SendChat { text }, id).await;
        assert!(matches!(resumed.reply(id).await, ServerMessage::Ack { .. }));
    }

    n2.cont();
    // n2 reads the dead socket's five commands and records them; the owner drops each.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = cluster.metrics(0).await.unwrap_or_default();
        if counter(&metrics, "convene_superseded_commands_total") >= 5 {
            break;
        }
        if let Some(message) = resumed.try_recv(Duration::from_millis(100)).await {
            assert!(
                answered(&message).is_none_or(|r| !requests.iter().any(|q| q == r)),
                "a request was answered a second time: {message:?}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "n2 never recorded the dead socket's commands:\n{}",
            n2.tail.last(30)
        );
    }
    // Whatever the owner sent before a later request's ack has arrived by then.
    let marker = resumed
        .send(Command::SendChat {
            text: "after".into(),
        })
        .await;
    let mut seen = Vec::new();
    loop {
        let message = resumed.recv().await;
        match answered(&message) {
            Some(r) if r == marker => break,
            Some(r) => seen.push(r.to_string()),
            None => {}
        }
    }
    assert_eq!(seen, Vec::<String>::new(), "answers after the resends");
}
