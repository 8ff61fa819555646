//! Wires the embedded TURN relay into a node: its settings from the configuration, the SFU's media addresses as its only peers, and the URLs `welcome` and WHIP/WHEP advertise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use super::server::{TurnLimits, TurnServer, TurnSettings};
use super::Turn;
use crate::config::Config;
use crate::media::Media;

/// The credentials to hand out (`None`: no relay), and the embedded relay when it runs.
/// `tls`: the server's certificate, for TURN over TLS.
pub async fn start(
    config: &Config,
    media: Option<&Media>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<(Option<Turn>, Option<Arc<TurnServer>>)> {
    let t = &config.rtc.turn;
    let e = &t.embedded;
    let Some(media) = media.filter(|_| e.enabled) else {
        if e.enabled {
            tracing::error!("turn: the embedded relay needs the media engine, which did not start");
        }
        return Ok((Turn::new(&t.urls, &t.secret, t.ttl_s), None));
    };
    let secret = if t.secret.is_empty() {
        // Only this node mints and checks them, so a secret of the run's own does.
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    } else {
        t.secret.clone()
    };
    let tls = tls.filter(|_| e.tcp);
    let sfu_port = media.sfu.local_addr().port();
    let sfu: Vec<SocketAddr> = media
        .advertise_ips
        .iter()
        .filter(|ip| ip.is_ipv4() == e.relay_ip.is_ipv4())
        .map(|ip| SocketAddr::new(*ip, sfu_port))
        .collect();
    if sfu.is_empty() {
        tracing::warn!(relay_ip = %e.relay_ip, advertise = ?media.advertise_ips, "turn: no SFU address of the relay's family: every permission will be refused");
    }
    let server = TurnServer::start(TurnSettings {
        listen_ip: e.listen_ip,
        udp_port: e.udp.then_some(e.udp_port),
        tcp_port: e.tcp.then_some(e.tcp_port),
        tls: tls.clone(),
        relay_ip: e.relay_ip,
        relay_ports: (e.relay_min_port > 0 && e.relay_max_port >= e.relay_min_port)
            .then_some((e.relay_min_port, e.relay_max_port)),
        realm: e.realm.clone(),
        secret: secret.clone(),
        sfu,
        limits: TurnLimits {
            max_allocations: e.max_allocations,
            max_allocations_per_identity: e.max_allocations_per_identity.max(1),
            max_lifetime: Duration::from_secs(e.max_lifetime_s.max(60)),
        },
        max_connections_per_ip: e.max_connections_per_ip,
    })
    .await?;
    let host = url_host(config);
    let mut urls = Vec::new();
    if let Some(udp) = server.udp_addr() {
        urls.push(format!("turn:{host}:{}?transport=udp", udp.port()));
    }
    if let Some(tcp) = server.tcp_addr() {
        let scheme = if tls.is_some() { "turns" } else { "turn" };
        urls.push(format!("{scheme}:{host}:{}?transport=tcp", tcp.port()));
    }
    urls.extend(t.urls.iter().cloned());
    tracing::info!(?urls, "turn: advertising the embedded relay");
    Ok((Turn::new(&urls, &secret, t.ttl_s), Some(Arc::new(server))))
}

/// `rtc.turn.embedded.host`, else the host of the URL people join at.
fn url_host(config: &Config) -> String {
    let e = &config.rtc.turn.embedded;
    if !e.host.is_empty() {
        return e.host.clone();
    }
    let url = config.advertised_url(config.server.listen);
    let host = host_of(&url);
    if host == "localhost" {
        tracing::warn!("turn: advertising the relay as localhost; set rtc.turn.embedded.host (CONVENE_TURN_HOST) or CONVENE_PUBLIC_URL for remote clients");
    }
    host
}

/// The host of `scheme://host[:port][/path]`, brackets kept for IPv6.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((h, port))
            if port.chars().all(|c| c.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            h.to_string()
        }
        _ => authority.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_urls() {
        for (url, host) in [
            ("https://convene.example.org", "convene.example.org"),
            ("https://convene.example.org:8443/x", "convene.example.org"),
            ("http://127.0.0.1:8080", "127.0.0.1"),
            ("http://[::1]:8080", "[::1]"),
            ("http://[2001:db8::1]", "[2001:db8::1]"),
        ] {
            assert_eq!(super::host_of(url), host, "{url}");
        }
    }
}
