//! The `convene` binary as an operator runs it: `serve` with environment overrides, `token`
//! minting tokens that `serve` accepts, the generated-secret join link, and SIGTERM.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::Client;
use convene_signaling::{Command, ServerMessage};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command as Process};

const BIN: &str = env!("CARGO_BIN_EXE_convene");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(port: u16, secret: Option<&str>) -> Child {
    let mut cmd = Process::new(BIN);
    cmd.arg("serve")
        .env("CONVENE_LISTEN", format!("127.0.0.1:{port}"))
        .env("CONVENE_RTC_UDP_PORT", "0")
        .env("CONVENE_RTC_TCP_PORT", "0")
        .env("CONVENE_RTC_ADVERTISE_IP", "127.0.0.1")
        .env("RUST_LOG", "info")
        // Its own durable store, never the checkout's ./data.
        .env(
            "CONVENE_DATA_DIR",
            std::env::temp_dir().join(format!("convene-cli-{}-{port}", std::process::id())),
        )
        .env_remove("CONVENE_JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(secret) = secret {
        cmd.env("CONVENE_JWT_SECRET", secret);
    }
    cmd.spawn().expect("convene serve starts")
}

/// Reads the server's log until a line contains `needle`; returns that line.
async fn log_line(child: &mut Child, needle: &str) -> String {
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(common::WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    })
    .await
    .expect("log line in time")
    .unwrap_or_else(|| panic!("server never logged {needle:?}"));
    // Keep draining so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    found
}

async fn token(secret: &str, args: &[&str]) -> (String, String) {
    let out = Process::new(BIN)
        .arg("token")
        .args(args)
        .env("CONVENE_JWT_SECRET", secret)
        .env("CONVENE_PUBLIC_URL", "http://127.0.0.1:9")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    (
        lines.next().unwrap().to_string(),
        lines.next().unwrap().to_string(),
    )
}

#[tokio::test]
async fn tokens_from_the_cli_verify_against_serve_and_sigterm_drains_sessions() {
    let port = free_port();
    let mut server = serve(port, Some("shared-secret"));
    log_line(&mut server, "convene listening").await;
    let (jwt, url) = token(
        "shared-secret",
        &[
            "--room",
            "launch",
            "--role",
            "moderator",
            "--name",
            "Mo Reyes",
            "--attr",
            "team=Knox County",
            "--ttl",
            "30m",
        ],
    )
    .await;
    assert_eq!(url, format!("http://127.0.0.1:9/?token={jwt}"));
    let mut client = Client::connect(&format!("ws://127.0.0.1:{port}/ws?token={jwt}")).await;
    match client.recv().await {
        ServerMessage::Welcome { you, .. } => {
            assert_eq!(you.name, "Mo Reyes");
            assert_eq!(
                you.attrs.get("team").map(String::as_str),
                Some("Knox County")
            );
        }
        other => panic!("{other:?}"),
    }
    client.ok(Command::Ping).await;
    // SIGTERM: the session is told to come back later, and the process exits by itself.
    let pid = server.id().unwrap().to_string();
    assert!(Process::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap()
        .success());
    assert!(matches!(
        client
            .expect(|m| matches!(m, ServerMessage::ServerShutdown { .. }))
            .await,
        ServerMessage::ServerShutdown { .. }
    ));
    let status = tokio::time::timeout(Duration::from_secs(15), server.wait())
        .await
        .expect("exits within the shutdown grace")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn without_a_secret_serve_generates_one_and_logs_a_working_host_link() {
    let port = free_port();
    let mut server = serve(port, None);
    let line = log_line(&mut server, "join room \"demo\" as host").await;
    let jwt = line
        .split("?token=")
        .nth(1)
        .expect("link has a token")
        .trim()
        .to_string();
    let mut client = Client::connect(&format!("ws://127.0.0.1:{port}/ws?token={jwt}")).await;
    match client.recv().await {
        ServerMessage::Welcome { you, snapshot, .. } => {
            assert_eq!(you.role, convene_signaling::Role::Host);
            assert_eq!(snapshot.room, "demo");
        }
        other => panic!("{other:?}"),
    }
    // `token` refuses to mint without a secret rather than print something that will not verify.
    let out = Process::new(BIN)
        .args(["token", "--room", "demo", "--role", "host", "--name", "H"])
        .env_remove("CONVENE_JWT_SECRET")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CONVENE_JWT_SECRET"));
}

#[tokio::test]
async fn bad_arguments_and_environment_are_reported() {
    let out = Process::new(BIN)
        .args(["token", "--room", "r", "--role", "king", "--name", "N"])
        .env("CONVENE_JWT_SECRET", "s")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
    // A token the server would refuse is not printed.
    let out = Process::new(BIN)
        .args([
            "token",
            "--room",
            "r",
            "--role",
            "host",
            "--name",
            "N\nERROR forged",
        ])
        .env("CONVENE_JWT_SECRET", "s")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("control characters"));
    let out = Process::new(BIN)
        .arg("serve")
        .env("CONVENE_LISTEN", "not-an-address")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CONVENE_LISTEN"));
    // A certificate that cannot be read stops `serve` with its path, before anything listens.
    let out = Process::new(BIN)
        .arg("serve")
        .env("CONVENE_LISTEN", "127.0.0.1:0")
        .env("CONVENE_RTC_UDP_PORT", "0")
        .env("CONVENE_RTC_TCP_PORT", "0")
        .env("CONVENE_TLS_CERT", "/nonexistent/convene-cert.pem")
        .env("CONVENE_TLS_KEY", "/nonexistent/convene-key.pem")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/convene-cert.pem"), "{err}");
}
