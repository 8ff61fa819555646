//! The tests' one HTTP/1.1 client. `try_http` (and `exchange`, for a stream of the test's own such
//! as TLS) reports failures instead of panicking, for nodes that may be starting, stopped or dead;
//! `http_request` and `http_get` panic, for tests where any failure is the test's.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// An HTTP GET returning status and body, for health, export and refusal checks.
pub async fn http_get(url: &str, bearer: Option<&str>, headers: &[(&str, &str)]) -> (u16, String) {
    http_request("GET", url, bearer, headers, "").await
}

/// Any HTTP request over a plain socket; returns status and body, and panics on failure.
pub async fn http_request(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = try_http(method, url, bearer, headers, body)
        .await
        .unwrap_or_else(|e| panic!("http request: {e}"));
    (status, body)
}

/// Any HTTP request to an `http://` URL over a plain socket, answered within `WAIT`: status,
/// the raw head (for headers like Location) and the body.
pub async fn try_http(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http url: {url}"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request = async {
        let mut stream = TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        exchange(&mut stream, method, host, path, bearer, headers, body).await
    };
    tokio::time::timeout(WAIT, request)
        .await
        .map_err(|_| format!("{method} {url}: no answer within {WAIT:?}"))?
}

/// One request over `stream` (`Connection: close` unless `headers` name one): status, raw head
/// and body, de-chunked when the server chunked it.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    method: &str,
    host: &str,
    path: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String, String), String> {
    let path = if path.is_empty() { "/" } else { path };
    let what = format!("{method} {host}{path}");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        request.push_str("Connection: close\r\n");
    }
    if let Some(token) = bearer {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write {what}: {e}"))?;
    // Until the body is complete, not until EOF: with keep-alive the server leaves the socket open.
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    while !complete(&response) {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(e) if response.is_empty() => return Err(format!("read {what}: {e}")),
            // A TLS peer may close without close_notify after `Connection: close`; keep what came.
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{what}: no HTTP head in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what}: bad status line in {head:?}"))?;
    let body = if chunked(head) {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, head.to_string(), body))
}

/// A header's value from a raw response head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn chunked(head: &str) -> bool {
    header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
}

/// Whether `response` holds its whole body: as long as Content-Length says, or the last chunk.
fn complete(response: &[u8]) -> bool {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..end]);
    let body = &response[end + 4..];
    if let Some(length) = header(&head, "content-length") {
        return length.parse::<usize>().is_ok_and(|len| body.len() >= len);
    }
    chunked(&head) && body.ends_with(b"0\r\n\r\n")
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
