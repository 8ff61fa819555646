//! The cluster's contract, black-box: `redis-server` and three `convene serve` processes, 45
//! attendees spread over the nodes in one meeting room with open Q&A (every event reaches
//! everyone, so each attendee's seq must be contiguous). Scenarios: steady traffic, the owner
//! killed, the owner stopped past its lease, Redis killed and restarted, pub/sub connections
//! killed; plus the node registry and WHIP/WHEP redirects to the owner.

mod cluster_support;
mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use cluster_support::check::{check, Observer, Rules, Summary};
use cluster_support::crowd::{traffic, utc_now, wait_for, Crowd, First, Issued, Log, Plan};
use cluster_support::{try_http, Cluster, Resp, LEASE_MS};
use convene_signaling::{Role, ServerMessage};
use tokio::task::JoinHandle;

const ROOM: &str = "launch";
const ATTENDEES: usize = 45;

/// One cluster at a time: six nodes and ninety clients on a 2-core machine would starve
/// leases of 1.5 s and test the scheduler instead of the cluster.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a scenario with a hard deadline; on failure the cluster prints every node's last lines.
async fn bounded<'a, F>(cluster: &'a mut Cluster, body: impl FnOnce(&'a mut Cluster) -> F)
where
    F: Future<Output = ()> + 'a,
{
    tokio::time::timeout(Duration::from_secs(120), body(cluster))
        .await
        .expect("scenario finished within 120 s");
}

/// What a finished run left to check.
struct Run {
    logs: Vec<Log>,
    observers: Vec<Observer>,
    problems: Vec<String>,
    issued: Issued,
}

/// Lets the traffic finish, waits for every ack and for the attendees to agree on the last
/// seq, stops them, and has a fresh session join each node that is up.
async fn finish(cluster: &Cluster, crowd: Crowd, traffic: JoinHandle<Issued>) -> Run {
    let issued = traffic.await.expect("traffic task");
    let mut problems = Vec::new();
    if let Err(e) = crowd.settle(Duration::from_secs(20)).await {
        problems.push(e);
    }
    let agreed = crowd.quiesce(Duration::from_secs(15)).await;
    let mut logs = crowd.finish().await;
    match agreed {
        // Attendees stop one by one, and each drop is news to the others: what follows the
        // agreed seq is the teardown, not the test.
        Ok(end) => {
            for conn in logs.iter_mut().flat_map(|l| l.conns.iter_mut()) {
                conn.events.retain(|e| e.seq <= end);
            }
        }
        Err(e) => problems.push(e),
    }
    let mut observers = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if !cluster.view.is_up(i) {
            continue;
        }
        let token = common::token(ROOM, Role::Participant, &format!("observer{i}"), &[]);
        match observe(&format!("{}?token={token}", node.ws())).await {
            Ok((seq, snapshot)) => observers.push(Observer {
                node: i,
                seq,
                snapshot,
            }),
            Err(e) => problems.push(format!("observer on node {i}: {e}")),
        }
    }
    problems.extend(cluster.signalled_from_outside());
    Run {
        logs,
        observers,
        problems,
        issued,
    }
}

/// A fresh session's welcome: the room's seq and snapshot as a newcomer gets them.
async fn observe(url: &str) -> Result<(u64, convene_signaling::RoomSnapshot), String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let welcome = async {
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    return match serde_json::from_str::<ServerMessage>(&text) {
                        Ok(ServerMessage::Welcome { seq, snapshot, .. }) => Ok((seq, *snapshot)),
                        _ => Err(format!("first message {text}")),
                    }
                }
                Some(Ok(_)) => continue,
                other => return Err(format!("closed before a welcome: {other:?}")),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), welcome)
        .await
        .map_err(|_| "no welcome within 10 s".to_string())?
}

/// The checks of every scenario, plus: everything issued was acknowledged.
fn verify(name: &str, run: &Run, rules: Rules) -> Summary {
    let sum = check(&run.logs, &run.observers, rules, run.problems.clone());
    assert_eq!(sum.chats_acked, run.issued.chats, "every chat acked");
    assert_eq!(sum.questions_acked, run.issued.asks, "every question acked");
    assert_eq!(sum.upvotes_acked, run.issued.upvotes, "every upvote acked");
    assert!(sum.chats_acked > 0 && sum.questions_acked > 0 && sum.upvotes_acked > 0);
    eprintln!("{name}: {sum:?}");
    sum
}

/// Attendees whose socket closed, by the node they were on.
fn closed_on(logs: &[Log]) -> Vec<(String, usize, Option<u16>)> {
    logs.iter()
        .flat_map(|l| {
            l.conns
                .iter()
                .filter(|c| !c.dropped)
                .filter_map(|c| c.closed.map(|code| (l.identity.clone(), c.node, code)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_traffic_on_three_nodes_is_one_ordered_stream() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3).await;
    bounded(&mut cluster, |cluster| async move {
        let crowd = Crowd::join(cluster, ROOM, ATTENDEES).await;
        cluster
            .wait_owner(ROOM, None, Duration::from_secs(10))
            .await;
        let traffic = traffic(crowd.handles(), Plan::standard(14));
        // A few attendees lose their connection and resume on the next node.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let dropouts: Vec<usize> = (10..16).collect();
        for &i in &dropouts {
            crowd.attendees[i].handle.drop_connection();
        }
        let run = finish(cluster, crowd, traffic).await;
        for &i in &dropouts {
            let log = &run.logs[i];
            assert!(
                log.conns.len() >= 2 && log.conns[0].dropped,
                "{} did not drop",
                log.identity
            );
            assert_ne!(
                log.conns[1].node, log.conns[0].node,
                "{} resumed on the same node",
                log.identity
            );
        }
        let sum = verify(
            "steady",
            &run,
            Rules {
                no_closes: true,
                require_resumed: true,
            },
        );
        assert_eq!(sum.reconnects, dropouts.len());
        assert_eq!(sum.resumed, dropouts.len());
        // Every node delivered: attendees on all three saw the whole stream.
        for node in 0..3 {
            assert!(run
                .logs
                .iter()
                .any(|l| l.conns[0].node == node && !l.conns[0].events.is_empty()));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_killed_mid_stream_loses_nothing_acked_and_its_clients_resume_on_survivors() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3).await;
    bounded(&mut cluster, |cluster| async move {
        let crowd = Crowd::join(cluster, ROOM, ATTENDEES).await;
        let owner = cluster
            .wait_owner(ROOM, None, Duration::from_secs(10))
            .await;
        let traffic = traffic(crowd.handles(), Plan::standard(18));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let acks_before = crowd.acks();
        cluster.view.set_up(owner, false);
        let killed = Instant::now();
        cluster.nodes[owner].kill9().await;
        eprintln!(
            "{} UTC: owner {} killed",
            utc_now(),
            cluster.nodes[owner].id
        );
        let successor = cluster
            .wait_owner(
                ROOM,
                Some(owner),
                Duration::from_millis(LEASE_MS) + Duration::from_secs(10),
            )
            .await;
        let took_over = killed.elapsed();
        wait_for(Duration::from_secs(15), "an ack after the kill", || {
            crowd.acks() > acks_before
        })
        .await;
        let first_ack = killed.elapsed();
        eprintln!(
            "owner {} killed: {} owns the room after {took_over:?}, an ack after {first_ack:?}",
            cluster.nodes[owner].id, cluster.nodes[successor].id
        );
        let run = finish(cluster, crowd, traffic).await;
        let resumed_by = run
            .logs
            .iter()
            .filter(|l| l.home == owner)
            .filter_map(|l| {
                l.conns
                    .get(1)
                    .map(|c| c.opened_at.saturating_duration_since(killed))
            })
            .max();
        eprintln!("the dead node's attendees all reconnected within {resumed_by:?} of the kill");
        verify(
            "owner killed",
            &run,
            Rules {
                no_closes: false,
                require_resumed: true,
            },
        );
        for log in &run.logs {
            if log.home == owner {
                let last = log.conns.last().expect("connected");
                assert!(
                    log.conns.len() >= 2,
                    "{} was on the dead node and never reconnected",
                    log.identity
                );
                assert_ne!(last.node, owner, "{} ends on the dead node", log.identity);
                assert!(
                    log.conns[1..]
                        .iter()
                        .all(|c| matches!(c.first, Some(First::Resumed { .. }))),
                    "{} did not resume: {:?}",
                    log.identity,
                    log.conns
                        .iter()
                        .map(|c| c.first.as_ref().map(|f| matches!(f, First::Resumed { .. })))
                        .collect::<Vec<_>>()
                );
            }
        }
        let elsewhere: Vec<_> = closed_on(&run.logs)
            .into_iter()
            .filter(|(_, node, _)| *node != owner)
            .collect();
        assert!(
            elsewhere.is_empty(),
            "sessions on surviving nodes were closed: {elsewhere:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_stopped_past_its_lease_is_fenced_and_traffic_goes_on_through_a_new_owner() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3).await;
    bounded(&mut cluster, |cluster| async move {
        let crowd = Crowd::join(cluster, ROOM, ATTENDEES).await;
        let owner = cluster
            .wait_owner(ROOM, None, Duration::from_secs(10))
            .await;
        let traffic = traffic(crowd.handles(), Plan::standard(22));
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.view.set_up(owner, false);
        let stopped = Instant::now();
        cluster.nodes[owner].stop();
        eprintln!(
            "{} UTC: owner {} stopped",
            utc_now(),
            cluster.nodes[owner].id
        );
        let successor = cluster
            .wait_owner(
                ROOM,
                Some(owner),
                Duration::from_millis(LEASE_MS) + Duration::from_secs(10),
            )
            .await;
        let took_over = stopped.elapsed();
        eprintln!(
            "owner {} stopped: {} owns the room after {took_over:?}",
            cluster.nodes[owner].id, cluster.nodes[successor].id
        );
        // Traffic continues through the new owner while the old one is frozen.
        let acks_at_takeover = crowd.acks();
        wait_for(
            Duration::from_secs(10),
            "acks through the new owner",
            || crowd.acks() > acks_at_takeover + 5,
        )
        .await;
        // Frozen well past the lease, with commands from its own sessions queued in its sockets.
        let past = Duration::from_millis(3 * LEASE_MS);
        if stopped.elapsed() < past {
            tokio::time::sleep(past - stopped.elapsed()).await;
        }
        cluster.nodes[owner].cont();
        eprintln!(
            "{} UTC: owner {} continued",
            utc_now(),
            cluster.nodes[owner].id
        );
        cluster.view.set_up(owner, true);
        let run = finish(cluster, crowd, traffic).await;
        verify(
            "owner stopped",
            &run,
            Rules {
                no_closes: false,
                require_resumed: true,
            },
        );
        let closes = closed_on(&run.logs);
        for (who, node, code) in &closes {
            assert_eq!(
                *node, owner,
                "{who} was closed ({code:?}) on node {node}, which was never stopped"
            );
            assert!(
                matches!(code, None | Some(1012)),
                "{who} closed with {code:?}"
            );
        }
        // One owner afterwards, once the thawed node's own heartbeat is fresh again.
        wait_for_listing(cluster, successor, Duration::from_secs(10), |nodes| {
            nodes
                .iter()
                .filter(|n| n.rooms_owned.iter().any(|r| r == ROOM))
                .count()
                == 1
        })
        .await;
        eprintln!("closes after SIGCONT: {closes:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_commands_get_unavailable_and_sockets_stay_open() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3).await;
    bounded(&mut cluster, |cluster| async move {
        let crowd = Crowd::join(cluster, ROOM, ATTENDEES).await;
        cluster.wait_owner(ROOM, None, Duration::from_secs(10)).await;
        let traffic = traffic(crowd.handles(), Plan::standard(20));
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.redis.kill9().await;
        let down = Instant::now();
        wait_for(Duration::from_secs(10), "an `unavailable` while Redis is down", || crowd.unavailable() > 0).await;
        let first_unavailable = down.elapsed();
        let outage = Duration::from_secs(4);
        if down.elapsed() < outage {
            tokio::time::sleep(outage - down.elapsed()).await;
        }
        let acks_before = crowd.acks();
        cluster.redis.restart().await;
        let back = Instant::now();
        wait_for(Duration::from_secs(15), "acks after Redis returned", || crowd.acks() > acks_before + 5).await;
        let recovered = back.elapsed();
        let run = finish(cluster, crowd, traffic).await;
        let sum = verify(
            "redis restarted",
            &run,
            Rules {
                no_closes: true,
                require_resumed: true,
            },
        );
        assert!(sum.unavailable_with_retry > 0, "no command was refused with unavailable + retry_after_ms");
        eprintln!(
            "redis down {outage:?}: first unavailable after {first_unavailable:?}, acks again {recovered:?} after the restart"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_connections_killed_under_load_gaps_are_repaired_without_1013() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3).await;
    bounded(&mut cluster, |cluster| async move {
        let crowd = Crowd::join(cluster, ROOM, ATTENDEES).await;
        cluster
            .wait_owner(ROOM, None, Duration::from_secs(10))
            .await;
        let traffic = traffic(crowd.handles(), Plan::standard(18));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut killed = 0;
        for _ in 0..25 {
            match cluster
                .redis
                .cmd(&["CLIENT", "KILL", "TYPE", "pubsub"])
                .await
            {
                Ok(Resp::Int(n)) => killed += n,
                other => panic!("CLIENT KILL TYPE pubsub: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(
            killed > 0,
            "no pub/sub connection to kill: do the nodes subscribe?"
        );
        let run = finish(cluster, crowd, traffic).await;
        verify(
            "pubsub killed",
            &run,
            Rules {
                no_closes: true,
                require_resumed: true,
            },
        );
        for i in 0..cluster.nodes.len() {
            let metrics = cluster.metrics(i).await.expect("metrics");
            assert!(
                metrics.lines().any(|l| l.starts_with("convene_cluster_")),
                "node {i} has no convene_cluster_* series"
            );
        }
        eprintln!("pubsub: {killed} connections killed");
    })
    .await;
}

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendrecv\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_listed_until_their_heartbeat_lapses_and_whip_whep_redirect_to_the_owner() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(3).await;
    bounded(&mut cluster, |cluster| async move {
        // Every node lists all three, with the addresses they advertise.
        for via in 0..3 {
            // Ready (healthz) may come a heartbeat before the registry lists the node.
            wait_for_listing(cluster, via, Duration::from_secs(5), |nodes| {
                nodes.len() == 3
            })
            .await;
            let nodes = cluster.listing(via).await.expect("listing");
            let mut ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
            ids.sort();
            assert_eq!(ids, ["n1", "n2", "n3"], "{nodes:?}");
            for n in &nodes {
                let i = cluster.index_of(&n.id);
                assert_eq!(n.http, cluster.nodes[i].http(), "{n:?}");
                assert!(
                    n.rtc
                        .as_deref()
                        .is_some_and(|a| a.starts_with("127.0.0.1:")),
                    "{n:?}"
                );
                assert!(n.heartbeat_ms_ago < 10_000, "{n:?}");
            }
        }
        let (status, _, _) = try_http(
            "GET",
            &format!("{}/api/v1/nodes", cluster.nodes[1].http()),
            None,
            &[],
            "",
        )
        .await
        .expect("answer");
        assert_eq!(status, 401, "the node list needs the API key");

        // A host in the room on n2; the owner answers WHIP/WHEP, the others send clients there.
        let host = common::token("stage", Role::Host, "host", &[]);
        let mut client =
            common::Client::connect(&format!("{}?token={host}", cluster.nodes[1].ws())).await;
        assert!(matches!(client.recv().await, ServerMessage::Welcome { .. }));
        let owner = cluster
            .wait_owner("stage", None, Duration::from_secs(10))
            .await;
        let viewer = common::token("stage", Role::Participant, "viewer", &[]);
        for i in 0..3 {
            for (kind, token) in [("whip", &host), ("whep", &viewer)] {
                let url = format!("{}/{kind}/stage?probe=1", cluster.nodes[i].http());
                let (status, head, body) = try_http(
                    "POST",
                    &url,
                    Some(token),
                    &[("Content-Type", "application/sdp")],
                    OFFER,
                )
                .await
                .expect("answer");
                if i == owner {
                    assert_ne!(status, 307, "the owner redirected {kind} to itself: {head}");
                } else {
                    assert_eq!(
                        status, 307,
                        "{kind} to non-owner {}: {head}\n{body}",
                        cluster.nodes[i].id
                    );
                    assert_eq!(
                        common::header(&head, "location"),
                        Some(
                            format!("{}/{kind}/stage?probe=1", cluster.nodes[owner].http())
                                .as_str()
                        ),
                        "{head}"
                    );
                }
            }
        }
        // Resuming a session no node knows gets a fresh welcome that says so, on any node.
        for node in &cluster.nodes {
            let unknown = uuid::Uuid::new_v4();
            let url = format!("{}?token={viewer}&resume={unknown}&last_seq=3", node.ws());
            let mut stranger = common::Client::connect(&url).await;
            match stranger.recv().await {
                ServerMessage::Welcome { resume_failed, .. } => {
                    assert!(
                        resume_failed.is_some(),
                        "node {}: welcome without resume_failed",
                        node.id
                    )
                }
                other => panic!(
                    "node {}: resuming an unknown session got {other:?}",
                    node.id
                ),
            }
        }
        // The session shows on the node that holds it.
        wait_for_listing(cluster, owner, Duration::from_secs(10), |nodes| {
            nodes.iter().any(|n| n.id == "n2" && n.sessions >= 1)
        })
        .await;

        // A killed node drops out once its heartbeat lapses; the others stay.
        let victim = (0..3).rev().find(|&i| i != owner).expect("a non-owner");
        let victim_id = cluster.nodes[victim].id.clone();
        cluster.view.set_up(victim, false);
        cluster.nodes[victim].kill9().await;
        wait_for_listing(
            cluster,
            owner,
            Duration::from_millis(LEASE_MS) + Duration::from_secs(15),
            |nodes| nodes.len() == 2 && nodes.iter().all(|n| n.id != victim_id),
        )
        .await;
        drop(client);
    })
    .await;
}

async fn wait_for_listing(
    cluster: &Cluster,
    via: usize,
    within: Duration,
    done: impl Fn(&[cluster_support::NodeInfo]) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let listing = cluster.listing(via).await;
        if let Ok(nodes) = &listing {
            if done(nodes) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "listing never matched within {within:?}: {listing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The checker itself: a clean pair of logs passes, and each kind of damage is named.
#[test]
fn the_checker_flags_gaps_conflicting_bytes_duplicates_losses_bad_resumes_votes_and_1013() {
    use cluster_support::crowd::{Conn, Seen};
    use convene_signaling::{ChatMessage, Command, RoomEvent, RoomSettings, RoomSnapshot};
    use std::collections::BTreeMap;

    fn chat(seq: u64, text: &str) -> Seen {
        let event = RoomEvent::ChatMessage {
            message: ChatMessage {
                id: seq,
                from: "x".into(),
                name: "X".into(),
                text: text.into(),
                at: 1000 + seq,
                breakout: None,
            },
        };
        let frame = serde_json::to_string(&ServerMessage::Event {
            seq,
            event: event.clone(),
        })
        .unwrap();
        Seen {
            seq,
            text: frame,
            event,
        }
    }
    fn welcome(seq: u64) -> First {
        First::Welcome {
            seq,
            resume_failed: None,
            snapshot: Box::new(RoomSnapshot {
                room: ROOM.into(),
                settings: RoomSettings::default(),
                members: vec![],
                participant_count: 0,
                chat: vec![],
                questions: vec![],
                answered: vec![],
                my_votes: vec![],
                my_questions: vec![],
                breakouts: None,
                tracks: vec![],
                polls: vec![],
                my_poll_answers: BTreeMap::new(),
                lobby: None,
            }),
        }
    }
    fn conn(first: First, resume_from: Option<u64>, events: Vec<Seen>) -> Conn {
        Conn {
            node: 0,
            resume_from,
            first: Some(first),
            events,
            closed: None,
            dropped: false,
            opened_at: Instant::now(),
        }
    }
    fn log(identity: &str, conns: Vec<Conn>, sent: &[(&str, &str)]) -> Log {
        Log {
            index: 0,
            identity: identity.into(),
            home: 0,
            conns,
            failed_connects: 0,
            sent: sent
                .iter()
                .map(|(rid, text)| {
                    (
                        rid.to_string(),
                        Command::SendChat {
                            text: text.to_string(),
                        },
                    )
                })
                .collect(),
            first_sent: BTreeMap::new(),
            acked: sent
                .iter()
                .map(|(rid, _)| (rid.to_string(), Some(1)))
                .collect(),
            errors: vec![],
            oddities: vec![],
            unanswered: vec![],
            given_up: vec![],
        }
    }
    let rules = Rules {
        no_closes: true,
        require_resumed: true,
    };
    let stream = || vec![chat(1, "m a 1"), chat(2, "m b 1"), chat(3, "m a 2")];
    let clean = || {
        vec![
            log(
                "a",
                vec![conn(welcome(0), None, stream())],
                &[("a-1", "m a 1"), ("a-2", "m a 2")],
            ),
            log(
                "b",
                vec![conn(welcome(0), None, stream())],
                &[("b-1", "m b 1")],
            ),
        ]
    };
    let sum = check(&clean(), &[], rules, vec![]);
    assert_eq!((sum.max_seq, sum.chats_acked), (3, 3));
    // A resume that continues where it left off is fine too.
    check(&resumed_from(clean(), 1), &[], rules, vec![]);

    let fails = |logs: Vec<Log>, rules: Rules, needle: &str| {
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check(&logs, &[], rules, vec![])
        }))
        .expect_err(needle);
        let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains(needle), "expected {needle:?} in {text}");
    };
    let mut gap = clean();
    gap[1].conns[0].events.remove(1);
    fails(gap, rules, "seq 3 after 1 (not contiguous)");
    let mut differs = clean();
    differs[1].conns[0].events[1].text.push(' ');
    fails(differs, rules, "seq 2 differs");
    let mut twice = clean();
    for l in &mut twice {
        l.conns[0].events.push(chat(4, "m a 1"));
    }
    fails(twice, rules, "was appended 2 times");
    let mut lost = clean();
    lost[0].sent.insert(
        "a-3".into(),
        Command::SendChat {
            text: "m a 3".into(),
        },
    );
    lost[0].acked.insert("a-3".into(), Some(9));
    fails(lost, rules, "acked (id Some(9)) but nobody received it");
    let mut missing = clean();
    missing[1].conns[0].events.retain(|e| e.seq != 3);
    missing[1].conns[0].events.push(chat(3, "m other"));
    fails(
        missing,
        rules,
        "acked chat \"m a 2\" (seq 3) received 0 times",
    );
    let mut slow = clean();
    slow[0].conns[0].closed = Some(Some(1013));
    slow[0].conns.push(conn(
        First::Resumed {
            last_seq: 3,
            seq: 3,
        },
        Some(3),
        vec![],
    ));
    fails(
        slow,
        Rules {
            no_closes: false,
            require_resumed: true,
        },
        "closed with 1013",
    );
    let mut closed = clean();
    closed[0].conns[0].closed = Some(Some(1012));
    closed[0].conns.push(conn(
        First::Resumed {
            last_seq: 3,
            seq: 3,
        },
        Some(3),
        vec![],
    ));
    fails(closed, rules, "sockets stay open");
    fails(
        resumed_from(clean(), 0),
        rules,
        "resumed from 0, but had seen Some(1)",
    );
    let mut fresh = clean();
    fresh[1].conns = vec![
        conn(welcome(0), None, vec![chat(1, "m a 1")]),
        conn(welcome(3), Some(1), vec![]),
    ];
    fresh[1].conns[0].closed = Some(None);
    fails(
        fresh,
        Rules {
            no_closes: false,
            require_resumed: true,
        },
        "got a fresh welcome",
    );
    let mut votes = clean();
    votes[1]
        .sent
        .insert("b-2".into(), Command::Upvote { question_id: 7 });
    votes[1].acked.insert("b-2".into(), None);
    fails(votes, rules, "upvotes of question 7 acked");
    // A question everyone saw asked, one acked upvote, but the count never moved.
    let asked = {
        let event = RoomEvent::QuestionUpdated {
            question: convene_signaling::Question {
                id: 7,
                text: "q a 1".into(),
                author: Some("a".into()),
                author_name: Some("A".into()),
                anonymous: false,
                votes: 0,
                state: convene_signaling::QuestionState::Approved,
                live: false,
                edited: false,
                answer: None,
                duplicate_of: None,
                asked_at: 1,
                updated_at: 1,
                answered_at: None,
            },
        };
        let text = serde_json::to_string(&ServerMessage::Event {
            seq: 4,
            event: event.clone(),
        })
        .unwrap();
        Seen {
            seq: 4,
            text,
            event,
        }
    };
    let mut stuck = clean();
    for l in &mut stuck {
        l.conns[0].events.push(asked.clone());
    }
    stuck[0].sent.insert(
        "a-3".into(),
        Command::AskQuestion {
            text: "q a 1".into(),
            anonymous: false,
        },
    );
    stuck[0].acked.insert("a-3".into(), Some(7));
    stuck[1]
        .sent
        .insert("b-2".into(), Command::Upvote { question_id: 7 });
    stuck[1].acked.insert("b-2".into(), None);
    fails(
        stuck,
        rules,
        "last votes seen for question 7 Some(0), but 1 upvotes were acked",
    );

    /// The second attendee resumes claiming `from` after having seen seq 1.
    fn resumed_from(mut logs: Vec<Log>, from: u64) -> Vec<Log> {
        logs[1].conns = vec![
            conn(welcome(0), None, vec![chat(1, "m a 1")]),
            conn(
                First::Resumed {
                    last_seq: from,
                    seq: 3,
                },
                Some(from),
                vec![chat(2, "m b 1"), chat(3, "m a 2")],
            ),
        ];
        logs[1].conns[0].dropped = true;
        logs[1].conns[0].closed = Some(None);
        logs
    }
}
