//! The traffic generator and its sinks, built to be cheaper per packet than
//! any forwarder it measures.
//!
//! * Every participant has its own address in 198.18.128.0/17 (routed to
//!   the generator namespace's loopback as local addresses), all on one UDP
//!   port, so a single socket sends for all of them (`IP_PKTINFO` picks the
//!   source address per datagram) and receives for all of them (the
//!   destination address says which participant it is for): one `sendmmsg`
//!   carries the packets of many participants, one `recvmmsg` drains the
//!   replies of many.
//! * Packets come from per-participant templates (header with abs-send-time
//!   and transport-cc extensions, payload with a fixed filler); sending one
//!   is a copy, a few patched fields (sequence number, timestamp, extension
//!   values, send time in the payload) and an SRTP protect with
//!   `dataplane::srtp`.
//! * Sinks count media from the clear RTP header (SSRC, sequence number,
//!   abs-send-time) without decrypting; one packet in `sample_every` (by
//!   sequence number) is decrypted with the key the receiver really has,
//!   its payload checked byte for byte and its send time (in the encrypted
//!   payload) compared with the kernel's receive timestamp of the datagram:
//!   that is the forwarding latency.
//! * Whether a packet belongs to the measured window is decided from its
//!   abs-send-time by sender and sink alike, so the count of what was sent
//!   and what arrived cover exactly the same packets.
//!
//! The generator reports whether it kept up: its lag behind the schedule,
//! what it could not send, what its own socket and its core's receive
//! backlog dropped, and how busy it was.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dataplane::sfu::{ExtensionIds, MediaConfig, SubscribeSpec, VideoCodec};
use dataplane::srtp::{MasterKey, SrtpConfig, SrtpContext, SrtpProfile};
use dataplane::wire::rtp::{extend_sequence, RtpHeaderBuilder, RtpPacket};
use dataplane::wire::rtp_ext::{self, ExtensionForm, ONE_BYTE_PROFILE};

/// The UDP port of every participant.
pub const PORT: u16 = 5004;
/// Participants' addresses: 198.18.128.1 and up (a /17: 32,767 of them).
pub const NET: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 0);
pub const NET_PREFIX: u8 = 17;
/// Most participants the address range holds.
pub const MAX_PARTICIPANTS: usize = (1 << (32 - NET_PREFIX)) - 2;

const ABS_SEND_TIME_ID: u8 = 2;
const TRANSPORT_CC_ID: u8 = 3;
const AUDIO_PT: u8 = 111;
const VIDEO_PT: u8 = 96;
const RTX_PT: u8 = 97;
const PROFILE: SrtpProfile = SrtpProfile::AeadAes128Gcm;
/// VP8 payload descriptor (X, S, 15-bit picture id) and payload header.
const VP8_LEN: usize = 5;
/// Send time (ns, CLOCK_REALTIME) and publisher index, after the VP8 bytes.
const STAMP_LEN: usize = 12;
/// Datagram slots of one `recvmmsg`, messages of one `sendmmsg`.
const BATCH: usize = 64;
/// Datagram slots of one `sendmmsg` (a key frame is 32 datagrams).
const SEND_SLOTS: usize = 256;
/// `SOL_UDP` / `UDP_SEGMENT`.
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
/// Bytes per datagram slot.
const SLOT: usize = 2048;
/// Control bytes per datagram slot (pktinfo and a timestamp).
const CONTROL: usize = 128;
/// `recvmmsg` calls per loop turn at most, so the schedule is not starved.
const RX_TURNS: usize = 16;
/// The generator spins (rather than sleeps) this long after its last
/// datagram and before its next send.
const SPIN_US: u64 = 300;
/// Latency samples per second the sinks aim for (sampling costs a decrypt).
const SAMPLES_PER_SEC: f64 = 8_000.0;
/// abs-send-time: 6.18 fixed point seconds, 24 bits.
const ABS_MASK: u32 = 0x00ff_ffff;

/// Which forwarder the sinks receive from: it decides the SSRCs and keys
/// they see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The SFU: its own SSRCs, each subscriber's own key.
    Sfu,
    /// The copy forwarder: the publisher's SSRCs and keys, untouched.
    Plain,
}

/// The media of one profile.
#[derive(Debug, Clone, Copy)]
pub struct Media {
    pub room_size: usize,
    pub video_kbps: u32,
    pub fps: u32,
    pub audio_payload: usize,
    pub max_video_payload: usize,
}

impl Media {
    /// Video packets per frame and their payload size.
    fn frame_layout(&self, keyframe: bool) -> (usize, usize) {
        let mut bytes = self.video_kbps as usize * 1000 / 8 / self.fps.max(1) as usize;
        if keyframe {
            bytes *= 4;
        }
        let count = bytes.div_ceil(self.max_video_payload).max(1);
        let body = (bytes / count).clamp(VP8_LEN + STAMP_LEN + 8, self.max_video_payload);
        (count, body)
    }

    /// Media packets per second one participant sends (no key frames).
    pub fn pps_per_participant(&self) -> f64 {
        50.0 + (self.frame_layout(false).0 as u32 * self.fps) as f64
    }
}

/// The address of participant `i`.
pub fn address(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(u32::from(NET) + 1 + i as u32), PORT)
}

/// Participant `i`'s SRTP write key (the SFU's receive key for its leg).
pub fn up_key(i: usize) -> MasterKey {
    dataplane::sfu::peer::test_key(PROFILE, 3 * i as u64 + 1)
}

/// The SFU's write key towards participant `i`.
pub fn down_key(i: usize) -> MasterKey {
    dataplane::sfu::peer::test_key(PROFILE, 3 * i as u64 + 2)
}

/// The SRTP profile every leg uses.
pub fn profile() -> SrtpProfile {
    PROFILE
}

const PUBLISHER_SSRC_BASE: u32 = 0x1000_0000;
const OUT_SSRC_BASE: u32 = 0x4000_0000;
const SSRC_SPAN: u32 = 0x1000_0000;

/// Participant `i`'s (audio, video) SSRCs.
pub fn publisher_ssrcs(i: usize) -> (u32, u32) {
    let base = PUBLISHER_SSRC_BASE + 4 * i as u32;
    (base + 1, base + 2)
}

/// The SSRCs the SFU sends participant `i`'s media under (the same to
/// every subscriber).
pub fn out_ssrcs(i: usize) -> SubscribeSpec {
    let base = OUT_SSRC_BASE + 4 * i as u32;
    SubscribeSpec {
        audio_ssrc: base + 1,
        video_ssrc: base + 2,
        video_rtx_ssrc: base + 3,
    }
}

/// What every leg negotiated.
pub fn media_config() -> MediaConfig {
    MediaConfig {
        audio_pt: Some(AUDIO_PT),
        video: Some((VIDEO_PT, VideoCodec::Vp8)),
        rtx_pt: Some(RTX_PT),
        extensions: ExtensionIds {
            rid: None,
            abs_send_time: Some(ABS_SEND_TIME_ID),
            transport_cc: Some(TRANSPORT_CC_ID),
            audio_level: None,
        },
        nack: true,
    }
}

/// The filler byte at payload offset `at` of publisher `p`'s packets.
fn filler(p: u32, at: usize) -> u8 {
    ((at as u32).wrapping_mul(0x9d) ^ p.wrapping_mul(0x3b) ^ (at as u32 >> 8)) as u8
}

/// abs-send-time of `us` microseconds after the run's start.
fn abs_raw(us: u64) -> u32 {
    (((us << 18) / 1_000_000) as u32) & ABS_MASK
}

/// A window of abs-send-time values (wrapping every 64 s).
#[derive(Debug, Clone, Copy)]
struct AbsWindow {
    start: u32,
    len: u32,
}

impl AbsWindow {
    fn new(from_us: u64, to_us: u64) -> Self {
        let start = abs_raw(from_us);
        Self {
            start,
            len: abs_raw(to_us).wrapping_sub(start) & ABS_MASK,
        }
    }

    fn contains(&self, raw: u32) -> bool {
        raw.wrapping_sub(self.start) & ABS_MASK < self.len
    }
}

/// One prepared packet: header and payload as sent, with the offsets of
/// the fields patched per packet.
#[derive(Debug, Clone)]
struct Template {
    bytes: Vec<u8>,
    header_len: usize,
    abs_at: usize,
    tcc_at: usize,
}

impl Template {
    fn new(pt: u8, ssrc: u32, p: u32, payload: usize, video: bool) -> Result<Self> {
        let mut ext = [0u8; 16];
        let elements: [(u8, &[u8]); 2] =
            [(ABS_SEND_TIME_ID, &[0, 0, 0]), (TRANSPORT_CC_ID, &[0, 0])];
        let ext_len = rtp_ext::write_elements(&mut ext, ExtensionForm::OneByte, &elements)
            .context("header extension")?;
        let mut bytes = vec![0u8; 64 + payload];
        let header_len = RtpHeaderBuilder::new(pt, 0, 0, ssrc)
            .extension(ONE_BYTE_PROFILE, &ext[..ext_len])
            .write(&mut bytes)
            .context("RTP header")?;
        bytes.truncate(header_len + payload);
        let offset_of = |id: u8| -> Result<usize> {
            let rtp = RtpPacket::new_checked_header(&bytes[..])?;
            let data = rtp.extension_data().context("no extension")?;
            let found = rtp_ext::find(ONE_BYTE_PROFILE, data, id)?.context("element")?;
            Ok(found.as_ptr() as usize - bytes.as_ptr() as usize)
        };
        let abs_at = offset_of(ABS_SEND_TIME_ID)?;
        let tcc_at = offset_of(TRANSPORT_CC_ID)?;
        let start = if video {
            // X, S; the picture id (M bit set) and the key frame bit are
            // patched per packet.
            bytes[header_len..header_len + VP8_LEN].copy_from_slice(&[0x90, 0x80, 0x80, 0, 1]);
            header_len + VP8_LEN
        } else {
            header_len
        };
        bytes[start + 8..start + 12].copy_from_slice(&p.to_be_bytes());
        for (at, b) in bytes.iter_mut().enumerate().skip(start + STAMP_LEN) {
            *b = filler(p, at - header_len);
        }
        Ok(Self {
            bytes,
            header_len,
            abs_at,
            tcc_at,
        })
    }
}

/// One participant's sending side.
struct Publisher {
    addr: SocketAddrV4,
    tx: SrtpContext,
    audio: Template,
    video: Template,
    audio_seq: u16,
    audio_ts: u32,
    video_seq: u16,
    video_ts: u32,
    picture_id: u16,
    tcc_seq: u16,
    frame: u64,
    video_phase: u64,
    keyframe_pending: bool,
    keyframes: u64,
}

/// What a sink knows of one stream it receives.
#[derive(Debug, Clone)]
struct SinkStream {
    highest: Option<u64>,
    seen: [u64; 16],
    /// Whether the sink's SRTP context has seen this stream: the first
    /// packet of every stream is decrypted, so the context follows its
    /// rollover counter from the start.
    synced: bool,
}

impl SinkStream {
    const SPAN: u64 = 16 * 64;

    fn new() -> Self {
        Self {
            highest: None,
            seen: [0; 16],
            synced: false,
        }
    }

    fn bit(&mut self, ext: u64) -> (&mut u64, u64) {
        let at = (ext % Self::SPAN) as usize;
        (&mut self.seen[at / 64], 1 << (at % 64))
    }

    /// Records sequence number `seq`; false for a duplicate (or a number
    /// too old to tell).
    fn record(&mut self, seq: u16) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(extend_sequence(1 << 16, seq));
            let (w, b) = self.bit(self.highest.unwrap_or(0));
            *w |= b;
            return true;
        };
        let ext = extend_sequence(highest, seq);
        if ext > highest {
            if ext - highest >= Self::SPAN {
                self.seen = [0; 16];
            } else {
                for e in highest + 1..ext {
                    let (w, b) = self.bit(e);
                    *w &= !b;
                }
            }
            self.highest = Some(ext);
            let (w, b) = self.bit(ext);
            *w |= b;
            return true;
        }
        if highest - ext >= Self::SPAN {
            return false;
        }
        let (w, b) = self.bit(ext);
        let fresh = *w & b == 0;
        *w |= b;
        fresh
    }
}

/// One participant's receiving side.
struct Sink {
    streams: Vec<SinkStream>,
    /// Decryption contexts: one (the SFU's key for this leg) or one per
    /// publisher of the room (the copy forwarder leaves their keys on).
    contexts: Vec<SrtpContext>,
}

/// What one run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Measured {
    pub window_s: f64,
    /// Media packets due in the window.
    pub scheduled: u64,
    /// Media packets sent in the window.
    pub sent: u64,
    /// Copies the sinks should receive of them.
    pub expected: u64,
    /// Copies received (first copies; duplicates apart).
    pub received: u64,
    pub duplicates: u64,
    /// Media on an SSRC, or from a publisher, this sink should not get.
    pub misrouted: u64,
    pub rtcp_received: u64,
    pub keyframe_requests: u64,
    pub keyframes_sent: u64,
    /// One packet in this many (by sequence number) was decrypted.
    pub sample_every: u32,
    /// Latency samples (decrypted, payload verified).
    pub samples: u64,
    /// Sampled packets that failed SRTP or whose payload differed.
    pub srtp_failures: u64,
    pub payload_mismatches: u64,
    /// The first SRTP failure's error.
    pub first_srtp_failure: Option<String>,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub max_us: Option<f64>,
    /// Samples without a kernel timestamp (timed at the read instead).
    pub user_timestamps: u64,
    pub generator: GeneratorHealth,
}

/// Whether the generator kept up.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GeneratorHealth {
    /// Fraction of the window the generator thread spent sending and
    /// sinking (it sleeps in between).
    pub busy: f64,
    /// Lateness of sends behind the schedule, 99th percentile and max.
    pub lag_p99_us: u64,
    pub lag_max_us: u64,
    /// Datagrams the kernel refused to send.
    pub send_failures: u64,
    /// Datagrams the generator's socket dropped (receive buffer full).
    pub socket_drops: u64,
}

/// The generator: every participant of one step.
pub struct Generator {
    socket: UdpSocket,
    media: Media,
    mode: Mode,
    publishers: Vec<Publisher>,
    sinks: Vec<Sink>,
    tx: SendBatch,
    rx: Batch,
}

impl Generator {
    /// Binds the socket (in the calling thread's namespace) and prepares
    /// `n` participants in rooms of `media.room_size`.
    pub fn new(n: usize, media: Media, mode: Mode) -> Result<Self> {
        if n == 0 || n > MAX_PARTICIPANTS {
            bail!("{n} participants: 1 ..= {MAX_PARTICIPANTS}");
        }
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).context("binding")?;
        socket.set_nonblocking(true)?;
        let fd = socket.as_raw_fd();
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20)?;
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 16 << 20)?;
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
        // Sources are any address of the local /17, not assigned to a device.
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_FREEBIND, 1)?;
        let mut publishers = Vec::with_capacity(n);
        let mut sinks = Vec::with_capacity(n);
        let frame_us = 1_000_000 / u64::from(media.fps.max(1));
        for i in 0..n {
            let (audio_ssrc, video_ssrc) = publisher_ssrcs(i);
            let p = i as u32;
            let mut rng = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            publishers.push(Publisher {
                addr: address(i),
                tx: SrtpContext::new(PROFILE, &up_key(i))?,
                audio: Template::new(AUDIO_PT, audio_ssrc, p, media.audio_payload, false)?,
                video: Template::new(VIDEO_PT, video_ssrc, p, media.max_video_payload, true)?,
                audio_seq: next() as u16,
                audio_ts: next() as u32,
                video_seq: next() as u16,
                video_ts: next() as u32,
                picture_id: next() as u16 & 0x7fff,
                tcc_seq: 0,
                frame: 0,
                video_phase: (i as u64 * frame_us) / n as u64,
                keyframe_pending: true,
                keyframes: 0,
            });
            let room = i / media.room_size;
            let config = SrtpConfig {
                max_streams: 4 * media.room_size,
                ..SrtpConfig::default()
            };
            let contexts = match mode {
                Mode::Sfu => vec![SrtpContext::with_config(PROFILE, &down_key(i), config)?],
                Mode::Plain => (room * media.room_size..(room + 1) * media.room_size)
                    .filter(|&q| q != i)
                    .map(|q| SrtpContext::with_config(PROFILE, &up_key(q), config))
                    .collect::<Result<_, _>>()?,
            };
            sinks.push(Sink {
                streams: vec![SinkStream::new(); 2 * (media.room_size - 1)],
                contexts,
            });
        }
        Ok(Self {
            socket,
            media,
            mode,
            publishers,
            sinks,
            tx: SendBatch::new(),
            rx: Batch::new(),
        })
    }

    fn participants(&self) -> usize {
        self.publishers.len()
    }

    /// Which of sink `s`'s slots publisher `p` takes (its index among the
    /// other members of the room), if `p` is in the room and not `s`.
    fn slot(&self, s: usize, p: usize) -> Option<usize> {
        let size = self.media.room_size;
        if p == s || p / size != s / size || p >= self.participants() {
            return None;
        }
        let k = p % size;
        Some(if p < s { k } else { k - 1 })
    }

    /// Publisher and kind (0 audio, 1 video, 2 video RTX) of `ssrc`.
    fn decode_ssrc(&self, ssrc: u32) -> Option<(usize, u8)> {
        let base = match self.mode {
            Mode::Sfu => OUT_SSRC_BASE,
            Mode::Plain => PUBLISHER_SSRC_BASE,
        };
        let off = ssrc.wrapping_sub(base);
        if off >= SSRC_SPAN || off % 4 == 0 {
            return None;
        }
        Some(((off / 4) as usize, (off % 4) as u8 - 1))
    }

    /// Runs the schedule against `server` for `warmup + window`, measuring
    /// during `window`, then keeps sinking for `drain`. `expected_pps` (the
    /// forwarder's media egress at this load) sets the sampling rate.
    pub fn run(
        &mut self,
        server: SocketAddrV4,
        warmup: Duration,
        window: Duration,
        drain: Duration,
        expected_pps: f64,
    ) -> Result<Measured> {
        let n = self.participants();
        let fanout = (self.media.room_size - 1) as u64;
        let sample_every = (expected_pps / SAMPLES_PER_SEC).ceil().clamp(1.0, 64.0) as u32;
        let sample_every = sample_every.next_power_of_two();
        let sample_mask = u16::try_from(sample_every - 1).unwrap_or(63);
        let from_us = warmup.as_micros() as u64;
        let until_us = from_us + window.as_micros() as u64;
        let end_us = until_us + drain.as_micros() as u64;
        let in_window = AbsWindow::new(from_us, until_us);
        let mut m = Measured {
            window_s: window.as_secs_f64(),
            sample_every,
            ..Measured::default()
        };
        let mut latencies: Vec<u64> = Vec::with_capacity(1 << 16);
        let mut lags: Vec<u32> = Vec::with_capacity(1 << 16);
        let audio_us = 20_000u64;
        let frame_us = 1_000_000 / u64::from(self.media.fps.max(1));
        // (due µs, participant, 0 audio / 1 video), earliest first.
        let mut events: BinaryHeap<Reverse<(u64, u32, u8)>> = BinaryHeap::with_capacity(2 * n);
        for (i, p) in self.publishers.iter().enumerate() {
            events.push(Reverse(((i as u64 * audio_us) / n as u64, i as u32, 0)));
            events.push(Reverse((p.video_phase, i as u32, 1)));
        }
        let fd = self.socket.as_raw_fd();
        let drops_before = socket_drops(fd);
        self.tx.set_destination(server);
        let mut work = Duration::ZERO;
        let mut last_active = 0u64;
        let start = Instant::now();
        // A turn costs at least one system call, far more than 100 ns.
        let max_turns = end_us.max(1_000) * 10;
        for _ in 0..max_turns {
            let now_us = start.elapsed().as_micros() as u64;
            if now_us >= end_us {
                break;
            }
            let mut busy = false;
            // Send what is due, in batches of whole frames.
            if now_us < until_us {
                while let Some(&Reverse((due, i, kind))) = events.peek() {
                    if due > now_us {
                        break;
                    }
                    let i = i as usize;
                    let (frame_packets, keyframe) = if kind == 0 {
                        (1, false)
                    } else {
                        let key = self.publishers[i].keyframe_pending;
                        (self.media.frame_layout(key).0, key)
                    };
                    if !self.tx.has_room(frame_packets) {
                        m.generator.send_failures += self.tx.send(fd) as u64;
                        busy = true;
                    }
                    events.pop();
                    let measured = now_us >= from_us && now_us < until_us;
                    if due >= from_us && due < until_us {
                        m.scheduled += frame_packets as u64;
                    }
                    if measured {
                        lags.push((now_us - due).min(u64::from(u32::MAX)) as u32);
                    }
                    let stamp = realtime_ns();
                    let abs = abs_raw(now_us);
                    let counted = in_window.contains(abs);
                    let built = if kind == 0 {
                        self.audio_packet(i, abs, stamp)?;
                        events.push(Reverse((due + audio_us, i as u32, 0)));
                        1
                    } else {
                        let built = self.video_frame(i, abs, stamp, keyframe)?;
                        let p = &mut self.publishers[i];
                        p.frame += 1;
                        let next = p.video_phase + p.frame * frame_us;
                        events.push(Reverse((next, i as u32, 1)));
                        built
                    };
                    if counted {
                        m.sent += built as u64;
                        m.expected += built as u64 * fanout;
                    }
                }
            }
            if !self.tx.is_empty() {
                m.generator.send_failures += self.tx.send(fd) as u64;
                busy = true;
            }
            // Sink what arrived.
            for _ in 0..RX_TURNS {
                let got = self.rx.recv(fd);
                if got == 0 {
                    break;
                }
                busy = true;
                let user_ns = realtime_ns();
                for k in 0..got {
                    self.sink_one(k, user_ns, &in_window, sample_mask, &mut m, &mut latencies);
                }
                if got < BATCH {
                    break;
                }
            }
            if busy && now_us >= from_us && now_us < until_us {
                work += start
                    .elapsed()
                    .saturating_sub(Duration::from_micros(now_us));
            }
            if busy {
                last_active = now_us;
            } else {
                // Spin while traffic flows: a sleeping sink makes every
                // datagram the forwarder sends wake it, and wake-ups
                // (inter-processor interrupts) are costly on virtual
                // machines. Sleep only once quiet for a while.
                let now_us = start.elapsed().as_micros() as u64;
                let next_due = if now_us < until_us {
                    events.peek().map_or(end_us, |e| e.0 .0).min(until_us)
                } else {
                    end_us
                };
                if now_us.saturating_sub(last_active) < SPIN_US || next_due <= now_us + SPIN_US {
                    std::hint::spin_loop();
                } else {
                    wait_readable(fd, Duration::from_micros(next_due - now_us - SPIN_US / 2));
                }
            }
        }
        m.generator.busy = (work.as_secs_f64() / window.as_secs_f64()).min(1.0);
        m.generator.socket_drops = socket_drops(fd).saturating_sub(drops_before);
        m.keyframes_sent = self.publishers.iter().map(|p| p.keyframes).sum();
        lags.sort_unstable();
        m.generator.lag_p99_us = percentile(&lags, 0.99).map_or(0, u64::from);
        m.generator.lag_max_us = lags.last().copied().map_or(0, u64::from);
        latencies.sort_unstable();
        m.samples = latencies.len() as u64;
        let us = |v: Option<u64>| v.map(|ns| ns as f64 / 1000.0);
        m.p50_us = us(percentile(&latencies, 0.5));
        m.p99_us = us(percentile(&latencies, 0.99));
        m.max_us = us(latencies.last().copied());
        Ok(m)
    }

    /// Queues participant `i`'s next audio packet.
    fn audio_packet(&mut self, i: usize, abs: u32, stamp: u64) -> Result<()> {
        let p = &mut self.publishers[i];
        let (seq, ts) = (p.audio_seq, p.audio_ts);
        p.audio_seq = seq.wrapping_add(1);
        p.audio_ts = ts.wrapping_add(960);
        let tcc = p.tcc_seq;
        p.tcc_seq = tcc.wrapping_add(1);
        let t = &p.audio;
        let slot = self.tx.next_slot();
        let len = t.bytes.len();
        slot[..len].copy_from_slice(&t.bytes);
        patch(slot, t, seq, ts, false, abs, tcc);
        let at = t.header_len;
        slot[at..at + 8].copy_from_slice(&stamp.to_be_bytes());
        let len = p.tx.protect_rtp(slot, len).context("protecting audio")?;
        self.tx.push_datagram(len);
        self.tx.end_message(p.addr);
        Ok(())
    }

    /// Queues participant `i`'s next video frame; returns its packets.
    fn video_frame(&mut self, i: usize, abs: u32, stamp: u64, keyframe: bool) -> Result<usize> {
        let (count, body) = self.media.frame_layout(keyframe);
        let p = &mut self.publishers[i];
        p.keyframe_pending = false;
        if keyframe {
            p.keyframes += 1;
        }
        let ts = p.video_ts;
        p.video_ts = ts.wrapping_add(90_000 / self.media.fps.max(1));
        let picture_id = p.picture_id;
        p.picture_id = (picture_id + 1) & 0x7fff;
        for k in 0..count {
            let seq = p.video_seq;
            p.video_seq = seq.wrapping_add(1);
            let tcc = p.tcc_seq;
            p.tcc_seq = tcc.wrapping_add(1);
            let t = &p.video;
            let len = t.header_len + body;
            let slot = self.tx.next_slot();
            slot[..len].copy_from_slice(&t.bytes[..len]);
            patch(slot, t, seq, ts, k + 1 == count, abs, tcc);
            let at = t.header_len;
            // S on the first packet; P clear on a key frame's first packet.
            slot[at] = if k == 0 { 0x90 } else { 0x80 };
            slot[at + 2..at + 4].copy_from_slice(&(0x8000 | picture_id).to_be_bytes());
            slot[at + 4] = if k == 0 && keyframe { 0x00 } else { 0x01 };
            slot[at + VP8_LEN..at + VP8_LEN + 8].copy_from_slice(&stamp.to_be_bytes());
            let len = p.tx.protect_rtp(slot, len).context("protecting video")?;
            self.tx.push_datagram(len);
        }
        // The frame's datagrams have one size: one UDP GSO send.
        self.tx.end_message(p.addr);
        Ok(count)
    }

    /// Accounts for received datagram `k` of the receive batch.
    fn sink_one(
        &mut self,
        k: usize,
        user_ns: u64,
        in_window: &AbsWindow,
        sample_mask: u16,
        m: &mut Measured,
        latencies: &mut Vec<u64>,
    ) {
        let (len, dst, kernel_ns) = self.rx.received(k);
        let Some(s) = dst
            .and_then(|ip| u32::from(ip).checked_sub(u32::from(NET) + 1))
            .map(|s| s as usize)
            .filter(|&s| s < self.participants())
        else {
            m.misrouted += 1;
            return;
        };
        let data = self.rx.slot(k, len);
        if dataplane::wire::demux::is_rtcp(data) {
            m.rtcp_received += 1;
            // PLI (206/1) or FIR (206/4) to this participant: its next frame
            // is a key frame. The first header of SRTCP is in the clear.
            if data.len() >= 2 && data[1] == 206 && matches!(data[0] & 0x1f, 1 | 4) {
                m.keyframe_requests += 1;
                self.publishers[s].keyframe_pending = true;
            }
            return;
        }
        let Ok(rtp) = RtpPacket::new_checked_header(data) else {
            m.misrouted += 1;
            return;
        };
        let (ssrc, seq) = (rtp.ssrc(), rtp.sequence_number());
        let abs = rtp
            .extension_profile()
            .zip(rtp.extension_data())
            .and_then(|(profile, ext)| rtp_ext::find(profile, ext, ABS_SEND_TIME_ID).ok()?)
            .filter(|v| v.len() == 3)
            .map(|v| u32::from_be_bytes([0, v[0], v[1], v[2]]));
        let Some((p, kind)) = self.decode_ssrc(ssrc) else {
            m.misrouted += 1;
            return;
        };
        let Some(slot) = self.slot(s, p) else {
            m.misrouted += 1;
            return;
        };
        let counted = abs.is_some_and(|a| in_window.contains(a));
        let stream = &mut self.sinks[s].streams[2 * slot + usize::from(kind.min(1))];
        let first = !stream.synced;
        if counted {
            if kind == 2 || !stream.record(seq) {
                m.duplicates += 1;
                return;
            }
            m.received += 1;
        }
        if !(first || (counted && seq & sample_mask == 0)) {
            return;
        }
        let context = match self.mode {
            Mode::Sfu => 0,
            Mode::Plain => slot,
        };
        let video = kind == 1;
        let buf = self.rx.slot_mut_len(k, len);
        let plain = match self.sinks[s].contexts[context].unprotect_rtp(buf) {
            Ok(plain) => plain,
            Err(e) => {
                m.srtp_failures += 1;
                if m.first_srtp_failure.is_none() {
                    m.first_srtp_failure = Some(format!("{e} (SSRC {ssrc:#x}, seq {seq})"));
                }
                return;
            }
        };
        self.sinks[s].streams[2 * slot + usize::from(kind.min(1))].synced = true;
        let Ok(rtp) = RtpPacket::new_checked(&buf[..plain]) else {
            m.payload_mismatches += 1;
            return;
        };
        let payload = rtp.payload();
        let start = if video { VP8_LEN } else { 0 };
        if payload.len() < start + STAMP_LEN {
            m.payload_mismatches += 1;
            return;
        }
        let word = |at: usize| -> [u8; 8] {
            let mut w = [0u8; 8];
            w.copy_from_slice(&payload[at..at + 8]);
            w
        };
        let sent_ns = u64::from_be_bytes(word(start));
        let from = u32::from_be_bytes([
            payload[start + 8],
            payload[start + 9],
            payload[start + 10],
            payload[start + 11],
        ]);
        let intact = from == p as u32
            && payload[start + STAMP_LEN..]
                .iter()
                .enumerate()
                .all(|(j, &b)| b == filler(from, start + STAMP_LEN + j));
        if !intact {
            m.payload_mismatches += 1;
            return;
        }
        if !counted {
            return;
        }
        let arrived = kernel_ns.unwrap_or_else(|| {
            m.user_timestamps += 1;
            user_ns
        });
        latencies.push(arrived.saturating_sub(sent_ns));
    }
}

/// Writes the per-packet header fields into a copy of `t`.
fn patch(buf: &mut [u8], t: &Template, seq: u16, ts: u32, marker: bool, abs: u32, tcc: u16) {
    buf[1] = (buf[1] & 0x7f) | if marker { 0x80 } else { 0 };
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[t.abs_at..t.abs_at + 3].copy_from_slice(&abs.to_be_bytes()[1..]);
    buf[t.tcc_at..t.tcc_at + 2].copy_from_slice(&tcc.to_be_bytes());
}

fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied()
}

/// CLOCK_REALTIME in ns: the clock of the kernel's receive timestamps.
fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Waits until `fd` is readable or `timeout` passed.
fn wait_readable(fd: RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timeout, no signal mask.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}

/// Gives the calling thread the highest time-sharing priority (nice -20),
/// so builds and tests sharing its core do not push its sends late. Not a
/// real-time class: the kernel throttles a real-time thread that spins for
/// most of a second, for tens of milliseconds. Returns whether that worked.
pub fn high_priority() -> bool {
    // SAFETY: gettid and setpriority on the calling thread's id.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -20)
    };
    if rc == 0 {
        // SAFETY: PR_SET_TIMERSLACK takes a value and changes only this
        // thread's timer slack: waits end when asked, not up to 50 µs later.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000u64, 0u64, 0u64, 0u64) };
    }
    rc == 0
}

pub fn setsockopt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: i32) -> Result<()> {
    // SAFETY: a valid fd and a c_int of the given length.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!(
            "setsockopt({level}, {name}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The kernel's count of datagrams dropped at socket `fd` (`SO_MEMINFO`).
pub fn socket_drops(fd: RawFd) -> u64 {
    const SO_MEMINFO: libc::c_int = 55;
    let mut info = [0u32; 16];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: a valid fd and a buffer of the length given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let at = libc::SK_MEMINFO_DROPS as usize;
    if rc == 0 && len as usize > at * 4 {
        u64::from(info[at])
    } else {
        0
    }
}

/// Datagram slots, their headers and control buffers for one `recvmmsg`;
/// allocated once, never moved (the headers point into it).
struct Batch {
    data: Box<[u8]>,
    control: Box<[u64]>,
    names: Box<[libc::sockaddr_in]>,
    iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
}

impl Batch {
    fn new() -> Self {
        // SAFETY: all-zero C structs are valid.
        let zero_name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let zero_msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let mut b = Self {
            data: vec![0u8; BATCH * SLOT].into_boxed_slice(),
            control: vec![0u64; BATCH * CONTROL / 8].into_boxed_slice(),
            names: vec![zero_name; BATCH].into_boxed_slice(),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ]
            .into_boxed_slice(),
            msgs: vec![zero_msg; BATCH].into_boxed_slice(),
        };
        for k in 0..BATCH {
            b.iovs[k].iov_base = b.data[k * SLOT..].as_mut_ptr().cast();
            b.iovs[k].iov_len = SLOT;
            let h = &mut b.msgs[k].msg_hdr;
            h.msg_iov = &mut b.iovs[k];
            h.msg_iovlen = 1;
            h.msg_name = (&mut b.names[k] as *mut libc::sockaddr_in).cast();
            h.msg_control = b.control[k * CONTROL / 8..].as_mut_ptr().cast();
        }
        b
    }

    fn slot(&self, k: usize, len: usize) -> &[u8] {
        &self.data[k * SLOT..k * SLOT + len.min(SLOT)]
    }

    fn slot_mut_len(&mut self, k: usize, len: usize) -> &mut [u8] {
        &mut self.data[k * SLOT..k * SLOT + len.min(SLOT)]
    }

    /// Receives what is waiting (up to a batch) without blocking.
    fn recv(&mut self, fd: RawFd) -> usize {
        for k in 0..BATCH {
            self.iovs[k].iov_len = SLOT;
            let h = &mut self.msgs[k].msg_hdr;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_controllen = CONTROL;
        }
        // SAFETY: the headers point into this batch; no timeout.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        n.max(0) as usize
    }

    /// Length, destination address and kernel receive time (ns,
    /// CLOCK_REALTIME) of received datagram `k`.
    fn received(&self, k: usize) -> (usize, Option<Ipv4Addr>, Option<u64>) {
        let m = &self.msgs[k];
        let len = (m.msg_len as usize).min(SLOT);
        let (mut dst, mut at) = (None, None);
        let h = &m.msg_hdr;
        // SAFETY: the kernel wrote `msg_controllen` bytes of well-formed
        // control messages into the buffer `h` points at.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                        let info = libc::CMSG_DATA(c)
                            .cast::<libc::in_pktinfo>()
                            .read_unaligned();
                        dst = Some(Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes()));
                    }
                    (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                        let ts = libc::CMSG_DATA(c).cast::<libc::timespec>().read_unaligned();
                        at = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        (len, dst, at)
    }
}

/// Datagrams for one `sendmmsg`: messages from many participants, each one
/// datagram or a UDP GSO run of equal-size datagrams, with `IP_PKTINFO`
/// naming the participant's source address. Allocated once, never moved.
struct SendBatch {
    data: Box<[u8]>,
    control: Box<[u64]>,
    name: Box<libc::sockaddr_in>,
    iovs: Box<[libc::iovec]>,
    msgs: Box<[libc::mmsghdr]>,
    /// Datagrams per queued message.
    datagrams: Vec<usize>,
    /// Slots used, and the first slot of the message being built.
    slots: usize,
    first: usize,
}

impl SendBatch {
    fn new() -> Self {
        // SAFETY: all-zero C structs are valid.
        let zero_msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut b = Self {
            data: vec![0u8; SEND_SLOTS * SLOT].into_boxed_slice(),
            control: vec![0u64; BATCH * CONTROL / 8].into_boxed_slice(),
            name: Box::new(zero_name),
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                SEND_SLOTS
            ]
            .into_boxed_slice(),
            msgs: vec![zero_msg; BATCH].into_boxed_slice(),
            datagrams: Vec::with_capacity(BATCH),
            slots: 0,
            first: 0,
        };
        for k in 0..SEND_SLOTS {
            b.iovs[k].iov_base = b.data[k * SLOT..].as_mut_ptr().cast();
        }
        b
    }

    fn set_destination(&mut self, server: SocketAddrV4) {
        *self.name = sockaddr(server);
        self.datagrams.clear();
        self.slots = 0;
        self.first = 0;
    }

    fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Whether a message of `datagrams` more fits.
    fn has_room(&self, datagrams: usize) -> bool {
        self.datagrams.len() < BATCH && self.slots + datagrams <= SEND_SLOTS
    }

    /// The next free slot, to write a datagram into.
    fn next_slot(&mut self) -> &mut [u8] {
        let k = self.slots.min(SEND_SLOTS - 1);
        &mut self.data[k * SLOT..(k + 1) * SLOT]
    }

    /// Completes the datagram in the next slot with `len` bytes.
    fn push_datagram(&mut self, len: usize) {
        if self.slots < SEND_SLOTS {
            self.iovs[self.slots].iov_len = len;
            self.slots += 1;
        }
    }

    /// Makes the datagrams pushed since the last message one message from
    /// `from` (as one GSO send if there are several).
    fn end_message(&mut self, from: SocketAddrV4) {
        let count = self.slots - self.first;
        if count == 0 || self.datagrams.len() == BATCH {
            self.slots = self.first;
            return;
        }
        let m = self.datagrams.len();
        let control = self.control[m * CONTROL / 8..].as_mut_ptr();
        let h = &mut self.msgs[m].msg_hdr;
        h.msg_name = (&mut *self.name as *mut libc::sockaddr_in).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        h.msg_iov = &mut self.iovs[self.first];
        h.msg_iovlen = count;
        h.msg_control = control.cast();
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from_ne_bytes(from.ip().octets()),
            },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        let pktinfo = std::mem::size_of::<libc::in_pktinfo>() as u32;
        // SAFETY: the control buffer holds CONTROL bytes, 8-aligned, more
        // than an IP_PKTINFO and a UDP_SEGMENT message need.
        unsafe {
            let mut len = libc::CMSG_SPACE(pktinfo) as usize;
            if count > 1 {
                len += libc::CMSG_SPACE(2) as usize;
            }
            h.msg_controllen = len;
            let c = libc::CMSG_FIRSTHDR(h);
            (*c).cmsg_level = libc::IPPROTO_IP;
            (*c).cmsg_type = libc::IP_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(pktinfo) as usize;
            libc::CMSG_DATA(c)
                .cast::<libc::in_pktinfo>()
                .write_unaligned(info);
            if count > 1 {
                let c = libc::CMSG_NXTHDR(h, c);
                (*c).cmsg_level = SOL_UDP;
                (*c).cmsg_type = UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                let seg = self.iovs[self.first].iov_len as u16;
                libc::CMSG_DATA(c).cast::<u16>().write_unaligned(seg);
            }
        }
        self.datagrams.push(count);
        self.first = self.slots;
    }

    /// Sends the queued messages; returns how many datagrams were not sent.
    fn send(&mut self, fd: RawFd) -> usize {
        let n = self.datagrams.len();
        let mut done = 0;
        let mut failed = 0;
        while done < n {
            // SAFETY: the first `n` headers point into this batch.
            let k = unsafe {
                libc::sendmmsg(
                    fd,
                    self.msgs[done..].as_mut_ptr(),
                    (n - done) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if k <= 0 {
                // The message at `done` failed: skip it, try the rest.
                failed += self.datagrams[done];
                done += 1;
                continue;
            }
            done += k as usize;
        }
        self.datagrams.clear();
        self.slots = 0;
        self.first = 0;
        failed
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_stream_counts_duplicates_and_gaps() {
        let mut s = SinkStream::new();
        assert!(s.record(65_530));
        assert!(s.record(65_532));
        assert!(!s.record(65_532));
        assert!(s.record(65_531));
        assert!(s.record(3));
        assert!(!s.record(65_531));
        assert!(s.record(2000));
        // Far behind the newest: cannot tell, not counted.
        assert!(!s.record(3));
    }

    #[test]
    fn abs_window_wraps() {
        let w = AbsWindow::new(63_000_000, 65_000_000);
        assert!(w.contains(abs_raw(63_500_000)));
        assert!(w.contains(abs_raw(64_500_000)));
        assert!(!w.contains(abs_raw(65_000_001)));
        assert!(!w.contains(abs_raw(62_000_000)));
    }

    #[test]
    fn frame_layout_matches_the_profile() {
        let two = Media {
            room_size: 2,
            video_kbps: 1500,
            fps: 30,
            audio_payload: 80,
            max_video_payload: 800,
        };
        let (count, body) = two.frame_layout(false);
        assert_eq!(count, 8);
        assert!((780..=800).contains(&body));
        assert!((two.pps_per_participant() - 290.0).abs() < 1.0);
    }
}
