//! The webrtc-rs API and configuration this peer uses.

use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use webrtc::api::APIBuilder;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::policy::ice_transport_policy::RTCIceTransportPolicy;

/// `joined.ice_servers` as webrtc-rs wants them.
pub fn ice_servers(list: &[Value]) -> Vec<RTCIceServer> {
    list.iter()
        .map(|s| RTCIceServer {
            urls: match &s["urls"] {
                Value::String(u) => vec![u.clone()],
                Value::Array(a) => a
                    .iter()
                    .filter_map(|u| u.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            },
            username: s["username"].as_str().unwrap_or_default().to_string(),
            credential: s["credential"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

pub async fn new_peer_connection(
    servers: &[Value],
    relay_only: bool,
    loopback: bool,
) -> Result<Arc<RTCPeerConnection>, webrtc::Error> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let mut settings = SettingEngine::default();
    if loopback {
        // On one machine: loopback candidates only, UDP4, no mDNS names.
        settings.set_include_loopback_candidate(true);
        settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
        settings.set_network_types(vec![NetworkType::Udp4]);
        settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        // A pair found by a check before its candidate was signalled is
        // peer-reflexive, and webrtc-rs waits a second before using one. On
        // loopback every pair is as good as the first: take it at once.
        settings.set_prflx_acceptance_min_wait(Some(Duration::ZERO));
        settings.set_srflx_acceptance_min_wait(Some(Duration::ZERO));
    }
    if relay_only {
        // The default 2 s wait before accepting relay pairs only slows tests.
        settings.set_relay_acceptance_min_wait(Some(Duration::ZERO));
    }
    let api = APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build();
    let config = RTCConfiguration {
        ice_servers: ice_servers(servers),
        ice_transport_policy: if relay_only {
            RTCIceTransportPolicy::Relay
        } else {
            RTCIceTransportPolicy::All
        },
        ..Default::default()
    };
    Ok(Arc::new(api.new_peer_connection(config).await?))
}
