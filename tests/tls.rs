//! HTTPS on the one port: `serve` with a self-signed certificate, real TLS clients for HTTP, WSS and WHIP.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{exchange, TestServer, WAIT};
use convene_signaling::{ClientMessage, Command, Role, RoomEvent, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate for 127.0.0.1 written to a fresh directory.
struct SelfSigned {
    dir: PathBuf,
    der: CertificateDer<'static>,
}

impl SelfSigned {
    fn new() -> SelfSigned {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("certificate");
        let dir = std::env::temp_dir().join(format!("convene-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        SelfSigned {
            dir,
            der: cert.cert.der().clone(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A client that trusts this certificate only.
    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(cert: &SelfSigned) -> TestServer {
    TestServer::start_with(|c| {
        c.server.tls_cert = cert.path("cert.pem");
        c.server.tls_key = cert.path("key.pem");
    })
    .await
}

async fn tls_connect(t: &TestServer, cert: &SelfSigned) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(t.server.addr).await.unwrap();
    let name = ServerName::IpAddress(t.server.addr.ip().into());
    tokio::time::timeout(WAIT, cert.connector().connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("TLS handshake with the trusted certificate")
}

/// One HTTP/1.1 request over TLS (common's client); returns the status line and the body.
async fn https(
    t: &TestServer,
    cert: &SelfSigned,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (String, String) {
    let mut tls = tls_connect(t, cert).await;
    let host = t.server.addr.to_string();
    let request = exchange(&mut tls, method, &host, path, None, headers, body);
    let (_, head, body) = tokio::time::timeout(WAIT, request)
        .await
        .expect("answer in time")
        .expect("an HTTP answer");
    (head.lines().next().unwrap_or("").to_string(), body)
}

#[tokio::test]
async fn https_serves_http_on_the_tls_port() {
    let cert = SelfSigned::new();
    let t = start(&cert).await;
    assert!(t.server.url().starts_with("https://"), "{}", t.server.url());
    let (status, body) = https(&t, &cert, "GET", "/healthz", &[], "").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok");
    // WHIP over HTTPS reaches the media edge (garbage SDP is refused with a reason).
    let token = t.token("tls-room", Role::Presenter, "pia");
    let (status, body) = https(
        &t,
        &cert,
        "POST",
        "/whip/tls-room",
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &format!("Bearer {token}")),
        ],
        "not sdp",
    )
    .await;
    assert!(status.contains("400"), "{status} {body}");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_answer_and_the_port_keeps_working() {
    let cert = SelfSigned::new();
    let t = start(&cert).await;
    let mut plain = TcpStream::connect(t.server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut out)).await;
    assert!(
        !String::from_utf8_lossy(&out).contains("200 OK"),
        "plain HTTP must not be served on the TLS port"
    );
    // A client that stalls before its handshake holds up nobody.
    let _stalled: Vec<TcpStream> =
        futures_util::future::join_all((0..4).map(|_| TcpStream::connect(t.server.addr)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(3),
        https(&t, &cert, "GET", "/healthz", &[], ""),
    )
    .await
    .expect("served while others stall");
    assert!(status.contains("200"), "{status}");
}

#[tokio::test]
async fn wss_joins_and_chats() {
    let cert = SelfSigned::new();
    let t = start(&cert).await;
    let mut sockets = Vec::new();
    for who in ["ana", "ben"] {
        let token = t.token("tls-chat", Role::Participant, who);
        let url = format!("wss://{}/ws?token={token}", t.server.addr);
        let tls = tls_connect(&t, &cert).await;
        let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
            .await
            .expect("WebSocket over TLS");
        let first = next_message(&mut ws).await;
        assert!(matches!(first, ServerMessage::Welcome { .. }), "{first:?}");
        sockets.push(ws);
    }
    let msg = ClientMessage::with_request_id(
        Command::SendChat {
            text: "over tls".into(),
        },
        "r1",
    );
    sockets[0]
        .send(Message::Text(serde_json::to_string(&msg).unwrap().into()))
        .await
        .unwrap();
    let ben = &mut sockets[1];
    loop {
        if let ServerMessage::Event {
            event: RoomEvent::ChatMessage { message },
            ..
        } = next_message(ben).await
        {
            assert_eq!(
                (message.from.as_str(), message.text.as_str()),
                ("ana", "over tls")
            );
            break;
        }
    }
}

async fn next_message(
    ws: &mut tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>,
) -> ServerMessage {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("message in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(text) = msg {
            return serde_json::from_str(&text).expect("server message");
        }
    }
}
