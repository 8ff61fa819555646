//! A load peer: one str0m `Rtc` over its own UDP socket or an ICE-TCP connection, publishing or subscribing.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};

use super::http::http;
use super::stats::{SeqWindow, SubStats, CONNECTED};
use super::synthetic::Synthetic;

/// What one peer is for.
pub(super) enum Job {
    Subscriber {
        stats: Arc<SubStats>,
        posted: Instant,
    },
    Publisher(Box<Synthetic>),
}

/// RTP, not RTCP, STUN or DTLS (RFC 7983 first byte; RFC 5761 payload types).
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && (128..=191).contains(&d[0]) && !(64..=95).contains(&(d[1] & 0x7f))
}

/// A load peer's network: its own UDP socket, or one ICE-TCP connection (frames in from a
/// reader task, out through a writer task).
enum Wire {
    Udp(UdpSocket),
    Tcp {
        frames: mpsc::Receiver<Vec<u8>>,
        out: mpsc::UnboundedSender<Vec<u8>>,
        remote: SocketAddr,
    },
}

impl Wire {
    fn send(&self, data: &[u8], to: SocketAddr) {
        match self {
            // Like the network: a full socket buffer drops the datagram.
            Wire::Udp(sock) => {
                let _ = sock.try_send_to(data, to);
            }
            Wire::Tcp { out, .. } => {
                let _ = out.send(data.to_vec());
            }
        }
    }

    async fn recv(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match self {
            Wire::Udp(sock) => sock.recv_from(buf).await.ok(),
            Wire::Tcp { frames, remote, .. } => {
                let f = frames.recv().await?;
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Some((n, *remote))
            }
        }
    }

    fn try_recv(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        match self {
            Wire::Udp(sock) => sock.try_recv_from(buf).ok(),
            Wire::Tcp { frames, remote, .. } => {
                let f = frames.try_recv().ok()?;
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Some((n, *remote))
            }
        }
    }

    fn protocol(&self) -> Protocol {
        match self {
            Wire::Udp(_) => Protocol::Udp,
            Wire::Tcp { .. } => Protocol::Tcp,
        }
    }
}

/// A client peer: one `Rtc` and its [`Wire`].
pub(super) struct Peer {
    rtc: Rtc,
    wire: Wire,
    local: SocketAddr,
    job: Job,
    seqs: Vec<SeqWindow>,
    connected: bool,
    drop_every: u64,
    rtp_seen: u64,
}

/// Receive buffer of each load peer's socket (the kernel caps it at `net.core.rmem_max`).
const RECV_BUFFER: usize = 1 << 20;

impl Peer {
    pub(super) async fn new(rtp_mode: bool, job: Job) -> Result<Peer, String> {
        let sock = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        // Sharing the cores with the server, a peer can stall for tens of ms; with the
        // default ~200 KB a keyframe burst to it could then overflow its socket and count
        // as server loss. Browsers read on a dedicated network thread. Best effort.
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(RECV_BUFFER);
        let local = sock.local_addr().map_err(|e| e.to_string())?;
        let mut rtc = RtcConfig::new()
            .set_rtp_mode(rtp_mode)
            .build(Instant::now());
        let cand = Candidate::host(local, "udp").map_err(|e| e.to_string())?;
        rtc.add_local_candidate(cand);
        Ok(Peer {
            rtc,
            wire: Wire::Udp(sock),
            local,
            job,
            seqs: Vec::new(),
            connected: false,
            drop_every: 0,
            rtp_seen: 0,
        })
    }

    /// A peer with no candidate yet: [`Peer::connect_tcp`] after the answer gives it one.
    pub(super) fn new_tcp(rtp_mode: bool, job: Job) -> Peer {
        let rtc = RtcConfig::new()
            .set_rtp_mode(rtp_mode)
            .build(Instant::now());
        let (_, frames) = mpsc::channel(1);
        let (out, _) = mpsc::unbounded_channel();
        Peer {
            rtc,
            wire: Wire::Tcp {
                frames,
                out,
                remote: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            local: SocketAddr::from(([127, 0, 0, 1], 0)),
            job,
            seqs: Vec::new(),
            connected: false,
            drop_every: 0,
            rtp_seen: 0,
        }
    }

    /// Connects to the server's passive TCP candidate in `answer` and adds our active one.
    async fn connect_tcp(&mut self, answer: &str) -> Result<(), String> {
        let remote = passive_tcp_candidate(answer).ok_or("the answer has no TCP candidate")?;
        let stream = TcpStream::connect(remote)
            .await
            .map_err(|e| format!("ICE-TCP connect {remote}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().map_err(|e| e.to_string())?;
        let (mut r, mut w) = stream.into_split();
        let (frames_tx, frames) = mpsc::channel(4096);
        tokio::spawn(async move {
            loop {
                let Ok(len) = r.read_u16().await else { return };
                let mut f = vec![0; usize::from(len)];
                if r.read_exact(&mut f).await.is_err() || frames_tx.send(f).await.is_err() {
                    return;
                }
            }
        });
        let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(p) = out_rx.recv().await {
                buf.clear();
                for p in std::iter::once(p).chain(std::iter::from_fn(|| out_rx.try_recv().ok())) {
                    buf.extend_from_slice(&(p.len() as u16).to_be_bytes());
                    buf.extend_from_slice(&p);
                }
                if w.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
        let cand = Candidate::builder()
            .tcp()
            .host(local)
            .tcptype(TcpType::Active)
            .build()
            .map_err(|e| e.to_string())?;
        self.rtc.add_local_candidate(cand);
        self.local = local;
        self.wire = Wire::Tcp {
            frames,
            out,
            remote,
        };
        Ok(())
    }

    /// Drains output: sends datagrams, handles events. Returns the next timeout.
    fn poll(&mut self) -> Result<Instant, String> {
        loop {
            match self.rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    if let Job::Publisher(s) = &self.job {
                        if is_rtp(&t.contents) {
                            s.packets.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    self.wire.send(&t.contents, t.destination);
                }
                Output::Event(e) => self.on_event(e)?,
            }
        }
    }

    fn on_event(&mut self, e: Event) -> Result<(), String> {
        match e {
            Event::Connected => {
                self.connected = true;
                match &mut self.job {
                    Job::Subscriber { stats, .. } => {
                        stats.state.store(CONNECTED, Ordering::Relaxed)
                    }
                    Job::Publisher(s) => s.started = Some(Instant::now()),
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) | Event::Closed => {
                return Err("disconnected".into());
            }
            Event::KeyframeRequest(_) => {
                if let Job::Publisher(s) = &mut self.job {
                    s.want_keyframe = true;
                }
            }
            Event::RtpPacket(p) => {
                if let Job::Subscriber { stats, posted } = &self.job {
                    let ssrc: u32 = *p.header.ssrc;
                    let seq: u64 = *p.seq_no;
                    let (spanned, fresh) = match self.seqs.iter_mut().find(|w| w.ssrc == ssrc) {
                        Some(w) => w.on(seq),
                        None => {
                            self.seqs.push(SeqWindow::new(ssrc, seq));
                            (1, 1)
                        }
                    };
                    if stats.first_packet_us.load(Ordering::Relaxed) == 0 {
                        let us = p.timestamp.saturating_duration_since(*posted).as_micros() as u64;
                        stats.first_packet_us.store(us + 1, Ordering::Relaxed);
                    }
                    stats.packets.fetch_add(1, Ordering::Relaxed);
                    stats
                        .bytes
                        .fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                    stats.expected.fetch_add(spanned, Ordering::Relaxed);
                    stats.distinct.fetch_add(fresh, Ordering::Relaxed);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn receive(&mut self, n: usize, source: SocketAddr, buf: &[u8]) -> Result<(), String> {
        if self.drop_every > 0 && is_rtp(&buf[..n]) {
            self.rtp_seen += 1;
            if self.rtp_seen.is_multiple_of(self.drop_every) {
                return Ok(());
            }
        }
        let Ok(recv) = Receive::new(self.wire.protocol(), source, self.local, &buf[..n]) else {
            return Ok(());
        };
        self.rtc
            .handle_input(Input::Receive(Instant::now(), recv))
            .map_err(|e| e.to_string())
    }

    /// Drops every `n`th RTP datagram received (0: none), as a lossy network would.
    pub(super) fn drop_every(&mut self, n: u64) {
        self.drop_every = n;
    }

    /// Drives the peer until it connects, `stop`, or `limit` elapsed.
    pub(super) async fn await_connected(
        &mut self,
        mut stop: watch::Receiver<bool>,
        limit: Duration,
    ) -> Result<(), String> {
        let mut buf = vec![0u8; 2048];
        let t0 = Instant::now();
        while !self.connected && t0.elapsed() < limit {
            let deadline = self.poll()?.min(Instant::now() + Duration::from_millis(50));
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                r = self.wire.recv(&mut buf) => if let Some((n, src)) = r { self.receive(n, src, &buf)?; },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
            self.rtc
                .handle_input(Input::Timeout(Instant::now()))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Runs until `stop` or a failure.
    pub(super) async fn drive(mut self, mut stop: watch::Receiver<bool>) -> Result<(), String> {
        let mut buf = vec![0u8; 2048];
        loop {
            let mut deadline = self.poll()?;
            if let Job::Publisher(s) = &self.job {
                if let Some(due) = s.due() {
                    deadline = deadline.min(due);
                }
            }
            let deadline = deadline.min(Instant::now() + Duration::from_millis(100));
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                r = self.wire.recv(&mut buf) => {
                    if let Some((n, src)) = r {
                        self.receive(n, src, &buf)?;
                        self.poll()?;
                        // Drain what else is queued without another wakeup.
                        for _ in 0..64 {
                            let Some((n, src)) = self.wire.try_recv(&mut buf) else { break };
                            self.receive(n, src, &buf)?;
                            self.poll()?;
                        }
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
            let now = Instant::now();
            self.rtc
                .handle_input(Input::Timeout(now))
                .map_err(|e| e.to_string())?;
            if let Job::Publisher(s) = &mut self.job {
                s.write_due(&mut self.rtc, now);
            }
            if !self.rtc.is_alive() {
                return Err("rtc closed".into());
            }
        }
        self.rtc.disconnect();
        let _ = self.poll();
        Ok(())
    }
}

/// Makes the offer, POSTs it, applies the answer. Returns the resource Location.
pub(super) async fn negotiate(
    peer: &mut Peer,
    host: &str,
    path: &str,
    token: &str,
    medias: &[(MediaKind, Direction)],
) -> Result<Option<String>, String> {
    let mut api = peer.rtc.sdp_api();
    let mut mids = Vec::new();
    for (kind, dir) in medias {
        let stream = (*dir == Direction::SendOnly).then(|| "load".to_string());
        mids.push(api.add_media(*kind, *dir, stream, None, None));
    }
    let (offer, pending) = api.apply().ok_or("no offer")?;
    if let Job::Publisher(s) = &mut peer.job {
        s.audio = mids[0];
        s.video = mids[1];
    }
    let auth = format!("Bearer {token}");
    let resp = http(
        host,
        "POST",
        path,
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        &offer.to_sdp_string(),
    )
    .await?;
    if resp.status != 201 {
        return Err(format!("POST {path}: {} {}", resp.status, resp.body.trim()));
    }
    let answer = SdpAnswer::from_sdp_string(&resp.body).map_err(|e| format!("answer: {e}"))?;
    peer.rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| format!("accept answer: {e}"))?;
    if matches!(peer.wire, Wire::Tcp { .. }) {
        peer.connect_tcp(&resp.body).await?;
    }
    Ok(resp.header("location").map(str::to_owned))
}

/// The address of the first `tcptype passive` host candidate in an SDP.
fn passive_tcp_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines().find_map(|l| {
        let f: Vec<&str> = l.strip_prefix("a=candidate:")?.split_whitespace().collect();
        // foundation component transport priority address port typ host ... tcptype passive
        let passive = f.windows(2).any(|w| w == ["tcptype", "passive"]);
        if f.len() < 6 || !f[2].eq_ignore_ascii_case("tcp") || !passive {
            return None;
        }
        Some(SocketAddr::new(f[4].parse().ok()?, f[5].parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_tcp_candidate_is_found_in_an_answer() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706175 127.0.0.1 3478 typ host\r\n\
                   a=candidate:2 1 tcp 1509949695 127.0.0.1 7881 typ host tcptype passive\r\n";
        assert_eq!(
            passive_tcp_candidate(sdp),
            Some("127.0.0.1:7881".parse().unwrap())
        );
        assert_eq!(
            passive_tcp_candidate("a=candidate:1 1 udp 1 127.0.0.1 3478 typ host"),
            None
        );
    }
}
