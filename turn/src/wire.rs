//! Hand-rolled encodings for the per-datagram paths and the one attribute that may repeat.
//!
//! Control messages (Allocate, Refresh, ...) go through the `stun` crate's builder. Relayed
//! datagrams are framed here into a buffer the relay task reuses, so forwarding a packet
//! allocates nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use stun::attributes::{ATTR_DATA, ATTR_XOR_PEER_ADDRESS};
use stun::message::Message;

const MAGIC_COOKIE: u32 = 0x2112_A442;
const DATA_INDICATION: u16 = 0x0017;
const HEADER: usize = 20;

/// Every XOR-PEER-ADDRESS in `m` (CreatePermission may carry several), or `None` if one is malformed.
pub(crate) fn peer_addresses(m: &Message) -> Option<Vec<SocketAddr>> {
    m.attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
        .map(|a| decode_xor_addr(&a.value, &m.transaction_id.0))
        .collect()
}

fn decode_xor_addr(v: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(txid);
    let ip = match (v[1], v.len()) {
        (1, 8) => {
            let mut o = [0u8; 4];
            for i in 0..4 {
                o[i] = v[4 + i] ^ mask[i];
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (2, 20) => {
            let mut o = [0u8; 16];
            for i in 0..16 {
                o[i] = v[4 + i] ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn put_xor_addr(out: &mut Vec<u8>, addr: SocketAddr, txid: &[u8; 12]) {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(txid);
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => {
            out.extend_from_slice(&ATTR_XOR_PEER_ADDRESS.0.to_be_bytes());
            out.extend_from_slice(&8u16.to_be_bytes());
            out.extend_from_slice(&[0, 1]);
            out.extend_from_slice(&port.to_be_bytes());
            for (b, m) in ip.octets().iter().zip(mask) {
                out.push(b ^ m);
            }
        }
        IpAddr::V6(ip) => {
            out.extend_from_slice(&ATTR_XOR_PEER_ADDRESS.0.to_be_bytes());
            out.extend_from_slice(&20u16.to_be_bytes());
            out.extend_from_slice(&[0, 2]);
            out.extend_from_slice(&port.to_be_bytes());
            for (b, m) in ip.octets().iter().zip(mask) {
                out.push(b ^ m);
            }
        }
    }
}

/// Frames `data` from `peer` as a Data indication (RFC 8656 §11.6) into `out`.
pub(crate) fn data_indication(out: &mut Vec<u8>, txid: &[u8; 12], peer: SocketAddr, data: &[u8]) {
    out.clear();
    out.extend_from_slice(&DATA_INDICATION.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // length, patched below
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(txid);
    put_xor_addr(out, peer, txid);
    out.extend_from_slice(&ATTR_DATA.0.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + (4 - data.len() % 4) % 4, 0);
    let len = (out.len() - HEADER) as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
}

/// Frames `data` as ChannelData (RFC 8656 §12.4) into `out`, padded to 4 bytes as UDP allows.
pub(crate) fn channel_data(out: &mut Vec<u8>, number: u16, data: &[u8]) {
    out.clear();
    out.extend_from_slice(&number.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + (4 - data.len() % 4) % 4, 0);
}

/// Splits a ChannelData datagram into channel number and payload.
pub(crate) fn parse_channel_data(buf: &[u8]) -> Option<(u16, &[u8])> {
    if buf.len() < 4 {
        return None;
    }
    let number = u16::from_be_bytes([buf[0], buf[1]]);
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let payload = buf.get(4..4 + len)?;
    Some((number, payload))
}

/// True when the first two bits say ChannelData (0b01) rather than STUN (0b00).
pub(crate) fn is_channel_data(buf: &[u8]) -> bool {
    buf.first().is_some_and(|b| b & 0xC0 == 0x40)
}

#[cfg(test)]
mod tests {
    use stun::message::{CLASS_INDICATION, METHOD_DATA, MessageType};
    use turn::proto::data::Data;
    use turn::proto::peeraddr::PeerAddress;

    use super::*;
    use stun::message::Getter;

    #[test]
    fn data_indication_decodes_with_the_stun_crate() {
        for peer in ["127.0.0.1:50000", "[2001:db8::7]:3478"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let txid = [9u8; 12];
            for len in [0usize, 1, 3, 4, 5, 1200] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut out = Vec::new();
                data_indication(&mut out, &txid, peer, &payload);
                let mut m = Message::new();
                m.raw = out.clone();
                m.decode().unwrap();
                assert_eq!(m.typ, MessageType::new(METHOD_DATA, CLASS_INDICATION));
                let mut pa = PeerAddress::default();
                pa.get_from(&m).unwrap();
                assert_eq!(SocketAddr::new(pa.ip, pa.port), peer);
                let mut d = Data::default();
                d.get_from(&m).unwrap();
                assert_eq!(d.0, payload);
                assert_eq!(peer_addresses(&m), Some(vec![peer]));
            }
        }
    }

    #[test]
    fn channel_data_round_trips_and_rejects_short_frames() {
        let mut out = Vec::new();
        channel_data(&mut out, 0x4001, b"hello");
        assert_eq!(out.len(), 12);
        assert!(is_channel_data(&out));
        assert_eq!(parse_channel_data(&out), Some((0x4001, &b"hello"[..])));
        assert_eq!(parse_channel_data(&out[..6]), None);
        assert_eq!(parse_channel_data(&[0x40]), None);
        assert!(!is_channel_data(&[0x00, 0x01]));
    }
}
