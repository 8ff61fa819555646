//! Who may open a session from where: the client's address (behind trusted proxies), and per-address join rates and concurrent-session caps on `/ws`.
//!
//! Schools and districts sit behind one NAT, so the defaults are generous; they stop one
//! address (a script with a single token or many) from taking a node's or a room's seats.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};

use super::ApiError;
use crate::config::ServerConfig;

/// The TCP peer of a request, put in its extensions by the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// The address a request comes from: the peer, or, when the peer is a trusted proxy, the
/// rightmost `X-Forwarded-For` entry that is not one (entries further left are the client's
/// own claims and could be forged).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip,
            // Garbage from a proxy we trust: fall back to the proxy itself.
            Err(_) => return peer,
        }
    }
    peer
}

/// Addresses this many apart are tracked separately; beyond it idle ones are forgotten.
const MAX_TRACKED: usize = 100_000;

struct PerAddr {
    tokens: f64,
    refilled: Instant,
    live: usize,
}

/// Per-address join buckets and live-session counts on this node.
#[derive(Clone)]
pub struct Admission {
    per_addr: Arc<Mutex<HashMap<IpAddr, PerAddr>>>,
    per_minute: f64,
    burst: f64,
    max_live: usize,
    exempt: Arc<Vec<IpAddr>>,
}

/// Holds one live session's place in its address's count.
pub struct AdmissionGuard {
    admission: Admission,
    ip: Option<IpAddr>,
}

impl Admission {
    pub fn new(server: &ServerConfig) -> Admission {
        Admission {
            per_addr: Default::default(),
            per_minute: server.joins_per_ip_per_minute as f64,
            burst: server.join_burst_per_ip.max(1) as f64,
            max_live: server.max_sessions_per_ip,
            exempt: Arc::new(server.admission_exempt.clone()),
        }
    }

    /// A guard that counts nothing: a request with no known peer (not from the accept loop).
    pub fn unlimited(&self) -> AdmissionGuard {
        AdmissionGuard {
            admission: self.clone(),
            ip: None,
        }
    }

    /// One join from `ip`: refused with 429 (join rate) or 503 (live sessions) before the
    /// upgrade; otherwise a guard that counts the session while it lives.
    pub fn admit(&self, ip: IpAddr) -> Result<AdmissionGuard, ApiError> {
        if self.exempt.contains(&ip) {
            return Ok(AdmissionGuard {
                admission: self.clone(),
                ip: None,
            });
        }
        let now = Instant::now();
        let mut map = self.per_addr.lock().expect("admission lock");
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            self.forget_idle(&mut map, now);
        }
        let entry = map.entry(ip).or_insert(PerAddr {
            tokens: self.burst,
            refilled: now,
            live: 0,
        });
        if self.max_live > 0 && entry.live >= self.max_live {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                format!(
                    "too many sessions from your address ({}); close some and retry",
                    self.max_live
                ),
            ));
        }
        if self.per_minute > 0.0 {
            let elapsed = now.duration_since(entry.refilled).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * self.per_minute / 60.0).min(self.burst);
            entry.refilled = now;
            if entry.tokens < 1.0 {
                let wait_s = ((1.0 - entry.tokens) * 60.0 / self.per_minute).ceil();
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many joins from your address; retry in {wait_s} s"),
                ));
            }
            entry.tokens -= 1.0;
        }
        entry.live += 1;
        Ok(AdmissionGuard {
            admission: self.clone(),
            ip: Some(ip),
        })
    }

    /// Drops addresses with no live session and a full bucket: they hold nothing.
    fn forget_idle(&self, map: &mut HashMap<IpAddr, PerAddr>, now: Instant) {
        let (per_minute, burst) = (self.per_minute, self.burst);
        map.retain(|_, e| {
            let refill = now.duration_since(e.refilled).as_secs_f64() * per_minute / 60.0;
            e.live > 0 || e.tokens + refill < burst
        });
    }
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut map = self.admission.per_addr.lock().expect("admission lock");
        if let Some(entry) = map.get_mut(&ip) {
            entry.live = entry.live.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 198.51.100.7, 10.0.0.1".parse().unwrap(),
        );
        let untrusted: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(untrusted, &headers, &[proxy]), untrusted);
        assert_eq!(
            client_ip(proxy, &headers, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        headers.insert("x-forwarded-for", "not an address".parse().unwrap());
        assert_eq!(client_ip(proxy, &headers, &[proxy]), proxy);
    }
}
