//! SRTP and SRTCP (RFC 3711, RFC 7714) for the four DTLS-SRTP profiles
//! WebRTC and SIP peers use: `AES_CM_128_HMAC_SHA1_80`,
//! `AES_CM_128_HMAC_SHA1_32`, `AEAD_AES_128_GCM` and `AEAD_AES_256_GCM`.
//!
//! # Model
//!
//! An [`SrtpContext`] holds the session keys derived from one master key and
//! salt (RFC 3711 §4.3, key derivation rate 0) and the state of every SSRC it
//! has seen: the rollover counter and highest index sent, the replay windows
//! for SRTP and SRTCP received, and the next SRTCP index to send. Streams are
//! created on the first packet of an SSRC — when sending, at once; when
//! receiving, only after that packet has authenticated, so forged packets
//! cannot fill the table — and the table is bounded
//! ([`SrtpConfig::max_streams`]): a new SSRC past the bound is refused with
//! [`SrtpError::TooManyStreams`].
//!
//! All packet operations work in place on caller-owned buffers and never
//! allocate: the key schedules are computed once, the stream table and its
//! replay windows are allocated once, at [`SrtpContext::with_config`].
//!
//! # Using it in the SFU
//!
//! Keys are per leg and per direction (DTLS-SRTP exports a client and a
//! server write key), so the SFU keeps **one context per leg and
//! direction**, each owned by the io_uring worker that owns the room (a
//! context is `Send`, not shared, and needs no lock):
//!
//! - the publisher's *inbound* context, keyed with the publisher's write key,
//!   unprotects each received packet once ([`SrtpContext::unprotect_rtp`]);
//!   its replay window rejects duplicates before any forwarding work;
//! - for every subscriber, the worker copies the plaintext into that
//!   subscriber's send buffer, rewrites the header (SSRC, sequence number,
//!   timestamp) and protects it with that subscriber's *outbound* context,
//!   keyed with the SFU's write key for the leg
//!   ([`SrtpContext::protect_rtp`]). The outbound stream state follows the
//!   rewritten SSRC and sequence numbers, so the rollover counter is the one
//!   the subscriber will infer.
//!
//! A context can protect and unprotect, and keeps the two directions' state
//! apart, but one key must never protect in both directions: two contexts,
//! two keys.
//!
//! Send buffers need [`SrtpProfile::rtp_overhead`] (or
//! [`SrtpProfile::rtcp_overhead`]) spare bytes after the packet for the tag.
//!
//! # Scope
//!
//! No MKI, no key derivation rate other than 0, no RFC 6904 header extension
//! encryption (header extensions stay readable, as the XDP layer filter
//! needs). By default SRTP and SRTCP are encrypted and authenticated; RTP or
//! RTCP encryption can be switched off ([`SrtpConfig::encrypt_rtp`],
//! [`SrtpConfig::encrypt_rtcp`]), authentication cannot. Received SRTCP is
//! decrypted or not as its authenticated E flag says.

mod aes_ctr;
mod hmac_sha1;
mod kdf;
mod profile;
mod replay;
mod streams;
mod transform;

#[cfg(test)]
mod tests;

pub use profile::{MasterKey, SrtpProfile};

use crate::wire::rtp::RtpPacket;
use crate::wire::WireError;

use kdf::Kdf;
use replay::{estimate_index, Window};
use streams::{StreamTable, Which};
use transform::{cm_iv, gcm_open, gcm_rtcp_iv, gcm_rtp_iv, gcm_seal, Transform, GCM_TAG_LEN};

/// Why a packet could not be protected or unprotected, or a context made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// The packet's structure is wrong (too short, wrong version, …).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The RTP header does not parse.
    #[error("invalid RTP header: {0}")]
    InvalidHeader(#[from] WireError),
    /// The authentication tag does not verify.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The packet index was already received (or, when sending, already sent).
    #[error("replayed packet")]
    ReplayedPacket,
    /// The packet index is behind the replay window.
    #[error("packet index too old for the replay window")]
    TooOld,
    /// The output buffer has no room for the tag (and SRTCP index).
    #[error("buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes the protected packet needs.
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
    /// A DTLS-SRTP protection profile id this crate does not implement.
    #[error("unknown SRTP protection profile {0:#06x}")]
    UnknownProfile(u16),
    /// Master key or salt of the wrong length for the profile.
    #[error("{what}: expected {expected} bytes, got {got}")]
    BadKeyLength {
        /// Which input.
        what: &'static str,
        /// Length the profile requires.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// A new SSRC would exceed the context's stream bound.
    #[error("too many SRTP streams (at most {max})")]
    TooManyStreams {
        /// The configured bound.
        max: usize,
    },
    /// The packet index space for this key is used up (2^48 SRTP packets or
    /// 2^31 SRTCP packets per SSRC): the key must be changed.
    #[error("SRTP key exhausted for this stream")]
    KeyExhausted,
    /// A configuration value out of range.
    #[error("invalid SRTP configuration: {0}")]
    InvalidConfig(&'static str),
    /// The cryptographic library refused an operation it should not refuse.
    #[error("cryptographic library error")]
    Crypto,
}

/// Result of SRTP operations.
pub type Result<T> = core::result::Result<T, SrtpError>;

/// Tunables of an [`SrtpContext`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpConfig {
    /// Replay window in packets (RFC 3711 §3.3.2), for SRTP and SRTCP.
    /// 1 ..= 32768; default 128, as libsrtp.
    pub replay_window: u32,
    /// Most SSRCs the context tracks; default 64.
    pub max_streams: usize,
    /// Whether protecting the same SRTP index twice is allowed (libsrtp's
    /// `allow_repeat_tx`). Off by default: re-encrypting different data under
    /// one index would reuse keystream. Retransmit the protected bytes, or
    /// use RTX, instead.
    pub allow_repeat_tx: bool,
    /// Encrypt SRTP payloads (default); when off, packets are only
    /// authenticated (RFC 3711 `UNENCRYPTED_SRTP`).
    pub encrypt_rtp: bool,
    /// Encrypt SRTCP payloads (default); when off, packets are sent with the
    /// E flag clear and only authenticated.
    pub encrypt_rtcp: bool,
}

impl Default for SrtpConfig {
    fn default() -> Self {
        Self {
            replay_window: 128,
            max_streams: 64,
            allow_repeat_tx: false,
            encrypt_rtp: true,
            encrypt_rtcp: true,
        }
    }
}

/// Largest replay window accepted by [`SrtpConfig::replay_window`].
pub const MAX_REPLAY_WINDOW: u32 = 1 << 15;

/// Largest SRTCP index (31 bits).
const MAX_RTCP_INDEX: u32 = 0x7fff_ffff;
/// The E flag in the SRTCP index word.
const E_FLAG: u32 = 0x8000_0000;
/// Length of the part of an RTCP header SRTCP leaves in the clear.
const RTCP_HEADER_LEN: usize = 8;
/// Smallest RTP header.
const RTP_HEADER_LEN: usize = 12;

/// SRTP/SRTCP state for one master key: session keys and per-SSRC streams.
/// See the [module documentation](self) for how the SFU uses it.
pub struct SrtpContext {
    profile: SrtpProfile,
    config: SrtpConfig,
    window: u64,
    rtp: Transform,
    rtcp: Transform,
    rtp_tag_len: usize,
    rtcp_tag_len: usize,
    streams: StreamTable,
}

impl core::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("config", &self.config)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// A context with the default [`SrtpConfig`].
    pub fn new(profile: SrtpProfile, key: &MasterKey) -> Result<Self> {
        Self::with_config(profile, key, SrtpConfig::default())
    }

    /// A context for `profile` keyed from `key`, with `config`.
    pub fn with_config(profile: SrtpProfile, key: &MasterKey, config: SrtpConfig) -> Result<Self> {
        key.check_for(profile)?;
        let kdf = Kdf::new(key.key(), key.salt())?;
        let enc_len = profile.master_key_len();
        let salt_len = profile.master_salt_len();
        let rtp_keys = kdf.session_keys(false, enc_len, salt_len)?;
        let rtcp_keys = kdf.session_keys(true, enc_len, salt_len)?;
        let (rtp, rtcp) = if profile.is_aead() {
            (Transform::gcm(&rtp_keys)?, Transform::gcm(&rtcp_keys)?)
        } else {
            (Transform::cm(&rtp_keys)?, Transform::cm(&rtcp_keys)?)
        };
        Self::from_transforms(profile, config, rtp, rtcp)
    }

    fn from_transforms(
        profile: SrtpProfile,
        config: SrtpConfig,
        rtp: Transform,
        rtcp: Transform,
    ) -> Result<Self> {
        if config.replay_window == 0 || config.replay_window > MAX_REPLAY_WINDOW {
            return Err(SrtpError::InvalidConfig(
                "replay_window must be 1 ..= 32768",
            ));
        }
        if config.max_streams == 0 || config.max_streams > u32::MAX as usize {
            return Err(SrtpError::InvalidConfig(
                "max_streams must be 1 ..= 4294967295",
            ));
        }
        let window = u64::from(config.replay_window);
        Ok(Self {
            profile,
            config,
            window,
            rtp,
            rtcp,
            rtp_tag_len: profile.rtp_tag_len(),
            rtcp_tag_len: profile.rtcp_tag_len(),
            streams: StreamTable::new(config.max_streams, window),
        })
    }

    /// The context's protection profile.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// The context's configuration.
    pub fn config(&self) -> &SrtpConfig {
        &self.config
    }

    /// Number of SSRCs currently tracked.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Forgets the state of `ssrc` (e.g. after an RTCP BYE), freeing its
    /// place in the table. Returns whether it was tracked.
    pub fn remove_stream(&mut self, ssrc: u32) -> bool {
        self.streams.remove(ssrc)
    }

    /// The rollover counter of the highest SRTP index received on `ssrc`,
    /// if any packet of it was received.
    pub fn rtp_rx_roc(&self, ssrc: u32) -> Option<u32> {
        let slot = self.streams.peek(ssrc)?;
        let w = self.streams.stream(slot).rtp_rx;
        w.started.then_some((w.top >> 16) as u32)
    }

    /// The rollover counter of the highest SRTP index sent on `ssrc`, if any
    /// packet of it was sent.
    pub fn rtp_tx_roc(&self, ssrc: u32) -> Option<u32> {
        let slot = self.streams.peek(ssrc)?;
        let w = self.streams.stream(slot).rtp_tx;
        w.started.then_some((w.top >> 16) as u32)
    }

    /// Protects the RTP packet in `buf[..len]` in place and appends the tag.
    /// `buf` must have [`SrtpProfile::rtp_overhead`] bytes of room after
    /// `len`. Returns the SRTP packet's length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize> {
        let tag_len = self.rtp_tag_len;
        let need = len.saturating_add(tag_len);
        if buf.len() < need {
            return Err(SrtpError::BufferTooSmall {
                need,
                have: buf.len(),
            });
        }
        let (header_len, ssrc, seq) = rtp_header(&buf[..len])?;

        let slot = self.streams.find_or_insert(ssrc)?;
        let tx = self.streams.stream(slot).rtp_tx;
        let index = packet_index(tx, seq)?;
        match tx.check(self.streams.bits(slot, Which::RtpTx), self.window, index) {
            Ok(()) => {}
            Err(SrtpError::ReplayedPacket) if self.config.allow_repeat_tx => {}
            Err(e) => return Err(e),
        }

        let roc = (index >> 16) as u32;
        match &mut self.rtp {
            Transform::Cm { cipher, auth, salt } => {
                if self.config.encrypt_rtp {
                    cipher.apply(cm_iv(salt, ssrc, index), &mut buf[header_len..len]);
                }
                let (data, tail) = buf.split_at_mut(len);
                auth.sign(data, &roc.to_be_bytes(), &mut tail[..tag_len])?;
            }
            Transform::Gcm { aead, salt } => {
                let iv = gcm_rtp_iv(salt, ssrc, index);
                let tag = if self.config.encrypt_rtp {
                    let (header, payload) = buf[..len].split_at_mut(header_len);
                    gcm_seal(aead, iv, header, payload)?
                } else {
                    gcm_seal(aead, iv, &buf[..len], &mut [])?
                };
                buf[len..need].copy_from_slice(&tag);
            }
        }

        let (window, bits) = self.streams.window_mut(slot, Which::RtpTx);
        window.commit(bits, index);
        Ok(need)
    }

    /// Verifies and decrypts the SRTP packet that is all of `buf`, in place.
    /// Returns the RTP packet's length (the tag removed). On error the
    /// stream state is unchanged and `buf`'s contents are unspecified.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize> {
        let tag_len = self.rtp_tag_len;
        let len = buf.len();
        if len < RTP_HEADER_LEN + tag_len {
            return Err(SrtpError::Malformed("shorter than an RTP header and tag"));
        }
        let end = len - tag_len;
        let (header_len, ssrc, seq) = rtp_header(&buf[..end])?;

        // Unknown SSRCs are checked against a fresh window and only entered
        // into the table once the packet has authenticated.
        let slot = self.streams.find(ssrc);
        let rx = slot.map_or(Window::default(), |s| self.streams.stream(s).rtp_rx);
        let index = packet_index(rx, seq)?;
        if let Some(slot) = slot {
            rx.check(self.streams.bits(slot, Which::RtpRx), self.window, index)?;
        }

        let roc = (index >> 16) as u32;
        match &mut self.rtp {
            Transform::Cm { cipher, auth, salt } => {
                let (data, tag) = buf.split_at(end);
                auth.verify(data, &roc.to_be_bytes(), tag)?;
                if self.config.encrypt_rtp {
                    cipher.apply(cm_iv(salt, ssrc, index), &mut buf[header_len..end]);
                }
            }
            Transform::Gcm { aead, salt } => {
                let iv = gcm_rtp_iv(salt, ssrc, index);
                if self.config.encrypt_rtp {
                    let (header, rest) = buf.split_at_mut(header_len);
                    let (payload, tag) = rest.split_at_mut(end - header_len);
                    gcm_open(aead, iv, header, tag, payload)?;
                } else {
                    let (data, tag) = buf.split_at(end);
                    gcm_open(aead, iv, data, tag, &mut [])?;
                }
            }
        }

        let slot = match slot {
            Some(slot) => slot,
            None => self.streams.find_or_insert(ssrc)?,
        };
        let (window, bits) = self.streams.window_mut(slot, Which::RtpRx);
        window.commit(bits, index);
        Ok(end)
    }

    /// Protects the (compound) RTCP packet in `buf[..len]` in place, appending
    /// the SRTCP index word and the tag. `buf` must have
    /// [`SrtpProfile::rtcp_overhead`] bytes of room after `len`. Returns the
    /// SRTCP packet's length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize> {
        let tag_len = self.rtcp_tag_len;
        let need = len.saturating_add(4 + tag_len);
        if buf.len() < need {
            return Err(SrtpError::BufferTooSmall {
                need,
                have: buf.len(),
            });
        }
        let ssrc = rtcp_header(&buf[..len])?;
        let slot = self.streams.find_or_insert(ssrc)?;
        let index = self.streams.stream(slot).rtcp_tx_next;
        if index > MAX_RTCP_INDEX {
            return Err(SrtpError::KeyExhausted);
        }
        let encrypt = self.config.encrypt_rtcp;
        let word = (index | if encrypt { E_FLAG } else { 0 }).to_be_bytes();

        match &mut self.rtcp {
            Transform::Cm { cipher, auth, salt } => {
                // Layout (RFC 3711 §3.4): RTCP ‖ E+index ‖ tag.
                if encrypt {
                    cipher.apply(
                        cm_iv(salt, ssrc, u64::from(index)),
                        &mut buf[RTCP_HEADER_LEN..len],
                    );
                }
                buf[len..len + 4].copy_from_slice(&word);
                let (data, tail) = buf.split_at_mut(len + 4);
                auth.sign(data, &[], &mut tail[..tag_len])?;
            }
            Transform::Gcm { aead, salt } => {
                // Layout (RFC 7714 §17): RTCP ‖ tag ‖ E+index.
                let iv = gcm_rtcp_iv(salt, ssrc, index);
                let tag = if encrypt {
                    let mut aad = [0u8; RTCP_HEADER_LEN + 4];
                    aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                    aad[RTCP_HEADER_LEN..].copy_from_slice(&word);
                    gcm_seal(aead, iv, &aad, &mut buf[RTCP_HEADER_LEN..len])?
                } else {
                    // The whole packet and the index word are AAD; place the
                    // word right after the packet so the AAD is contiguous.
                    buf[len..len + 4].copy_from_slice(&word);
                    gcm_seal(aead, iv, &buf[..len + 4], &mut [])?
                };
                buf[len..len + GCM_TAG_LEN].copy_from_slice(&tag);
                buf[len + GCM_TAG_LEN..need].copy_from_slice(&word);
            }
        }

        self.streams.stream_mut(slot).rtcp_tx_next = index + 1;
        Ok(need)
    }

    /// Verifies and, if its E flag is set, decrypts the SRTCP packet that is
    /// all of `buf`, in place. Returns the RTCP packet's length. On error the
    /// stream state is unchanged and `buf`'s contents are unspecified.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize> {
        let tag_len = self.rtcp_tag_len;
        let len = buf.len();
        if len < RTCP_HEADER_LEN + 4 + tag_len {
            return Err(SrtpError::Malformed(
                "shorter than an SRTCP header, index and tag",
            ));
        }
        let end = len - 4 - tag_len;
        let ssrc = rtcp_header(&buf[..end])?;
        let word_at = if self.profile.is_aead() { len - 4 } else { end };
        let word = u32::from_be_bytes([
            buf[word_at],
            buf[word_at + 1],
            buf[word_at + 2],
            buf[word_at + 3],
        ]);
        let encrypted = word & E_FLAG != 0;
        let index = word & MAX_RTCP_INDEX;

        let slot = self.streams.find(ssrc);
        if let Some(slot) = slot {
            let rx = self.streams.stream(slot).rtcp_rx;
            rx.check(
                self.streams.bits(slot, Which::RtcpRx),
                self.window,
                u64::from(index),
            )?;
        }

        match &mut self.rtcp {
            Transform::Cm { cipher, auth, salt } => {
                let (data, tag) = buf.split_at(len - tag_len);
                auth.verify(data, &[], tag)?;
                if encrypted {
                    cipher.apply(
                        cm_iv(salt, ssrc, u64::from(index)),
                        &mut buf[RTCP_HEADER_LEN..end],
                    );
                }
            }
            Transform::Gcm { aead, salt } => {
                let iv = gcm_rtcp_iv(salt, ssrc, index);
                if encrypted {
                    let mut aad = [0u8; RTCP_HEADER_LEN + 4];
                    aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                    aad[RTCP_HEADER_LEN..].copy_from_slice(&word.to_be_bytes());
                    let (body, tag) =
                        buf[RTCP_HEADER_LEN..len - 4].split_at_mut(end - RTCP_HEADER_LEN);
                    gcm_open(aead, iv, &aad, tag, body)?;
                } else {
                    // Move the index word next to the packet so the AAD
                    // (packet ‖ word) is contiguous; the tag goes to the stack.
                    let mut tag = [0u8; GCM_TAG_LEN];
                    tag.copy_from_slice(&buf[end..end + GCM_TAG_LEN]);
                    buf[end..end + 4].copy_from_slice(&word.to_be_bytes());
                    gcm_open(aead, iv, &buf[..end + 4], &tag, &mut [])?;
                }
            }
        }

        let slot = match slot {
            Some(slot) => slot,
            None => self.streams.find_or_insert(ssrc)?,
        };
        let (window, bits) = self.streams.window_mut(slot, Which::RtcpRx);
        window.commit(bits, u64::from(index));
        Ok(end)
    }
}

/// The SRTP index of sequence number `seq` on a stream whose window is `w`;
/// the first packet of a stream has ROC 0 (RFC 3711 §3.3.1).
#[inline]
fn packet_index(w: Window, seq: u16) -> Result<u64> {
    if !w.started {
        return Ok(u64::from(seq));
    }
    estimate_index(w.top, seq).ok_or(if w.top >> 16 == 0 {
        // It would belong before the stream's first rollover period.
        SrtpError::TooOld
    } else {
        SrtpError::KeyExhausted
    })
}

/// Header length, SSRC and sequence number of an RTP packet whose header
/// must fit in `packet`.
#[inline]
fn rtp_header(packet: &[u8]) -> Result<(usize, u32, u16)> {
    let rtp = RtpPacket::new_checked_header(packet)?;
    Ok((rtp.header_len(), rtp.ssrc(), rtp.sequence_number()))
}

/// Checks the first RTCP header of `packet` and returns its SSRC.
#[inline]
fn rtcp_header(packet: &[u8]) -> Result<u32> {
    if packet.len() < RTCP_HEADER_LEN {
        return Err(SrtpError::Malformed("shorter than an RTCP header"));
    }
    if packet[0] >> 6 != 2 {
        return Err(SrtpError::Malformed("RTCP version is not 2"));
    }
    Ok(u32::from_be_bytes([
        packet[4], packet[5], packet[6], packet[7],
    ]))
}
