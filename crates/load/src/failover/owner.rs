//! Finding the room's owner node through `GET /api/v1/nodes`, and killing it.

use std::time::Duration;

use tokio::time::Instant;

use crate::sfu::http::http;
use crate::LoadError;

/// How long to wait for the room to show up in some node's `rooms_owned`.
const OWNER_LOOKUP: Duration = Duration::from_secs(10);

/// `host:port` of a `ws://` or `http://` base URL.
fn host_of(base: &str) -> &str {
    base.split_once("://")
        .map_or(base, |(_, rest)| rest)
        .trim_end_matches('/')
}

/// The node (index into `bases`) whose `rooms_owned` lists `room`, and its id.
pub(super) async fn find_owner(
    bases: &[String],
    api_key: &str,
    room: &str,
) -> Option<(usize, String)> {
    #[derive(serde::Deserialize)]
    struct Nodes {
        nodes: Vec<Node>,
    }
    #[derive(serde::Deserialize)]
    struct Node {
        id: String,
        http: String,
        #[serde(default)]
        rooms_owned: Vec<String>,
    }
    let deadline = Instant::now() + OWNER_LOOKUP;
    let auth = format!("Bearer {api_key}");
    loop {
        for base in bases {
            let Ok(resp) = http(
                host_of(base),
                "GET",
                "/api/v1/nodes",
                &[("Authorization", &auth)],
                "",
            )
            .await
            else {
                continue;
            };
            match resp.status {
                200 => {}
                // No cluster API on this server, or a wrong key: waiting will not help.
                401 | 403 | 404 => {
                    tracing::warn!(status = resp.status, "GET /api/v1/nodes refused");
                    return None;
                }
                _ => continue,
            }
            let Ok(nodes) = serde_json::from_str::<Nodes>(&resp.body) else {
                continue;
            };
            for node in nodes.nodes {
                if node.rooms_owned.iter().any(|r| r == room) {
                    let at = bases
                        .iter()
                        .position(|b| host_of(b) == host_of(&node.http))?;
                    return Some((at, node.id));
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) fn kill(pid: u32) -> Result<(), LoadError> {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    if !status.success() {
        return Err(LoadError::Setup(format!("kill -9 {pid} failed: {status}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_matched_across_schemes() {
        assert_eq!(host_of("ws://127.0.0.1:9"), "127.0.0.1:9");
        assert_eq!(host_of("http://127.0.0.1:9/"), "127.0.0.1:9");
    }
}
