//! The control plane's commands to the core and their typed errors.
//!
//! Commands are applied between batches of datagrams (the worker drains its
//! command channel between two io_uring submits), so media keeps flowing
//! while legs come and go.

use std::net::SocketAddr;

use crate::layer::{LayerError, OverloadCap};
use crate::rewrite::RewriteError;
use crate::srtp::{MasterKey, SrtpError, SrtpProfile};

use super::stats::{LegStats, SfuStats};
use super::{LegId, RoomId};

/// The video codec a leg negotiated (decides how key frames are found).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8 (RFC 7741).
    Vp8,
    /// H.264 (RFC 6184).
    H264,
}

/// RFC 8285 extension ids a leg negotiated (its own numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtensionIds {
    /// `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id` (simulcast RID).
    pub rid: Option<u8>,
    /// abs-send-time.
    pub abs_send_time: Option<u8>,
    /// transport-wide-cc.
    pub transport_cc: Option<u8>,
    /// ssrc-audio-level.
    pub audio_level: Option<u8>,
}

/// What a leg negotiated in its SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// Opus payload type, if audio was negotiated.
    pub audio_pt: Option<u8>,
    /// Video payload type and codec, if video was negotiated.
    pub video: Option<(u8, VideoCodec)>,
    /// RTX payload type for the video payload type (RFC 4588), if any.
    pub rtx_pt: Option<u8>,
    /// Extension ids.
    pub extensions: ExtensionIds,
    /// Whether the leg sends `nack` feedback (answered from the cache).
    pub nack: bool,
}

/// A new leg: its addresses, keys and negotiated media.
#[derive(Debug, Clone)]
pub struct LegConfig {
    /// Its id (unique per core).
    pub id: LegId,
    /// The room it belongs to (created with its first leg).
    pub room: RoomId,
    /// The worker's address the peer sends to.
    pub local: SocketAddr,
    /// The peer's address (learnt by ICE).
    pub remote: SocketAddr,
    /// The DTLS-SRTP profile.
    pub profile: SrtpProfile,
    /// The peer's write key: unprotects what the leg receives.
    pub remote_key: MasterKey,
    /// The appliance's write key: protects what it sends on the leg.
    pub local_key: MasterKey,
    /// What was negotiated.
    pub media: MediaConfig,
    /// SSRC the appliance uses as sender of the RTCP it originates on this
    /// leg (receiver reports, feedback).
    pub rtcp_ssrc: u32,
}

/// One simulcast layer of a published video source, lowest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    /// Its RID (from `a=rid`), if the publisher sends RIDs.
    pub rid: Option<String>,
    /// Its SSRC, if signalled (`a=ssrc`); otherwise learnt from the RID.
    pub ssrc: Option<u32>,
    /// Expected bitrate until one is measured, bit/s.
    pub nominal_bps: u64,
}

/// What a leg publishes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishSpec {
    /// Audio SSRC, if it sends audio.
    pub audio_ssrc: Option<u32>,
    /// Video layers (one for no simulcast), lowest first.
    pub video_layers: Vec<LayerSpec>,
}

/// SSRCs the appliance uses towards a subscriber for one publisher (they go
/// into the subscriber's SDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeSpec {
    /// Audio SSRC towards the subscriber.
    pub audio_ssrc: u32,
    /// Video SSRC towards the subscriber.
    pub video_ssrc: u32,
    /// RTX SSRC towards the subscriber (used when it negotiated RTX).
    pub video_rtx_ssrc: u32,
}

/// A command from the control plane.
#[derive(Debug, Clone)]
pub enum Command {
    /// Adds a leg (and its room, if new).
    AddLeg(Box<LegConfig>),
    /// Removes a leg, its publications and subscriptions (and its room,
    /// if it was the last leg).
    RemoveLeg(LegId),
    /// Declares what a leg publishes.
    Publish(LegId, PublishSpec),
    /// Makes `subscriber` receive `publisher`'s media.
    Subscribe {
        /// Receiving leg.
        subscriber: LegId,
        /// Sending leg.
        publisher: LegId,
        /// SSRCs towards the subscriber.
        ssrcs: SubscribeSpec,
    },
    /// Stops `subscriber` receiving `publisher`.
    Unsubscribe {
        /// Receiving leg.
        subscriber: LegId,
        /// Sending leg.
        publisher: LegId,
    },
    /// Sets or lifts the overload policy's cap for a whole room.
    SetRoomCap(RoomId, Option<OverloadCap>),
    /// Sets or lifts a cap for one subscriber.
    SetLegCap(LegId, Option<OverloadCap>),
    /// Reads the totals.
    Stats,
    /// Reads one leg's stats.
    LegStats(LegId),
    /// Asks publisher leg `LegId` for a key frame on every video layer
    /// (rate-limited as the core's own requests are): for subscribers the
    /// core cannot see, such as a cascaded room's downstream appliance.
    RequestKeyFrame(LegId),
}

/// A command's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Applied.
    Done,
    /// The totals.
    Stats(Box<SfuStats>),
    /// One leg's stats.
    Leg(Box<LegStats>),
}

/// Why a command was refused; the core is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such leg.
    #[error("unknown leg {0:?}")]
    UnknownLeg(LegId),
    /// A leg with this id exists.
    #[error("leg {0:?} exists already")]
    DuplicateLeg(LegId),
    /// Another leg uses this address pair.
    #[error("address pair {local} <- {remote} is taken")]
    AddressInUse {
        /// Local address.
        local: SocketAddr,
        /// Remote address.
        remote: SocketAddr,
    },
    /// The legs are in different rooms.
    #[error("legs {0:?} and {1:?} are in different rooms")]
    DifferentRooms(LegId, LegId),
    /// A leg cannot subscribe to itself.
    #[error("leg {0:?} cannot subscribe to itself")]
    SelfSubscription(LegId),
    /// Already subscribed.
    #[error("{subscriber:?} already receives {publisher:?}")]
    AlreadySubscribed {
        /// Receiving leg.
        subscriber: LegId,
        /// Sending leg.
        publisher: LegId,
    },
    /// Not subscribed.
    #[error("{subscriber:?} does not receive {publisher:?}")]
    NotSubscribed {
        /// Receiving leg.
        subscriber: LegId,
        /// Sending leg.
        publisher: LegId,
    },
    /// The publication is not usable (no layers, duplicate SSRCs, a layer
    /// with neither RID nor SSRC, too many layers, a RID without a RID
    /// extension).
    #[error("invalid publication: {0}")]
    InvalidPublication(&'static str),
    /// An SSRC is used twice on a leg.
    #[error("SSRC {0:#010x} is already used on this leg")]
    SsrcInUse(u32),
    /// SRTP keys or profile refused.
    #[error("SRTP: {0}")]
    Srtp(#[from] SrtpError),
    /// Rewriter configuration refused.
    #[error("rewriter: {0}")]
    Rewrite(#[from] RewriteError),
    /// Layer selector configuration refused.
    #[error("layer selector: {0}")]
    Layer(#[from] LayerError),
    /// The core holds as many legs as it was sized for.
    #[error("leg limit {0} reached")]
    TooManyLegs(usize),
}
