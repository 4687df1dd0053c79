//! SDP offer/answer for WHIP (publish) and WHEP (subscribe) legs.
//!
//! The offer is parsed with `webrtc-sdp` (Mozilla's parser, maintained for
//! Firefox); the answer is written here, because the answer's shape is fixed
//! by what this appliance supports and is easier to audit as text.
//!
//! What is negotiated: BUNDLE (required, as RFC 9725 requires max-bundle),
//! rtcp-mux (required), ICE-lite with our ufrag/pwd, DTLS `setup:passive`
//! with our certificate's SHA-256 fingerprint, MID, RID and simulcast receive
//! for publish legs (Chrome sends simulcast only if the answer lists the rids
//! as `recv` and carries `a=simulcast:recv`), Opus, VP8, H.264
//! (packetization-mode=1, constrained-baseline-compatible profile so every
//! subscriber decodes it), AV1 when offered, RTX per kept codec, `goog-remb`,
//! `transport-cc`, NACK/PLI/FIR feedback, and the header extensions the
//! media core reads. The result, besides the answer text, is a
//! [`NegotiatedLeg`]: the payload types, extension ids, rids and SSRCs the
//! media core needs to forward and rewrite the leg's packets.

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use webrtc_sdp::attribute_type::{
    SdpAttribute, SdpAttributeFingerprintHashType, SdpAttributeGroupSemantic,
    SdpAttributePayloadType, SdpAttributeRtcpFbType, SdpAttributeSetup, SdpSingleDirection,
    SdpSsrcGroupSemantic,
};
use webrtc_sdp::media_type::{SdpMedia, SdpMediaValue};
use webrtc_sdp::SdpSession;

/// Which way media flows on a leg, seen from the participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegDirection {
    /// WHIP: the participant sends, the appliance receives.
    Publish,
    /// WHEP: the appliance sends, the participant receives.
    Subscribe,
}

/// An offer that cannot be answered; the text goes into the HTTP 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The parser rejected it.
    #[error("SDP does not parse: {0}")]
    Parse(String),
    /// It parses but asks for something a WebRTC leg here cannot do.
    #[error("SDP offer not acceptable: {0}")]
    Unacceptable(String),
}

fn unacceptable(reason: impl Into<String>) -> SdpError {
    SdpError::Unacceptable(reason.into())
}

/// ICE short-term credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCredentials {
    /// ice-ufrag.
    pub ufrag: String,
    /// ice-pwd.
    pub pwd: String,
}

/// What the appliance puts into its answer.
#[derive(Debug, Clone)]
pub struct LocalDescription {
    /// Our ICE credentials for this leg.
    pub ice: IceCredentials,
    /// SHA-256 fingerprint of our DTLS certificate, `AB:CD:…`.
    pub fingerprint_sha256: String,
    /// Host candidates (address and media port).
    pub candidates: Vec<SocketAddr>,
    /// `o=` session id.
    pub session_id: u64,
    /// CNAME for the streams we send (subscribe legs).
    pub cname: String,
}

/// A codec the appliance forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Opus audio.
    Opus,
    /// VP8 video.
    Vp8,
    /// H.264 video, packetization-mode 1.
    H264,
    /// AV1 video.
    Av1,
}

/// RTCP feedback negotiated for a codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feedback {
    /// Generic NACK.
    Nack,
    /// Picture loss indication.
    NackPli,
    /// Full intra request.
    CcmFir,
    /// Receiver estimated maximum bitrate.
    GoogRemb,
    /// Transport-wide congestion control feedback.
    TransportCc,
}

impl Feedback {
    fn sdp(self) -> &'static str {
        match self {
            Self::Nack => "nack",
            Self::NackPli => "nack pli",
            Self::CcmFir => "ccm fir",
            Self::GoogRemb => "goog-remb",
            Self::TransportCc => "transport-cc",
        }
    }
}

/// One negotiated payload type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegotiatedCodec {
    /// Payload type, as offered.
    pub payload_type: u8,
    /// The codec.
    pub codec: Codec,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Channels (audio).
    pub channels: Option<u32>,
    /// fmtp parameters as answered (empty: none).
    pub fmtp: String,
    /// The RTX payload type retransmitting this one, if negotiated.
    pub rtx_payload_type: Option<u8>,
    /// Feedback both sides agreed on.
    pub feedback: Vec<Feedback>,
}

/// An RTP header extension the media core reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtensionKind {
    /// `urn:ietf:params:rtp-hdrext:sdes:mid`
    Mid,
    /// `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id`
    Rid,
    /// `urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id`
    RepairedRid,
    /// abs-send-time
    AbsSendTime,
    /// transport-wide-cc
    TransportWideCc,
    /// `urn:ietf:params:rtp-hdrext:ssrc-audio-level`
    AudioLevel,
    /// AV1 dependency descriptor.
    Av1DependencyDescriptor,
}

impl ExtensionKind {
    /// The extension's URI.
    pub fn uri(self) -> &'static str {
        match self {
            Self::Mid => "urn:ietf:params:rtp-hdrext:sdes:mid",
            Self::Rid => "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            Self::RepairedRid => "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
            Self::AbsSendTime => "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
            Self::TransportWideCc => {
                "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
            }
            Self::AudioLevel => "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            Self::Av1DependencyDescriptor => {
                "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension"
            }
        }
    }

    const ALL: [ExtensionKind; 7] = [
        Self::Mid,
        Self::Rid,
        Self::RepairedRid,
        Self::AbsSendTime,
        Self::TransportWideCc,
        Self::AudioLevel,
        Self::Av1DependencyDescriptor,
    ];

    fn from_uri(uri: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.uri() == uri)
    }

    fn allowed_for(self, kind: MediaKind) -> bool {
        match self {
            Self::AudioLevel => kind == MediaKind::Audio,
            Self::Rid | Self::RepairedRid | Self::Av1DependencyDescriptor => {
                kind == MediaKind::Video
            }
            _ => true,
        }
    }
}

/// A negotiated header extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderExtension {
    /// The id in RTP packets.
    pub id: u8,
    /// What it is.
    pub kind: ExtensionKind,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// A stream the appliance sends on a subscribe leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalStream {
    /// Media SSRC.
    pub ssrc: u32,
    /// RTX SSRC, when RTX was negotiated.
    pub rtx_ssrc: Option<u32>,
}

/// One accepted m-section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegotiatedMedia {
    /// Its MID.
    pub mid: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// Accepted codecs in the offerer's preference order.
    pub codecs: Vec<NegotiatedCodec>,
    /// Accepted header extensions.
    pub extensions: Vec<HeaderExtension>,
    /// Simulcast rids to receive, in the offer's simulcast order (publish).
    pub rids: Vec<String>,
    /// SSRCs the offer signalled (`a=ssrc`), if any.
    pub remote_ssrcs: Vec<u32>,
    /// `(media, rtx)` SSRC pairs from `a=ssrc-group:FID`.
    pub remote_rtx_pairs: Vec<(u32, u32)>,
    /// Streams we send (subscribe legs).
    pub local_streams: Vec<LocalStream>,
    /// Reduced-size RTCP agreed.
    pub rtcp_rsize: bool,
}

/// Everything the media plane needs about a negotiated leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegotiatedLeg {
    /// Publish or subscribe.
    pub direction: LegDirection,
    /// The participant's ICE credentials.
    pub remote_ice: IceCredentials,
    /// Ours.
    pub local_ice: IceCredentials,
    /// SHA-256 fingerprint of the participant's DTLS certificate.
    pub remote_fingerprint_sha256: Vec<u8>,
    /// Accepted m-sections, in offer order.
    pub media: Vec<NegotiatedMedia>,
}

/// The answer and what it agreed to.
#[derive(Debug, Clone)]
pub struct Answer {
    /// SDP text, CRLF line endings.
    pub sdp: String,
    /// The negotiated description.
    pub leg: NegotiatedLeg,
}

/// Parses `offer` and answers it for a leg of `direction`.
///
/// `next_ssrc` supplies SSRCs for the streams a subscribe leg sends.
pub fn answer(
    offer: &str,
    direction: LegDirection,
    local: &LocalDescription,
    next_ssrc: &mut dyn FnMut() -> u32,
) -> Result<Answer, SdpError> {
    if offer.trim().is_empty() {
        return Err(SdpError::Parse("empty body".into()));
    }
    let session =
        webrtc_sdp::parse_sdp(offer, false).map_err(|e| SdpError::Parse(e.to_string()))?;
    Negotiation::new(&session, direction, local)?.run(next_ssrc)
}

/// First attribute `f` picks from the m-section, else from the session.
fn lookup<'s, T>(
    media: &'s SdpMedia,
    session: &'s SdpSession,
    f: impl Fn(&'s SdpAttribute) -> Option<T>,
) -> Option<T> {
    media
        .get_attributes()
        .iter()
        .find_map(&f)
        .or_else(|| session.attribute.iter().find_map(&f))
}

fn media_kind(m: &SdpMedia) -> Option<MediaKind> {
    match m.get_type() {
        SdpMediaValue::Audio => Some(MediaKind::Audio),
        SdpMediaValue::Video => Some(MediaKind::Video),
        _ => None,
    }
}

fn media_type_name(m: &SdpMedia) -> String {
    match m.get_type() {
        SdpMediaValue::Audio => "audio".into(),
        SdpMediaValue::Video => "video".into(),
        SdpMediaValue::Application => "application".into(),
        SdpMediaValue::Unknown(s) => s.clone(),
    }
}

fn formats_text(m: &SdpMedia) -> String {
    use webrtc_sdp::media_type::SdpFormatList;
    match m.get_formats() {
        SdpFormatList::Integers(v) => v.iter().map(u32::to_string).collect::<Vec<_>>().join(" "),
        SdpFormatList::Strings(v) => v.join(" "),
        SdpFormatList::Unknown(s) => s.clone(),
    }
}

fn mid_of(m: &SdpMedia) -> Option<&str> {
    m.get_attributes().iter().find_map(|a| match a {
        SdpAttribute::Mid(mid) => Some(mid.as_str()),
        _ => None,
    })
}

/// H.264 profile_idc of constrained baseline and baseline (which a
/// constrained-baseline decoder handles when constraint_set1 is set, and
/// every browser's decoder handles in practice).
const H264_PROFILE_BASELINE: u32 = 0x42;

/// How one m-section is answered.
enum Outcome {
    Accepted(NegotiatedMedia),
    Rejected { mid: Option<String> },
}

struct Negotiation<'a> {
    session: &'a SdpSession,
    direction: LegDirection,
    local: &'a LocalDescription,
    bundle: Vec<String>,
}

impl<'a> Negotiation<'a> {
    fn new(
        session: &'a SdpSession,
        direction: LegDirection,
        local: &'a LocalDescription,
    ) -> Result<Self, SdpError> {
        let bundle = session
            .attribute
            .iter()
            .find_map(|a| match a {
                SdpAttribute::Group(g)
                    if matches!(g.semantics, SdpAttributeGroupSemantic::Bundle) =>
                {
                    Some(g.tags.clone())
                }
                _ => None,
            })
            .ok_or_else(|| unacceptable("no a=group:BUNDLE (WHIP and WHEP require max-bundle)"))?;
        if bundle.is_empty() {
            return Err(unacceptable("a=group:BUNDLE lists no mid"));
        }
        if session
            .attribute
            .iter()
            .any(|a| matches!(a, SdpAttribute::IceLite))
        {
            return Err(unacceptable(
                "the offerer is ICE-lite too; one side must run full ICE",
            ));
        }
        if session.media.is_empty() {
            return Err(unacceptable("no m-section"));
        }
        Ok(Self {
            session,
            direction,
            local,
            bundle,
        })
    }

    fn run(self, next_ssrc: &mut dyn FnMut() -> u32) -> Result<Answer, SdpError> {
        let tagged = self
            .session
            .media
            .iter()
            .find(|m| mid_of(m) == Some(self.bundle[0].as_str()))
            .ok_or_else(|| {
                unacceptable(format!(
                    "a=group:BUNDLE names mid {} but no m-section has it",
                    self.bundle[0]
                ))
            })?;
        let remote_ice = self.remote_ice(tagged)?;
        let remote_fingerprint_sha256 = self.remote_fingerprint(tagged)?;
        let mut outcomes = Vec::with_capacity(self.session.media.len());
        for (index, m) in self.session.media.iter().enumerate() {
            outcomes.push(self.negotiate_media(index, m, next_ssrc)?);
        }
        let media: Vec<NegotiatedMedia> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Accepted(m) => Some(m.clone()),
                Outcome::Rejected { .. } => None,
            })
            .collect();
        if media.is_empty() {
            return Err(unacceptable(
                "no m-section with a supported codec (Opus, VP8, H.264 with \
                 packetization-mode=1 and a baseline profile, AV1)",
            ));
        }
        let leg = NegotiatedLeg {
            direction: self.direction,
            remote_ice,
            local_ice: self.local.ice.clone(),
            remote_fingerprint_sha256,
            media,
        };
        let sdp = self.write_answer(&outcomes);
        Ok(Answer { sdp, leg })
    }

    fn remote_ice(&self, tagged: &SdpMedia) -> Result<IceCredentials, SdpError> {
        let ufrag = lookup(tagged, self.session, |a| match a {
            SdpAttribute::IceUfrag(u) => Some(u.clone()),
            _ => None,
        })
        .ok_or_else(|| unacceptable("no a=ice-ufrag"))?;
        let pwd = lookup(tagged, self.session, |a| match a {
            SdpAttribute::IcePwd(p) => Some(p.clone()),
            _ => None,
        })
        .ok_or_else(|| unacceptable("no a=ice-pwd"))?;
        // RFC 8839 §5.4: ufrag 4..256 and pwd 22..256 ice-chars.
        if !(4..=256).contains(&ufrag.len()) || !(22..=256).contains(&pwd.len()) {
            return Err(unacceptable(
                "ice-ufrag must have 4-256 and ice-pwd 22-256 characters",
            ));
        }
        Ok(IceCredentials { ufrag, pwd })
    }

    fn remote_fingerprint(&self, tagged: &SdpMedia) -> Result<Vec<u8>, SdpError> {
        let fp = lookup(tagged, self.session, |a| match a {
            SdpAttribute::Fingerprint(f)
                if f.hash_algorithm == SdpAttributeFingerprintHashType::Sha256 =>
            {
                Some(f.fingerprint.clone())
            }
            _ => None,
        })
        .ok_or_else(|| unacceptable("no a=fingerprint:sha-256 (DTLS-SRTP needs it)"))?;
        if fp.len() != 32 {
            return Err(unacceptable("a=fingerprint:sha-256 is not 32 bytes"));
        }
        let setup = lookup(tagged, self.session, |a| match a {
            SdpAttribute::Setup(s) => Some(s),
            _ => None,
        });
        match setup {
            Some(SdpAttributeSetup::Passive) => Err(unacceptable(
                "a=setup:passive: the appliance is the DTLS server, the offerer must be \
                 active or actpass",
            )),
            Some(SdpAttributeSetup::Holdconn) => {
                Err(unacceptable("a=setup:holdconn: no DTLS connection wanted"))
            }
            _ => Ok(fp),
        }
    }

    fn negotiate_media(
        &self,
        index: usize,
        m: &SdpMedia,
        next_ssrc: &mut dyn FnMut() -> u32,
    ) -> Result<Outcome, SdpError> {
        let mid = mid_of(m).map(str::to_owned);
        let Some(kind) = media_kind(m) else {
            return Ok(Outcome::Rejected { mid });
        };
        let mid = mid.ok_or_else(|| unacceptable(format!("m-section {index} has no a=mid")))?;
        if m.get_port() == 0 || !self.bundle.contains(&mid) {
            return Ok(Outcome::Rejected { mid: Some(mid) });
        }
        if m.get_proto() != &webrtc_sdp::media_type::SdpProtocolValue::UdpTlsRtpSavpf {
            return Err(unacceptable(format!(
                "mid {mid} uses {}; WebRTC legs need UDP/TLS/RTP/SAVPF",
                m.get_proto()
            )));
        }
        let attrs = m.get_attributes();
        if !attrs.iter().any(|a| matches!(a, SdpAttribute::RtcpMux)) {
            return Err(unacceptable(format!("mid {mid} has no a=rtcp-mux")));
        }
        let direction = attrs.iter().find_map(|a| match a {
            SdpAttribute::Sendonly => Some("sendonly"),
            SdpAttribute::Recvonly => Some("recvonly"),
            SdpAttribute::Sendrecv => Some("sendrecv"),
            SdpAttribute::Inactive => Some("inactive"),
            _ => None,
        });
        let direction = direction.unwrap_or("sendrecv");
        match (self.direction, direction) {
            (_, "inactive") => return Ok(Outcome::Rejected { mid: Some(mid) }),
            (LegDirection::Publish, "recvonly") => {
                return Err(unacceptable(format!(
                    "mid {mid} is recvonly; a WHIP (publish) offer sends media"
                )))
            }
            (LegDirection::Subscribe, "sendonly") => {
                return Err(unacceptable(format!(
                    "mid {mid} is sendonly; a WHEP (subscribe) offer receives media"
                )))
            }
            _ => {}
        }
        let codecs = self.pick_codecs(m, kind);
        if codecs.is_empty() {
            return Ok(Outcome::Rejected { mid: Some(mid) });
        }
        let extensions = extensions_of(m, kind);
        let rids = if self.direction == LegDirection::Publish && kind == MediaKind::Video {
            simulcast_rids(m, &mid)?
        } else {
            Vec::new()
        };
        let mut remote_ssrcs = Vec::new();
        let mut remote_rtx_pairs = Vec::new();
        for a in attrs {
            match a {
                SdpAttribute::Ssrc(s) if !remote_ssrcs.contains(&s.id) => remote_ssrcs.push(s.id),
                SdpAttribute::SsrcGroup(SdpSsrcGroupSemantic::FlowIdentification, v)
                    if v.len() == 2 =>
                {
                    remote_rtx_pairs.push((v[0].id, v[1].id))
                }
                _ => {}
            }
        }
        let local_streams = if self.direction == LegDirection::Subscribe {
            let rtx = codecs.iter().any(|c| c.rtx_payload_type.is_some());
            let ssrc = next_ssrc();
            vec![LocalStream {
                ssrc,
                rtx_ssrc: rtx.then(&mut *next_ssrc),
            }]
        } else {
            Vec::new()
        };
        Ok(Outcome::Accepted(NegotiatedMedia {
            mid,
            kind,
            codecs,
            extensions,
            rids,
            remote_ssrcs,
            remote_rtx_pairs,
            local_streams,
            rtcp_rsize: attrs.iter().any(|a| matches!(a, SdpAttribute::RtcpRsize)),
        }))
    }

    fn pick_codecs(&self, m: &SdpMedia, kind: MediaKind) -> Vec<NegotiatedCodec> {
        let attrs = m.get_attributes();
        let fmtp_of = |pt: u8| {
            attrs.iter().find_map(|a| match a {
                SdpAttribute::Fmtp(f) if f.payload_type == pt => Some(&f.parameters),
                _ => None,
            })
        };
        let mut chosen: Vec<NegotiatedCodec> = Vec::new();
        let have = |c: Codec, chosen: &Vec<NegotiatedCodec>| chosen.iter().any(|x| x.codec == c);
        for a in attrs {
            let SdpAttribute::Rtpmap(r) = a else { continue };
            let name = r.codec_name.to_ascii_lowercase();
            let pt = r.payload_type;
            let (codec, fmtp) = match (kind, name.as_str()) {
                (MediaKind::Audio, "opus") if r.frequency == 48000 && r.channels == Some(2) => {
                    let useinbandfec = fmtp_of(pt).is_some_and(|p| p.useinbandfec);
                    let fmtp = if useinbandfec {
                        "minptime=10;useinbandfec=1"
                    } else {
                        "minptime=10"
                    };
                    (Codec::Opus, fmtp.to_owned())
                }
                (MediaKind::Video, "vp8") if r.frequency == 90000 && !have(Codec::Vp8, &chosen) => {
                    (Codec::Vp8, String::new())
                }
                (MediaKind::Video, "h264")
                    if r.frequency == 90000 && !have(Codec::H264, &chosen) =>
                {
                    let Some(p) = fmtp_of(pt) else { continue };
                    if p.packetization_mode != 1
                        || p.profile_level_id >> 16 != H264_PROFILE_BASELINE
                    {
                        continue;
                    }
                    (
                        Codec::H264,
                        format!(
                            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={:06x}",
                            p.profile_level_id
                        ),
                    )
                }
                (MediaKind::Video, "av1") if r.frequency == 90000 && !have(Codec::Av1, &chosen) => {
                    let mut parts = Vec::new();
                    if let Some(p) = fmtp_of(pt) {
                        if let Some(v) = p.level_idx {
                            parts.push(format!("level-idx={v}"));
                        }
                        if let Some(v) = p.profile {
                            parts.push(format!("profile={v}"));
                        }
                        if let Some(v) = p.tier {
                            parts.push(format!("tier={v}"));
                        }
                    }
                    (Codec::Av1, parts.join(";"))
                }
                _ => continue,
            };
            let feedback = feedback_of(m, pt, kind);
            chosen.push(NegotiatedCodec {
                payload_type: pt,
                codec,
                clock_rate: r.frequency,
                channels: r.channels,
                fmtp,
                rtx_payload_type: None,
                feedback,
            });
        }
        if kind == MediaKind::Video {
            for a in attrs {
                let SdpAttribute::Rtpmap(r) = a else { continue };
                if !r.codec_name.eq_ignore_ascii_case("rtx") || r.frequency != 90000 {
                    continue;
                }
                let Some(apt) = fmtp_of(r.payload_type)
                    .and_then(|p| p.rtx.as_ref())
                    .map(|x| x.apt)
                else {
                    continue;
                };
                if let Some(c) = chosen
                    .iter_mut()
                    .find(|c| c.payload_type == apt && c.rtx_payload_type.is_none())
                {
                    c.rtx_payload_type = Some(r.payload_type);
                }
            }
        }
        chosen
    }

    fn write_answer(&self, outcomes: &[Outcome]) -> String {
        let mut s = String::with_capacity(4096);
        let first = self.local.candidates.first().copied();
        let (ip_kind, ip) = match first {
            Some(SocketAddr::V6(a)) => ("IP6", a.ip().to_string()),
            Some(SocketAddr::V4(a)) => ("IP4", a.ip().to_string()),
            None => ("IP4", "0.0.0.0".to_owned()),
        };
        let port = first.map_or(9, |a| a.port());
        let _ = write!(
            s,
            "v=0\r\no=- {} 2 IN {ip_kind} {ip}\r\ns=-\r\nt=0 0\r\n",
            self.local.session_id
        );
        let accepted: Vec<&str> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Accepted(m) => Some(m.mid.as_str()),
                Outcome::Rejected { .. } => None,
            })
            .collect();
        // The offerer's tag order, restricted to what was accepted.
        let group: Vec<&str> = self
            .bundle
            .iter()
            .map(String::as_str)
            .filter(|mid| accepted.contains(mid))
            .collect();
        let _ = write!(s, "a=group:BUNDLE {}\r\na=ice-lite\r\n", group.join(" "));
        if self
            .session
            .attribute
            .iter()
            .any(|a| matches!(a, SdpAttribute::ExtmapAllowMixed))
        {
            s.push_str("a=extmap-allow-mixed\r\n");
        }
        if self.direction == LegDirection::Subscribe {
            s.push_str("a=msid-semantic: WMS *\r\n");
        }
        let mut candidates_written = false;
        for (m, outcome) in self.session.media.iter().zip(outcomes) {
            match outcome {
                Outcome::Rejected { mid } => {
                    let _ = write!(
                        s,
                        "m={} 0 {} {}\r\nc=IN IP4 0.0.0.0\r\n",
                        media_type_name(m),
                        m.get_proto(),
                        formats_text(m)
                    );
                    if let Some(mid) = mid {
                        let _ = write!(s, "a=mid:{mid}\r\n");
                    }
                    s.push_str("a=inactive\r\n");
                }
                Outcome::Accepted(n) => {
                    self.write_media(&mut s, n, ip_kind, &ip, port, !candidates_written);
                    candidates_written = true;
                }
            }
        }
        s
    }

    fn write_media(
        &self,
        s: &mut String,
        n: &NegotiatedMedia,
        ip_kind: &str,
        ip: &str,
        port: u16,
        with_candidates: bool,
    ) {
        let kind = match n.kind {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        };
        let mut pts: Vec<String> = Vec::new();
        for c in &n.codecs {
            pts.push(c.payload_type.to_string());
            if let Some(rtx) = c.rtx_payload_type {
                pts.push(rtx.to_string());
            }
        }
        let l = self.local;
        let _ = write!(
            s,
            "m={kind} {port} UDP/TLS/RTP/SAVPF {}\r\nc=IN {ip_kind} {ip}\r\n\
             a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {}\r\n\
             a=setup:passive\r\na=mid:{}\r\n",
            pts.join(" "),
            l.ice.ufrag,
            l.ice.pwd,
            l.fingerprint_sha256,
            n.mid
        );
        for e in &n.extensions {
            let _ = write!(s, "a=extmap:{} {}\r\n", e.id, e.kind.uri());
        }
        s.push_str(match self.direction {
            LegDirection::Publish => "a=recvonly\r\n",
            LegDirection::Subscribe => "a=sendonly\r\n",
        });
        s.push_str("a=rtcp-mux\r\n");
        if n.rtcp_rsize {
            s.push_str("a=rtcp-rsize\r\n");
        }
        for c in &n.codecs {
            let name = match c.codec {
                Codec::Opus => "opus",
                Codec::Vp8 => "VP8",
                Codec::H264 => "H264",
                Codec::Av1 => "AV1",
            };
            let _ = write!(s, "a=rtpmap:{} {name}/{}", c.payload_type, c.clock_rate);
            if let Some(ch) = c.channels {
                let _ = write!(s, "/{ch}");
            }
            s.push_str("\r\n");
            for f in &c.feedback {
                let _ = write!(s, "a=rtcp-fb:{} {}\r\n", c.payload_type, f.sdp());
            }
            if !c.fmtp.is_empty() {
                let _ = write!(s, "a=fmtp:{} {}\r\n", c.payload_type, c.fmtp);
            }
            if let Some(rtx) = c.rtx_payload_type {
                let _ = write!(
                    s,
                    "a=rtpmap:{rtx} rtx/{}\r\na=fmtp:{rtx} apt={}\r\n",
                    c.clock_rate, c.payload_type
                );
            }
        }
        for rid in &n.rids {
            let _ = write!(s, "a=rid:{} recv\r\n", rid.trim_start_matches('~'));
        }
        if !n.rids.is_empty() {
            let _ = write!(s, "a=simulcast:recv {}\r\n", n.rids.join(";"));
        }
        for st in &n.local_streams {
            let stream = &l.cname;
            let track = format!("{}-{}", l.cname, n.mid);
            if let Some(rtx) = st.rtx_ssrc {
                let _ = write!(s, "a=ssrc-group:FID {} {rtx}\r\n", st.ssrc);
            }
            for ssrc in std::iter::once(st.ssrc).chain(st.rtx_ssrc) {
                let _ = write!(
                    s,
                    "a=ssrc:{ssrc} cname:{}\r\na=ssrc:{ssrc} msid:{stream} {track}\r\n",
                    l.cname
                );
            }
            let _ = write!(s, "a=msid:{stream} {track}\r\n");
        }
        if with_candidates {
            for (i, c) in l.candidates.iter().enumerate() {
                // RFC 8445 §5.1.2.1: host type preference 126, local
                // preference falling with the address's position, component 1.
                let local_pref = 65535u32.saturating_sub(i as u32);
                let priority = (126u32 << 24) | (local_pref << 8) | 255;
                let _ = write!(
                    s,
                    "a=candidate:{} 1 udp {priority} {} {} typ host\r\n",
                    i + 1,
                    c.ip(),
                    c.port()
                );
            }
            s.push_str("a=end-of-candidates\r\n");
        }
    }
}

fn feedback_of(m: &SdpMedia, pt: u8, kind: MediaKind) -> Vec<Feedback> {
    let mut out = Vec::new();
    for a in m.get_attributes() {
        let SdpAttribute::Rtcpfb(fb) = a else {
            continue;
        };
        let applies = match fb.payload_type {
            SdpAttributePayloadType::PayloadType(p) => p == pt,
            SdpAttributePayloadType::Wildcard => true,
        };
        if !applies {
            continue;
        }
        let f = match (&fb.feedback_type, fb.parameter.as_str()) {
            (SdpAttributeRtcpFbType::TransCc, _) => Feedback::TransportCc,
            (_, _) if kind == MediaKind::Audio => continue,
            (SdpAttributeRtcpFbType::Nack, "") => Feedback::Nack,
            (SdpAttributeRtcpFbType::Nack, "pli") => Feedback::NackPli,
            (SdpAttributeRtcpFbType::Ccm, "fir") => Feedback::CcmFir,
            (SdpAttributeRtcpFbType::Remb, _) => Feedback::GoogRemb,
            _ => continue,
        };
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

fn extensions_of(m: &SdpMedia, kind: MediaKind) -> Vec<HeaderExtension> {
    let mut out: Vec<HeaderExtension> = Vec::new();
    for a in m.get_attributes() {
        let SdpAttribute::Extmap(e) = a else { continue };
        let Some(k) = ExtensionKind::from_uri(&e.url) else {
            continue;
        };
        // Id 15 is reserved in the one-byte form; 1..=255 otherwise.
        let Ok(id) = u8::try_from(e.id) else { continue };
        if id == 0 || id == 15 || !k.allowed_for(kind) {
            continue;
        }
        if out.iter().any(|x| x.id == id || x.kind == k) {
            continue;
        }
        out.push(HeaderExtension { id, kind: k });
    }
    out
}

fn simulcast_rids(m: &SdpMedia, mid: &str) -> Result<Vec<String>, SdpError> {
    let attrs = m.get_attributes();
    let Some(sim) = attrs.iter().find_map(|a| match a {
        SdpAttribute::Simulcast(s) => Some(s),
        _ => None,
    }) else {
        return Ok(Vec::new());
    };
    let send_rids: Vec<&str> = attrs
        .iter()
        .filter_map(|a| match a {
            SdpAttribute::Rid(r) if r.direction == SdpSingleDirection::Send => Some(r.id.as_str()),
            _ => None,
        })
        .collect();
    let mut rids = Vec::new();
    for version in &sim.send {
        // Alternatives within one stream (`a,b`): the first is the
        // preferred one and the only one answered.
        let Some(id) = version.ids.first() else {
            continue;
        };
        if !send_rids.contains(&id.id.as_str()) {
            return Err(unacceptable(format!(
                "mid {mid}: a=simulcast lists rid {} without a=rid:{} send",
                id.id, id.id
            )));
        }
        rids.push(if id.paused {
            format!("~{}", id.id)
        } else {
            id.id.clone()
        });
    }
    if rids.len() > usize::from(u8::MAX) {
        return Err(unacceptable(format!("mid {mid}: too many simulcast rids")));
    }
    Ok(rids)
}

/// Formats a SHA-256 digest as SDP wants it: upper-case hex pairs joined by
/// colons.
pub fn format_fingerprint(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_OFFER: &str = include_str!("../tests/fixtures/chrome_whip_offer.sdp");

    fn local() -> LocalDescription {
        LocalDescription {
            ice: IceCredentials {
                ufrag: "sbUF".into(),
                pwd: "0123456789abcdefghijklmn".into(),
            },
            fingerprint_sha256: format_fingerprint(&[0xAB; 32]),
            candidates: vec!["198.18.0.1:40000".parse().unwrap()],
            session_id: 42,
            cname: "switchboard".into(),
        }
    }

    fn ssrcs() -> impl FnMut() -> u32 {
        let mut n = 1000;
        move || {
            n += 1;
            n
        }
    }

    fn publish(offer: &str) -> Result<Answer, SdpError> {
        answer(offer, LegDirection::Publish, &local(), &mut ssrcs())
    }

    #[test]
    fn chrome_simulcast_offer_is_answered() {
        let a = publish(CHROME_OFFER).expect("answer");
        let leg = &a.leg;
        assert_eq!(leg.remote_ice.ufrag, "Jq4E");
        assert_eq!(leg.remote_fingerprint_sha256[0], 0x6B);
        assert_eq!(leg.media.len(), 2);
        let audio = &leg.media[0];
        assert_eq!((audio.mid.as_str(), audio.kind), ("0", MediaKind::Audio));
        assert_eq!(audio.codecs.len(), 1);
        assert_eq!(audio.codecs[0].payload_type, 111);
        assert_eq!(audio.codecs[0].feedback, vec![Feedback::TransportCc]);
        assert_eq!(audio.remote_ssrcs, vec![2867207045]);
        let kinds: Vec<_> = audio.extensions.iter().map(|e| (e.id, e.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (1, ExtensionKind::AudioLevel),
                (2, ExtensionKind::AbsSendTime),
                (3, ExtensionKind::TransportWideCc),
                (4, ExtensionKind::Mid)
            ]
        );
        let video = &leg.media[1];
        let codecs: Vec<_> = video
            .codecs
            .iter()
            .map(|c| (c.payload_type, c.codec, c.rtx_payload_type))
            .collect();
        // VP8, the first H.264 with packetization-mode=1 and a baseline
        // profile, and AV1; not VP9, not the high/main profiles, not
        // packetization-mode=0, not red/ulpfec.
        assert_eq!(
            codecs,
            vec![
                (96, Codec::Vp8, Some(97)),
                (102, Codec::H264, Some(103)),
                (45, Codec::Av1, Some(46))
            ]
        );
        assert_eq!(
            video.codecs[0].feedback,
            vec![
                Feedback::GoogRemb,
                Feedback::TransportCc,
                Feedback::CcmFir,
                Feedback::Nack,
                Feedback::NackPli
            ]
        );
        assert_eq!(video.rids, vec!["q", "h", "f"]);
        let ext: Vec<_> = video.extensions.iter().map(|e| (e.id, e.kind)).collect();
        assert_eq!(
            ext,
            vec![
                (2, ExtensionKind::AbsSendTime),
                (3, ExtensionKind::TransportWideCc),
                (4, ExtensionKind::Mid),
                (10, ExtensionKind::Rid),
                (11, ExtensionKind::RepairedRid),
                (12, ExtensionKind::Av1DependencyDescriptor)
            ]
        );
        assert!(video.rtcp_rsize);
    }

    #[test]
    fn answer_text_carries_what_chrome_needs() {
        let a = publish(CHROME_OFFER).unwrap();
        let sdp = &a.sdp;
        for line in [
            "a=group:BUNDLE 0 1",
            "a=ice-lite",
            "a=ice-ufrag:sbUF",
            "a=ice-pwd:0123456789abcdefghijklmn",
            "a=setup:passive",
            "a=rtcp-mux",
            "a=recvonly",
            "a=rid:q recv",
            "a=rid:h recv",
            "a=rid:f recv",
            "a=simulcast:recv q;h;f",
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 minptime=10;useinbandfec=1",
            "a=rtpmap:102 H264/90000",
            "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
            "a=rtpmap:97 rtx/90000",
            "a=fmtp:97 apt=96",
            "a=rtcp-fb:96 goog-remb",
            "a=rtcp-fb:96 transport-cc",
            "a=fmtp:45 level-idx=5;profile=0;tier=0",
            "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            "a=candidate:1 1 udp 2130706431 198.18.0.1 40000 typ host",
            "a=end-of-candidates",
            "m=video 40000 UDP/TLS/RTP/SAVPF 96 97 102 103 45 46",
        ] {
            assert!(
                sdp.contains(&format!("{line}\r\n")),
                "missing {line:?} in\n{sdp}"
            );
        }
        let fp = format!(
            "a=fingerprint:sha-256 {}\r\n",
            format_fingerprint(&[0xAB; 32])
        );
        assert_eq!(sdp.matches(&fp).count(), 2);
        assert!(!sdp.contains("VP9"));
        assert!(!sdp.contains("urn:3gpp:video-orientation"));
        assert_eq!(sdp.matches("a=candidate:").count(), 1);
    }

    #[test]
    fn answer_parses_back() {
        let a = publish(CHROME_OFFER).unwrap();
        let parsed = webrtc_sdp::parse_sdp(&a.sdp, true).expect("our answer parses strictly");
        assert_eq!(parsed.media.len(), 2);
    }

    #[test]
    fn subscribe_answer_sends_with_ssrcs() {
        let offer = CHROME_OFFER
            .replace("a=sendonly", "a=recvonly")
            .replace("a=simulcast:send q;h;f\r\n", "");
        let a = answer(&offer, LegDirection::Subscribe, &local(), &mut ssrcs()).unwrap();
        assert!(a.sdp.contains("a=sendonly\r\n"));
        assert!(!a.sdp.contains("a=simulcast"));
        let audio = &a.leg.media[0];
        assert_eq!(
            audio.local_streams,
            vec![LocalStream {
                ssrc: 1001,
                rtx_ssrc: None
            }]
        );
        let video = &a.leg.media[1];
        assert_eq!(
            video.local_streams,
            vec![LocalStream {
                ssrc: 1002,
                rtx_ssrc: Some(1003)
            }]
        );
        assert!(a.sdp.contains("a=ssrc-group:FID 1002 1003\r\n"));
        assert!(a.sdp.contains("a=ssrc:1003 cname:switchboard\r\n"));
        webrtc_sdp::parse_sdp(&a.sdp, true).expect("parses");
    }

    #[test]
    fn malformed_and_unacceptable_offers_have_reasons() {
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "empty"),
            ("hello".into(), "does not parse"),
            (CHROME_OFFER.replace("a=group:BUNDLE 0 1\r\n", ""), "BUNDLE"),
            (CHROME_OFFER.replace("a=rtcp-mux\r\n", ""), "rtcp-mux"),
            (
                CHROME_OFFER.replace("a=fingerprint:sha-256", "a=fingerprint:sha-1"),
                "fingerprint",
            ),
            (
                CHROME_OFFER.replace("a=setup:actpass", "a=setup:passive"),
                "passive",
            ),
            (
                CHROME_OFFER.replace("a=ice-ufrag:Jq4E\r\n", ""),
                "ice-ufrag",
            ),
            (CHROME_OFFER.replace("a=sendonly", "a=recvonly"), "recvonly"),
            (
                CHROME_OFFER.replace("a=rid:h send\r\n", ""),
                "RIDs must be defined",
            ),
            (
                CHROME_OFFER
                    .replace("opus/48000/2", "isac/16000")
                    .replace("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP7/90000")
                    .replace("H264/90000", "H263/90000")
                    .replace("AV1/90000", "AV2/90000"),
                "no m-section with a supported codec",
            ),
            (
                CHROME_OFFER.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"),
                "UDP/TLS/RTP/SAVPF",
            ),
            (
                CHROME_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=ice-lite\r\n"),
                "ICE-lite",
            ),
        ];
        for (offer, reason) in cases {
            let e = publish(&offer).expect_err(reason);
            assert!(e.to_string().contains(reason), "{reason}: {e}");
        }
    }

    #[test]
    fn unbundled_and_data_sections_are_rejected_not_fatal() {
        let offer = CHROME_OFFER.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 1")
            + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\na=sctp-port:5000\r\n";
        let a = publish(&offer).unwrap();
        assert_eq!(a.leg.media.len(), 1);
        assert_eq!(a.leg.media[0].mid, "1");
        assert!(a.sdp.contains("a=group:BUNDLE 1\r\n"));
        assert!(a.sdp.contains("m=audio 0 UDP/TLS/RTP/SAVPF"));
        assert!(a
            .sdp
            .contains("m=application 0 UDP/DTLS/SCTP webrtc-datachannel"));
        // The first accepted section carries the candidates.
        let video_at = a.sdp.find("m=video").unwrap();
        assert!(a.sdp.find("a=candidate").unwrap() > video_at);
    }

    #[test]
    fn h264_without_baseline_pm1_is_not_chosen() {
        let offer = CHROME_OFFER
            .replace(
                "packetization-mode=1;profile-level-id=42001f",
                "packetization-mode=0;profile-level-id=42001f",
            )
            .replace(
                "packetization-mode=1;profile-level-id=42e01f",
                "packetization-mode=1;profile-level-id=64e01f",
            );
        let a = publish(&offer).unwrap();
        assert!(!a.leg.media[1].codecs.iter().any(|c| c.codec == Codec::H264));
    }

    #[test]
    fn paused_rid_is_kept_paused() {
        let offer = CHROME_OFFER.replace("a=simulcast:send q;h;f", "a=simulcast:send q;h;~f");
        let a = publish(&offer).unwrap();
        assert_eq!(a.leg.media[1].rids, vec!["q", "h", "~f"]);
        assert!(a.sdp.contains("a=rid:f recv\r\n"));
        assert!(a.sdp.contains("a=simulcast:recv q;h;~f\r\n"));
    }
}
