//! Stateless nonces: a MAC over the issue time and the client's address.
//!
//! The server stores nothing per nonce, so an unauthenticated flood costs it no memory.
//! A nonce is valid for one client address and `ttl`; after that the client gets
//! 438 Stale Nonce with a fresh one and retries, as RFC 8489 §9.2 describes.

use std::net::IpAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha1::Sha1;

// Hex digits of MAC kept in a nonce: 64 bits is far beyond what a client can guess online.
const MAC_HEX: usize = 16;

pub(crate) struct Nonces {
    key: [u8; 32],
    ttl_secs: u64,
}

/// Why a nonce was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NonceError {
    /// Not one of ours (or for another address): answer 438 with a fresh nonce as well,
    /// since a client cannot tell a forged nonce from an expired one.
    Invalid,
    /// Ours, but older than the TTL.
    Stale,
}

impl Nonces {
    pub(crate) fn new(key: [u8; 32], ttl: Duration) -> Self {
        Self {
            key,
            ttl_secs: ttl.as_secs().max(1),
        }
    }

    pub(crate) fn issue(&self, client: IpAddr, now_secs: u64) -> String {
        format!("{now_secs:x}.{}", self.mac(client, now_secs))
    }

    pub(crate) fn check(
        &self,
        nonce: &str,
        client: IpAddr,
        now_secs: u64,
    ) -> Result<(), NonceError> {
        let (time, mac) = nonce.split_once('.').ok_or(NonceError::Invalid)?;
        if time.is_empty() || time.len() > 16 || !time.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NonceError::Invalid);
        }
        let issued = u64::from_str_radix(time, 16).map_err(|_| NonceError::Invalid)?;
        if !constant_time_eq(mac.as_bytes(), self.mac(client, issued).as_bytes()) {
            return Err(NonceError::Invalid);
        }
        // A nonce from the future (clock stepped back) is treated like an old one.
        if issued > now_secs || now_secs - issued >= self.ttl_secs {
            return Err(NonceError::Stale);
        }
        Ok(())
    }

    fn mac(&self, client: IpAddr, issued: u64) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(&issued.to_be_bytes());
        match client.to_canonical() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        let digest = mac.finalize().into_bytes();
        digest
            .iter()
            .take(MAC_HEX / 2)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonces() -> Nonces {
        Nonces::new([7; 32], Duration::from_secs(600))
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn fresh_nonce_is_accepted_for_its_address_only() {
        let n = nonces();
        let nonce = n.issue(A, 1_000);
        assert_eq!(n.check(&nonce, A, 1_000), Ok(()));
        assert_eq!(n.check(&nonce, A, 1_599), Ok(()));
        assert_eq!(n.check(&nonce, B, 1_000), Err(NonceError::Invalid));
    }

    #[test]
    fn old_or_future_nonce_is_stale() {
        let n = nonces();
        let nonce = n.issue(A, 1_000);
        assert_eq!(n.check(&nonce, A, 1_600), Err(NonceError::Stale));
        assert_eq!(n.check(&nonce, A, 999), Err(NonceError::Stale));
    }

    #[test]
    fn forged_or_garbled_nonces_are_invalid() {
        let n = nonces();
        let good = n.issue(A, 1_000);
        let (time, mac) = good.split_once('.').unwrap();
        let later = format!("{:x}.{mac}", 1_100);
        let other_key = Nonces::new([8; 32], Duration::from_secs(600)).issue(A, 1_000);
        for bad in [
            "",
            ".",
            "zz.00",
            &format!("{time}."),
            &format!("{time}.{}", &mac[1..]),
            &later,
            &other_key,
            "ffffffffffffffffff.00",
        ] {
            assert_eq!(n.check(bad, A, 1_000), Err(NonceError::Invalid), "{bad:?}");
        }
    }
}
