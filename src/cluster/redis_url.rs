//! Redis URLs as logs and errors may show them: never with the password.

/// A Redis URL fit for logs and errors: a password in it (`redis://user:secret@host`)
/// becomes `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let Some((user, _password)) = rest[..at].split_once(':') else {
        return url.to_string();
    };
    format!("{scheme}://{user}:***{}", &rest[at..])
}

/// `text` with `url`'s password, wherever it appears, replaced by `***`.
pub fn without_password(text: &str, url: &str) -> String {
    let password = redis::IntoConnectionInfo::into_connection_info(url)
        .ok()
        .and_then(|info| info.redis_settings().password().map(str::to_string));
    match password.filter(|p| !p.is_empty()) {
        Some(password) => text.replace(&password, "***"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows() {
        let url = "redis://convene:s3cret@10.0.0.5:6379/0";
        assert_eq!(redacted(url), "redis://convene:***@10.0.0.5:6379/0");
        assert_eq!(redacted("rediss://:s3cret@redis"), "rediss://:***@redis");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redacted("redis://convene@host"), "redis://convene@host");
        assert_eq!(redacted("redis://host/0?x=a@b"), "redis://host/0?x=a@b");
        let error = "could not connect to redis://convene:s3cret@10.0.0.5 (s3cret)";
        assert_eq!(
            without_password(error, url),
            "could not connect to redis://convene:***@10.0.0.5 (***)"
        );
        assert_eq!(
            without_password("no password here", "redis://h"),
            "no password here"
        );
    }
}
