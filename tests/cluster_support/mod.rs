//! Cluster test harness: a killable `redis-server` with AOF and three killable, stoppable
//! `convene serve` processes, black-box (processes, HTTP, WebSockets, RESP).
#![allow(dead_code)]

pub mod check;
pub mod crowd;
pub mod postgres;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command as Process};

use crate::common::{self, API_KEY, SECRET};

pub const BIN: &str = env!("CARGO_BIN_EXE_convene");
/// The owner lease every node runs with: short, so failover fits a test.
pub const LEASE_MS: u64 = 1500;
/// Lines of each process's output kept for the failure report.
const LOG_LINES: usize = 400;

/// A port a node can listen on later, chosen below the kernel's ephemeral range
/// (32768-60999 by default): a port from `bind(0)` is an ephemeral one, which the test's own
/// thousands of client connections may take before the node binds it (a node then failed
/// to start with "address in use" now and then in CI).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    for _ in 0..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(NEXT.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port in 20000-31999");
}

/// The last lines a process wrote (stdout and stderr interleaved).
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().expect("tail lock");
        if lines.len() == LOG_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// Keeps reading `from` so the process never blocks on a full pipe.
    fn follow(&self, from: impl AsyncRead + Unpin + Send + 'static, tag: &'static str) {
        let tail = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(from).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tail.push(format!("{tag} {line}"));
            }
        });
    }

    pub fn last(&self, n: usize) -> String {
        let lines = self.0.lock().expect("tail lock");
        let skip = lines.len().saturating_sub(n);
        lines
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn spawn_logged(mut cmd: Process, tail: &Tail) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("process starts");
    tail.follow(child.stdout.take().expect("stdout piped"), "out");
    tail.follow(child.stderr.take().expect("stderr piped"), "err");
    child
}

/// Sends a signal by name (`STOP`, `CONT`, `KILL`) with the `kill` command.
fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A `redis-server` on a free loopback port, with AOF fsynced at every write, so a `kill -9`
/// and a restart on the same port and directory keep the data.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    pub tail: Tail,
}

impl Redis {
    pub async fn start() -> Redis {
        let dir = std::env::temp_dir().join(format!(
            "convene-cluster-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut redis = Redis {
            port: free_port(),
            dir,
            child: None,
            tail: Tail::default(),
        };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and directory, and waits for PONG.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis is already running");
        let mut cmd = Process::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir);
        self.child = Some(spawn_logged(cmd, &self.tail));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Resp::Simple(pong)) = self.cmd(&["PING"]).await {
                if pong == "PONG" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on port {} within 10 s:\n{}",
                self.port,
                self.tail.last(20)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: no shutdown, no final save; what the AOF holds survives.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("redis is running");
        child.start_kill().expect("SIGKILL redis");
        let _ = child.wait().await;
    }

    /// One command over a fresh connection, e.g. `["CLIENT", "KILL", "TYPE", "pubsub"]`.
    pub async fn cmd(&self, args: &[&str]) -> Result<Resp, String> {
        let port = self.port;
        let run = async move {
            let mut stream = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| format!("connect to redis: {e}"))?;
            let mut request = format!("*{}\r\n", args.len());
            for arg in args {
                request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
            }
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("write to redis: {e}"))?;
            let mut reader = BufReader::new(stream);
            read_resp(&mut reader).await
        };
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .map_err(|_| "redis did not answer within 5 s".to_string())?
    }

    /// A field of `INFO` (e.g. `connected_clients`, `pubsub_channels`).
    pub async fn info_field(&self, field: &str) -> Option<String> {
        let Ok(Resp::Bulk(Some(text))) = self.cmd(&["INFO"]).await else {
            return None;
        };
        String::from_utf8_lossy(&text).lines().find_map(|l| {
            l.strip_prefix(field)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

fn read_resp<'a, R: AsyncRead + Unpin + Send>(
    reader: &'a mut BufReader<R>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Resp, String>> + Send + 'a>> {
    Box::pin(async move {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read from redis: {e}"))?;
        if n == 0 {
            return Err("redis closed the connection".into());
        }
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1.min(line.len()));
        let number = || {
            rest.parse::<i64>()
                .map_err(|_| format!("bad RESP line {line:?}"))
        };
        match kind {
            "+" => Ok(Resp::Simple(rest.to_string())),
            "-" => Ok(Resp::Error(rest.to_string())),
            ":" => Ok(Resp::Int(number()?)),
            "$" => {
                let len = number()?;
                if len < 0 {
                    return Ok(Resp::Bulk(None));
                }
                let mut body = vec![0; len as usize + 2];
                reader
                    .read_exact(&mut body)
                    .await
                    .map_err(|e| format!("read from redis: {e}"))?;
                body.truncate(len as usize);
                Ok(Resp::Bulk(Some(body)))
            }
            "*" => {
                let len = number()?;
                if len < 0 {
                    return Ok(Resp::Array(None));
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(read_resp(reader).await?);
                }
                Ok(Resp::Array(Some(items)))
            }
            _ => Err(format!("bad RESP line {line:?}")),
        }
    })
}

/// One `convene serve` process of the cluster.
pub struct Node {
    pub id: String,
    pub port: u16,
    child: Option<Child>,
    pid: u32,
    pub tail: Tail,
}

impl Node {
    /// Starts `bin` (the `convene` binary, or a link to it) as `serve`.
    pub fn spawn(bin: &std::path::Path, id: &str, port: u16, redis_url: &str) -> Node {
        Self::spawn_with(bin, id, port, redis_url, &[])
    }

    /// As `spawn`, with more environment variables.
    pub fn spawn_with(
        bin: &std::path::Path,
        id: &str,
        port: u16,
        redis_url: &str,
        env: &[(&str, &str)],
    ) -> Node {
        let mut cmd = Process::new(bin);
        cmd.envs(env.iter().copied());
        cmd.arg("serve")
            .env("CONVENE_LISTEN", format!("127.0.0.1:{port}"))
            .env("CONVENE_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            .env("CONVENE_JWT_SECRET", SECRET)
            .env("CONVENE_API_KEY", API_KEY)
            .env("CONVENE_REDIS_URL", redis_url)
            .env("CONVENE_NODE_ID", id)
            .env("CONVENE_CLUSTER_LEASE_MS", LEASE_MS.to_string())
            .env("CONVENE_RTC_UDP_PORT", "0")
            .env("CONVENE_RTC_TCP_PORT", "0")
            .env("CONVENE_RTC_ADVERTISE_IP", "127.0.0.1")
            .env(
                "RUST_LOG",
                std::env::var("CONVENE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1");
        let tail = Tail::default();
        let child = spawn_logged(cmd, &tail);
        let pid = child.id().expect("node has a pid");
        Node {
            id: id.to_string(),
            port,
            child: Some(child),
            pid,
            tail,
        }
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Waits for `GET /healthz` to answer `ok`.
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _, body)) =
                try_http("GET", &format!("{}/healthz", self.http()), None, &[], "").await
            {
                if body.trim() == "ok" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {} not healthy within 30 s:\n{}",
                self.id,
                self.tail.last(150)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill -9`: the node vanishes without a word (its sockets are reset by the kernel).
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("node is running");
        child.start_kill().expect("SIGKILL node");
        let _ = child.wait().await;
    }

    /// SIGTERM, and waits for the process to exit (bounded by its shutdown grace).
    pub async fn terminate(&mut self) {
        let mut child = self.child.take().expect("node is running");
        signal(self.pid, "TERM");
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGSTOP: frozen, sockets open, lease not renewed.
    pub fn stop(&self) {
        signal(self.pid, "STOP");
    }

    pub fn cont(&self) {
        signal(self.pid, "CONT");
    }
}

/// Where attendees may connect: the nodes' WebSocket URLs and which are up.
pub struct View {
    ws: Vec<String>,
    up: Vec<AtomicBool>,
}

impl View {
    /// Every node up; for a single node (tests/durable.rs), one URL.
    pub fn of(ws: Vec<String>) -> Arc<View> {
        let up = ws.iter().map(|_| AtomicBool::new(true)).collect();
        Arc::new(View { ws, up })
    }

    pub fn ws(&self, node: usize) -> &str {
        &self.ws[node]
    }

    pub fn set_up(&self, node: usize, up: bool) {
        self.up[node].store(up, Ordering::SeqCst);
    }

    pub fn len(&self) -> usize {
        self.ws.len()
    }

    pub fn is_up(&self, node: usize) -> bool {
        self.up[node].load(Ordering::SeqCst)
    }

    /// The next node after `node` that is up (another one if possible), for a reconnect.
    pub fn next_up(&self, node: usize) -> usize {
        let n = self.ws.len();
        (1..=n)
            .map(|k| (node + k) % n)
            .find(|&i| self.is_up(i))
            .unwrap_or(node)
    }
}

/// One entry of `GET /api/v1/nodes`.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub http: String,
    /// The media address (UDP), when the node runs the SFU.
    pub rtc: Option<String>,
    pub sessions: u64,
    pub rooms_owned: Vec<String>,
    pub load: f64,
    pub heartbeat_ms_ago: u64,
}

#[derive(Debug, Deserialize)]
struct NodeList {
    nodes: Vec<NodeInfo>,
}

/// Redis and three nodes n1..n3 sharing it. On a failing test, prints every process's last lines.
pub struct Cluster {
    pub redis: Redis,
    pub nodes: Vec<Node>,
    pub view: Arc<View>,
}

impl Cluster {
    pub async fn start(count: usize) -> Cluster {
        Cluster::start_with(count, &[]).await
    }

    /// As `start`, every node with more environment variables (a shared store's URL).
    pub async fn start_with(count: usize, env: &[(&str, &str)]) -> Cluster {
        let redis = Redis::start().await;
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < count {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        // Started through a link of another name, so that someone's `pkill -f "convene serve"`
        // on this shared machine does not end the test's nodes.
        let bin = redis.dir.join("cluster-node");
        std::os::unix::fs::symlink(BIN, &bin).expect("link to the convene binary");
        let nodes: Vec<Node> = ports
            .iter()
            .enumerate()
            .map(|(i, &port)| {
                Node::spawn_with(&bin, &format!("n{}", i + 1), port, &redis.url(), env)
            })
            .collect();
        let view = Arc::new(View {
            ws: nodes.iter().map(Node::ws).collect(),
            up: nodes.iter().map(|_| AtomicBool::new(true)).collect(),
        });
        let cluster = Cluster { redis, nodes, view };
        for node in &cluster.nodes {
            node.ready().await;
        }
        cluster
    }

    pub fn index_of(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// `GET /api/v1/nodes` through node `via`.
    pub async fn listing(&self, via: usize) -> Result<Vec<NodeInfo>, String> {
        let url = format!("{}/api/v1/nodes", self.nodes[via].http());
        let (status, _, body) = try_http("GET", &url, Some(API_KEY), &[], "").await?;
        if status != 200 {
            return Err(format!("GET {url}: {status} {body}"));
        }
        serde_json::from_str::<NodeList>(&body)
            .map(|l| l.nodes)
            .map_err(|e| format!("GET {url}: {e}: {body}"))
    }

    /// Waits until a node other than `not` is listed as owning `room`; returns its index.
    pub async fn wait_owner(&self, room: &str, not: Option<usize>, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        let mut last: String;
        loop {
            let via = (0..self.nodes.len())
                .find(|&i| Some(i) != not && self.view.is_up(i))
                .expect("a node to ask");
            match self.listing(via).await {
                Ok(nodes) => {
                    let owners: Vec<&NodeInfo> = nodes
                        .iter()
                        .filter(|n| n.rooms_owned.iter().any(|r| r == room))
                        .collect();
                    if let Some(owner) = owners
                        .iter()
                        .map(|n| self.index_of(&n.id))
                        .find(|&i| Some(i) != not)
                    {
                        return owner;
                    }
                    last = format!("{nodes:?}");
                }
                Err(e) => last = e,
            }
            assert!(
                Instant::now() < deadline,
                "no node{} owns room {room} within {within:?}; last listing: {last}",
                not.map(|i| format!(" but {}", self.nodes[i].id))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Nodes that began a graceful shutdown: no test sends SIGTERM or SIGINT, so something
    /// outside the test did (worth knowing before reading the other failures).
    pub fn signalled_from_outside(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.tail.last(LOG_LINES).contains("shutting down"))
            .map(|n| {
                format!(
                    "node {} was told to shut down by a signal from outside the test",
                    n.id
                )
            })
            .collect()
    }

    /// The `/metrics` text of node `i`.
    pub async fn metrics(&self, i: usize) -> Result<String, String> {
        let (status, _, body) = try_http(
            "GET",
            &format!("{}/metrics", self.nodes[i].http()),
            None,
            &[],
            "",
        )
        .await?;
        if status != 200 {
            return Err(format!("/metrics: {status}"));
        }
        Ok(body)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for node in &self.nodes {
            eprintln!(
                "----- node {} (port {}, {}) last lines -----\n{}",
                node.id,
                node.port,
                if node.is_running() {
                    "running"
                } else {
                    "killed"
                },
                node.tail.last(60)
            );
        }
        eprintln!(
            "----- redis (port {}) last lines -----\n{}",
            self.redis.port,
            self.redis.tail.last(15)
        );
    }
}

/// common's `try_http` within 5 s: a node may be starting, stopped or dead, and the checks poll.
pub async fn try_http(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String, String), String> {
    tokio::time::timeout(
        Duration::from_secs(5),
        common::try_http(method, url, bearer, headers, body),
    )
    .await
    .map_err(|_| format!("{method} {url}: no answer within 5 s"))?
}
