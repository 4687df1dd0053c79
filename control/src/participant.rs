//! A synthetic WebRTC participant: the client side of one WHIP or WHEP leg,
//! written against the appliance's own wire code, for the demo and the
//! end-to-end tests.
//!
//! It does what a browser does on a leg, without audio or video devices: an
//! SDP offer with Opus and VP8 + RTX (`transport-cc`, `goog-remb`, NACK,
//! PLI/FIR), one nominating ICE check signed with the appliance's password
//! (STUN MESSAGE-INTEGRITY and FINGERPRINT), an OpenSSL DTLS 1.2 client
//! handshake with `use_srtp`, and the SRTP keys exported from it. The media
//! itself is [`dataplane::sfu::peer::Peer`]: synthetic audio and video whose
//! payloads carry a hash, so the receiving side proves integrity and
//! sequence continuity end to end.
//!
//! Blocking (std sockets) on purpose: a participant is a client, run on a
//! thread of its own.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dataplane::sfu::peer::{Peer, PeerConfig, PeerLayer};
use dataplane::sfu::{ExtensionIds, MediaConfig, SubscribeSpec, VideoCodec};
use dataplane::srtp::{MasterKey, SrtpProfile};
use dataplane::wire::stun::{Class, Message, MessageBuilder, BINDING_REQUEST};
use openssl::hash::MessageDigest;
use openssl::ssl::{ErrorCode, Ssl, SslStream};

use crate::dtls::{
    dtls_context, self_signed_certificate, split_keying_material, DatagramPipe, EXPORTER_LABEL, MTU,
};

/// Opus payload type of the participant's offers.
pub const PT_OPUS: u8 = 111;
/// VP8 payload type of the participant's offers.
pub const PT_VP8: u8 = 96;
/// RTX (for VP8) payload type of the participant's offers.
pub const PT_RTX: u8 = 97;
/// abs-send-time extension id of the offers.
const EXT_ABS_SEND_TIME: u8 = 2;
/// transport-wide-cc extension id of the offers.
const EXT_TRANSPORT_CC: u8 = 3;

/// What can go wrong on a participant's leg.
#[derive(Debug, thiserror::Error)]
pub enum ParticipantError {
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// Building the DTLS certificate, context or session failed.
    #[error("DTLS: {0}")]
    Dtls(String),
    /// The appliance's SDP answer lacks what the leg needs.
    #[error("SDP answer: {0}")]
    Answer(String),
    /// The appliance did not answer the ICE check with a success.
    #[error("ICE: no success response from {0} within the time allowed")]
    Ice(SocketAddr),
    /// The DTLS handshake did not finish within the time allowed.
    #[error("DTLS: handshake with {0} did not finish within the time allowed")]
    DtlsTimeout(SocketAddr),
    /// The SRTP endpoint could not be built from the negotiated keys.
    #[error("SRTP: {0}")]
    Srtp(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ParticipantError {
    move |source| ParticipantError::Io { what, source }
}

fn dtls_err(e: impl std::fmt::Display) -> ParticipantError {
    ParticipantError::Dtls(e.to_string())
}

/// The SSRCs a publishing participant announces: audio, video, video RTX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishSsrcs {
    /// Opus.
    pub audio: u32,
    /// VP8.
    pub video: u32,
    /// RTX of the VP8 stream.
    pub video_rtx: u32,
}

impl PublishSsrcs {
    /// Three consecutive SSRCs from `base`.
    pub fn from_base(base: u32) -> Self {
        Self {
            audio: base,
            video: base.wrapping_add(1),
            video_rtx: base.wrapping_add(2),
        }
    }
}

/// One leg's client side: a UDP socket, ICE credentials and a DTLS
/// certificate.
pub struct Participant {
    /// The leg's socket (media and ICE share it, as with BUNDLE).
    pub socket: UdpSocket,
    ufrag: String,
    pwd: String,
    ctx: openssl::ssl::SslContext,
    fingerprint: String,
}

impl Participant {
    /// A participant with ICE username fragment `ufrag`, its socket bound to
    /// `bind` (port 0: any).
    pub fn new(ufrag: &str, bind: SocketAddr) -> Result<Self, ParticipantError> {
        let (cert, key) = self_signed_certificate("participant").map_err(dtls_err)?;
        let fingerprint = cert
            .digest(MessageDigest::sha256())
            .map_err(dtls_err)?
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let ctx = dtls_context(&cert, &key, "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80")
            .map_err(dtls_err)?
            .build();
        let socket = UdpSocket::bind(bind).map_err(io("binding the participant's socket"))?;
        Ok(Self {
            socket,
            ufrag: ufrag.to_owned(),
            pwd: format!("{ufrag}-client-password-0123"),
            ctx,
            fingerprint,
        })
    }

    /// The ICE username fragment.
    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    /// A WHIP (`sendonly`, with `publish`) or WHEP (`recvonly`, `None`)
    /// offer with Opus and VP8 + RTX, BUNDLEd and rtcp-muxed.
    pub fn offer(&self, direction: &str, publish: Option<PublishSsrcs>) -> String {
        let common = format!(
            "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\n\
             a=fingerprint:sha-256 {}\r\na=setup:actpass\r\n",
            self.ufrag, self.pwd, self.fingerprint
        );
        let extensions = format!(
            "a=extmap:{EXT_ABS_SEND_TIME} http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
             a=extmap:{EXT_TRANSPORT_CC} http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
             a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
             a={direction}\r\na=rtcp-mux\r\na=rtcp-rsize\r\n"
        );
        let mut s = String::from(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
             a=msid-semantic: WMS s\r\n",
        );
        s += &format!("m=audio 9 UDP/TLS/RTP/SAVPF {PT_OPUS}\r\n{common}a=mid:0\r\n{extensions}");
        s += &format!("a=rtpmap:{PT_OPUS} opus/48000/2\r\na=rtcp-fb:{PT_OPUS} transport-cc\r\n");
        s += &format!("a=fmtp:{PT_OPUS} minptime=10;useinbandfec=1\r\n");
        if let Some(p) = publish {
            s += &format!("a=ssrc:{} cname:{}\r\n", p.audio, self.ufrag);
        }
        s += &format!(
            "m=video 9 UDP/TLS/RTP/SAVPF {PT_VP8} {PT_RTX}\r\n{common}a=mid:1\r\n{extensions}"
        );
        s += &format!("a=rtpmap:{PT_VP8} VP8/90000\r\n");
        for fb in ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"] {
            s += &format!("a=rtcp-fb:{PT_VP8} {fb}\r\n");
        }
        s += &format!("a=rtpmap:{PT_RTX} rtx/90000\r\na=fmtp:{PT_RTX} apt={PT_VP8}\r\n");
        if let Some(p) = publish {
            s += &format!("a=ssrc-group:FID {} {}\r\n", p.video, p.video_rtx);
            s += &format!(
                "a=ssrc:{} cname:{}\r\na=ssrc:{} cname:{}\r\n",
                p.video, self.ufrag, p.video_rtx, self.ufrag
            );
        }
        s
    }

    /// A STUN binding request from this participant to the appliance,
    /// nominating (USE-CANDIDATE), signed with `pwd`.
    pub fn binding_request(&self, answer: &Answer, pwd: &str, txid: [u8; 12]) -> Vec<u8> {
        let mut out = vec![0u8; 256];
        let username = format!("{}:{}", answer.ufrag, self.ufrag);
        // 256 bytes hold the attributes below for usernames up to 2×64
        // bytes, which SDP ice-ufrag values never exceed.
        let n = (|| -> Option<usize> {
            let mut b = MessageBuilder::new(&mut out, BINDING_REQUEST, txid).ok()?;
            b.add_username(username.as_bytes()).ok()?;
            b.add_priority(0x6e00_1eff).ok()?;
            b.add_ice_controlling(0x1234_5678).ok()?;
            b.add_use_candidate().ok()?;
            b.add_message_integrity(pwd.as_bytes()).ok()?;
            b.add_fingerprint().ok()?;
            Some(b.finish())
        })()
        .unwrap_or(0);
        out.truncate(n);
        out
    }

    /// Sends `request` to `to` and waits up to `wait` for the response with
    /// its transaction id; returns the response's class.
    pub fn stun_exchange(
        &self,
        to: SocketAddr,
        request: &[u8],
        wait: Duration,
    ) -> Result<Option<Class>, ParticipantError> {
        if request.len() < 20 {
            return Ok(None);
        }
        self.socket
            .send_to(request, to)
            .map_err(io("sending a STUN request"))?;
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 1500];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            self.socket
                .set_read_timeout(Some(left))
                .map_err(io("setting a read timeout"))?;
            let Ok((n, _)) = self.socket.recv_from(&mut buf) else {
                break;
            };
            if let Ok(m) = Message::new_checked(&buf[..n]) {
                if m.transaction_id() == request[8..20] {
                    return Ok(Some(m.class()));
                }
            }
        }
        Ok(None)
    }

    /// ICE (one nominating check) and the DTLS client handshake, each within
    /// `timeout`; returns the negotiated SRTP keys.
    pub fn connect(&self, answer: &Answer, timeout: Duration) -> Result<LegKeys, ParticipantError> {
        let request = self.binding_request(answer, &answer.pwd, [7; 12]);
        if self.stun_exchange(answer.candidate, &request, timeout)? != Some(Class::SuccessResponse)
        {
            return Err(ParticipantError::Ice(answer.candidate));
        }
        let mut ssl = Ssl::new(&self.ctx).map_err(dtls_err)?;
        ssl.set_mtu(MTU).map_err(dtls_err)?;
        ssl.set_connect_state();
        let mut stream = SslStream::new(ssl, DatagramPipe::default()).map_err(dtls_err)?;
        self.socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(io("setting a read timeout"))?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        loop {
            let done = match stream.connect() {
                Ok(()) => true,
                Err(e) if e.code() == ErrorCode::WANT_READ => false,
                Err(e) => return Err(dtls_err(e)),
            };
            while let Some(d) = stream.get_mut().pop_outgoing() {
                self.socket
                    .send_to(&d, answer.candidate)
                    .map_err(io("sending DTLS"))?;
            }
            if done {
                break;
            }
            if Instant::now() >= deadline {
                return Err(ParticipantError::DtlsTimeout(answer.candidate));
            }
            if let Ok((n, _)) = self.socket.recv_from(&mut buf) {
                // RFC 7983: 20..=63 is DTLS.
                if n > 0 && (20..=63).contains(&buf[0]) {
                    stream.get_mut().push_incoming(&buf[..n]);
                }
            }
        }
        let ssl = stream.ssl();
        let id = ssl
            .selected_srtp_profile()
            .ok_or_else(|| ParticipantError::Dtls("no use_srtp profile negotiated".into()))?
            .id()
            .as_raw();
        let profile = u16::try_from(id)
            .ok()
            .and_then(|id| SrtpProfile::from_dtls_id(id).ok())
            .ok_or_else(|| ParticipantError::Dtls(format!("unknown SRTP profile {id}")))?;
        let mut material = vec![0u8; 2 * (profile.master_key_len() + profile.master_salt_len())];
        ssl.export_keying_material(&mut material, EXPORTER_LABEL, None)
            .map_err(dtls_err)?;
        let (local, remote) = split_keying_material(profile, &material).map_err(dtls_err)?;
        Ok(LegKeys {
            profile,
            local,
            remote,
        })
    }
}

/// The SRTP keys of a connected leg, from the participant's side.
pub struct LegKeys {
    /// The negotiated protection profile.
    pub profile: SrtpProfile,
    /// What the participant protects with (the DTLS client's write key).
    pub local: MasterKey,
    /// What the appliance protects with.
    pub remote: MasterKey,
}

impl LegKeys {
    /// The leg's SRTP endpoint: publishing `publish` (audio and one video
    /// layer at `video_kbps`) or receive-only with `None`.
    pub fn peer(
        self,
        publish: Option<PublishSsrcs>,
        video_kbps: u32,
    ) -> Result<Peer, ParticipantError> {
        Peer::new(PeerConfig {
            profile: self.profile,
            send_key: self.local,
            recv_key: self.remote,
            media: media_config(),
            rtcp_ssrc: 0x0bad_cafe,
            audio_ssrc: publish.map(|p| p.audio),
            video: publish
                .map(|p| {
                    vec![PeerLayer {
                        rid: None,
                        ssrc: p.video,
                        kbps: video_kbps,
                    }]
                })
                .unwrap_or_default(),
            fps: 30,
            audio_payload: 80,
            max_video_payload: 1100,
            keyframe_interval: 0,
            seed: 11,
        })
        .map_err(|e| ParticipantError::Srtp(e.to_string()))
    }
}

/// The media description of the participant's offers, as the SFU core
/// sees it.
pub fn media_config() -> MediaConfig {
    MediaConfig {
        audio_pt: Some(PT_OPUS),
        video: Some((PT_VP8, VideoCodec::Vp8)),
        rtx_pt: Some(PT_RTX),
        extensions: ExtensionIds {
            rid: None,
            abs_send_time: Some(EXT_ABS_SEND_TIME),
            transport_cc: Some(EXT_TRANSPORT_CC),
            audio_level: None,
        },
        nack: true,
    }
}

/// What a participant needs from the appliance's SDP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The appliance's ICE username fragment.
    pub ufrag: String,
    /// The appliance's ICE password.
    pub pwd: String,
    /// The appliance's (first) host candidate.
    pub candidate: SocketAddr,
    /// On a WHEP answer: the SSRCs the appliance sends.
    pub ssrcs: Option<SubscribeSpec>,
}

impl Answer {
    /// Reads the answer's ICE credentials, first candidate and announced
    /// SSRCs.
    pub fn parse(sdp: &str) -> Result<Self, ParticipantError> {
        let attr = |name: &str| {
            sdp.lines()
                .find_map(|l| l.strip_prefix(&format!("a={name}:")))
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| ParticipantError::Answer(format!("no a={name}")))
        };
        let candidate = attr("candidate")?;
        let fields: Vec<&str> = candidate.split_whitespace().collect();
        let candidate = match (
            fields.get(4).and_then(|a| a.parse().ok()),
            fields.get(5).and_then(|p| p.parse().ok()),
        ) {
            (Some(ip), Some(port)) => SocketAddr::new(ip, port),
            _ => {
                return Err(ParticipantError::Answer(format!(
                    "unreadable candidate {candidate:?}"
                )))
            }
        };
        let mut audio = None;
        let mut video = None;
        let mut in_audio = false;
        for line in sdp.lines() {
            if let Some(m) = line.strip_prefix("m=") {
                in_audio = m.starts_with("audio");
            }
            if let Some(rest) = line.strip_prefix("a=ssrc-group:FID ") {
                let v: Vec<u32> = rest
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if let [primary, rtx] = v[..] {
                    video = Some((primary, rtx));
                }
            } else if let Some(rest) = line.strip_prefix("a=ssrc:") {
                if in_audio && audio.is_none() {
                    audio = rest.split_whitespace().next().and_then(|x| x.parse().ok());
                }
            }
        }
        Ok(Self {
            ufrag: attr("ice-ufrag")?,
            pwd: attr("ice-pwd")?,
            candidate,
            ssrcs: audio.zip(video).map(|(a, (v, r))| SubscribeSpec {
                audio_ssrc: a,
                video_ssrc: v,
                video_rtx_ssrc: r,
            }),
        })
    }
}

/// The synthetic camera and microphone's clock: an Opus packet every 20 ms
/// and a video frame at 30 fps, from when the pacer was made.
#[derive(Debug, Clone)]
pub struct MediaPacer {
    start: Instant,
    next_audio: Duration,
    next_video: Duration,
}

impl Default for MediaPacer {
    fn default() -> Self {
        Self::new()
    }
}

impl MediaPacer {
    /// Audio and video both due now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            next_audio: Duration::ZERO,
            next_video: Duration::ZERO,
        }
    }

    /// Time since the pacer was made.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Sends from `tx` over `socket` to `to` what is due now; returns the
    /// media packets sent.
    pub fn send_due(
        &mut self,
        tx: &mut Peer,
        socket: &UdpSocket,
        to: SocketAddr,
    ) -> Result<usize, ParticipantError> {
        let t = self.start.elapsed();
        let us = u64::try_from(t.as_micros()).unwrap_or(u64::MAX);
        let mut sent = 0;
        let mut buf = [0u8; 1500];
        if t >= self.next_audio {
            let len = tx
                .audio_packet(us, &mut buf)
                .map_err(|e| ParticipantError::Srtp(e.to_string()))?;
            socket
                .send_to(&buf[..len], to)
                .map_err(io("sending audio"))?;
            sent += 1;
            self.next_audio += Duration::from_millis(20);
        }
        if t >= self.next_video {
            let mut failed = None;
            tx.video_frame(us, |_, bytes| match socket.send_to(bytes, to) {
                Ok(_) => sent += 1,
                Err(e) => failed = Some(e),
            })
            .map_err(|e| ParticipantError::Srtp(e.to_string()))?;
            if let Some(e) = failed {
                return Err(ParticipantError::Io {
                    what: "sending video",
                    source: e,
                });
            }
            self.next_video += Duration::from_micros(33_333);
        }
        Ok(sent)
    }
}

/// Reads everything waiting on the (non-blocking) `socket` into `peer`;
/// returns how many media packets decrypted.
pub fn drain(socket: &UdpSocket, peer: &mut Peer) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while let Ok((len, _)) = socket.recv_from(&mut buf) {
        let packet = &mut buf[..len];
        // RFC 7983: 128..=191 is RTP/RTCP; STUN and DTLS are not media.
        let media = packet.first().is_some_and(|b| (128..=191).contains(b));
        let rtp = !dataplane::wire::demux::is_rtcp(packet);
        if media && peer.receive(packet).is_ok() && rtp {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijklmn\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=ssrc:11 cname:x\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=ssrc-group:FID 22 33\r\na=ssrc:22 cname:x\r\n";

    #[test]
    fn answer_gives_credentials_candidate_and_ssrcs() {
        let a = Answer::parse(ANSWER).unwrap();
        assert_eq!(a.ufrag, "abcd");
        assert_eq!(a.pwd, "0123456789abcdefghijklmn");
        assert_eq!(a.candidate, "127.0.0.1:40000".parse().unwrap());
        let s = a.ssrcs.unwrap();
        assert_eq!((s.audio_ssrc, s.video_ssrc, s.video_rtx_ssrc), (11, 22, 33));
    }

    #[test]
    fn malformed_answers_are_errors() {
        for broken in [
            "",
            &ANSWER.replace("a=ice-ufrag:abcd\r\n", ""),
            &ANSWER.replace("127.0.0.1 40000", "127.0.0.1"),
            &ANSWER.replace("40000", "99999"),
            &ANSWER.replace("127.0.0.1 40000", "localhost 40000"),
        ] {
            assert!(Answer::parse(broken).is_err(), "{broken:?}");
        }
        // A FID group that is not a pair announces no video.
        let odd = ANSWER.replace("FID 22 33", "FID 22");
        assert!(Answer::parse(&odd).unwrap().ssrcs.is_none());
    }

    #[test]
    fn publish_ssrcs_wrap() {
        let p = PublishSsrcs::from_base(u32::MAX);
        assert_eq!((p.audio, p.video, p.video_rtx), (u32::MAX, 0, 1));
    }

    #[test]
    fn offers_carry_the_publish_ssrcs_and_credentials() {
        let p = Participant::new("tester", "127.0.0.1:0".parse().unwrap()).unwrap();
        let offer = p.offer("sendonly", Some(PublishSsrcs::from_base(100)));
        assert!(offer.contains("a=ice-ufrag:tester\r\n"));
        assert!(offer.contains("a=ssrc-group:FID 101 102\r\n"));
        assert!(offer.contains("a=ssrc:100 cname:tester\r\n"));
        assert_eq!(offer.matches("a=sendonly").count(), 2);
        let recv = p.offer("recvonly", None);
        assert!(!recv.contains("a=ssrc"));
    }
}
