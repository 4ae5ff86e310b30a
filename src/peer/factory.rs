//! Building the server side of a participant's PeerConnection.

use super::rtcp::{KEYFRAME_SLOT, KeyframeRequestTap};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Slot;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateType, Registry, SettingEngineBuilder,
    register_default_interceptors,
};

/// Where and how server-side peer connections bind and what they advertise.
#[derive(Debug)]
pub struct PeerFactory {
    udp_ip: IpAddr,
    ports: (u16, u16),
    public_ip: Option<IpAddr>,
    cursor: AtomicU32,
}

impl PeerFactory {
    /// A factory binding on `udp_ip` within `ports` (`(0,0)`: ephemeral).
    pub fn new(udp_ip: IpAddr, ports: (u16, u16), public_ip: Option<IpAddr>) -> Self {
        PeerFactory {
            udp_ip,
            ports,
            public_ip,
            // A random start, so servers sharing a host (or a test process) rarely collide.
            cursor: AtomicU32::new({
                use std::hash::{BuildHasher, RandomState};
                RandomState::new().hash_one(std::time::Instant::now()) as u32
            }),
        }
    }

    /// Builds a peer connection with one UDP socket, the default codecs (Opus, VP8, VP9,
    /// H264, ...) and interceptors (NACK both ways, reports, TWCC), plus the keyframe tap.
    pub async fn build(
        &self,
        handler: Arc<dyn PeerConnectionEventHandler>,
    ) -> webrtc::error::Result<Arc<dyn PeerConnection>> {
        let attempts = if self.ports == (0, 0) {
            1
        } else {
            u32::from(self.ports.1 - self.ports.0) + 1
        };
        let mut last_err = None;
        for _ in 0..attempts {
            let port = self.next_port();
            match self
                .build_on(SocketAddr::new(self.udp_ip, port), handler.clone())
                .await
            {
                Ok(pc) => return Ok(pc),
                Err(e) => {
                    tracing::debug!(port, error = %e, "UDP port unavailable, trying the next");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn next_port(&self) -> u16 {
        if self.ports == (0, 0) {
            return 0;
        }
        let span = u32::from(self.ports.1 - self.ports.0) + 1;
        let k = self.cursor.fetch_add(1, Ordering::Relaxed) % span;
        self.ports.0 + k as u16
    }

    async fn build_on(
        &self,
        addr: SocketAddr,
        handler: Arc<dyn PeerConnectionEventHandler>,
    ) -> webrtc::error::Result<Arc<dyn PeerConnection>> {
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        let registry = register_default_interceptors(Registry::new(), &mut media)?
            .with(Slot::from(KEYFRAME_SLOT), KeyframeRequestTap::default());
        let mut settings = SettingEngineBuilder::new()
            // The default mode opens a multicast socket, which fails on hosts without a
            // multicast interface before any answer is made.
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            // Connectivity checks every 50 ms rather than 200 (browsers pace theirs at about
            // 50 ms too), for as long in all (28 x 50 ms = 1.4 s per candidate pair).
            .with_ice_connection_attempts(Some(std::time::Duration::from_millis(50)), Some(28));
        if let Some(ip) = self.public_ip {
            settings = settings.with_nat_1to1_ips(vec![ip.to_string()], RTCIceCandidateType::Host);
        }
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(settings.build())
            .with_handler(handler)
            .with_udp_addrs(vec![addr])
            .build()
            .await?;
        Ok(Arc::new(pc))
    }
}
