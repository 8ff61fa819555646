//! Test helpers: a real server on 127.0.0.1:0 and real WebSocket clients speaking the protocol types.
#![allow(dead_code)]

mod http;
pub mod peers;

// Each test crate uses some of these, as with the rest of this module (dead_code above).
#[allow(unused_imports)]
pub use http::{exchange, header, http_get, http_request, try_http};

use std::collections::BTreeMap;
use std::time::Duration;

use convene::config::Config;
use convene::http::Server;
use convene_signaling::{
    Assignment, BreakoutPlan, BreakoutRooms, ClientMessage, Command, Role, RoomEvent, ServerMessage,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret";
pub const API_KEY: &str = "test-api-key";
/// Long enough for a loaded 2-core CI machine, short enough to fail fast.
pub const WAIT: Duration = Duration::from_secs(10);

/// How much slower than idle the machine runs now: runnable tasks per core (the 1-minute
/// load average), at least 1 and at most 10. Deadlines multiply by it, so a test waits
/// longer on a machine other builds are loading instead of failing there.
#[allow(dead_code)] // Not every test binary that includes `common` waits on a deadline.
pub fn load_factor() -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (load / cores).clamp(1.0, 10.0)
}

/// `WAIT` scaled by the machine's load now.
pub fn wait() -> Duration {
    WAIT.mul_f64(load_factor())
}

/// The embedded default, on loopback port 0, with known secrets.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.auth.jwt_secret = SECRET.into();
    config.auth.api_key = API_KEY.into();
    config.rtc.advertise_ip = "127.0.0.1".into();
    config.rtc.bind_ip = "127.0.0.1".parse().unwrap();
    config.rtc.udp_port = 0;
    config.rtc.tcp_port = 0;
    config.rtc.workers = 1;
    // In-process servers run many at once: rooms in memory, as before the store
    // (tests/durable.rs runs the durable log against real processes and data directories).
    config.store.durable_log = false;
    config
}

pub struct TestServer {
    pub server: Server,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let _ = tracing_subscriber_init();
        let mut config = test_config();
        tweak(&mut config);
        TestServer {
            server: Server::start(config).await.expect("server starts"),
        }
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.server.addr)
    }

    pub fn token(&self, room: &str, role: Role, identity: &str) -> String {
        token(room, role, identity, &[])
    }

    /// Connects and reads the welcome.
    pub async fn join(&self, room: &str, role: Role, identity: &str) -> Client {
        self.join_with(room, role, identity, &[]).await
    }

    pub async fn join_with(
        &self,
        room: &str,
        role: Role,
        identity: &str,
        attrs: &[(&str, &str)],
    ) -> Client {
        let token = token(room, role, identity, attrs);
        let mut client = Client::connect(&self.ws_url(&token)).await;
        client.token = token;
        client.base = format!("ws://{}/ws", self.server.addr);
        client.read_welcome().await;
        client
    }
}

impl TestServer {
    /// Reconnects a dropped session: `resume=session_id&last_seq=N`. Returns the client and its first message.
    pub async fn resume(
        &self,
        token: &str,
        session_id: &str,
        last_seq: u64,
    ) -> (Client, ServerMessage) {
        resume_at(
            &format!("ws://{}/ws", self.server.addr),
            token,
            session_id,
            last_seq,
        )
        .await
    }
}

async fn resume_at(
    base: &str,
    token: &str,
    session_id: &str,
    last_seq: u64,
) -> (Client, ServerMessage) {
    let url = format!("{base}?token={token}&resume={session_id}&last_seq={last_seq}");
    let mut client = Client::connect(&url).await;
    client.token = token.to_string();
    client.base = base.to_string();
    client.last_seq = last_seq;
    let first = client.recv().await;
    (client, first)
}

fn tracing_subscriber_init() -> Option<()> {
    None
}

pub fn token(room: &str, role: Role, identity: &str, attrs: &[(&str, &str)]) -> String {
    let keys = convene::auth::TokenKeys::new(SECRET.as_bytes());
    let attrs: BTreeMap<String, String> = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    keys.mint_for(
        room,
        role,
        identity,
        &identity.to_uppercase(),
        attrs,
        Duration::from_secs(3600),
    )
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol client over a real socket. Tracks the last seq and session id, as a browser would.
pub struct Client {
    pub socket: Socket,
    pub session_id: String,
    pub last_seq: u64,
    pub welcome: Option<ServerMessage>,
    pub token: String,
    pub base: String,
    next_request: u64,
    /// Messages skipped by `expect`, returned first by later reads.
    pending: std::collections::VecDeque<ServerMessage>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        Self::connect_request(url.into_client_request().expect("a ws:// url")).await
    }

    /// Connects with a request of the test's own (extra headers such as `X-Forwarded-For`).
    pub async fn connect_request(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Client {
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("websocket connects");
        Client {
            socket,
            session_id: String::new(),
            last_seq: 0,
            welcome: None,
            token: String::new(),
            base: String::new(),
            next_request: 0,
            pending: Default::default(),
        }
    }

    async fn read_welcome(&mut self) {
        match self.recv().await {
            msg @ ServerMessage::Welcome { .. } => self.welcome = Some(msg),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Reconnects with `resume`, as a client does after a drop. Returns the first message.
    pub async fn resume(&self) -> (Client, ServerMessage) {
        resume_at(&self.base, &self.token, &self.session_id, self.last_seq).await
    }

    pub fn snapshot(&self) -> &convene_signaling::RoomSnapshot {
        match &self.welcome {
            Some(ServerMessage::Welcome { snapshot, .. }) => snapshot,
            _ => panic!("no welcome"),
        }
    }

    pub async fn send_raw(&mut self, text: impl Into<String>) {
        self.socket
            .send(Message::Text(text.into().into()))
            .await
            .expect("send");
    }

    /// Sends a command with a fresh request_id, and returns the id.
    pub async fn send(&mut self, command: Command) -> String {
        self.next_request += 1;
        let request_id = format!("r{}", self.next_request);
        self.send_with_id(command, &request_id).await;
        request_id
    }

    pub async fn send_with_id(&mut self, command: Command, request_id: &str) {
        let msg = ClientMessage::with_request_id(command, request_id);
        self.send_raw(serde_json::to_string(&msg).unwrap()).await;
    }

    /// Sends and waits for the ack (panics on an error reply). Returns the created id, if any.
    pub async fn ok(&mut self, command: Command) -> Option<u64> {
        let rid = self.send(command.clone()).await;
        match self.reply(&rid).await {
            ServerMessage::Ack { id, .. } => id,
            other => panic!("{command:?} was refused: {other:?}"),
        }
    }

    /// Sends and expects an error reply; returns its code and message.
    pub async fn refused(&mut self, command: Command) -> (convene_signaling::ErrorCode, String) {
        let rid = self.send(command.clone()).await;
        match self.reply(&rid).await {
            ServerMessage::Error { code, message, .. } => (code, message),
            other => panic!("{command:?} was accepted: {other:?}"),
        }
    }

    /// Waits for the ack or error that echoes `request_id`.
    pub async fn reply(&mut self, request_id: &str) -> ServerMessage {
        self.expect(|m| match m {
            ServerMessage::Ack { request_id: r, .. } => r == request_id,
            ServerMessage::Error {
                request_id: Some(r),
                ..
            } => r == request_id,
            _ => false,
        })
        .await
    }

    /// The next server message (panics on timeout or close).
    pub async fn recv(&mut self) -> ServerMessage {
        match self.try_recv(WAIT).await {
            Some(msg) => msg,
            None => panic!("no message within {WAIT:?}"),
        }
    }

    /// The next server message within `wait`, or `None` if none came or the socket closed.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<ServerMessage> {
        if let Some(msg) = self.pending.pop_front() {
            return Some(msg);
        }
        self.read_socket(wait).await
    }

    async fn read_socket(&mut self, wait: Duration) -> Option<ServerMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match next {
                Ok(Message::Text(text)) => {
                    let msg: ServerMessage = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("unparseable server message {text}: {e}"));
                    match &msg {
                        ServerMessage::Event { seq, .. } => {
                            assert!(
                                *seq > self.last_seq,
                                "event seq {seq} after {}",
                                self.last_seq
                            );
                            self.last_seq = *seq;
                        }
                        ServerMessage::Welcome {
                            session_id, seq, ..
                        } => {
                            self.session_id = session_id.clone();
                            self.last_seq = *seq;
                        }
                        ServerMessage::Resumed { session_id, .. } => {
                            self.session_id = session_id.clone()
                        }
                        _ => {}
                    }
                    return Some(msg);
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The first message (buffered or new) that matches; others stay buffered for later reads.
    pub async fn expect(
        &mut self,
        mut matches: impl FnMut(&ServerMessage) -> bool,
    ) -> ServerMessage {
        if let Some(i) = self.pending.iter().position(&mut matches) {
            return self.pending.remove(i).expect("index in range");
        }
        let wait = wait();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_socket(left).await {
                Some(msg) if matches(&msg) => return msg,
                Some(msg) => self.pending.push_back(msg),
                None => {
                    let skipped: Vec<String> = self
                        .pending
                        .iter()
                        .rev()
                        .take(8)
                        .map(|m| format!("{m:?}").chars().take(160).collect())
                        .collect();
                    panic!("expected message did not arrive within {wait:?}; {} skipped, the last: {skipped:#?}", self.pending.len())
                }
            }
        }
    }

    /// Forgets buffered messages.
    pub fn clear(&mut self) {
        self.pending.clear();
    }

    /// Skips messages until a room event matches; returns it.
    pub async fn expect_event(&mut self, mut matches: impl FnMut(&RoomEvent) -> bool) -> RoomEvent {
        match self
            .expect(|m| matches!(m, ServerMessage::Event { event, .. } if matches(event)))
            .await
        {
            ServerMessage::Event { event, .. } => event,
            _ => unreachable!(),
        }
    }

    /// Collects every message arriving within `wait`.
    pub async fn drain(&mut self, wait: Duration) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        while let Some(msg) = self.try_recv(wait).await {
            out.push(msg);
        }
        out
    }

    /// Events (not acks or pongs) that arrive within `wait`.
    pub async fn events_within(&mut self, wait: Duration) -> Vec<RoomEvent> {
        self.drain(wait)
            .await
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::Event { event, .. } => Some(event),
                _ => None,
            })
            .collect()
    }

    /// Waits for the socket to close; returns the close code.
    pub async fn closed(&mut self) -> Option<CloseCode> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Err(_) => panic!("socket did not close within {WAIT:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Drops the TCP connection without a close frame, like a Wi-Fi dropout; returns
    /// what a client keeps to resume: token, session id, last seq.
    pub fn drop_connection(self) -> (String, String, u64) {
        (self.token, self.session_id, self.last_seq)
    }
}

/// Breakouts by the `team` attribute: one room per team, everyone placed by theirs.
pub fn by_team(duration_s: Option<u32>) -> BreakoutPlan {
    BreakoutPlan {
        rooms: BreakoutRooms::FromAttribute {
            from_attribute: "team".into(),
        },
        assignment: Assignment::ByAttribute { key: "team".into() },
        duration_s,
        allow_leave: true,
    }
}

/// A `redis-server` of this test's own on a free 127.0.0.1 port, with no persistence; killed
/// when dropped. For cluster tests that need Redis but never restart it.
pub struct TestRedis {
    child: std::process::Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl TestRedis {
    pub async fn start() -> TestRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port).await
    }

    async fn start_on(port: u16) -> TestRedis {
        let dir = std::env::temp_dir().join(format!("convene-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs it)");
        let deadline = std::time::Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        TestRedis { child, port, dir }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it and starts an empty one on the same port: Redis lost its data.
    pub async fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        let port = self.port;
        let old = std::mem::replace(self, Self::start_on(port).await);
        std::mem::forget(old);
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `count` in-process nodes sharing `redis`: one cluster, ids n1..
pub async fn cluster_of(
    redis: &TestRedis,
    count: usize,
    tweak: impl Fn(&mut Config),
) -> Vec<TestServer> {
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        nodes.push(
            TestServer::start_with(|c| {
                c.redis.url = redis.url();
                c.cluster.node_id = format!("n{}", i + 1);
                c.cluster.lease_ms = 2000;
                tweak(c);
            })
            .await,
        );
    }
    nodes
}
