//! The direct egress path: forwarded RTP SRTP-protected by the worker and sent in batches.
//!
//! For a subscriber that runs no bandwidth estimation (WHEP viewers, webcast audiences
//! when `rtc.bandwidth_estimation` is off), a forwarded packet skips `Rtc::write_rtp` and
//! `Rtc::poll_output`, which together were about half of the server's CPU per packet
//! (docs/benchmarks.md). The worker writes the RTP header, encrypts with the session's
//! SRTP keys and queues the datagram for one `sendmmsg`. str0m stays in charge of ICE,
//! DTLS, RTCP and keyframe requests:
//!
//! - keys: [`KeyCapture`] wraps str0m's DTLS provider and copies the DTLS-SRTP keying
//!   material of each peer as the handshake yields it (the same bytes str0m derives its
//!   own contexts from);
//! - sender reports: one packet per stream per second still goes through the engine
//!   ([`ENGINE_EVERY`]), so str0m's SRs carry a fresh RTP/NTP pair for lip sync;
//! - NACK: video packets are kept in a short [`History`] and re-sent as they were.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
use nix::sys::socket::{MultiHeaders, SockaddrStorage};
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
    SrtpProfile,
};
use str0m::crypto::{
    AeadAes128Gcm, AeadAes128GcmCipher, AeadAes256Gcm, AeadAes256GcmCipher, Aes128CmSha1_80,
    Aes128CmSha1_80Cipher, CryptoError, CryptoProvider, Sha1HmacProvider,
};
use str0m::media::Pt;
use str0m::rtp::VideoOrientation;

/// How often a stream's packet goes through the engine instead (fresh sender reports).
pub(crate) const ENGINE_EVERY: Duration = Duration::from_secs(1);
/// Datagrams queued before the batch is sent.
pub(crate) const BATCH_MAX: usize = 64;
/// Video packets kept per stream for retransmission (~1.5 s at 2 Mbit/s).
const HISTORY: usize = 256;

// ---------------------------------------------------------------------------------------
// Keys

/// The DTLS-SRTP keying material of one peer, once its handshake is done.
pub(crate) struct SessionKeys {
    material: Vec<u8>,
    profile: SrtpProfile,
    /// We were the DTLS client: our keys are the left (client) half.
    active: bool,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key bytes.
        f.debug_struct("SessionKeys")
            .field("profile", &self.profile)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// Where a peer's keys land; filled once by its DTLS instance.
pub(crate) type KeySlot = Arc<OnceLock<SessionKeys>>;

thread_local! {
    /// The slot for the `Rtc` being built on this thread (see [`build_with_keys`]).
    static NEXT_SLOT: RefCell<Option<KeySlot>> = const { RefCell::new(None) };
}

/// Wraps the real DTLS provider; instances created while a slot is pending copy their
/// keying material into it.
#[derive(Debug)]
struct KeyCapture {
    inner: &'static dyn DtlsProvider,
}

impl DtlsProvider for KeyCapture {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let inner = self.inner.new_dtls(cert, now, dtls_version, mtu)?;
        Ok(match NEXT_SLOT.with(|s| s.borrow_mut().take()) {
            Some(slot) => Box::new(Capturing { inner, slot }),
            None => inner,
        })
    }

    fn is_test(&self) -> bool {
        self.inner.is_test()
    }
}

struct Capturing {
    inner: Box<dyn DtlsInstance>,
    slot: KeySlot,
}

impl fmt::Debug for Capturing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capturing").finish_non_exhaustive()
    }
}

impl DtlsInstance for Capturing {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active)
    }
    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }
    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let out = self.inner.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(material, profile) = &out {
            let _ = self.slot.set(SessionKeys {
                material: material.to_vec(),
                profile: *profile,
                active: self.inner.is_active(),
            });
        }
        out
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }
    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }
    fn is_active(&self) -> bool {
        self.inner.is_active()
    }
    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }
    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }
    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}

/// `crypto` with its DTLS provider wrapped by [`KeyCapture`] (one per process).
pub(crate) fn capturing(crypto: CryptoProvider) -> CryptoProvider {
    static CAPTURE: OnceLock<KeyCapture> = OnceLock::new();
    let inner = crypto.dtls_provider;
    let capture: &'static KeyCapture = CAPTURE.get_or_init(|| KeyCapture { inner });
    CryptoProvider {
        dtls_provider: capture,
        ..crypto
    }
}

/// Builds an `Rtc` (with a [`capturing`] provider) whose keys will land in the returned slot.
pub(crate) fn build_with_keys(build: impl FnOnce() -> str0m::Rtc) -> (str0m::Rtc, KeySlot) {
    let slot = KeySlot::default();
    NEXT_SLOT.with(|s| *s.borrow_mut() = Some(slot.clone()));
    let rtc = build();
    NEXT_SLOT.with(|s| s.borrow_mut().take());
    (rtc, slot)
}

// ---------------------------------------------------------------------------------------
// SRTP (RFC 3711, RFC 7714), sending side only

const LABEL_RTP_ENCRYPTION: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
/// aws-lc-rs wants room for a whole extra block after CTR output.
const CTR_SLACK: usize = 15;

enum TxCipher {
    Cm {
        salt: [u8; Aes128CmSha1_80::SALT_LEN],
        auth: [u8; Aes128CmSha1_80::HMAC_KEY_LEN],
        enc: Box<dyn Aes128CmSha1_80Cipher>,
        hmac: &'static dyn Sha1HmacProvider,
    },
    Gcm128 {
        salt: [u8; AeadAes128Gcm::SALT_LEN],
        enc: Box<dyn AeadAes128GcmCipher>,
    },
    Gcm256 {
        salt: [u8; AeadAes256Gcm::SALT_LEN],
        enc: Box<dyn AeadAes256GcmCipher>,
    },
}

/// Protects outgoing RTP of one session.
pub(crate) struct SrtpSender {
    cipher: TxCipher,
}

/// The SRTP key derivation function (AES-CM PRF, key derivation rate 0): `out.len()`
/// bytes for `label` from the master key and salt.
fn derive(crypto: &CryptoProvider, master: &[u8], salt: &[u8], label: u8, out: &mut [u8]) {
    let mut x = [0u8; 16];
    x[..salt.len()].copy_from_slice(salt);
    x[7] ^= label;
    let mut block = [0u8; 32];
    for (round, chunk) in out.chunks_mut(16).enumerate() {
        x[14..].copy_from_slice(&(round as u16).to_be_bytes());
        if master.len() == 32 {
            crypto
                .srtp_provider
                .srtp_aes_256_ecb_round(master, &x, &mut block);
        } else {
            crypto
                .srtp_provider
                .srtp_aes_128_ecb_round(master, &x, &mut block);
        }
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

impl SrtpSender {
    pub fn new(crypto: &CryptoProvider, keys: &SessionKeys) -> Option<Self> {
        let (key_len, salt_len) = match keys.profile {
            SrtpProfile::AES128_CM_SHA1_80 => (Aes128CmSha1_80::KEY_LEN, Aes128CmSha1_80::SALT_LEN),
            SrtpProfile::AEAD_AES_128_GCM => (AeadAes128Gcm::KEY_LEN, AeadAes128Gcm::SALT_LEN),
            SrtpProfile::AEAD_AES_256_GCM => (AeadAes256Gcm::KEY_LEN, AeadAes256Gcm::SALT_LEN),
            _ => return None,
        };
        let m = &keys.material;
        if m.len() != 2 * (key_len + salt_len) {
            return None;
        }
        // [client key, server key, client salt, server salt]
        let (k, s) = if keys.active {
            (0, 2 * key_len)
        } else {
            (key_len, 2 * key_len + salt_len)
        };
        let master = &m[k..k + key_len];
        let master_salt = &m[s..s + salt_len];
        let p = crypto.srtp_provider;
        let cipher = match keys.profile {
            SrtpProfile::AES128_CM_SHA1_80 => {
                let mut key = [0u8; 16];
                let mut salt = [0u8; 14];
                let mut auth = [0u8; 20];
                derive(crypto, master, master_salt, LABEL_RTP_ENCRYPTION, &mut key);
                derive(crypto, master, master_salt, LABEL_RTP_AUTH, &mut auth);
                derive(crypto, master, master_salt, LABEL_RTP_SALT, &mut salt);
                TxCipher::Cm {
                    salt,
                    auth,
                    enc: p.aes_128_cm_sha1_80().create_cipher(key, true),
                    hmac: crypto.sha1_hmac_provider,
                }
            }
            SrtpProfile::AEAD_AES_128_GCM => {
                let mut key = [0u8; 16];
                let mut salt = [0u8; 12];
                derive(crypto, master, master_salt, LABEL_RTP_ENCRYPTION, &mut key);
                derive(crypto, master, master_salt, LABEL_RTP_SALT, &mut salt);
                TxCipher::Gcm128 {
                    salt,
                    enc: p.aead_aes_128_gcm().create_cipher(key, true),
                }
            }
            _ => {
                let mut key = [0u8; 32];
                let mut salt = [0u8; 12];
                derive(crypto, master, master_salt, LABEL_RTP_ENCRYPTION, &mut key);
                derive(crypto, master, master_salt, LABEL_RTP_SALT, &mut salt);
                TxCipher::Gcm256 {
                    salt,
                    enc: p.aead_aes_256_gcm().create_cipher(key, true),
                }
            }
        };
        Some(SrtpSender { cipher })
    }

    /// `out` holds a complete RTP header; appends `payload` encrypted and the auth tag.
    /// `index` is the packet's extended sequence number (ROC << 16 | seq).
    pub fn protect(&mut self, out: &mut Vec<u8>, payload: &[u8], ssrc: u32, index: u64) -> bool {
        let hlen = out.len();
        let seq = index as u16;
        let roc = (index >> 16) as u32;
        match &mut self.cipher {
            TxCipher::Cm {
                salt,
                auth,
                enc,
                hmac,
            } => {
                let end = hlen + payload.len();
                out.resize(end + Aes128CmSha1_80::HMAC_TAG_LEN.max(CTR_SLACK), 0);
                let iv = Aes128CmSha1_80::rtp_iv(*salt, ssrc, index);
                if enc.encrypt(&iv, payload, &mut out[hlen..]).is_err() {
                    return false;
                }
                let tag = hmac.sha1_hmac(auth, &[&out[..end], &roc.to_be_bytes()]);
                out[end..end + Aes128CmSha1_80::HMAC_TAG_LEN]
                    .copy_from_slice(&tag[..Aes128CmSha1_80::HMAC_TAG_LEN]);
                out.truncate(end + Aes128CmSha1_80::HMAC_TAG_LEN);
            }
            TxCipher::Gcm128 { salt, enc } => {
                out.resize(hlen + payload.len() + AeadAes128Gcm::TAG_LEN, 0);
                let iv = AeadAes128Gcm::rtp_iv(*salt, ssrc, roc, seq);
                let (aad, body) = out.split_at_mut(hlen);
                if enc.encrypt(&iv, aad, payload, body).is_err() {
                    return false;
                }
            }
            TxCipher::Gcm256 { salt, enc } => {
                out.resize(hlen + payload.len() + AeadAes256Gcm::TAG_LEN, 0);
                let iv = AeadAes256Gcm::rtp_iv(*salt, ssrc, roc, seq);
                let (aad, body) = out.split_at_mut(hlen);
                if enc.encrypt(&iv, aad, payload, body).is_err() {
                    return false;
                }
            }
        }
        true
    }
}

// ---------------------------------------------------------------------------------------
// RTP

/// Header extension ids the subscriber negotiated (None: not negotiated).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExtIds {
    pub mid: Option<u8>,
    pub audio_level: Option<u8>,
    pub video_orientation: Option<u8>,
}

/// One outgoing packet, before protection.
pub(crate) struct RtpOut<'a> {
    pub pt: Pt,
    pub marker: bool,
    /// Extended sequence number (the SRTP index).
    pub seq: u64,
    pub time: u32,
    pub ssrc: u32,
    pub mid: &'a str,
    pub audio_level: Option<(i8, bool)>,
    pub video_orientation: Option<VideoOrientation>,
}

/// Writes the RTP header of `p` (one-byte header extensions, RFC 8285) into `out`.
pub(crate) fn write_header(out: &mut Vec<u8>, p: &RtpOut<'_>, ids: ExtIds) {
    out.clear();
    out.push(0x80);
    out.push(u8::from(p.marker) << 7 | (*p.pt & 0x7f));
    out.extend_from_slice(&(p.seq as u16).to_be_bytes());
    out.extend_from_slice(&p.time.to_be_bytes());
    out.extend_from_slice(&p.ssrc.to_be_bytes());
    let mid = ids
        .mid
        .filter(|id| (1..=14).contains(id) && (1..=16).contains(&p.mid.len()));
    let level = ids.audio_level.zip(p.audio_level);
    let orientation = ids.video_orientation.zip(p.video_orientation);
    if mid.is_none() && level.is_none() && orientation.is_none() {
        return;
    }
    out[0] |= 0x10;
    out.extend_from_slice(&[0xBE, 0xDE, 0, 0]);
    let start = out.len();
    if let Some(id) = mid {
        out.push(id << 4 | (p.mid.len() as u8 - 1));
        out.extend_from_slice(p.mid.as_bytes());
    }
    if let Some((id, (level, voice))) = level.filter(|(id, _)| (1..=14).contains(id)) {
        out.push(id << 4);
        out.push(u8::from(voice) << 7 | (level.unsigned_abs() & 0x7f));
    }
    if let Some((id, o)) = orientation.filter(|(id, _)| (1..=14).contains(id)) {
        out.push(id << 4);
        out.push(o as u8);
    }
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
    let words = ((out.len() - start) / 4) as u16;
    out[start - 2..start].copy_from_slice(&words.to_be_bytes());
}

/// A video packet as forwarded, kept for retransmission on NACK.
#[derive(Clone)]
pub(crate) struct Sent {
    pub seq: u64,
    pub pt: Pt,
    pub marker: bool,
    pub time: u32,
    pub video_orientation: Option<VideoOrientation>,
    pub data: Arc<[u8]>,
}

/// The last [`HISTORY`] video packets of one outgoing stream, by sequence number.
#[derive(Default)]
pub(crate) struct History {
    ring: Vec<Option<Sent>>,
}

impl History {
    pub fn push(&mut self, sent: Sent) {
        if self.ring.is_empty() {
            self.ring = vec![None; HISTORY];
        }
        let i = sent.seq as usize % HISTORY;
        self.ring[i] = Some(sent);
    }

    /// The packet sent with this (16-bit) sequence number, if still kept.
    pub fn get(&self, seq: u16) -> Option<&Sent> {
        let s = self.ring.get(seq as usize % HISTORY)?.as_ref()?;
        (s.seq as u16 == seq).then_some(s)
    }
}

/// Sequence numbers a NACK entry (packet id + bitmask of the 16 following) asks for.
pub(crate) fn nacked(pid: u16, blp: u16) -> impl Iterator<Item = u16> {
    std::iter::once(pid).chain(
        (0..16)
            .filter(move |i| blp & (1 << i) != 0)
            .map(move |i| pid.wrapping_add(i + 1)),
    )
}

// ---------------------------------------------------------------------------------------
// Sending

/// Datagrams of one worker turn, sent with `sendmmsg` (one syscall for up to
/// [`BATCH_MAX`]); buffers are reused.
#[derive(Default)]
pub struct SendBatch {
    queued: Vec<(Vec<u8>, SocketAddr)>,
    spare: Vec<Vec<u8>>,
    #[cfg(target_os = "linux")]
    headers: Option<MultiHeaders<SockaddrStorage>>,
    #[cfg(not(target_os = "linux"))]
    headers: Option<()>,
    pub datagrams: u64,
    pub syscalls: u64,
}

impl SendBatch {
    /// A cleared buffer to fill.
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(1500));
        b.clear();
        b
    }

    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < BATCH_MAX * 2 {
            self.spare.push(buf);
        }
    }

    /// Queues a datagram; sends the batch when it is full.
    pub fn push(&mut self, socket: &UdpSocket, buf: Vec<u8>, to: SocketAddr) {
        self.queued.push((buf, to));
        if self.queued.len() >= BATCH_MAX {
            self.flush(socket);
        }
    }

    pub fn flush(&mut self, socket: &UdpSocket) {
        if self.queued.is_empty() {
            return;
        }
        let mut sent = 0;
        while sent < self.queued.len() {
            self.syscalls += 1;
            match send_many(socket, &mut self.headers, &self.queued[sent..]) {
                Ok(n) => sent += n.max(1),
                Err(e) => {
                    // The first datagram failed (e.g. an unreachable address): skip it.
                    tracing::debug!(error = %e, dest = %self.queued[sent].1, "udp send");
                    sent += 1;
                }
            }
        }
        self.datagrams += self.queued.len() as u64;
        let mut queued = std::mem::take(&mut self.queued);
        for (buf, _) in queued.drain(..) {
            self.recycle(buf);
        }
        self.queued = queued;
    }
}

/// Sends up to [`BATCH_MAX`] datagrams in one `sendmmsg`; returns how many went.
#[cfg(target_os = "linux")]
fn send_many(
    socket: &UdpSocket,
    headers: &mut Option<MultiHeaders<SockaddrStorage>>,
    datagrams: &[(Vec<u8>, SocketAddr)],
) -> io::Result<usize> {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    let n = datagrams.len().min(BATCH_MAX);
    let slices: Vec<[IoSlice<'_>; 1]> = datagrams[..n]
        .iter()
        .map(|(b, _)| [IoSlice::new(b)])
        .collect();
    let addrs: Vec<Option<SockaddrStorage>> = datagrams[..n]
        .iter()
        .map(|(_, a)| Some(SockaddrStorage::from(*a)))
        .collect();
    let headers = headers.get_or_insert_with(|| MultiHeaders::preallocate(BATCH_MAX, None));
    let sent = nix::sys::socket::sendmmsg(
        socket.as_raw_fd(),
        headers,
        &slices,
        &addrs,
        [],
        nix::sys::socket::MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    Ok(sent.count())
}

#[cfg(not(target_os = "linux"))]
fn send_many(
    socket: &UdpSocket,
    _headers: &mut Option<()>,
    datagrams: &[(Vec<u8>, SocketAddr)],
) -> io::Result<usize> {
    let (b, a) = &datagrams[0];
    socket.send_to(b, a).map(|_| 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_with_extensions_is_word_aligned() {
        let mut out = Vec::new();
        let p = RtpOut {
            pt: 111.into(),
            marker: true,
            seq: 0x1_0005,
            time: 0xdead_beef,
            ssrc: 0x0102_0304,
            mid: "1",
            audio_level: Some((-37, true)),
            video_orientation: None,
        };
        let ids = ExtIds {
            mid: Some(4),
            audio_level: Some(1),
            video_orientation: None,
        };
        write_header(&mut out, &p, ids);
        assert_eq!(
            &out[..12],
            &[0x90, 0x80 | 111, 0, 5, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]
        );
        assert_eq!(&out[12..16], &[0xBE, 0xDE, 0, 1]);
        assert_eq!(&out[16..], &[0x40, b'1', 0x10, 0x80 | 37]);
        // Without negotiated extensions: the bare 12 bytes, X bit clear.
        write_header(&mut out, &p, ExtIds::default());
        assert_eq!(out.len(), 12);
        assert_eq!(out[0], 0x80);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn key_derivation_matches_rfc_3711_test_vectors() {
        // RFC 3711, appendix B.3.
        let crypto = str0m::crypto::from_feature_flags();
        let master = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut key = [0u8; 16];
        let mut session_salt = [0u8; 14];
        let mut auth = [0u8; 20];
        derive(&crypto, &master, &salt, LABEL_RTP_ENCRYPTION, &mut key);
        derive(&crypto, &master, &salt, LABEL_RTP_SALT, &mut session_salt);
        derive(&crypto, &master, &salt, LABEL_RTP_AUTH, &mut auth);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(session_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    #[test]
    fn protected_packets_authenticate_and_decrypt_with_the_session_keys() {
        let crypto = str0m::crypto::from_feature_flags();
        let material: Vec<u8> = (0u8..60).collect();
        let keys = SessionKeys {
            material: material.clone(),
            profile: SrtpProfile::AES128_CM_SHA1_80,
            active: false,
        };
        let mut tx = SrtpSender::new(&crypto, &keys).unwrap();
        let mut out = Vec::new();
        let p = RtpOut {
            pt: 96.into(),
            marker: false,
            seq: 0x2_0010,
            time: 9000,
            ssrc: 0xabcd,
            mid: "0",
            audio_level: None,
            video_orientation: None,
        };
        write_header(&mut out, &p, ExtIds::default());
        let payload = b"a VP8 payload of some length, not a multiple of 16";
        assert!(tx.protect(&mut out, payload, p.ssrc, p.seq));
        assert_eq!(out.len(), 12 + payload.len() + 10);
        // The passive side's keys: the server half of the material.
        let (master, salt) = (&material[16..32], &material[46..60]);
        let mut key = [0u8; 16];
        let mut session_salt = [0u8; 14];
        let mut auth = [0u8; 20];
        derive(&crypto, master, salt, LABEL_RTP_ENCRYPTION, &mut key);
        derive(&crypto, master, salt, LABEL_RTP_SALT, &mut session_salt);
        derive(&crypto, master, salt, LABEL_RTP_AUTH, &mut auth);
        let hmac = |k: &[u8], d: &[&[u8]]| crypto.sha1_hmac_provider.sha1_hmac(k, d);
        let (signed, tag) = out.split_at(out.len() - 10);
        assert!(Aes128CmSha1_80::rtp_verify(hmac, &auth, signed, p.seq, tag));
        let mut dec = crypto
            .srtp_provider
            .aes_128_cm_sha1_80()
            .create_cipher(key, false);
        let iv = Aes128CmSha1_80::rtp_iv(session_salt, p.ssrc, p.seq);
        let mut plain = vec![0u8; payload.len() + CTR_SLACK];
        dec.decrypt(&iv, &signed[12..], &mut plain).unwrap();
        assert_eq!(&plain[..payload.len()], payload);
    }

    #[test]
    fn nack_bitmask_expands_in_order() {
        let v: Vec<u16> = nacked(65534, 0b101).collect();
        assert_eq!(v, vec![65534, 65535, 1]);
    }

    #[test]
    fn history_keeps_the_latest_per_slot() {
        let mut h = History::default();
        let sent = |seq| Sent {
            seq,
            pt: 96.into(),
            marker: false,
            time: 0,
            video_orientation: None,
            data: Arc::from(&[1u8][..]),
        };
        h.push(sent(10));
        assert!(h.get(10).is_some());
        h.push(sent(10 + HISTORY as u64));
        assert!(h.get(10).is_none(), "overwritten");
        assert!(h.get((10 + HISTORY) as u16).is_some());
    }
}
