//! `convene-load failover` against real `convene serve` processes: it finds a node to kill, kills
//! it with SIGKILL, and every session of that node comes back on the survivor.

use std::process::Stdio;
use std::time::Duration;

use convene_load::failover::{self, FailoverArgs};
use tokio::process::{Child, Command};

/// The `convene` server binary beside this test's own directory (`target/<profile>/`), built
/// first when this crate's tests run alone.
fn server_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    let bin = profile_dir.join("convene");
    if !bin.exists() {
        let built = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "convene", "--bin", "convene"])
            .status()
            .expect("cargo runs");
        assert!(built.success(), "cargo build --bin convene failed");
    }
    bin
}
const SECRET: &str = "failover-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn serve(port: u16) -> Child {
    let child = Command::new(server_binary())
        .arg("serve")
        .env("CONVENE_LISTEN", format!("127.0.0.1:{port}"))
        .env("CONVENE_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("CONVENE_JWT_SECRET", SECRET)
        .env("CONVENE_API_KEY", "failover-key")
        .env("CONVENE_RTC_UDP_PORT", "0")
        .env("CONVENE_RTC_TCP_PORT", "0")
        .env("CONVENE_RTC_ADVERTISE_IP", "127.0.0.1")
        .env_remove("CONVENE_REDIS_URL")
        // Each node its own durable store, never a shared ./data.
        .env(
            "CONVENE_DATA_DIR",
            std::env::temp_dir().join(format!("convene-failover-{}-{port}", std::process::id())),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("convene serve starts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server on {port} did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_kills_a_node_and_its_sessions_come_back() {
    // Two single nodes (no Redis): the tool kills one, and its sessions reconnect to the other.
    // Without a shared room they get a fresh welcome there; in a cluster they resume.
    let ports = [free_port(), free_port()];
    let mut nodes = Vec::new();
    for port in ports {
        nodes.push(serve(port).await);
    }
    let pids: Vec<String> = nodes.iter().map(|c| c.id().unwrap().to_string()).collect();
    let urls = format!("ws://127.0.0.1:{},ws://127.0.0.1:{}", ports[0], ports[1]);
    let args = FailoverArgs::from_args([
        "--url",
        &urls,
        "--pids",
        &pids.join(","),
        "--api-key",
        "failover-key",
        "--secret",
        SECRET,
        "--room",
        "failover-tiny",
        "--clients",
        "6",
        "--rate",
        "4",
        "--before",
        "0.5",
        "--after",
        "0.5",
        "--timeout",
        "10",
        "--settle-ms",
        "100",
    ])
    .unwrap();
    let report = failover::failover(&args).await.expect("failover run");
    let killed = nodes[report.owner]
        .wait()
        .await
        .expect("the killed node exits");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed),
        Some(9)
    );
    assert_eq!(report.connected, 6, "{report:?}");
    // Sessions 0, 2, 4 or 1, 3, 5 were on the killed node.
    assert_eq!(report.dropped, 3, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(report.resumed + report.fresh, 3, "{report:?}");
    assert!(report.all_resumed_ms.is_some(), "{report:?}");
    assert!(
        report.acked > 0 && report.first_ack_ms.is_some(),
        "{report:?}"
    );
    assert_eq!(report.unacked, 0, "{report:?}");
    // The survivor's own sessions saw every acknowledged message once, in order.
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(report.receivers_checked >= 3, "{report:?}");
    assert_eq!(
        (report.lost_acked, report.duplicates, report.seq_regressions),
        (0, 0, 0),
        "{report:?}"
    );
}
