//! The embedded TURN relay over real sockets on loopback: it relays to the SFU's media port
//! (an aiortc viewer limited to relay candidates plays the stage; an ICE check through it gets
//! the SFU's answer) and to nothing else (another port, another address: 403, and no datagram
//! arrives); TCP relaying, bad, expired and foreign credentials are refused; an allocation ends
//! with its credential; TURN over TCP and TLS.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use common::peers::{args, peer, result, whep_viewer, whip_publisher};
use common::{try_http, TestServer, WAIT};
use convene::turn::stun::{self, Builder, Class, Message};
use convene_signaling::{Role, RoomEvent, ServerMessage};
use md5::Digest;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const SECRET: &str = "turn-test-secret";
const REALM: &str = "convene";
const PRIORITY: u16 = 0x0024;
const USE_CANDIDATE: u16 = 0x0025;
const ICE_CONTROLLING: u16 = 0x802A;

async fn relay_server(tweak: impl FnOnce(&mut convene::config::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.rtc.turn.secret = SECRET.into();
        let e = &mut c.rtc.turn.embedded;
        e.enabled = true;
        e.listen_ip = "127.0.0.1".parse().unwrap();
        e.relay_ip = "127.0.0.1".parse().unwrap();
        e.udp_port = 0;
        e.tcp_port = 0;
        tweak(c);
    })
    .await
}

fn turn_udp(t: &TestServer) -> SocketAddr {
    t.server
        .state
        .turn_server
        .as_ref()
        .unwrap()
        .udp_addr()
        .unwrap()
}

fn turn_tcp(t: &TestServer) -> SocketAddr {
    t.server
        .state
        .turn_server
        .as_ref()
        .unwrap()
        .tcp_addr()
        .unwrap()
}

/// The SFU's media address, the one peer the relay may reach.
fn sfu(t: &TestServer) -> SocketAddr {
    let port = t
        .server
        .state
        .media
        .as_ref()
        .unwrap()
        .sfu
        .local_addr()
        .port();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A credential in the shared-secret scheme, computed here with an HMAC of our own.
fn credential(secret: &str, expiry: u64, identity: &str) -> (String, String) {
    let username = format!("{expiry}:{identity}");
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let password = base64::engine::general_purpose::STANDARD
        .encode(hmac::sign(&key, username.as_bytes()).as_ref());
    (username, password)
}

fn fresh(identity: &str) -> (String, String) {
    credential(SECRET, convene::auth::unix_now() + 3600, identity)
}

trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

enum Io {
    Udp(UdpSocket, SocketAddr),
    Stream(Box<dyn Duplex>),
}

/// A TURN client (RFC 8656) speaking to the relay: the long-term credential dance, requests,
/// and the data the relay sends back.
struct TurnClient {
    io: Io,
    username: String,
    realm: String,
    nonce: String,
    key: Option<hmac::Key>,
    /// Data indications and ChannelData read while waiting for a response.
    data: VecDeque<Vec<u8>>,
}

/// A response: its class, error code (0 for success) and raw bytes.
struct Answer {
    class: Class,
    code: u16,
    raw: Vec<u8>,
}

impl Answer {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.raw).expect("a STUN response")
    }
}

impl TurnClient {
    async fn udp(server: SocketAddr) -> TurnClient {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        TurnClient::new(Io::Udp(socket, server))
    }

    async fn tcp(server: SocketAddr) -> TurnClient {
        let tcp = TcpStream::connect(server).await.unwrap();
        TurnClient::new(Io::Stream(Box::new(tcp)))
    }

    fn new(io: Io) -> TurnClient {
        TurnClient {
            io,
            username: String::new(),
            realm: String::new(),
            nonce: String::new(),
            key: None,
            data: VecDeque::new(),
        }
    }

    fn stream(&self) -> bool {
        matches!(self.io, Io::Stream(_))
    }

    async fn send(&mut self, bytes: &[u8]) {
        match &mut self.io {
            Io::Udp(s, to) => {
                s.send_to(bytes, *to).await.unwrap();
            }
            Io::Stream(s) => s.write_all(bytes).await.unwrap(),
        }
    }

    /// The next message from the relay, or `None` when nothing comes within `wait`.
    async fn recv_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let read = async {
            match &mut self.io {
                Io::Udp(s, _) => {
                    let mut buf = vec![0u8; 65536];
                    let (n, _) = s.recv_from(&mut buf).await.ok()?;
                    buf.truncate(n);
                    Some(buf)
                }
                Io::Stream(s) => {
                    let mut head = [0u8; 4];
                    s.read_exact(&mut head).await.ok()?;
                    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
                    let total = if head[0] & 0xC0 == 0x40 {
                        4 + len.div_ceil(4) * 4
                    } else {
                        20 + len
                    };
                    let mut buf = head.to_vec();
                    buf.resize(total, 0);
                    s.read_exact(&mut buf[4..]).await.ok()?;
                    Some(buf)
                }
            }
        };
        tokio::time::timeout(wait, read).await.ok().flatten()
    }

    /// Sends a request (signed once the realm and nonce are known) and waits for its answer.
    async fn request(&mut self, method: u16, add: impl Fn(Builder) -> Builder) -> Answer {
        let txid: [u8; 12] = rand::random();
        let mut b = add(Builder::new(method, Class::Request, txid));
        if let Some(key) = &self.key {
            b = b
                .attr(stun::USERNAME, self.username.as_bytes())
                .attr(stun::REALM, self.realm.as_bytes())
                .attr(stun::NONCE, self.nonce.as_bytes());
            let bytes = b.finish(Some(key));
            self.send(&bytes).await;
        } else {
            let bytes = b.finish(None);
            self.send(&bytes).await;
        }
        loop {
            let raw = self
                .recv_within(WAIT)
                .await
                .unwrap_or_else(|| panic!("no answer to method {method:#x}"));
            let Some(m) = Message::parse(&raw) else {
                self.data.push_back(raw);
                continue;
            };
            if m.txid != txid {
                self.data.push_back(raw);
                continue;
            }
            let code = m
                .get(stun::ERROR_CODE)
                .map_or(0, |v| u16::from(v[2]) * 100 + u16::from(v[3]));
            if let Some(nonce) = m.text(stun::NONCE) {
                self.nonce = nonce.to_string();
            }
            if let Some(realm) = m.text(stun::REALM) {
                self.realm = realm.to_string();
            }
            let class = m.class;
            if matches!(class, Class::Success | Class::Error) {
                if let (Some(key), Class::Success) = (&self.key, class) {
                    assert!(m.integrity_ok(key), "responses are signed");
                }
                return Answer { class, code, raw };
            }
        }
    }

    /// Takes a credential: the first request learns the realm and nonce from the 401.
    fn login(&mut self, (username, password): &(String, String)) {
        let realm = if self.realm.is_empty() {
            REALM
        } else {
            &self.realm
        };
        let long_term = md5::Md5::digest(format!("{username}:{realm}:{password}").as_bytes());
        self.key = Some(hmac::Key::new(
            hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            &long_term,
        ));
        self.username = username.clone();
    }

    /// An unsigned Allocate (expecting the 401 challenge) the first time, then a signed one.
    async fn allocate(&mut self, cred: &(String, String), transport: u8) -> Answer {
        if self.key.is_none() {
            let first = self
                .request(stun::ALLOCATE, |b| {
                    b.attr(stun::REQUESTED_TRANSPORT, &[transport, 0, 0, 0])
                })
                .await;
            assert_eq!(first.code, 401, "an unsigned request is challenged");
            assert_eq!(self.realm, REALM);
            assert!(!self.nonce.is_empty());
        }
        self.login(cred);
        self.request(stun::ALLOCATE, |b| {
            b.attr(stun::REQUESTED_TRANSPORT, &[transport, 0, 0, 0])
        })
        .await
    }

    async fn permit(&mut self, peers: &[SocketAddr]) -> u16 {
        self.request(stun::CREATE_PERMISSION, |b| {
            peers
                .iter()
                .fold(b, |b, p| b.xor_address(stun::XOR_PEER_ADDRESS, *p))
        })
        .await
        .code
    }

    async fn bind_channel(&mut self, channel: u16, peer: SocketAddr) -> u16 {
        self.request(stun::CHANNEL_BIND, |b| {
            let [hi, lo] = channel.to_be_bytes();
            b.attr(stun::CHANNEL_NUMBER, &[hi, lo, 0, 0])
                .xor_address(stun::XOR_PEER_ADDRESS, peer)
        })
        .await
        .code
    }

    async fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) {
        let bytes = Builder::new(stun::SEND, Class::Indication, rand::random())
            .xor_address(stun::XOR_PEER_ADDRESS, peer)
            .attr(stun::DATA_ATTR, data)
            .finish(None);
        self.send(&bytes).await;
    }

    async fn channel_data(&mut self, channel: u16, data: &[u8]) {
        let bytes = stun::channel_data(channel, data, self.stream());
        self.send(&bytes).await;
    }

    /// The next relayed datagram: (channel or None for a Data indication, peer if known, data).
    async fn relayed(&mut self) -> (Option<u16>, Option<SocketAddr>, Vec<u8>) {
        let raw = match self.data.pop_front() {
            Some(raw) => raw,
            None => self.recv_within(WAIT).await.expect("relayed data"),
        };
        if let Some((channel, data)) = stun::parse_channel_data(&raw) {
            return (Some(channel), None, data.to_vec());
        }
        let m = Message::parse(&raw).expect("a Data indication");
        assert_eq!((m.class, m.method), (Class::Indication, stun::DATA));
        (
            None,
            m.xor_address(stun::XOR_PEER_ADDRESS),
            m.get(stun::DATA_ATTR).unwrap().to_vec(),
        )
    }
}

/// A WHEP session the SFU holds: its ICE ufrag and password, and the offer's ufrag.
struct IceSession {
    server_ufrag: String,
    server_pwd: String,
    client_ufrag: String,
    _host: common::Client,
}

fn sdp_attr(sdp: &str, name: &str) -> String {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("a={name}:")))
        .unwrap_or_else(|| panic!("{name} in {sdp}"))
        .to_string()
}

async fn whep_session(t: &TestServer) -> IceSession {
    let host = t.join("turn", Role::Host, "host").await;
    let viewer = t.token("turn", Role::Participant, "vic");
    let offer = result(peer(
        "subscriber.py",
        &args(&["--whep", "print-offer", "--duration", "1"]),
    ))
    .await;
    let offer = offer["offer"].as_str().expect("offer sdp").to_string();
    let (status, _, answer) = try_http(
        "POST",
        &format!("{}/whep/turn", t.http()),
        Some(&viewer),
        &[("Content-Type", "application/sdp")],
        &offer,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{answer}");
    IceSession {
        server_ufrag: sdp_attr(&answer, "ice-ufrag"),
        server_pwd: sdp_attr(&answer, "ice-pwd"),
        client_ufrag: sdp_attr(&offer, "ice-ufrag"),
        _host: host,
    }
}

/// An ICE connectivity check for the session, as a controlling browser sends it.
fn ice_check(s: &IceSession) -> ([u8; 12], Vec<u8>) {
    let txid: [u8; 12] = rand::random();
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, s.server_pwd.as_bytes());
    let bytes = Builder::new(stun::BINDING, Class::Request, txid)
        .attr(
            stun::USERNAME,
            format!("{}:{}", s.server_ufrag, s.client_ufrag).as_bytes(),
        )
        .u32(PRIORITY, 1_853_824_767)
        .attr(ICE_CONTROLLING, &rand::random::<[u8; 8]>())
        .attr(USE_CANDIDATE, &[])
        .finish(Some(&key));
    (txid, bytes)
}

/// A counter's value in `/metrics`.
async fn metric(t: &TestServer, name: &str) -> f64 {
    let (status, body) = common::http_get(&format!("{}/metrics", t.http()), None, &[]).await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {body}"))
}

/// A UDP socket that counts what reaches it: a peer the relay must never reach.
async fn bystander() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

fn nothing_arrived(socket: &UdpSocket) {
    let mut buf = [0u8; 2048];
    match socket.try_recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the relay reached a peer that is not the SFU: {other:?}"),
    }
}

#[tokio::test]
async fn an_ice_check_through_the_relay_reaches_the_sfu_and_nothing_else_is_reachable() {
    let t = relay_server(|_| {}).await;
    let session = whep_session(&t).await;
    let sfu = sfu(&t);
    let echo = bystander().await;
    let other_port = echo.local_addr().unwrap();
    // "Another address": 127.0.0.2 is loopback too, and nothing is sent there.
    let other_address = SocketAddr::from(([127, 0, 0, 2], sfu.port()));
    let next_port = SocketAddr::from(([127, 0, 0, 1], sfu.port().wrapping_add(1)));

    let refused_before = metric(&t, "convene_turn_refused_peers_total").await;
    let mut c = TurnClient::udp(turn_udp(&t)).await;
    let ok = c.allocate(&fresh("vic"), 17).await;
    assert_eq!((ok.class, ok.code), (Class::Success, 0));
    let relayed = ok.msg().xor_address(stun::XOR_RELAYED_ADDRESS).unwrap();
    assert!(relayed.ip().is_loopback(), "{relayed}");
    assert_eq!(ok.msg().u32(stun::LIFETIME), Some(600));

    for peer in [other_port, other_address, next_port] {
        assert_eq!(c.permit(&[peer]).await, 403, "permission to {peer}");
        assert_eq!(c.bind_channel(0x4001, peer).await, 403, "channel to {peer}");
    }
    // All or nothing: one foreign peer refuses the whole request.
    assert_eq!(c.permit(&[sfu, other_port]).await, 403);
    // Metrics are process-wide and tests run side by side: at least ours were counted.
    let refused = metric(&t, "convene_turn_refused_peers_total").await - refused_before;
    assert!(refused >= 7.0, "{refused} refusals counted");
    // No permission: a Send indication to anyone else is dropped, even with a lie.
    c.send_indication(other_port, b"hello?").await;

    let (txid, check) = ice_check(&session);
    // Without a permission for the SFU nothing goes there either: the check goes unanswered.
    c.send_indication(sfu, &check).await;
    assert_eq!(c.bind_channel(0x4000, sfu).await, 0);
    let (txid2, check2) = ice_check(&session);
    c.channel_data(0x4000, &check2).await;
    let (channel, _, data) = c.relayed().await;
    assert_eq!(channel, Some(0x4000));
    let answer = Message::parse(&data).expect("the SFU's STUN answer");
    assert_eq!((answer.class, answer.txid), (Class::Success, txid2));
    assert_ne!(txid, txid2);
    // And a permission (without a channel) brings Data indications from the SFU.
    assert_eq!(c.permit(&[sfu]).await, 0);
    let (txid3, check3) = ice_check(&session);
    c.send_indication(sfu, &check3).await;
    let (channel, from, data) = loop {
        // The channel is bound, so answers come as ChannelData; both carry the SFU's reply.
        let got = c.relayed().await;
        if Message::parse(&got.2).is_some_and(|m| m.txid == txid3) {
            break got;
        }
    };
    assert!(
        channel == Some(0x4000) || from == Some(sfu),
        "{channel:?} {from:?}"
    );
    assert_eq!(Message::parse(&data).unwrap().class, Class::Success);
    // The relay handles a client's datagrams in order, and loopback delivers at once: had the
    // refused sends gone out, they would be waiting on the bystander's socket by now.
    nothing_arrived(&echo);
}

#[tokio::test]
async fn tcp_relaying_and_other_families_are_refused() {
    let t = relay_server(|_| {}).await;
    let mut c = TurnClient::udp(turn_udp(&t)).await;
    let tcp = c.allocate(&fresh("ana"), 6).await;
    assert_eq!((tcp.class, tcp.code), (Class::Error, 442), "TCP relaying");
    assert!(tcp.msg().integrity_ok(c.key.as_ref().unwrap()));
    let v6 = c
        .request(stun::ALLOCATE, |b| {
            b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                .attr(stun::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0])
        })
        .await;
    assert_eq!(v6.code, 440);
    let none = c.request(stun::ALLOCATE, |b| b).await;
    assert_eq!(none.code, 400, "no REQUESTED-TRANSPORT");
    assert_eq!(
        t.server.state.turn_server.as_ref().unwrap().allocations(),
        0
    );
    // Requests on an allocation that does not exist.
    assert_eq!(c.permit(&[sfu(&t)]).await, 437);
    let refresh = c.request(stun::REFRESH, |b| b).await;
    assert_eq!(refresh.code, 437);
}

#[tokio::test]
async fn bad_expired_and_foreign_credentials_are_refused() {
    let t = relay_server(|_| {}).await;
    let now = convene::auth::unix_now();
    let cases = [
        (
            "another secret",
            credential("not-the-secret", now + 3600, "ana"),
        ),
        ("expired", credential(SECRET, now - 1, "ana")),
        ("no expiry", {
            let (_, p) = credential(SECRET, now + 3600, "ana");
            ("ana".to_string(), p)
        }),
        (
            "wrong password",
            (format!("{}:ana", now + 3600), "x".to_string()),
        ),
    ];
    for (what, cred) in cases {
        let mut c = TurnClient::udp(turn_udp(&t)).await;
        let answer = c.allocate(&cred, 17).await;
        assert_eq!(answer.code, 401, "{what}");
        assert!(answer.msg().get(stun::XOR_RELAYED_ADDRESS).is_none());
    }
    // A nonce of our own making is stale; a realm of our own is refused.
    let mut c = TurnClient::udp(turn_udp(&t)).await;
    c.allocate(&credential(SECRET, now - 1, "ana"), 17).await;
    c.nonce = "00000000000000000123456789abcdef".into();
    c.login(&fresh("ana"));
    let stale = c
        .request(stun::ALLOCATE, |b| {
            b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        })
        .await;
    assert_eq!(
        stale.code, 438,
        "stale nonce, with a fresh one to retry with"
    );
    c.realm = "elsewhere".into();
    c.login(&fresh("ana"));
    let realm = c
        .request(stun::ALLOCATE, |b| {
            b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        })
        .await;
    assert_eq!(realm.code, 401);
    assert_eq!(
        t.server.state.turn_server.as_ref().unwrap().allocations(),
        0
    );
    // The same client with a good credential, to show the refusals were about the credentials.
    let mut c = TurnClient::udp(turn_udp(&t)).await;
    assert_eq!(c.allocate(&fresh("ana"), 17).await.code, 0);
    // Someone else's credential on this allocation.
    c.login(&fresh("ben"));
    assert_eq!(c.permit(&[sfu(&t)]).await, 441);
}

#[tokio::test]
async fn an_allocation_ends_when_its_credential_expires() {
    let t = relay_server(|c| c.rtc.turn.embedded.max_allocations_per_identity = 1).await;
    let expiry = convene::auth::unix_now() + 3;
    let mut first = TurnClient::udp(turn_udp(&t)).await;
    let ok = first.allocate(&credential(SECRET, expiry, "ana"), 17).await;
    assert_eq!(ok.code, 0);
    let lifetime = ok.msg().u32(stun::LIFETIME).unwrap();
    assert!(lifetime <= 3, "capped by the credential: {lifetime}");
    // One allocation per identity here: a second is refused while the first lives...
    let mut second = TurnClient::udp(turn_udp(&t)).await;
    assert_eq!(second.allocate(&fresh("ana"), 17).await.code, 486);
    assert_eq!(second.allocate(&fresh("ben"), 17).await.code, 0);
    // A Refresh cannot stretch it past the credential either.
    let longer = first
        .request(stun::REFRESH, |b| b.u32(stun::LIFETIME, 3600))
        .await;
    assert_eq!(longer.code, 0);
    assert!(longer.msg().u32(stun::LIFETIME).unwrap() <= 3);
    // A Refresh of 0 deletes at once: the quota is free for the next Allocate.
    let deleted = second
        .request(stun::REFRESH, |b| b.u32(stun::LIFETIME, 0))
        .await;
    assert_eq!(deleted.code, 0);
    let again = second
        .request(stun::ALLOCATE, |b| {
            b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        })
        .await;
    assert_eq!(again.code, 0, "allocated again after the delete");
    // ...and taken once the first has ended at its credential's expiry.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut third = TurnClient::udp(turn_udp(&t)).await;
    let mut answer = third.allocate(&fresh("ana"), 17).await;
    while answer.code != 0 {
        assert_eq!(answer.code, 486);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the allocation outlived its credential"
        );
        // Polling the condition: the relay's own timer ends the allocation.
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = third
            .request(stun::ALLOCATE, |b| {
                b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            })
            .await;
    }
    assert!(convene::auth::unix_now() >= expiry - 1, "ended early");
    // The first client's allocation is gone, whatever credential it now shows.
    first.login(&fresh("ana"));
    assert_eq!(first.permit(&[sfu(&t)]).await, 437);
}

#[tokio::test]
async fn the_node_wide_allocation_cap_holds() {
    let t = relay_server(|c| c.rtc.turn.embedded.max_allocations = 1).await;
    let mut ana = TurnClient::udp(turn_udp(&t)).await;
    assert_eq!(ana.allocate(&fresh("ana"), 17).await.code, 0);
    let mut ben = TurnClient::udp(turn_udp(&t)).await;
    assert_eq!(ben.allocate(&fresh("ben"), 17).await.code, 508);
    let deleted = ana
        .request(stun::REFRESH, |b| b.u32(stun::LIFETIME, 0))
        .await;
    assert_eq!(deleted.code, 0);
    let retry = ben
        .request(stun::ALLOCATE, |b| {
            b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        })
        .await;
    assert_eq!(retry.code, 0, "room again once ana's allocation is gone");
}

/// The relay's TLS listener uses the server's certificate; `turns:` is advertised.
fn self_signed() -> (PathBuf, rustls::pki_types::CertificateDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("convene-turn-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    (dir, cert.cert.der().clone())
}

#[tokio::test]
async fn turn_over_tcp_relays_to_the_sfu_only() {
    let t = relay_server(|_| {}).await;
    let session = whep_session(&t).await;
    let sfu = sfu(&t);
    let echo = bystander().await;
    let mut c = TurnClient::tcp(turn_tcp(&t)).await;
    assert_eq!(c.allocate(&fresh("vic"), 17).await.code, 0);
    assert_eq!(c.permit(&[echo.local_addr().unwrap()]).await, 403);
    c.send_indication(echo.local_addr().unwrap(), b"hello?")
        .await;
    assert_eq!(c.bind_channel(0x4abc, sfu).await, 0);
    let (txid, check) = ice_check(&session);
    c.channel_data(0x4abc, &check).await;
    let (channel, _, data) = c.relayed().await;
    assert_eq!(channel, Some(0x4abc));
    assert_eq!(Message::parse(&data).unwrap().txid, txid);
    nothing_arrived(&echo);
    // Closing the connection ends its allocation.
    drop(c);
    let turn = t.server.state.turn_server.as_ref().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while turn.allocations() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "allocation kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn turn_over_tls_uses_the_servers_certificate_and_is_advertised() {
    let (dir, der) = self_signed();
    let t = relay_server(|c| {
        c.server.tls_cert = dir.join("cert.pem").display().to_string();
        c.server.tls_key = dir.join("key.pem").display().to_string();
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(turn_tcp(&t)).await.unwrap();
    let name =
        rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .unwrap()
    .expect("TLS with the server's certificate");
    let mut c = TurnClient::new(Io::Stream(Box::new(tls)));
    assert_eq!(c.allocate(&fresh("ana"), 17).await.code, 0);
    assert_eq!(c.permit(&[sfu(&t)]).await, 0);
    assert_eq!(
        c.permit(&[SocketAddr::from(([127, 0, 0, 1], 6379))]).await,
        403
    );
    let urls = t.server.state.turn.as_ref().unwrap();
    let server = urls.ice_server("ana", urls.expiry(convene::auth::unix_now(), None));
    assert_eq!(
        server.urls,
        [
            format!("turn:127.0.0.1:{}?transport=udp", turn_udp(&t).port()),
            format!("turns:127.0.0.1:{}?transport=tcp", turn_tcp(&t).port()),
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn garbage_is_dropped_and_the_relay_keeps_answering() {
    let t = relay_server(|_| {}).await;
    let mut c = TurnClient::udp(turn_udp(&t)).await;
    let good = Builder::new(stun::ALLOCATE, Class::Request, [9; 12])
        .attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .finish(None);
    for n in 0..good.len() {
        c.send(&good[..n]).await;
    }
    c.send(&[0x40, 0x00, 0xff, 0xff, 1, 2, 3]).await;
    c.send(&[0xff; 1200]).await;
    // A response class where a request belongs, and a request of an unknown method.
    let mut response = good.clone();
    response[1] |= 0x10;
    c.send(&response).await;
    let unknown = c.request(0x0ff, |b| b).await;
    assert_eq!(unknown.code, 400);
    // Over TCP: a frame too large ends that connection only.
    let mut tcp = TcpStream::connect(turn_tcp(&t)).await.unwrap();
    tcp.write_all(&[0x00, 0x03, 0xff, 0xfc]).await.unwrap();
    tcp.write_all(&[0u8; 64]).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    let binding = c.request(stun::BINDING, |b| b).await;
    assert_eq!(binding.class, Class::Success);
    let mapped = binding.msg().xor_address(stun::XOR_MAPPED_ADDRESS);
    assert_eq!(
        mapped,
        Some(match &c.io {
            Io::Udp(s, _) => s.local_addr().unwrap(),
            Io::Stream(_) => unreachable!(),
        })
    );
}

/// A WHEP viewer limited to relay candidates plays the stage through the embedded relay, with
/// the credentials from the `OPTIONS` Link headers; `welcome` carries the same relay.
#[tokio::test]
async fn whep_viewer_plays_through_the_embedded_relay() {
    let t = relay_server(|_| {}).await;
    let mut host = t.join("relay", Role::Host, "host").await;
    match host.welcome.as_ref().unwrap() {
        ServerMessage::Welcome { ice_servers, .. } => assert_eq!(
            ice_servers[0].urls,
            [
                format!("turn:127.0.0.1:{}?transport=udp", turn_udp(&t).port()),
                format!("turn:127.0.0.1:{}?transport=tcp", turn_tcp(&t).port()),
            ]
        ),
        other => panic!("{other:?}"),
    }
    let presenter = t.token("relay", Role::Presenter, "obs");
    let viewer = t.token("relay", Role::Participant, "viewer");
    let publisher = whip_publisher(&t.http(), "relay", &presenter, 12);
    host.expect_event(|e| matches!(e, RoomEvent::TrackPublished { track } if track.publisher == "obs" && track.kind == convene_signaling::TrackKind::Video)).await;
    let subscriber = whep_viewer(&t.http(), "relay", &viewer, 7, &["--relay"]);
    let sub = result(subscriber).await;
    assert_eq!(sub["error"], Value::Null, "{sub}");
    assert!(
        sub["video_frames"].as_u64().unwrap() >= 20,
        "decoded through the relay: {sub}"
    );
    let _ = result(publisher).await;
}

#[test]
fn relay_settings_are_checked_when_loaded() {
    use convene::config::Config;
    let load = |vars: &'static [(&'static str, &'static str)], file: &str| {
        let path = std::env::temp_dir().join(format!("convene-turn-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, file).unwrap();
        let loaded = Config::load_with_env(Some(&path), |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        });
        let _ = std::fs::remove_file(path);
        loaded
    };
    let off = Config::default();
    assert!(!off.rtc.turn.embedded.enabled, "off unless asked for");
    let on = load(
        &[
            ("CONVENE_TURN_EMBEDDED", "true"),
            ("CONVENE_TURN_UDP", "false"),
            ("CONVENE_TURN_TCP_PORT", "443"),
            ("CONVENE_TURN_HOST", "turn.example.org"),
        ],
        "",
    )
    .unwrap();
    let e = &on.rtc.turn.embedded;
    assert!(e.enabled && !e.udp && e.tcp);
    assert_eq!((e.tcp_port, e.host.as_str()), (443, "turn.example.org"));
    let half_range = "[rtc.turn.embedded]\nrelay_min_port = 40000\n";
    let err = load(&[], half_range).unwrap_err().to_string();
    assert!(err.contains("relay_max_port"), "{err}");
    let upside_down = "[rtc.turn.embedded]\nrelay_min_port = 40010\nrelay_max_port = 40000\n";
    assert!(load(&[], upside_down).is_err());
    let deaf = "[rtc.turn.embedded]\nenabled = true\nudp = false\ntcp = false\n";
    assert!(load(&[], deaf)
        .unwrap_err()
        .to_string()
        .contains("neither udp nor tcp"));
    let bad = load(&[("CONVENE_TURN_EMBEDDED", "sometimes")], "").unwrap_err();
    assert!(bad.to_string().contains("CONVENE_TURN_EMBEDDED"), "{bad}");
}
