//! STUN messages (RFC 8489) as the embedded TURN relay reads and writes them: the header, attributes, XOR addresses, MESSAGE-INTEGRITY and FINGERPRINT.
//!
//! Every byte comes from the network, so parsing only borrows, checks each length before
//! it reads, and refuses anything malformed with `None` (the caller drops it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::hmac;

pub const MAGIC: u32 = 0x2112_A442;
pub const HEADER: usize = 20;
/// Attributes read from one message; a datagram holds far fewer in practice.
const MAX_ATTRIBUTES: usize = 64;

// Methods (RFC 8489, RFC 8656).
pub const BINDING: u16 = 0x001;
pub const ALLOCATE: u16 = 0x003;
pub const REFRESH: u16 = 0x004;
pub const SEND: u16 = 0x006;
pub const DATA: u16 = 0x007;
pub const CREATE_PERMISSION: u16 = 0x008;
pub const CHANNEL_BIND: u16 = 0x009;

// Attributes.
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA_ATTR: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const SOFTWARE: u16 = 0x8022;
pub const FINGERPRINT: u16 = 0x8028;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// The message type for `method` in `class` (the class bits sit between the method's).
pub fn message_type(method: u16, class: Class) -> u16 {
    let c: u16 = match class {
        Class::Request => 0,
        Class::Indication => 1,
        Class::Success => 2,
        Class::Error => 3,
    };
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 1) << 4)
        | ((c & 2) << 7)
}

/// A parsed message borrowing the datagram (or stream frame) it came in.
#[derive(Debug)]
pub struct Message<'a> {
    pub method: u16,
    pub class: Class,
    pub txid: [u8; 12],
    attrs: Vec<(u16, &'a [u8])>,
    raw: &'a [u8],
    /// Where MESSAGE-INTEGRITY starts, if the message has one.
    integrity_at: Option<usize>,
}

impl<'a> Message<'a> {
    /// `None` unless `raw` is exactly one well-formed STUN message.
    pub fn parse(raw: &'a [u8]) -> Option<Message<'a>> {
        if raw.len() < HEADER || raw[0] & 0xC0 != 0 {
            return None;
        }
        let typ = u16::from_be_bytes([raw[0], raw[1]]);
        let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
        let cookie = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        if cookie != MAGIC || len % 4 != 0 || HEADER + len != raw.len() {
            return None;
        }
        let method = (typ & 0x000F) | ((typ & 0x00E0) >> 1) | ((typ & 0x3E00) >> 2);
        let class = match ((typ >> 4) & 1) | ((typ >> 7) & 2) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        };
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&raw[8..20]);
        let mut attrs = Vec::new();
        let mut integrity_at = None;
        let mut at = HEADER;
        while at < raw.len() {
            if raw.len() - at < 4 || attrs.len() >= MAX_ATTRIBUTES {
                return None;
            }
            let t = u16::from_be_bytes([raw[at], raw[at + 1]]);
            let l = usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]]));
            let end = at + 4 + l;
            let padded = at + 4 + l.div_ceil(4) * 4;
            if padded > raw.len() {
                return None;
            }
            // Only FINGERPRINT may follow MESSAGE-INTEGRITY; anything else there is ignored.
            if integrity_at.is_none() || t == FINGERPRINT {
                attrs.push((t, &raw[at + 4..end]));
            }
            if t == MESSAGE_INTEGRITY && integrity_at.is_none() {
                integrity_at = Some(at);
            }
            at = padded;
        }
        Some(Message {
            method,
            class,
            txid,
            attrs,
            raw,
            integrity_at,
        })
    }

    pub fn get(&self, t: u16) -> Option<&'a [u8]> {
        self.attrs.iter().find(|(k, _)| *k == t).map(|(_, v)| *v)
    }

    pub fn all(&self, t: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.attrs
            .iter()
            .filter(move |(k, _)| *k == t)
            .map(|(_, v)| *v)
    }

    pub fn text(&self, t: u16) -> Option<&'a str> {
        self.get(t).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn u32(&self, t: u16) -> Option<u32> {
        let v = self.get(t)?;
        Some(u32::from_be_bytes(v.try_into().ok()?))
    }

    pub fn xor_address(&self, t: u16) -> Option<SocketAddr> {
        decode_xor(self.get(t)?, &self.txid)
    }

    /// Every address of attribute `t`; `None` if any is malformed.
    pub fn xor_addresses(&self, t: u16) -> Option<Vec<SocketAddr>> {
        self.all(t).map(|v| decode_xor(v, &self.txid)).collect()
    }

    /// Does MESSAGE-INTEGRITY hold for `key` (false when the message has none)?
    pub fn integrity_ok(&self, key: &hmac::Key) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Some(tag) = self.get(MESSAGE_INTEGRITY) else {
            return false;
        };
        if tag.len() != 20 {
            return false;
        }
        // The length field counts up to and including MESSAGE-INTEGRITY (24 bytes).
        let covered = u16::try_from(at - HEADER + 24).unwrap_or(u16::MAX);
        let mut signed = Vec::with_capacity(at);
        signed.extend_from_slice(&self.raw[..2]);
        signed.extend_from_slice(&covered.to_be_bytes());
        signed.extend_from_slice(&self.raw[4..at]);
        // Constant time: aws-lc-rs compares the tags.
        hmac::verify(key, &signed, tag).is_ok()
    }
}

fn decode_xor(v: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC >> 16) as u16;
    let ip = match (v[1], v.len()) {
        (1, 8) => {
            let x = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC;
            IpAddr::V4(Ipv4Addr::from(x))
        }
        (2, 20) => {
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&MAGIC.to_be_bytes());
            mask[4..].copy_from_slice(txid);
            let mut b = [0u8; 16];
            for (i, byte) in b.iter_mut().enumerate() {
                *byte = v[4 + i] ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Writes one message: attributes in order, then MESSAGE-INTEGRITY (with a key) and FINGERPRINT.
pub struct Builder {
    buf: Vec<u8>,
    txid: [u8; 12],
}

impl Builder {
    pub fn new(method: u16, class: Class, txid: [u8; 12]) -> Builder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC.to_be_bytes());
        buf.extend_from_slice(&txid);
        Builder { buf, txid }
    }

    pub fn attr(mut self, t: u16, value: &[u8]) -> Builder {
        self.put(t, value);
        self
    }

    fn put(&mut self, t: u16, value: &[u8]) {
        let len = u16::try_from(value.len()).expect("attributes are small");
        self.buf.extend_from_slice(&t.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = (4 - value.len() % 4) % 4;
        self.buf.extend(std::iter::repeat_n(0, pad));
        self.set_len();
    }

    fn set_len(&mut self) {
        let len = u16::try_from(self.buf.len() - HEADER).expect("messages are small");
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    pub fn u32(self, t: u16, v: u32) -> Builder {
        self.attr(t, &v.to_be_bytes())
    }

    pub fn xor_address(self, t: u16, addr: SocketAddr) -> Builder {
        let port = addr.port() ^ (MAGIC >> 16) as u16;
        let mut v = vec![0u8];
        match addr.ip() {
            IpAddr::V4(ip) => {
                v.push(1);
                v.extend_from_slice(&port.to_be_bytes());
                v.extend_from_slice(&(u32::from(ip) ^ MAGIC).to_be_bytes());
            }
            IpAddr::V6(ip) => {
                v.push(2);
                v.extend_from_slice(&port.to_be_bytes());
                let mut mask = [0u8; 16];
                mask[..4].copy_from_slice(&MAGIC.to_be_bytes());
                mask[4..].copy_from_slice(&self.txid);
                v.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
            }
        }
        self.attr(t, &v)
    }

    /// ERROR-CODE: class, number and a short reason.
    pub fn error(self, code: u16, reason: &str) -> Builder {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attr(ERROR_CODE, &v)
    }

    /// The bytes, signed with `key` (MESSAGE-INTEGRITY) when given, and with a FINGERPRINT.
    pub fn finish(mut self, key: Option<&hmac::Key>) -> Vec<u8> {
        if let Some(key) = key {
            // The length counts MESSAGE-INTEGRITY before it is computed.
            let len = u16::try_from(self.buf.len() - HEADER + 24).expect("small");
            self.buf[2..4].copy_from_slice(&len.to_be_bytes());
            let tag = hmac::sign(key, &self.buf);
            self.put(MESSAGE_INTEGRITY, tag.as_ref());
        }
        let len = u16::try_from(self.buf.len() - HEADER + 8).expect("small");
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let crc = fingerprint(&self.buf);
        self.put(FINGERPRINT, &crc.to_be_bytes());
        self.buf
    }
}

/// CRC-32 of the message so far, XORed with "STUN" (RFC 8489 section 14.7).
fn fingerprint(bytes: &[u8]) -> u32 {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    CRC.checksum(bytes) ^ 0x5354_554E
}

/// TURN ChannelData (RFC 8656 section 12.4): the channel number and the application data.
pub fn parse_channel_data(raw: &[u8]) -> Option<(u16, &[u8])> {
    if raw.len() < 4 || raw[0] & 0xC0 != 0x40 {
        return None;
    }
    let channel = u16::from_be_bytes([raw[0], raw[1]]);
    let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
    // Over UDP the padding may be missing; over a stream the framer already cut it.
    raw.get(4..4 + len).map(|data| (channel, data))
}

/// A ChannelData message; `pad` for streams, where it must end on a 4-byte boundary.
pub fn channel_data(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + data.len() + 3);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(data);
    if pad {
        out.extend(std::iter::repeat_n(0, (4 - data.len() % 4) % 4));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_integrity_and_addresses() {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"k");
        let txid = [7u8; 12];
        let v4: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        let bytes = Builder::new(ALLOCATE, Class::Request, txid)
            .attr(USERNAME, b"123:ana")
            .xor_address(XOR_PEER_ADDRESS, v4)
            .xor_address(XOR_RELAYED_ADDRESS, v6)
            .finish(Some(&key));
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(
            (m.method, m.class, m.txid),
            (ALLOCATE, Class::Request, txid)
        );
        assert_eq!(m.text(USERNAME), Some("123:ana"));
        assert_eq!(m.xor_address(XOR_PEER_ADDRESS), Some(v4));
        assert_eq!(m.xor_address(XOR_RELAYED_ADDRESS), Some(v6));
        assert!(m.integrity_ok(&key));
        let other = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"j");
        assert!(!m.integrity_ok(&other));
        let mut tampered = bytes.clone();
        tampered[27] ^= 1;
        assert!(!Message::parse(&tampered).unwrap().integrity_ok(&key));
        assert_eq!(message_type(DATA, Class::Indication), 0x0017);
        assert_eq!(message_type(ALLOCATE, Class::Error), 0x0113);
        assert_eq!(message_type(CHANNEL_BIND, Class::Success), 0x0109);
    }

    #[test]
    fn malformed_input_is_refused_not_read_past() {
        let good = Builder::new(BINDING, Class::Request, [1; 12])
            .attr(SOFTWARE, b"x")
            .finish(None);
        for cut in 0..good.len() {
            assert!(Message::parse(&good[..cut]).is_none(), "cut at {cut}");
        }
        // An attribute length running past the end.
        let mut long = good.clone();
        long[22..24].copy_from_slice(&200u16.to_be_bytes());
        assert!(Message::parse(&long).is_none());
        assert!(parse_channel_data(&[0x40, 0x00, 0x00, 0x09, 1, 2]).is_none());
        assert_eq!(
            parse_channel_data(&channel_data(0x4001, b"abc", true)),
            Some((0x4001, &b"abc"[..]))
        );
        proptest::proptest!(|(bytes: Vec<u8>)| {
            let _ = Message::parse(&bytes).map(|m| (m.xor_address(XOR_PEER_ADDRESS), m.u32(LIFETIME)));
            let _ = parse_channel_data(&bytes);
        });
    }
}
