//! The minimal HTTP/1.1 client the SFU tools need: WHIP/WHEP offers, resource DELETEs, `/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::LoadError;

/// `http://host:port[/prefix]` -> (host:port, prefix without trailing slash).
pub(crate) fn parse_url(url: &str) -> Result<(String, String), LoadError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| LoadError::Setup(format!("--url must start with http://, got {url:?}")))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(LoadError::Setup(format!("no host in {url:?}")));
    }
    Ok((host.to_string(), path.to_string()))
}

pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl HttpResponse {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client (one request per connection), enough for WHIP/WHEP and /metrics.
pub(crate) async fn http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<HttpResponse, String> {
    let fut = async {
        let mut s = TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        let _ = s.set_nodelay(true);
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
        parse_response(&raw)
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .map_err(|_| format!("{method} {path}: no response in 20 s"))?
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("truncated HTTP response")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "non-UTF-8 HTTP head")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad HTTP status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or("bad chunked body")?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// A resource URL from a Location header, as a path on `host`.
pub(super) fn location_path(prefix: &str, loc: &str) -> String {
    if let Some(rest) = loc.strip_prefix("http://") {
        return rest.find('/').map_or("/".into(), |i| rest[i..].to_string());
    }
    if loc.starts_with('/') {
        loc.to_string()
    } else {
        format!("{prefix}/{loc}")
    }
}

/// `convene_sfu_*` counters from `GET /metrics`, if any.
pub(super) async fn sfu_metrics(host: &str, prefix: &str) -> BTreeMap<String, f64> {
    let Ok(r) = http(host, "GET", &format!("{prefix}/metrics"), &[], "").await else {
        return BTreeMap::new();
    };
    r.body
        .lines()
        .filter(|l| l.starts_with("convene_sfu_"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_responses_parse() {
        let r = parse_response(b"HTTP/1.1 201 Created\r\nLocation: /whep/r/1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nv=0\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.header("location"), Some("/whep/r/1"));
        assert_eq!(r.body, "v=0");
        assert_eq!(
            parse_url("http://127.0.0.1:80/x/").unwrap(),
            ("127.0.0.1:80".into(), "/x".into())
        );
        assert_eq!(location_path("", "http://h:1/whep/a/b"), "/whep/a/b");
    }
}
