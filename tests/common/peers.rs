//! aiortc peers (tests/peers/*.py, in the venv scripts/test makes), pinned to a loopback address.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

/// The venv's python, set up by scripts/test (CONVENE_TEST_PYTHON overrides).
pub fn python() -> PathBuf {
    let path = std::env::var_os("CONVENE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/test, which creates the venv with aiortc",
        path.display()
    );
    path
}

/// Starts an aiortc peer script; its JSON result is its last stdout line.
pub fn peer(script: &str, args: &[String]) -> tokio::process::Child {
    peer_at("127.0.0.1", script, args)
}

/// [`peer`] with its ICE pinned to `address` (a loopback address).
pub fn peer_at(address: &str, script: &str, args: &[String]) -> tokio::process::Child {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(script);
    tokio::process::Command::new(python())
        .env("CONVENE_PEER_ADDRESS", address)
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python peer starts")
}

pub async fn result(child: tokio::process::Child) -> Value {
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("peer finishes")
        .expect("peer output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "peer printed nothing; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("peer output {line}: {e}"))
}

pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// An aiortc WHIP publisher (camera and microphone) into `room` for `seconds`.
pub fn whip_publisher(http: &str, room: &str, token: &str, seconds: u32) -> tokio::process::Child {
    let (url, seconds) = (format!("{http}/whip/{room}"), seconds.to_string());
    peer(
        "publisher.py",
        &args(&["--whip", &url, "--token", token, "--duration", &seconds]),
    )
}

/// An aiortc WHEP viewer of `room` for `seconds`, with the script's further options (`extra`).
pub fn whep_viewer(
    http: &str,
    room: &str,
    token: &str,
    seconds: u32,
    extra: &[&str],
) -> tokio::process::Child {
    let (url, seconds) = (format!("{http}/whep/{room}"), seconds.to_string());
    let mut list = args(&["--whep", &url, "--token", token, "--duration", &seconds]);
    list.extend(args(extra));
    peer("subscriber.py", &list)
}
