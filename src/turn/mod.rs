//! TURN credentials: short-lived username/password pairs for the configured relay, in the shared-secret scheme coturn checks (`use-auth-secret`).
//!
//! The relay is the embedded one (`server.rs`, `relay.rs`: it reaches only the SFU;
//! docs/decisions/0007-embedded-turn.md) or coturn beside Convene (0005). Both sides know one
//! secret. The username is `<expiry unix time>:<identity>` and the password is
//! `base64(HMAC-SHA1(secret, username))`, so the relay can check a credential, and see it
//! expire, without asking Convene. Clients get them in `welcome` and, for WHIP/WHEP, in
//! `Link: <turn:...>; rel="ice-server"` headers (RFC 9725 section 4.4).

pub mod node;
mod relay;
pub mod server;
pub mod stun;

use aws_lc_rs::hmac;
use base64::Engine;
use convene_signaling::IceServer;

/// The relay's URLs and the secret shared with it.
#[derive(Clone)]
pub struct Turn {
    urls: Vec<String>,
    key: hmac::Key,
    ttl_s: u64,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Turn")
            .field("urls", &self.urls)
            .field("ttl_s", &self.ttl_s)
            .finish_non_exhaustive()
    }
}

impl Turn {
    /// `None` when no relay is configured (no URLs or no secret).
    pub fn new(urls: &[String], secret: &str, ttl_s: u64) -> Option<Turn> {
        if urls.is_empty() || secret.is_empty() {
            return None;
        }
        Some(Turn {
            urls: urls.to_vec(),
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes()),
            ttl_s,
        })
    }

    /// When credentials handed out at `now_unix` expire: after the ttl, and never after the
    /// token they were given for (`token_exp`), so they cannot outlive the right to join.
    pub fn expiry(&self, now_unix: u64, token_exp: Option<u64>) -> u64 {
        let by_ttl = now_unix + self.ttl_s;
        token_exp.map_or(by_ttl, |exp| exp.min(by_ttl))
    }

    /// Credentials for `identity`, valid until `expiry_unix` (see [`Turn::expiry`]).
    pub fn ice_server(&self, identity: &str, expiry_unix: u64) -> IceServer {
        // A colon would split the username where the relay reads the expiry.
        let who: String = identity
            .chars()
            .map(|c| if c == ':' { '_' } else { c })
            .collect();
        let username = format!("{expiry_unix}:{who}");
        let tag = hmac::sign(&self.key, username.as_bytes());
        IceServer {
            urls: self.urls.clone(),
            username: Some(username),
            credential: Some(base64::engine::general_purpose::STANDARD.encode(tag.as_ref())),
        }
    }
}

/// One RFC 9725 section 4.4 `Link` header value per URL.
pub fn link_headers(server: &IceServer) -> Vec<String> {
    server
        .urls
        .iter()
        .map(|url| {
            let mut v = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (&server.username, &server.credential) {
                v.push_str(&format!(
                    "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                    quoted(u),
                    quoted(c)
                ));
            }
            v
        })
        .collect()
}

/// A quoted-string body (RFC 8288): backslash-escape `"` and `\`.
fn quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_is_coturns_rest_scheme() {
        let turn = Turn::new(&["turn:relay.example:3478".into()], "north-star", 3600).unwrap();
        let s = turn.ice_server("ana", turn.expiry(1_700_000_000 - 3600, None));
        assert_eq!(s.username.as_deref(), Some("1700000000:ana"));
        // Python: base64(hmac.new(b"north-star", b"1700000000:ana", sha1).digest())
        assert_eq!(
            s.credential.as_deref(),
            Some("pv6mAM+FAegcGUlixgD9So3Zjag=")
        );
        assert_eq!(
            turn.ice_server("a:b", turn.expiry(0, None))
                .username
                .as_deref(),
            Some("3600:a_b")
        );
        // Never after the token's own expiry.
        assert_eq!(turn.expiry(1000, Some(1060)), 1060);
        assert_eq!(turn.expiry(1000, Some(99_999)), 4600);
        assert!(Turn::new(&[], "s", 1).is_none());
        assert!(Turn::new(&["turn:x".into()], "", 1).is_none());
        assert!(!format!("{turn:?}").contains("north-star"));
    }

    #[test]
    fn link_header_per_rfc_9725() {
        let s = IceServer {
            urls: vec![
                "turn:relay.example:3478?transport=udp".into(),
                "turns:relay.example:443?transport=tcp".into(),
            ],
            username: Some("1:a\"b".into()),
            credential: Some("x=".into()),
        };
        assert_eq!(
            link_headers(&s),
            [
                r#"<turn:relay.example:3478?transport=udp>; rel="ice-server"; username="1:a\"b"; credential="x="; credential-type="password""#,
                r#"<turns:relay.example:443?transport=tcp>; rel="ice-server"; username="1:a\"b"; credential="x="; credential-type="password""#,
            ]
        );
    }
}
