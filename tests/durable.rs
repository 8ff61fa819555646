//! A single node's durable log, black-box: one `convene serve` process (no Redis) on a data
//! directory of its own, a crowd of attendees (200; `CONVENE_DURABLE_SIZE`) with chat, Q&A,
//! upvotes and a live poll, and a team meeting in breakouts. The node is killed (`kill -9`) or
//! stopped (SIGTERM) mid-event and started again on the same directory: every session resumes,
//! every acknowledged event is there with the bytes the clients saw, seq continues. The same
//! against a real PostgreSQL (`postgres` started by the test on a free port).

mod cluster_support;
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::check::{check, Observer, Rules};
use cluster_support::crowd::{traffic, wait_for, Crowd, First, Plan};
use cluster_support::postgres::Postgres;
use cluster_support::{free_port, Node, View};
use common::Client;
use convene_signaling::{Command, Role, RoomEvent, ServerMessage};

const ROOM: &str = "launch";
/// The breakouts scenario's room (a store may hold both scenarios' rooms).
const EXCHANGE: &str = "exchange";

/// One durable node at a time: 200 attendees each is what a 2-core machine carries.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn size() -> usize {
    std::env::var("CONVENE_DURABLE_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .max(20)
}

/// Deadlines grow with the crowd (a 2-core machine shared with CI).
fn scaled(base_s: u64, size: usize) -> Duration {
    Duration::from_secs(base_s + size as u64 / 10)
}

fn fresh_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "convene-durable-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    dir
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Kill9,
    Term,
}

/// One node without Redis, restartable on the same port and data directory (or store URL).
struct Solo {
    node: Node,
    bin: PathBuf,
    port: u16,
    env: Vec<(String, String)>,
}

impl Solo {
    async fn start(dir: &Path, store_url: Option<&str>, snapshot_every: u64) -> Solo {
        // Through a link of another name: someone's `pkill -f "convene serve"` misses it.
        let bin = dir.join("durable-node");
        let _ = std::fs::remove_file(&bin);
        std::os::unix::fs::symlink(cluster_support::BIN, &bin).expect("link to convene");
        let mut env = vec![(
            "CONVENE_DATA_DIR".to_string(),
            dir.join("data").display().to_string(),
        )];
        if let Some(url) = store_url {
            env.push(("CONVENE_STORE_URL".into(), url.into()));
        }
        // Snapshots often, so a restart rebuilds from a snapshot plus the inputs after it.
        env.push((
            "CONVENE_STORE_SNAPSHOT_EVERY".into(),
            snapshot_every.to_string(),
        ));
        let port = free_port();
        let node = Solo::spawn(&bin, port, &env);
        node.ready().await;
        Solo {
            node,
            bin,
            port,
            env,
        }
    }

    fn spawn(bin: &Path, port: u16, env: &[(String, String)]) -> Node {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Node::spawn_with(bin, "solo", port, "", &env)
    }

    async fn stop(&mut self, how: Stop) {
        match how {
            Stop::Kill9 => self.node.kill9().await,
            Stop::Term => self.node.terminate().await,
        }
    }

    /// Starts again on the same port and store; returns how long until it answered.
    async fn restart(&mut self) -> Duration {
        let started = Instant::now();
        self.node = Solo::spawn(&self.bin, self.port, &self.env);
        self.node.ready().await;
        started.elapsed()
    }
}

/// A fresh session's welcome: the room as a newcomer gets it.
async fn observe(
    node: &Node,
    room: &str,
    identity: &str,
) -> (u64, convene_signaling::RoomSnapshot) {
    let token = common::token(room, Role::Moderator, identity, &[]);
    let mut client = Client::connect(&format!("{}?token={token}", node.ws())).await;
    match client.recv().await {
        ServerMessage::Welcome { seq, snapshot, .. } => (seq, *snapshot),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// The crowd scenario: traffic and poll votes, the node stopped `how` and restarted mid-event.
async fn restart_mid_event(how: Stop, store_url: Option<&str>, size: usize) {
    let dir = fresh_dir("crowd");
    let mut solo = Solo::start(&dir, store_url, 50).await;
    let view: Arc<View> = View::of(vec![solo.node.ws()]);
    let crowd = Crowd::join_view(view.clone(), ROOM, size).await;
    let handles = crowd.handles();
    let host = handles[0].clone();
    let rid = host.send(Command::LaunchPoll {
        question: "Which strand next?".into(),
        options: vec!["literacy".into(), "math".into()],
        multiple: false,
        live_results: true,
    });
    wait_for(scaled(10, size), "the poll's ack", || {
        host.ack_of(&rid).is_some()
    })
    .await;
    let poll_id = host.ack_of(&rid).flatten().expect("the poll has an id");
    let voters: Vec<usize> = (1..size).step_by(3).collect();
    let (early, late) = voters.split_at(voters.len() / 2);
    let vote = |i: usize| {
        handles[i].send(Command::VotePoll {
            poll_id,
            choices: vec![(i % 2) as u32],
        })
    };
    let mut votes: Vec<(usize, String)> = early.iter().map(|&i| (i, vote(i))).collect();
    let traffic = traffic(crowd.handles(), Plan::standard(14));
    let before = crowd.acks();
    wait_for(scaled(15, size), "acks before the stop", || {
        crowd.acks() >= before + 20
    })
    .await;

    view.set_up(0, false);
    let stopped = Instant::now();
    solo.stop(how).await;
    let answered_after = solo.restart().await;
    view.set_up(0, true);
    let acks_at_restart = crowd.acks();
    let deadline = Instant::now() + scaled(15, size);
    while crowd.acks() <= acks_at_restart {
        assert!(
            Instant::now() < deadline,
            "no ack after the restart; the node said:\n{}",
            solo.node.tail.last(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{how:?}: {size} attendees; the node answered {answered_after:?} after its restart began, \
         an ack {:?} after the stop",
        stopped.elapsed()
    );
    votes.extend(late.iter().map(|&i| (i, vote(i))));

    let issued = traffic.await.expect("traffic task");
    let mut problems = Vec::new();
    if let Err(e) = crowd.settle(scaled(20, size)).await {
        problems.push(e);
    }
    let agreed = crowd.quiesce(scaled(15, size)).await;
    let voted = votes
        .iter()
        .filter(|(i, rid)| handles[*i].ack_of(rid).is_some())
        .count();
    let mut logs = crowd.finish().await;
    match agreed {
        Ok(end) => {
            for conn in logs.iter_mut().flat_map(|l| l.conns.iter_mut()) {
                conn.events.retain(|e| e.seq <= end);
            }
        }
        Err(e) => problems.push(e),
    }
    let (seq, snapshot) = observe(&solo.node, ROOM, "observer").await;
    let poll = snapshot
        .polls
        .iter()
        .find(|p| p.id == poll_id)
        .expect("the poll survived the restart");
    let counted: u32 = poll.counts.as_ref().map_or(0, |c| c.iter().sum());
    let observers = vec![Observer {
        node: 0,
        seq,
        snapshot,
    }];
    let sum = check(
        &logs,
        &observers,
        Rules {
            no_closes: false,
            require_resumed: true,
        },
        problems,
    );
    eprintln!("{how:?}: {sum:?}");
    assert_eq!(sum.chats_acked, issued.chats, "every chat acked");
    assert_eq!(sum.questions_acked, issued.asks, "every question acked");
    assert_eq!(sum.upvotes_acked, issued.upvotes, "every upvote acked");
    assert_eq!(voted, voters.len(), "every vote acked");
    assert_eq!(counted as usize, voted, "every acked vote is counted");
    for log in &logs {
        assert!(
            log.conns.len() >= 2,
            "{} never reconnected after the stop",
            log.identity
        );
        assert!(
            log.conns[1..]
                .iter()
                .all(|c| matches!(c.first, Some(First::Resumed { .. }))),
            "{} did not resume its session",
            log.identity
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_event_every_session_resumes_and_nothing_acked_is_lost() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let size = size();
    tokio::time::timeout(
        scaled(150, size),
        restart_mid_event(Stop::Kill9, None, size),
    )
    .await
    .expect("scenario finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restart_every_session_resumes_and_nothing_acked_is_lost() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let size = size();
    tokio::time::timeout(scaled(150, size), restart_mid_event(Stop::Term, None, size))
        .await
        .expect("scenario finished in time");
}

/// Connects with `team` and reads the welcome.
async fn member(node: &Node, role: Role, identity: &str, team: &str) -> Client {
    let token = common::token(EXCHANGE, role, identity, &[("team", team)]);
    let mut client = Client::connect(&format!("{}?token={token}", node.ws())).await;
    client.token = token;
    client.base = node.ws();
    match client.recv().await {
        ServerMessage::Welcome { .. } => client,
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// Reads until `identity`'s move into a breakout; returns the breakout.
async fn moved_to_breakout(client: &mut Client) -> u32 {
    loop {
        if let ServerMessage::Event {
            event: RoomEvent::Moved {
                breakout: Some(b), ..
            },
            ..
        } = client.recv().await
        {
            return b;
        }
    }
}

/// Breakouts by team survive a `kill -9`: everyone resumes in their breakout, its chat stays
/// in it, and a newcomer sees the same assignments.
async fn breakouts_survive(store_url: Option<&str>) {
    let dir = fresh_dir("breakouts");
    // A snapshot every few inputs: the rebuild starts from one taken with sessions open.
    let mut solo = Solo::start(&dir, store_url, 5).await;
    let mut host = member(&solo.node, Role::Host, "host", "staff").await;
    let teams = ["Knox", "Shelby", "Davidson"];
    let mut people = Vec::new();
    for (i, team) in teams.iter().cycle().take(6).enumerate() {
        people.push((
            team.to_string(),
            member(&solo.node, Role::Participant, &format!("p{i}"), team).await,
        ));
    }
    host.ok(Command::SetBreakoutPlan {
        plan: common::by_team(None),
    })
    .await;
    host.ok(Command::OpenBreakouts).await;
    let mut rooms = Vec::new();
    for (_, client) in people.iter_mut() {
        rooms.push(moved_to_breakout(client).await);
    }
    people[0]
        .1
        .ok(Command::SendChat {
            text: "before".into(),
        })
        .await;

    solo.stop(Stop::Kill9).await;
    solo.restart().await;

    let mut resumed = Vec::new();
    for (team, client) in people {
        let (mut again, first) = client.resume().await;
        assert!(
            matches!(first, ServerMessage::Resumed { .. }),
            "{team}: expected resumed, got {first:?}"
        );
        again.token = client.token.clone();
        again.base = client.base.clone();
        resumed.push((team, again));
    }
    // p3 (a fresh request id: a resumed client numbers from r1 again, and the room would
    // answer a reused id from memory) speaks; p0, same team, hears it in their breakout.
    resumed[3]
        .1
        .ok(Command::SendChat {
            text: "after".into(),
        })
        .await;
    let heard = resumed[0]
        .1
        .expect_event(
            |e| matches!(e, RoomEvent::ChatMessage { message } if message.text == "after"),
        )
        .await;
    assert!(matches!(heard, RoomEvent::ChatMessage { .. }));
    let (_, snapshot) = observe(&solo.node, EXCHANGE, "late-moderator").await;
    assert!(snapshot.breakouts.is_some(), "breakouts still open");
    for (i, room) in rooms.iter().enumerate() {
        let m = snapshot
            .members
            .iter()
            .find(|m| m.identity == format!("p{i}"))
            .expect("member kept");
        assert_eq!(m.breakout, Some(*room), "p{i} is still in its breakout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakouts_by_team_survive_kill9_and_sessions_resume_in_them() {
    let _turn = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(Duration::from_secs(120), breakouts_survive(None))
        .await
        .expect("scenario finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_migrates_and_its_durable_log_survives_kill9() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let pg = Postgres::start().await;
    let url = pg.url();
    tokio::time::timeout(Duration::from_secs(120), breakouts_survive(Some(&url)))
        .await
        .expect("breakouts scenario on PostgreSQL finished in time");
    tokio::time::timeout(
        scaled(150, 60),
        restart_mid_event(Stop::Kill9, Some(&url), 60),
    )
    .await
    .expect("crowd scenario on PostgreSQL finished in time");
}

/// A second process on the same data directory is refused at start, naming the lock; the
/// first keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_the_same_data_directory_is_refused() {
    let dir = fresh_dir("lock");
    let solo = Solo::start(&dir, None, 50).await;
    let mut second = tokio::process::Command::new(&solo.bin);
    second
        .arg("serve")
        .envs(solo.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("CONVENE_LISTEN", "127.0.0.1:0")
        .env("CONVENE_RTC_UDP_PORT", "0")
        .env("CONVENE_RTC_TCP_PORT", "0")
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), second.output())
        .await
        .expect("the second process exits instead of serving the same store")
        .expect("the second process ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "refused with a failure status: {said}"
    );
    assert!(
        said.contains("another Convene process is using the store"),
        "the refusal names the cause: {said}"
    );
    // The first node still serves: a newcomer gets the room's welcome.
    let (_, snapshot) = observe(&solo.node, ROOM, "still-there").await;
    assert_eq!(snapshot.room, ROOM);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM: every room commits a snapshot of where it is before the process exits, so the
/// next start has no input left to replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_a_final_snapshot_and_no_inputs_to_replay() {
    let dir = fresh_dir("final");
    // Snapshots would otherwise come every 10,000 inputs: none during this test.
    let mut solo = Solo::start(&dir, None, 10_000).await;
    let mut host = member(&solo.node, Role::Host, "hana", "north").await;
    // Fewer than the chat rate limit's burst.
    for i in 0..8 {
        host.ok(Command::SendChat {
            text: format!("before the deploy {i}"),
        })
        .await;
    }
    solo.stop(Stop::Term).await;
    let store = open_store(&dir).await;
    let log = store.room_log(EXCHANGE).await.expect("the room's log");
    assert!(
        log.snapshot.is_some(),
        "a final snapshot was committed:\n{}",
        solo.node.tail.last(30)
    );
    assert!(
        log.inputs.is_empty(),
        "no input is left to replay: {} remain",
        log.inputs.len()
    );
    store.close().await;
    solo.restart().await;
    let (_, snapshot) = observe(&solo.node, EXCHANGE, "after").await;
    assert!(
        snapshot
            .chat
            .iter()
            .any(|m| m.text == "before the deploy 7"),
        "the chat is rebuilt from the snapshot"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A room whose log cannot be read (here: a hand-edited input) is set aside at start; a new
/// room of that name starts and takes messages, and the bad log is kept for investigation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_log_is_set_aside_and_the_room_starts_afresh() {
    let dir = fresh_dir("unreadable");
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    let store = open_store(&dir).await;
    store
        .write(&[
            convene_store::Write::Open {
                room: EXCHANGE.into(),
                at: 1,
            },
            convene_store::Write::Input {
                room: EXCHANGE.into(),
                number: 1,
                body: "{\"not\": \"an input\"}".into(),
            },
        ])
        .await
        .expect("a bad log written");
    store.close().await;
    let solo = Solo::start(&dir, None, 50).await;
    let mut host = member(&solo.node, Role::Host, "hana", "north").await;
    let acked = host
        .ok(Command::SendChat {
            text: "a fresh start".into(),
        })
        .await;
    assert!(acked.is_some(), "the new room takes messages");
    let store = open_store(&dir).await;
    assert_eq!(store.set_aside_inputs(EXCHANGE).await.expect("count"), 1);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn open_store(dir: &Path) -> convene_store::Store {
    convene_store::Store::open(&convene_store::StoreSettings {
        url: format!(
            "sqlite://{}/convene.db?mode=rwc",
            dir.join("data").display()
        ),
        max_connections: 1,
        sqlite_sync: convene_store::Sync::Full,
    })
    .await
    .expect("the store opens")
}
