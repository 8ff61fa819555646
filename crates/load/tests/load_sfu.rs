//! `convene load sfu` in-process against a real server: one synthetic WHIP publisher and
//! WHEP subscribers. Needs the server's `/whip/{room}` and `/whep/{room}`.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{TestServer, SECRET};
use convene_load::sfu::{measure, SfuArgs, SfuReport, Transport};

async fn run(t: &TestServer, room: &str, subscribers: usize, drop_every: u64) -> SfuReport {
    run_over(t, room, subscribers, drop_every, Transport::Udp).await
}

async fn run_over(
    t: &TestServer,
    room: &str,
    subscribers: usize,
    drop_every: u64,
    transport: Transport,
) -> SfuReport {
    let args = SfuArgs {
        url: t.http(),
        room: room.into(),
        subscribers,
        publish: Some(convene_load::sfu::Publish::Synthetic),
        duration: 3,
        token: None,
        secret: Some(SECRET.into()),
        bitrate_kbps: 1800,
        connect_concurrency: 16,
        connect_timeout: 10,
        server_pid: None,
        json: true,
        drop_every,
        transport,
    };
    tokio::time::timeout(Duration::from_secs(20), measure(args))
        .await
        .expect("load run ends in time")
        .expect("load run succeeds")
}

fn metric(report: &SfuReport, name: &str) -> f64 {
    report.json["server_metrics_delta"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("{name} missing: {}", report.json))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_publisher_reaches_three_subscribers_on_the_direct_path() {
    let t = TestServer::start().await;
    let report = run(&t, "load-smoke", 3, 0).await;
    assert_eq!(report.connected, 3, "{}", report.json);
    assert!(report.packets > 0, "{}", report.json);
    assert!(report.loss_pct < 5.0, "{}", report.json);
    // WHEP viewers run no bandwidth estimation: their packets skip the engine, all but
    // one per stream per second (sender reports), and leave in sendmmsg batches.
    let forwarded = metric(&report, "convene_sfu_frames_forwarded_total");
    let direct = metric(&report, "convene_sfu_packets_direct_total");
    assert!(direct >= 0.9 * forwarded, "{direct} of {forwarded} direct");
    let datagrams = metric(&report, "convene_sfu_datagrams_out_total");
    let calls = metric(&report, "convene_sfu_send_calls_total");
    assert!(
        calls < datagrams,
        "{calls} send calls for {datagrams} datagrams"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_video_is_retransmitted_on_nack() {
    let t = TestServer::start().await;
    // Every 20th RTP datagram is lost at each subscriber (5%).
    let report = run(&t, "lossy", 2, 20).await;
    assert_eq!(report.connected, 2, "{}", report.json);
    let retransmits = metric(&report, "convene_sfu_retransmits_total");
    assert!(retransmits > 0.0, "no retransmissions: {}", report.json);
    // Video (~80% of packets) comes back; audio is not retransmitted: what remains
    // lost is about 5% of the audio share, well under the 5% dropped.
    assert!(report.loss_pct < 2.5, "{}", report.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_over_ice_tcp_get_the_stream_on_the_direct_path() {
    let t = TestServer::start().await;
    let report = run_over(&t, "over-tcp", 3, 0, Transport::Tcp).await;
    assert_eq!(report.connected, 3, "{}", report.json);
    assert!(report.loss_pct < 1.0, "{}", report.json);
    // Every forwarded packet went out as an RFC 4571 frame, nearly all protected by the
    // worker itself (the direct path) rather than polled out of the engine.
    let forwarded = metric(&report, "convene_sfu_frames_forwarded_total");
    let tcp = metric(&report, "convene_sfu_tcp_packets_out_total");
    assert!(
        forwarded > 0.0 && tcp >= forwarded,
        "{tcp} TCP packets for {forwarded} forwarded"
    );
    let direct = metric(&report, "convene_sfu_packets_direct_total");
    assert!(direct >= 0.9 * forwarded, "{direct} of {forwarded} direct");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_over_ice_tcp_are_answered_on_the_connection() {
    let t = TestServer::start().await;
    let report = run_over(&t, "lossy-tcp", 2, 20, Transport::Tcp).await;
    assert_eq!(report.connected, 2, "{}", report.json);
    let retransmits = metric(&report, "convene_sfu_retransmits_total");
    assert!(retransmits > 0.0, "no retransmissions: {}", report.json);
    assert!(report.loss_pct < 2.5, "{}", report.json);
}

/// ICE-TCP on the HTTP port itself (`rtc.ice_tcp_on_listen`, no TCP media port of its own):
/// the subscribers' media connections and their WHEP requests share the one port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_shares_the_http_port() {
    let t = TestServer::start_with(|c| {
        c.rtc.ice_tcp = false;
        c.rtc.ice_tcp_on_listen = true;
    })
    .await;
    assert_eq!(t.server.state.media.as_ref().unwrap().sfu.tcp_addr(), None);
    let report = run_over(&t, "shared-port", 3, 0, Transport::Tcp).await;
    assert_eq!(report.connected, 3, "{}", report.json);
    assert!(report.loss_pct < 1.0, "{}", report.json);
    let tcp = metric(&report, "convene_sfu_tcp_packets_out_total");
    assert!(tcp > 0.0, "{}", report.json);
    // HTTP on the same port still answers.
    let (status, body) = common::http_get(&format!("{}/healthz", t.http()), None, &[]).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
}
