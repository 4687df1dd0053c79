//! The one definition of every BPF map key and value type.
//!
//! The XDP/TC programs (`switchboard-ebpf`, built for `bpfel-unknown-none`)
//! and the userspace loader (`dataplane::xdp`) both use these `#[repr(C)]`
//! types, so a layout change cannot silently split them.
#![no_std]

/// Names of the maps in the BPF object, shared so the loader cannot misspell them.
pub mod map_names {
    /// Per-CPU array of [`crate::Counters`], one slot.
    pub const COUNTERS: &str = "SB_COUNTERS";
    /// Array of one [`crate::IngressConfig`].
    pub const INGRESS_CONFIG: &str = "SB_INGRESS_CONFIG";
}

/// Names of the programs in the BPF object.
pub mod program_names {
    /// The XDP ingress classifier.
    pub const XDP_INGRESS: &str = "switchboard_xdp";
}

/// What the XDP classifier saw, per CPU. Every field is a packet count.
///
/// Userspace sums the per-CPU copies; the program only ever increments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every frame the program was called for.
    pub received: u64,
    /// Not IPv4/IPv6 UDP, or not to a media port: passed on untouched.
    pub not_media: u64,
    /// UDP to a media port whose first byte is STUN (RFC 7983: 0..=3).
    pub stun: u64,
    /// UDP to a media port whose first byte is DTLS (RFC 7983: 20..=63).
    pub dtls: u64,
    /// UDP to a media port whose first byte is RTP or RTCP (RFC 7983: 128..=191).
    pub rtp_rtcp: u64,
    /// UDP to a media port with any other first byte (TURN channel, QUIC, junk).
    pub other: u64,
    /// Headers that lie or are cut short (bad IHL, UDP length past the frame, ...).
    pub malformed: u64,
    /// Packets dropped by the program.
    pub dropped: u64,
}

impl Counters {
    /// Adds another CPU's copy into this one.
    pub fn accumulate(&mut self, other: &Counters) {
        self.received += other.received;
        self.not_media += other.not_media;
        self.stun += other.stun;
        self.dtls += other.dtls;
        self.rtp_rtcp += other.rtp_rtcp;
        self.other += other.other;
        self.malformed += other.malformed;
        self.dropped += other.dropped;
    }
}

/// Which UDP ports are media ports, and what to do with malformed frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngressConfig {
    /// First media port (host byte order), inclusive.
    pub port_min: u16,
    /// Last media port (host byte order), inclusive.
    pub port_max: u16,
    /// Non-zero: drop malformed frames addressed to a media port range; zero: pass them.
    pub drop_malformed: u8,
    pub _pad: [u8; 3],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers with explicit padding fields; every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IngressConfig {}
}
