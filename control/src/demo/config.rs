//! The demo's configuration: embedded default, or a file with the same keys.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Result};
use dataplane::srtp::SrtpProfile;
use serde::Deserialize;

pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    pub consult: ConsultConfig,
    pub video: VideoConfig,
    pub audio: AudioConfig,
    pub bandwidth: Vec<BandwidthStep>,
    pub relay: RelayConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsultConfig {
    pub seconds: u32,
    pub publisher_profile: String,
    pub subscriber_profile: String,
    pub ingress_loss_percent: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoConfig {
    pub fps: u32,
    pub layers: Vec<LayerConfig>,
    pub keyframe_interval_s: u32,
    pub max_payload_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerConfig {
    pub rid: String,
    pub kbps: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioConfig {
    pub packet_ms: u32,
    pub payload_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandwidthStep {
    pub at_s: f64,
    pub kbps: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    pub appliance_addr: IpAddr,
    pub media_port_min: u16,
    pub media_port_max: u16,
    pub publisher: SocketAddr,
    pub publisher_local_port: u16,
    pub receiver: SocketAddr,
    pub receiver_local_port: u16,
    pub cap_after_percent: u8,
}

impl DemoConfig {
    /// The embedded default; it is checked by a unit test, so this cannot fail.
    pub fn embedded() -> Self {
        Self::parse(DEFAULT_TOML).expect("the embedded demo configuration is valid")
    }

    /// Parses and validates a configuration; errors name the key at fault.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let c = &self.consult;
        if !(1..=3600).contains(&c.seconds) {
            bail!("consult.seconds: {} is outside 1..=3600", c.seconds);
        }
        profile_by_name(&c.publisher_profile)
            .map_err(|e| anyhow::anyhow!("consult.publisher_profile: {e}"))?;
        profile_by_name(&c.subscriber_profile)
            .map_err(|e| anyhow::anyhow!("consult.subscriber_profile: {e}"))?;
        if !(0.0..=50.0).contains(&c.ingress_loss_percent) {
            bail!(
                "consult.ingress_loss_percent: {} is outside 0..=50",
                c.ingress_loss_percent
            );
        }
        let v = &self.video;
        if !(1..=120).contains(&v.fps) {
            bail!("video.fps: {} is outside 1..=120", v.fps);
        }
        if !(1..=4).contains(&v.layers.len()) {
            bail!(
                "video.layers: {} layers; 1 to 4 are supported",
                v.layers.len()
            );
        }
        for (i, layer) in v.layers.iter().enumerate() {
            if layer.rid.is_empty()
                || layer.rid.len() > 16
                || !layer.rid.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                bail!(
                    "video.layers[{i}].rid: {:?} must be 1-16 ASCII letters or digits",
                    layer.rid
                );
            }
            if !(30..=20_000).contains(&layer.kbps) {
                bail!(
                    "video.layers[{i}].kbps: {} is outside 30..=20000",
                    layer.kbps
                );
            }
            if i > 0 && layer.kbps <= v.layers[i - 1].kbps {
                bail!("video.layers[{i}].kbps: layers must be listed lowest bitrate first");
            }
        }
        if v.keyframe_interval_s == 0 {
            bail!("video.keyframe_interval_s: must be at least 1");
        }
        if !(200..=1200).contains(&v.max_payload_bytes) {
            bail!(
                "video.max_payload_bytes: {} is outside 200..=1200",
                v.max_payload_bytes
            );
        }
        let a = &self.audio;
        if !(10..=60).contains(&a.packet_ms) {
            bail!("audio.packet_ms: {} is outside 10..=60", a.packet_ms);
        }
        if !(20..=1000).contains(&a.payload_bytes) {
            bail!(
                "audio.payload_bytes: {} is outside 20..=1000",
                a.payload_bytes
            );
        }
        if self.bandwidth.is_empty() {
            bail!("bandwidth: at least one step is needed");
        }
        for (i, step) in self.bandwidth.iter().enumerate() {
            if i == 0 && step.at_s != 0.0 {
                bail!("bandwidth[0].at_s: the first step must start at 0");
            }
            if i > 0 && step.at_s <= self.bandwidth[i - 1].at_s {
                bail!("bandwidth[{i}].at_s: steps must be in increasing time order");
            }
        }
        let r = &self.relay;
        if r.media_port_min > r.media_port_max {
            bail!("relay.media_port_min: above relay.media_port_max");
        }
        for (key, port) in [
            ("relay.publisher_local_port", r.publisher_local_port),
            ("relay.receiver_local_port", r.receiver_local_port),
        ] {
            if !(r.media_port_min..=r.media_port_max).contains(&port) {
                bail!("{key}: {port} is outside the media port range");
            }
        }
        if r.publisher.is_ipv4() != r.appliance_addr.is_ipv4()
            || r.receiver.is_ipv4() != r.appliance_addr.is_ipv4()
        {
            bail!("relay: appliance_addr, publisher and receiver must be the same IP family");
        }
        if r.cap_after_percent > 100 {
            bail!(
                "relay.cap_after_percent: {} is above 100",
                r.cap_after_percent
            );
        }
        Ok(())
    }

    /// The subscriber's bandwidth estimate at `t_s` seconds, in bit/s.
    pub fn estimate_at(&self, t_s: f64) -> u64 {
        let step = self
            .bandwidth
            .iter()
            .rev()
            .find(|step| step.at_s <= t_s)
            .unwrap_or(&self.bandwidth[0]);
        u64::from(step.kbps) * 1000
    }
}

/// The SRTP profile for its registered name (with or without the `SRTP_` prefix).
pub fn profile_by_name(name: &str) -> Result<SrtpProfile> {
    let wanted = name.trim_start_matches("SRTP_");
    SrtpProfile::ALL
        .into_iter()
        .find(|p| {
            let registered = p.name().trim_start_matches("SRTP_");
            registered == wanted || registered.replace("AES128_CM", "AES_CM_128") == wanted
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "unknown SRTP profile {name:?}; one of AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM, AEAD_AES_256_GCM"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let config = DemoConfig::parse(DEFAULT_TOML).expect("valid");
        assert_eq!(config.video.layers.len(), 3);
        assert_eq!(config.estimate_at(5.0), 700_000);
        assert_eq!(config.estimate_at(0.0), 2_500_000);
    }

    #[test]
    fn profile_names_resolve() {
        for name in [
            "AES_CM_128_HMAC_SHA1_80",
            "SRTP_AES128_CM_HMAC_SHA1_80",
            "AES_CM_128_HMAC_SHA1_32",
            "AEAD_AES_128_GCM",
            "SRTP_AEAD_AES_256_GCM",
        ] {
            profile_by_name(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(profile_by_name("NULL").is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let bad = DEFAULT_TOML.replace("fps = 30", "fps = 0");
        let err = DemoConfig::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("video.fps"), "{err}");
        let bad = DEFAULT_TOML.replace("seed = 7", "seed = 7\nsede = 8");
        let err = format!("{:#}", DemoConfig::parse(&bad).unwrap_err());
        assert!(err.contains("sede"), "{err}");
        let bad = DEFAULT_TOML.replace("AEAD_AES_128_GCM", "ROT13");
        let err = DemoConfig::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("consult.publisher_profile"), "{err}");
    }
}
