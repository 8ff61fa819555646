//! Redis work over a load run's window, from `INFO stats` and `INFO commandstats` (`--redis`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Redis counters at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisSnapshot {
    pub commands: u64,
    pub net_input_bytes: u64,
    pub net_output_bytes: u64,
    /// Calls per command name (`cmdstat_<name>`).
    pub calls: BTreeMap<String, u64>,
}

/// What Redis did between two snapshots, less the cost of reading `INFO` itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedisFigures {
    pub commands: u64,
    pub net_input_bytes: u64,
    pub net_output_bytes: u64,
    /// Calls per command, `info` left out.
    pub calls: BTreeMap<String, u64>,
}

impl RedisFigures {
    /// `base` and `before` are taken back to back: their difference is one snapshot's own cost.
    pub fn between(
        base: &RedisSnapshot,
        before: &RedisSnapshot,
        after: &RedisSnapshot,
    ) -> RedisFigures {
        let own = |f: fn(&RedisSnapshot) -> u64| f(before).saturating_sub(f(base));
        let delta = |f: fn(&RedisSnapshot) -> u64| {
            f(after).saturating_sub(f(before)).saturating_sub(own(f))
        };
        RedisFigures {
            commands: delta(|s| s.commands),
            net_input_bytes: delta(|s| s.net_input_bytes),
            net_output_bytes: delta(|s| s.net_output_bytes),
            calls: after
                .calls
                .iter()
                .filter(|(name, _)| name.as_str() != "info")
                .map(|(name, n)| {
                    let was = before.calls.get(name).copied().unwrap_or(0);
                    (name.clone(), n.saturating_sub(was))
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// `host:port` from `redis://host:port[/db]` or `host:port`.
pub fn redis_addr(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("redis://").unwrap_or(url);
    let addr = rest.split('/').next().unwrap_or_default();
    if addr.is_empty() || !addr.contains(':') || addr.contains('@') {
        return Err(format!(
            "--redis must be host:port or redis://host:port (no password): {url:?}"
        ));
    }
    Ok(addr.to_string())
}

/// Reads the counters (one connection, two inline `INFO` commands).
pub async fn snapshot(addr: &str) -> Result<RedisSnapshot, String> {
    let fut = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("redis {addr}: {e}"))?;
        s.write_all(b"INFO stats\r\nINFO commandstats\r\n")
            .await
            .map_err(|e| format!("redis {addr}: {e}"))?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        let mut text = String::new();
        loop {
            let n = s
                .read(&mut buf)
                .await
                .map_err(|e| format!("redis {addr}: {e}"))?;
            if n == 0 {
                return Err(format!("redis {addr}: closed mid-reply"));
            }
            raw.extend_from_slice(&buf[..n]);
            if let Some(replies) = bulk_replies(&raw, 2)? {
                for r in replies {
                    text.push_str(&r);
                }
                break;
            }
        }
        Ok(parse_info(&text))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| format!("redis {addr}: no INFO reply in 5 s"))?
}

/// `count` RESP bulk strings from the start of `raw`, or `None` while incomplete.
fn bulk_replies(raw: &[u8], count: usize) -> Result<Option<Vec<String>>, String> {
    let mut out = Vec::with_capacity(count);
    let mut at = 0;
    while out.len() < count {
        let Some(eol) = raw[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let head = std::str::from_utf8(&raw[at..at + eol]).map_err(|_| "redis: bad reply")?;
        let len: usize = head
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("redis: unexpected reply {head:?}"))?;
        let start = at + eol + 2;
        if raw.len() < start + len + 2 {
            return Ok(None);
        }
        out.push(String::from_utf8_lossy(&raw[start..start + len]).into_owned());
        at = start + len + 2;
    }
    Ok(Some(out))
}

fn parse_info(text: &str) -> RedisSnapshot {
    let mut snap = RedisSnapshot::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim_end().split_once(':') else {
            continue;
        };
        match key {
            "total_commands_processed" => snap.commands = value.parse().unwrap_or(0),
            "total_net_input_bytes" => snap.net_input_bytes = value.parse().unwrap_or(0),
            "total_net_output_bytes" => snap.net_output_bytes = value.parse().unwrap_or(0),
            _ => {
                if let Some(name) = key.strip_prefix("cmdstat_") {
                    let calls = value
                        .split(',')
                        .find_map(|kv| kv.strip_prefix("calls="))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    snap.calls.insert(name.to_string(), calls);
                }
            }
        }
    }
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_replies_parse() {
        let stats = "# Stats\r\ntotal_commands_processed:120\r\ntotal_net_input_bytes:5000\r\ntotal_net_output_bytes:9000\r\n";
        let cmds = "# Commandstats\r\ncmdstat_xadd:calls=7,usec=70,usec_per_call=10.00\r\ncmdstat_info:calls=4,usec=1\r\n";
        let raw = format!(
            "${}\r\n{stats}\r\n${}\r\n{cmds}\r\n",
            stats.len(),
            cmds.len()
        );
        assert_eq!(bulk_replies(&raw.as_bytes()[..20], 2).unwrap(), None);
        let replies = bulk_replies(raw.as_bytes(), 2).unwrap().unwrap();
        let snap = parse_info(&replies.concat());
        assert_eq!(
            (snap.commands, snap.net_input_bytes, snap.net_output_bytes),
            (120, 5000, 9000)
        );
        assert_eq!(snap.calls["xadd"], 7);
        assert!(bulk_replies(b"-ERR nope\r\n", 1).is_err());
    }

    #[test]
    fn figures_leave_out_the_cost_of_reading_them() {
        let snap = |commands, bytes, xadd, info| RedisSnapshot {
            commands,
            net_input_bytes: bytes,
            net_output_bytes: bytes,
            calls: [("xadd".to_string(), xadd), ("info".to_string(), info)].into(),
        };
        let f = RedisFigures::between(
            &snap(100, 1000, 5, 2),
            &snap(102, 1100, 5, 4),
            &snap(152, 2100, 40, 6),
        );
        assert_eq!(
            (f.commands, f.net_input_bytes, f.net_output_bytes),
            (48, 900, 900)
        );
        assert_eq!(f.calls, [("xadd".to_string(), 35)].into());
    }

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            redis_addr("redis://127.0.0.1:6379/0").unwrap(),
            "127.0.0.1:6379"
        );
        assert_eq!(redis_addr("127.0.0.1:1").unwrap(), "127.0.0.1:1");
        assert!(redis_addr("redis://:pw@h:1").is_err());
        assert!(redis_addr("localhost").is_err());
    }
}
