//! The hub load tools, in-process at a tiny size against a real server: they connect, deliver and count exactly.

#[path = "../../../tests/common/mod.rs"]
mod common;

use common::{TestServer, SECRET};
use convene_load::chat::{self, ChatArgs, VotesArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_tool_delivers_every_message() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.server.addr);
    let args = ChatArgs::from_args([
        "--url",
        &url,
        "--secret",
        SECRET,
        "--room",
        "load-tiny",
        "--clients",
        "8",
        "--senders",
        "2",
        "--rate",
        "4",
        "--duration",
        "1",
        "--settle-ms",
        "100",
    ])
    .unwrap();
    let report = chat::chat(&args).await.expect("chat run");
    assert_eq!(report.connected, 8, "{report:?}");
    assert_eq!(report.errors, 0, "{:?}", report.error_samples);
    assert!(report.sent > 0 && report.delivered > 0, "{report:?}");
    // Everyone, the sender included, receives every message.
    assert_eq!(report.delivered, report.expected, "{report:?}");
    assert_eq!(report.latency.samples, report.delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_tool_counts_exactly() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.server.addr);
    let args = VotesArgs::from_args([
        "--url",
        &url,
        "--secret",
        SECRET,
        "--room",
        "votes-tiny",
        "--clients",
        "6",
        "--questions",
        "3",
        "--settle-ms",
        "100",
    ])
    .unwrap();
    let report = chat::votes(&args).await.expect("votes run");
    assert_eq!(report.errors, 0, "{:?}", report.error_samples);
    assert_eq!(report.votes_acked, 18, "{report:?}");
    assert!(report.exact, "{:?}", report.per_question);
    assert!(
        report
            .per_question
            .iter()
            .all(|q| q.votes == 6 && q.events >= 1),
        "{:?}",
        report.per_question
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_scenario_resumes_every_session() {
    let server = TestServer::start().await;
    let url = format!("ws://{}", server.server.addr);
    let args = ChatArgs::from_args([
        "--url",
        &url,
        "--secret",
        SECRET,
        "--room",
        "resume-tiny",
        "--clients",
        "5",
        "--scenario",
        "resume",
        "--settle-ms",
        "100",
        "--resume-pause-ms",
        "200",
    ])
    .unwrap();
    let report = chat::chat(&args).await.expect("resume run");
    let resume = report.resume.expect("resume figures");
    assert_eq!(
        (resume.sessions, resume.resumed, resume.fresh),
        (5, 5, 0),
        "{:?}",
        report.error_samples
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_tool_splits_same_and_cross_node_deliveries() {
    // Two URLs naming the same server: every message still reaches everyone, and the split by
    // "node" (the URL each session used) is exact: c0 sends from node 0, c1 from node 1.
    let server = TestServer::start().await;
    let urls = format!("ws://{0},http://{0}/", server.server.addr);
    let args = ChatArgs::from_args([
        "--url",
        &urls,
        "--secret",
        SECRET,
        "--room",
        "split-tiny",
        "--clients",
        "8",
        "--senders",
        "2",
        "--rate",
        "4",
        "--duration",
        "1",
        "--settle-ms",
        "100",
    ])
    .unwrap();
    let report = chat::chat(&args).await.expect("chat run");
    assert_eq!(report.errors, 0, "{:?}", report.error_samples);
    assert_eq!(report.delivered, report.expected, "{report:?}");
    let nodes = report.nodes.expect("a split with two URLs");
    assert_eq!(nodes.connected_per_node, [4, 4]);
    assert_eq!(
        nodes.same_node.samples + nodes.cross_node.samples,
        report.delivered
    );
    assert_eq!(
        nodes.same_node.samples, nodes.cross_node.samples,
        "{nodes:?}"
    );
}
