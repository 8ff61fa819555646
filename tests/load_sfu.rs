//! `convene load sfu` in-process against a real server: one synthetic WHIP publisher,
//! three WHEP subscribers, three seconds. Needs the server's `/whip/{room}` and `/whep/{room}`.

mod common;

use std::time::Duration;

use common::{TestServer, SECRET};
use convene::load::sfu::{measure, SfuArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_publisher_reaches_three_subscribers() {
    let t = TestServer::start().await;
    let args = SfuArgs {
        url: t.http(),
        room: "load-smoke".into(),
        subscribers: 3,
        publish: Some(convene::load::sfu::Publish::Synthetic),
        duration: 3,
        token: None,
        secret: Some(SECRET.into()),
        bitrate_kbps: 1800,
        connect_concurrency: 16,
        connect_timeout: 10,
        server_pid: None,
        json: true,
    };
    let report = tokio::time::timeout(Duration::from_secs(20), measure(args))
        .await
        .expect("load run ends in time")
        .expect("load run succeeds");
    assert_eq!(report.connected, 3, "{}", report.json);
    assert!(report.packets > 0, "{}", report.json);
    assert!(report.loss_pct < 5.0, "{}", report.json);
}
