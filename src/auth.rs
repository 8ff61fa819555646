//! Access tokens: HS256 JWTs naming who someone is, which room they may join and in what role.

use std::collections::BTreeMap;
use std::time::Duration;

use convene_signaling::Role;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Identity: stable across reconnects and devices.
    pub sub: String,
    pub name: String,
    pub room: String,
    pub role: Role,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
    /// Not valid before this Unix time (checked with the same leeway as `exp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The token's id: what revoking it names. Minted tokens always have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing access token")]
    Missing,
    #[error("access token has expired")]
    Expired,
    #[error("access token is not valid yet (nbf)")]
    NotYetValid,
    #[error("access token is not valid: {0}")]
    Invalid(String),
    #[error("access token is for room {token_room:?}, not {requested:?}")]
    WrongRoom {
        token_room: String,
        requested: String,
    },
}

/// Attributes per token, and characters per attribute key and value: they travel in every
/// `welcome`. (Characters, as JSON Schema counts them, so the OpenAPI document can say it.)
pub const MAX_ATTRS: usize = 16;
pub const MAX_ATTR_KEY_CHARS: usize = 64;
pub const MAX_ATTR_VALUE_CHARS: usize = 256;
/// All attribute keys and values together, in UTF-8 bytes.
pub const MAX_ATTRS_BYTES: usize = 8192;
/// Characters in a display name a person chooses (`/ws?name=`, an audience link's exchange).
pub const MAX_CHOSEN_NAME_CHARS: usize = 100;

/// Characters that reorder or hide the text around them (bidi embeddings, overrides and
/// isolates, marks): a name could then read as another's, or push a role label into place.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Control characters (multi-line logs, terminal escapes) or bidi controls.
pub fn has_unsafe_chars(text: &str) -> bool {
    text.chars().any(|c| c.is_control() || is_bidi_control(c))
}

/// Words that, in brackets in a name, would pass for a role badge ("Ana (Host)").
const ROLE_WORDS: &[&str] = &[
    "host",
    "moderator",
    "presenter",
    "organizer",
    "organiser",
    "admin",
    "staff",
    "speaker",
    "mod",
];

/// A display name someone gives themselves: 1-100 characters, no control or bidi
/// characters, and no bracketed role word (the page shows roles from the role, and a
/// chosen name must not claim one). Returns the trimmed name or the reason.
pub fn check_chosen_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_CHOSEN_NAME_CHARS {
        return Err(format!(
            "a display name must be 1-{MAX_CHOSEN_NAME_CHARS} characters"
        ));
    }
    if has_unsafe_chars(name) {
        return Err("a display name must not contain control or bidi characters".into());
    }
    let lower = name.to_lowercase();
    let words = lower.split(|c: char| !c.is_alphanumeric());
    let bracketed = lower.contains(['(', '[', '{', '<', '|', '-', ':']);
    if bracketed && words.into_iter().any(|w| ROLE_WORDS.contains(&w)) {
        return Err(
            "a display name must not claim a role such as (Host) or (Moderator): roles are shown by the page".into(),
        );
    }
    Ok(name.to_string())
}

impl Claims {
    /// Sizes and characters a token's claims must keep to; the reason otherwise. Control
    /// characters are refused: an identity or name is shown and logged, never multi-line.
    pub fn check(&self) -> Result<(), String> {
        fn text(what: &str, value: &str, max: usize) -> Result<(), String> {
            if value.is_empty() || value.chars().count() > max {
                return Err(format!("{what} must be 1-{max} characters"));
            }
            if has_unsafe_chars(value) {
                return Err(format!(
                    "{what} must not contain control characters (nor bidi controls)"
                ));
            }
            Ok(())
        }
        text("sub", &self.sub, 200)?;
        // An invite may leave the name to the person joining (`/ws?name=`, checked there).
        if !self.name.is_empty() {
            text("name", &self.name, 200)?;
        }
        text("room", &self.room, 200)?;
        if self.attrs.len() > MAX_ATTRS {
            return Err(format!("at most {MAX_ATTRS} attrs"));
        }
        for (key, value) in &self.attrs {
            text("an attr key", key, MAX_ATTR_KEY_CHARS)?;
            if value.chars().count() > MAX_ATTR_VALUE_CHARS {
                return Err(format!(
                    "attr {key:?} must be at most {MAX_ATTR_VALUE_CHARS} characters"
                ));
            }
            if has_unsafe_chars(value) {
                return Err(format!(
                    "attr {key:?} must not contain control characters (nor bidi controls)"
                ));
            }
        }
        let bytes: usize = self.attrs.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > MAX_ATTRS_BYTES {
            return Err(format!(
                "attrs must be at most {MAX_ATTRS_BYTES} bytes in all"
            ));
        }
        Ok(())
    }
}

/// An audience link's claims: one link for a whole webcast audience. It names no one and is
/// never an access token (it has no `sub`, so [`TokenKeys::verify`] refuses it): each person who
/// opens it exchanges it, with their name, for an access token of a fresh identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkClaims {
    /// The link's id: what revoking it names.
    pub link: String,
    pub room: String,
    /// The role of everyone it admits.
    pub role: Role,
    pub exp: u64,
    /// How many people it may admit.
    pub max_people: u32,
}

/// Signs and verifies tokens with one HS256 secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

/// Unix time in microseconds: cross-node latency on one clock (the cluster's bus metric).
pub use convene_core::time::{unix_now, unix_now_ms, unix_now_us};

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    pub fn mint(&self, claims: &Claims) -> String {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// A token for `identity` valid for `ttl` from now.
    pub fn mint_for(
        &self,
        room: &str,
        role: Role,
        identity: &str,
        name: &str,
        attrs: BTreeMap<String, String>,
        ttl: Duration,
    ) -> String {
        self.mint(&Claims {
            sub: identity.to_string(),
            name: name.to_string(),
            room: room.to_string(),
            role,
            exp: unix_now() + ttl.as_secs(),
            attrs,
            nbf: None,
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
        })
    }

    /// Verifies signature and expiry; when `room` is given, the token must be for it.
    pub fn verify(&self, token: &str, room: Option<&str>) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid(e.to_string()),
            })?
            .claims;
        claims.check().map_err(AuthError::Invalid)?;
        if let Some(requested) = room {
            if requested != claims.room {
                return Err(AuthError::WrongRoom {
                    token_room: claims.room,
                    requested: requested.to_string(),
                });
            }
        }
        Ok(claims)
    }
}

impl TokenKeys {
    pub fn mint_link(&self, claims: &LinkClaims) -> String {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Verifies an audience link's signature and expiry (and room, when given). An access
    /// token is not a link: it lacks `link`, so it is refused here.
    pub fn verify_link(&self, token: &str, room: Option<&str>) -> Result<LinkClaims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp"]);
        let claims = decode::<LinkClaims>(token, &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?
            .claims;
        if let Some(requested) = room {
            if requested != claims.room {
                return Err(AuthError::WrongRoom {
                    token_room: claims.room,
                    requested: requested.to_string(),
                });
            }
        }
        Ok(claims)
    }
}

/// Parses a duration like `90s`, `45m`, `2h`, `7d`, or plain seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 2h, 45m, 90s"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?}: use s, m, h or d"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"test-secret")
    }

    /// Ana's participant claims for room `r`, valid for `ttl_s` (negative: expired).
    fn ana(ttl_s: i64) -> Claims {
        Claims {
            sub: "u1".into(),
            name: "Ana".into(),
            room: "r".into(),
            role: Role::Participant,
            exp: unix_now().saturating_add_signed(ttl_s),
            attrs: BTreeMap::new(),
            nbf: None,
            jti: None,
        }
    }

    #[test]
    fn round_trip_with_attrs() {
        let attrs = BTreeMap::from([("team".to_string(), "Knox County".to_string())]);
        let token = keys().mint_for(
            "r",
            Role::Participant,
            "u1",
            "Ana",
            attrs.clone(),
            Duration::from_secs(60),
        );
        let claims = keys().verify(&token, Some("r")).unwrap();
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.attrs, attrs);
    }

    #[test]
    fn refuses_forged_expired_and_wrong_room() {
        let token = keys().mint_for(
            "r",
            Role::Host,
            "u1",
            "Ana",
            BTreeMap::new(),
            Duration::from_secs(60),
        );
        assert!(matches!(
            TokenKeys::new(b"other").verify(&token, Some("r")),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            keys().verify(&token, Some("q")),
            Err(AuthError::WrongRoom { .. })
        ));
        let expired = keys().mint(&Claims {
            role: Role::Host,
            ..ana(-3600)
        });
        assert_eq!(keys().verify(&expired, Some("r")), Err(AuthError::Expired));
        assert_eq!(keys().verify("", None), Err(AuthError::Missing));
        assert!(matches!(
            keys().verify("a.b.c", None),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn claims_refuse_control_characters_and_oversized_attrs() {
        let base = ana(60);
        let refused = |edit: &dyn Fn(&mut Claims)| {
            let mut claims = base.clone();
            edit(&mut claims);
            keys().verify(&keys().mint(&claims), None)
        };
        assert!(refused(&|_| {}).is_ok());
        for edit in [
            &(|c: &mut Claims| c.sub = "ana\nFORGED".into()) as &dyn Fn(&mut Claims),
            &|c| c.name = "Ana\u{1b}[31m".into(),
            &|c| c.room = "r\r\n".into(),
            &|c| {
                c.attrs = (0..=MAX_ATTRS)
                    .map(|i| (format!("k{i}"), "v".into()))
                    .collect()
            },
            &|c| c.attrs = BTreeMap::from([("team".into(), "x".repeat(MAX_ATTR_VALUE_CHARS + 1))]),
            &|c| c.attrs = BTreeMap::from([("k".repeat(MAX_ATTR_KEY_CHARS + 1), "v".into())]),
            &|c| c.attrs = BTreeMap::from([("team".into(), "a\nb".into())]),
        ] {
            assert!(
                matches!(refused(edit), Err(AuthError::Invalid(_))),
                "accepted"
            );
        }
        // A name-less invite: the person names themselves when they join (`/ws?name=`).
        assert!(refused(&|c| c.name = String::new()).is_ok());
        let mut most = base.clone();
        most.attrs = (0..MAX_ATTRS)
            .map(|i| (format!("k{i}"), "v".repeat(MAX_ATTR_VALUE_CHARS)))
            .collect();
        assert!(keys().verify(&keys().mint(&most), None).is_ok());
    }

    #[test]
    fn links_and_access_tokens_are_never_mistaken_for_each_other() {
        let link = LinkClaims {
            link: "l1".into(),
            room: "r".into(),
            role: Role::Participant,
            exp: unix_now() + 60,
            max_people: 10,
        };
        let token = keys().mint_link(&link);
        assert_eq!(keys().verify_link(&token, Some("r")), Ok(link));
        assert!(matches!(
            keys().verify(&token, None),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            keys().verify_link(&token, Some("q")),
            Err(AuthError::WrongRoom { .. })
        ));
        let access = keys().mint_for(
            "r",
            Role::Host,
            "u1",
            "Ana",
            BTreeMap::new(),
            Duration::from_secs(60),
        );
        assert!(matches!(
            keys().verify_link(&access, None),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn not_before_is_honoured_with_the_expiry_leeway() {
        let base = Claims {
            nbf: Some(unix_now() + 600),
            ..ana(3600)
        };
        assert_eq!(
            keys().verify(&keys().mint(&base), None),
            Err(AuthError::NotYetValid)
        );
        // Within the 5 s leeway (as for exp), and in the past: valid.
        for nbf in [unix_now() + 2, unix_now() - 60] {
            let claims = Claims {
                nbf: Some(nbf),
                ..base.clone()
            };
            assert!(keys().verify(&keys().mint(&claims), None).is_ok());
        }
    }

    #[test]
    fn bidi_controls_and_oversized_attrs_are_refused() {
        let base = ana(60);
        let check = |edit: &dyn Fn(&mut Claims)| {
            let mut c = base.clone();
            edit(&mut c);
            c.check()
        };
        assert!(check(&|c| c.name = "Ana \u{202E}tsoH".into()).is_err());
        assert!(
            check(&|c| c.attrs = BTreeMap::from([("team".into(), "\u{2066}x".into())])).is_err()
        );
        // Each value within its character limit, the whole over the byte bound.
        assert!(check(&|c| {
            c.attrs = (0..MAX_ATTRS)
                .map(|i| (format!("k{i}"), "é".repeat(MAX_ATTR_VALUE_CHARS)))
                .collect()
        })
        .is_err());
        assert!(check(&|c| c.name = "Ana Ruiz".into()).is_ok());
    }

    #[test]
    fn chosen_names_may_not_claim_a_role() {
        for name in [
            "Dr. Ana Ruiz (Host)",
            "Ana [moderator]",
            "Ana - Host",
            "Ben (Presenter)",
            "\u{202E}tsoH\u{202C}",
            "",
            "a\nb",
        ] {
            assert!(check_chosen_name(name).is_err(), "{name:?} accepted");
        }
        for name in ["Ana Ruiz", "Hostetler (Knox)", "Ben O'Host", "Mod Squad"] {
            assert!(check_chosen_name(name).is_ok(), "{name:?} refused");
        }
    }

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert!(parse_ttl("2w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
