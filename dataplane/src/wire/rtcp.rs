//! RTCP: compound packets, reports, SDES, BYE, APP and the feedback messages
//! the SFU terminates, answers or forwards.
//!
//! Covers RFC 3550 (SR, RR, SDES, BYE, APP), RFC 4585 (generic NACK, PLI),
//! RFC 5104 (FIR), RFC 5506 (reduced-size RTCP),
//! draft-holmer-rmcat-transport-wide-cc-extensions-01 (transport-cc feedback)
//! and draft-alvestrand-rmcat-remb (REMB).
//!
//! Parsing is zero-copy: [`iter_compound`] walks a compound packet and yields
//! one [`RtcpPacket`] view per packet, and every view's `new_checked` validates
//! the lengths its accessors rely on. Views over mutable buffers have the
//! in-place setters the SFU needs to rewrite SSRCs and timestamps. Builders
//! write into a caller buffer and return the number of bytes written.

use super::{be16, be32, ensure_len, Result, WireError};

/// Payload type of a sender report (RFC 3550).
pub const PT_SR: u8 = 200;
/// Payload type of a receiver report (RFC 3550).
pub const PT_RR: u8 = 201;
/// Payload type of a source description (RFC 3550).
pub const PT_SDES: u8 = 202;
/// Payload type of a goodbye packet (RFC 3550).
pub const PT_BYE: u8 = 203;
/// Payload type of an application-defined packet (RFC 3550).
pub const PT_APP: u8 = 204;
/// Payload type of transport-layer feedback (RFC 4585).
pub const PT_RTPFB: u8 = 205;
/// Payload type of payload-specific feedback (RFC 4585).
pub const PT_PSFB: u8 = 206;

/// RTPFB format of a generic NACK (RFC 4585).
pub const FMT_NACK: u8 = 1;
/// RTPFB format of transport-wide congestion control feedback.
pub const FMT_TRANSPORT_CC: u8 = 15;
/// PSFB format of a picture loss indication (RFC 4585).
pub const FMT_PLI: u8 = 1;
/// PSFB format of a full intra request (RFC 5104).
pub const FMT_FIR: u8 = 4;
/// PSFB format of application-layer feedback, which carries REMB.
pub const FMT_AFB: u8 = 15;

/// SDES item type that ends a chunk's item list.
pub const SDES_END: u8 = 0;
/// SDES canonical end-point identifier.
pub const SDES_CNAME: u8 = 1;
/// SDES user name.
pub const SDES_NAME: u8 = 2;
/// SDES e-mail address.
pub const SDES_EMAIL: u8 = 3;
/// SDES phone number.
pub const SDES_PHONE: u8 = 4;
/// SDES geographic location.
pub const SDES_LOC: u8 = 5;
/// SDES application or tool name.
pub const SDES_TOOL: u8 = 6;
/// SDES notice or status.
pub const SDES_NOTE: u8 = 7;
/// SDES private extension.
pub const SDES_PRIV: u8 = 8;

/// Length of the common RTCP header.
pub const HEADER_LEN: usize = 4;
/// Length of one report block.
pub const REPORT_BLOCK_LEN: usize = 24;
/// Length of the common feedback header (RTCP header and two SSRCs).
pub const FEEDBACK_HEADER_LEN: usize = 12;
/// Largest number of items a 5-bit count field can announce.
pub const MAX_COUNT: usize = 31;
/// Unit of transport-cc receive deltas, in microseconds.
pub const TWCC_DELTA_TICK_US: i32 = 250;
/// Unit of the transport-cc reference time, in microseconds.
pub const TWCC_REFERENCE_TICK_US: i64 = 64_000;

/// The length field counts 32-bit words minus one, so this is the most it can say.
const MAX_PACKET_LEN: usize = (u16::MAX as usize + 1) * 4;
const SR_INFO_AT: usize = 8;
const SR_BLOCKS_AT: usize = 28;
const RR_BLOCKS_AT: usize = 8;
const NACK_ENTRY_LEN: usize = 4;
const FIR_ENTRY_LEN: usize = 8;
const TWCC_CHUNKS_AT: usize = 8;
const TWCC_MAX_RUN: usize = 0x1FFF;
const REMB_ID: [u8; 4] = *b"REMB";
const REMB_SSRCS_AT: usize = 8;
const REMB_MANTISSA_BITS: u32 = 18;
const CUMULATIVE_LOST_MAX: i32 = (1 << 23) - 1;
const CUMULATIVE_LOST_MIN: i32 = -(1 << 23);

const L_RTCP: &str = "rtcp";
const L_COMPOUND: &str = "rtcp compound";
const L_SR: &str = "rtcp sr";
const L_RR: &str = "rtcp rr";
const L_BLOCK: &str = "rtcp report block";
const L_SDES: &str = "rtcp sdes";
const L_BYE: &str = "rtcp bye";
const L_APP: &str = "rtcp app";
const L_FB: &str = "rtcp feedback";
const L_NACK: &str = "rtcp nack";
const L_TWCC: &str = "rtcp transport-cc";
const L_PLI: &str = "rtcp pli";
const L_FIR: &str = "rtcp fir";
const L_REMB: &str = "rtcp remb";

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn malformed(layer: &'static str, reason: &'static str) -> WireError {
    WireError::Malformed { layer, reason }
}

fn truncated(layer: &'static str, need: usize, have: usize) -> WireError {
    WireError::Truncated { layer, need, have }
}

fn set_be32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn read_be16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn read_be32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Sign-extends the low 24 bits of `value`.
fn sign_extend_24(value: u32) -> i32 {
    ((value << 8) as i32) >> 8
}

/// Cursor over a builder's output; every write is bounds-checked so a sizing
/// mistake surfaces as an error instead of a panic.
struct Writer<'a> {
    layer: &'static str,
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// Checks that a packet of `total` bytes is expressible and fits `buf`.
    fn start(layer: &'static str, buf: &'a mut [u8], total: usize) -> Result<Self> {
        if total > MAX_PACKET_LEN {
            return Err(malformed(layer, "packet exceeds the RTCP length field"));
        }
        if buf.len() < total {
            return Err(WireError::BufferTooSmall {
                layer,
                need: total,
                have: buf.len(),
            });
        }
        Ok(Self { layer, buf, pos: 0 })
    }

    fn bytes(&mut self, data: &[u8]) -> Result<()> {
        let have = self.buf.len();
        let end = self.pos.saturating_add(data.len());
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(WireError::BufferTooSmall {
                layer: self.layer,
                need: end,
                have,
            })?;
        dst.copy_from_slice(data);
        self.pos = end;
        Ok(())
    }

    fn u8(&mut self, value: u8) -> Result<()> {
        self.bytes(&[value])
    }

    fn u16(&mut self, value: u16) -> Result<()> {
        self.bytes(&value.to_be_bytes())
    }

    fn u32(&mut self, value: u32) -> Result<()> {
        self.bytes(&value.to_be_bytes())
    }

    fn u64(&mut self, value: u64) -> Result<()> {
        self.bytes(&value.to_be_bytes())
    }

    fn zeros(&mut self, count: usize) -> Result<()> {
        for _ in 0..count {
            self.u8(0)?;
        }
        Ok(())
    }

    /// Writes an RTCP header (version 2, no padding) for a packet of `total` bytes.
    fn header(&mut self, count: u8, packet_type: u8, total: usize) -> Result<()> {
        let words = (total / 4)
            .checked_sub(1)
            .and_then(|w| u16::try_from(w).ok())
            .ok_or(malformed(self.layer, "packet length not expressible"))?;
        self.u8(0x80 | (count & 0x1F))?;
        self.u8(packet_type)?;
        self.u16(words)
    }

    fn finish(self) -> usize {
        self.pos
    }
}

/// Where a packet's bytes end and where its padding starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    total: usize,
    end: usize,
}

/// Validates the common header of the packet at the start of `buf`.
fn frame(layer: &'static str, buf: &[u8]) -> Result<Frame> {
    ensure_len(layer, buf, HEADER_LEN)?;
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(WireError::BadVersion { layer, version });
    }
    let total = (usize::from(be16(buf, 2)) + 1) * 4;
    if total > buf.len() {
        return Err(WireError::BadLength {
            layer,
            claimed: total,
            actual: buf.len(),
        });
    }
    let end = if buf[0] & 0x20 != 0 {
        // The last octet counts the padding, itself included.
        let pad = usize::from(buf[total - 1]);
        if pad == 0 || pad > total - HEADER_LEN {
            return Err(malformed(layer, "padding count does not fit the packet"));
        }
        total - pad
    } else {
        total
    };
    Ok(Frame { total, end })
}

// ---------------------------------------------------------------------------
// Common header view
// ---------------------------------------------------------------------------

/// A view of one RTCP packet's common header and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T> {
    buffer: T,
    total: usize,
    end: usize,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates version, length field and padding of the packet at the start
    /// of `buffer`; bytes past the length field's end are ignored.
    pub fn new_checked(buffer: T) -> Result<Self> {
        Self::with_layer(L_RTCP, buffer)
    }

    fn with_layer(layer: &'static str, buffer: T) -> Result<Self> {
        let f = frame(layer, buffer.as_ref())?;
        Ok(Self {
            buffer,
            total: f.total,
            end: f.end,
        })
    }

    fn raw(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Whether the padding bit is set.
    pub fn padding(&self) -> bool {
        self.raw()[0] & 0x20 != 0
    }

    /// The 5-bit count field: report count, source count, FMT or APP subtype.
    pub fn count(&self) -> u8 {
        self.raw()[0] & 0x1F
    }

    /// The payload type.
    pub fn packet_type(&self) -> u8 {
        self.raw()[1]
    }

    /// Length of the whole packet in bytes, padding included.
    pub fn total_len(&self) -> usize {
        self.total
    }

    /// Number of padding bytes at the end of the packet.
    pub fn padding_len(&self) -> usize {
        self.total - self.end
    }

    /// The bytes after the common header, padding excluded.
    pub fn payload(&self) -> &[u8] {
        &self.raw()[HEADER_LEN..self.end]
    }

    /// The packet's bytes, padding included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw()[..self.total]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn raw_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
}

fn expect_type<T: AsRef<[u8]>>(layer: &'static str, packet: &Packet<T>, pt: u8) -> Result<()> {
    if packet.packet_type() == pt {
        Ok(())
    } else {
        Err(malformed(layer, "unexpected payload type"))
    }
}

// ---------------------------------------------------------------------------
// Report blocks
// ---------------------------------------------------------------------------

/// The fields of one reception report block, for building and comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlockRepr {
    /// SSRC of the source this block reports on.
    pub ssrc: u32,
    /// Fraction of packets lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost; clamped to the signed 24-bit range on write.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received.
    pub last_sr: u32,
    /// Delay since that SR, in units of 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReportBlockRepr {
    fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        let lost = self
            .cumulative_lost
            .clamp(CUMULATIVE_LOST_MIN, CUMULATIVE_LOST_MAX) as u32;
        w.u32(self.ssrc)?;
        w.u32((u32::from(self.fraction_lost) << 24) | (lost & 0x00FF_FFFF))?;
        w.u32(self.extended_highest_seq)?;
        w.u32(self.jitter)?;
        w.u32(self.last_sr)?;
        w.u32(self.delay_since_last_sr)
    }
}

/// A view of one 24-byte reception report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ReportBlock<T> {
    /// Checks that `buffer` holds at least one report block.
    pub fn new_checked(buffer: T) -> Result<Self> {
        ensure_len(L_BLOCK, buffer.as_ref(), REPORT_BLOCK_LEN)?;
        Ok(Self { buffer })
    }

    fn raw(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// SSRC of the source this block reports on.
    pub fn ssrc(&self) -> u32 {
        be32(self.raw(), 0)
    }

    /// Fraction lost since the previous report, in 1/256.
    pub fn fraction_lost(&self) -> u8 {
        self.raw()[4]
    }

    /// Cumulative number of packets lost (signed 24-bit).
    pub fn cumulative_lost(&self) -> i32 {
        sign_extend_24(be32(self.raw(), 4) & 0x00FF_FFFF)
    }

    /// Extended highest sequence number received.
    pub fn extended_highest_seq(&self) -> u32 {
        be32(self.raw(), 8)
    }

    /// Interarrival jitter.
    pub fn jitter(&self) -> u32 {
        be32(self.raw(), 12)
    }

    /// Last SR timestamp (LSR).
    pub fn last_sr(&self) -> u32 {
        be32(self.raw(), 16)
    }

    /// Delay since last SR (DLSR), in 1/65536 s.
    pub fn delay_since_last_sr(&self) -> u32 {
        be32(self.raw(), 20)
    }

    /// All fields as a plain value.
    pub fn repr(&self) -> ReportBlockRepr {
        ReportBlockRepr {
            ssrc: self.ssrc(),
            fraction_lost: self.fraction_lost(),
            cumulative_lost: self.cumulative_lost(),
            extended_highest_seq: self.extended_highest_seq(),
            jitter: self.jitter(),
            last_sr: self.last_sr(),
            delay_since_last_sr: self.delay_since_last_sr(),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ReportBlock<T> {
    fn raw_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Rewrites the SSRC of the reported source.
    pub fn set_ssrc(&mut self, ssrc: u32) {
        set_be32(self.raw_mut(), 0, ssrc);
    }

    /// Rewrites the fraction lost.
    pub fn set_fraction_lost(&mut self, fraction: u8) {
        self.raw_mut()[4] = fraction;
    }

    /// Rewrites the cumulative loss, clamped to the signed 24-bit range.
    pub fn set_cumulative_lost(&mut self, lost: i32) {
        let lost = lost.clamp(CUMULATIVE_LOST_MIN, CUMULATIVE_LOST_MAX) as u32;
        let raw = self.raw_mut();
        raw[5..8].copy_from_slice(&lost.to_be_bytes()[1..]);
    }

    /// Rewrites the extended highest sequence number.
    pub fn set_extended_highest_seq(&mut self, seq: u32) {
        set_be32(self.raw_mut(), 8, seq);
    }

    /// Rewrites the jitter.
    pub fn set_jitter(&mut self, jitter: u32) {
        set_be32(self.raw_mut(), 12, jitter);
    }

    /// Rewrites LSR.
    pub fn set_last_sr(&mut self, lsr: u32) {
        set_be32(self.raw_mut(), 16, lsr);
    }

    /// Rewrites DLSR.
    pub fn set_delay_since_last_sr(&mut self, dlsr: u32) {
        set_be32(self.raw_mut(), 20, dlsr);
    }
}

/// Iterator over the report blocks of an SR or RR.
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl<'a> Iterator for ReportBlocks<'a> {
    type Item = ReportBlock<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        self.chunks.next().map(|buffer| ReportBlock { buffer })
    }
}

fn blocks_region(raw: &[u8], at: usize, count: u8) -> &[u8] {
    let end = at + usize::from(count) * REPORT_BLOCK_LEN;
    raw.get(at..end).unwrap_or_default()
}

fn block_range(at: usize, count: u8, index: usize) -> Option<core::ops::Range<usize>> {
    if index >= usize::from(count) {
        return None;
    }
    let start = at + index * REPORT_BLOCK_LEN;
    Some(start..start + REPORT_BLOCK_LEN)
}

fn report_count(layer: &'static str, blocks: usize) -> Result<u8> {
    if blocks > MAX_COUNT {
        return Err(malformed(layer, "more than 31 report blocks"));
    }
    Ok(blocks as u8)
}

// ---------------------------------------------------------------------------
// Sender report
// ---------------------------------------------------------------------------

/// The sender information section of a sender report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp (seconds in the high word, fraction in the low).
    pub ntp_timestamp: u64,
    /// RTP timestamp corresponding to the NTP timestamp.
    pub rtp_timestamp: u32,
    /// Packets sent since the start of transmission.
    pub packet_count: u32,
    /// Payload octets sent since the start of transmission.
    pub octet_count: u32,
}

/// A view of a sender report (PT 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport<T> {
    packet: Packet<T>,
}

impl<T: AsRef<[u8]>> SenderReport<T> {
    /// Validates the header, the sender info and every announced report block.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Packet::with_layer(L_SR, buffer)?;
        expect_type(L_SR, &packet, PT_SR)?;
        let need = SR_BLOCKS_AT + usize::from(packet.count()) * REPORT_BLOCK_LEN;
        if need > packet.end {
            return Err(truncated(L_SR, need, packet.end));
        }
        Ok(Self { packet })
    }

    /// The common header view.
    pub fn packet(&self) -> &Packet<T> {
        &self.packet
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.packet.buffer
    }

    /// SSRC of the sender.
    pub fn ssrc(&self) -> u32 {
        be32(self.packet.raw(), 4)
    }

    /// NTP timestamp of this report.
    pub fn ntp_timestamp(&self) -> u64 {
        let raw = self.packet.raw();
        (u64::from(be32(raw, SR_INFO_AT)) << 32) | u64::from(be32(raw, SR_INFO_AT + 4))
    }

    /// RTP timestamp matching the NTP timestamp.
    pub fn rtp_timestamp(&self) -> u32 {
        be32(self.packet.raw(), 16)
    }

    /// Sender's packet count.
    pub fn packet_count(&self) -> u32 {
        be32(self.packet.raw(), 20)
    }

    /// Sender's octet count.
    pub fn octet_count(&self) -> u32 {
        be32(self.packet.raw(), 24)
    }

    /// The whole sender info section.
    pub fn sender_info(&self) -> SenderInfo {
        SenderInfo {
            ntp_timestamp: self.ntp_timestamp(),
            rtp_timestamp: self.rtp_timestamp(),
            packet_count: self.packet_count(),
            octet_count: self.octet_count(),
        }
    }

    /// Number of report blocks.
    pub fn report_count(&self) -> u8 {
        self.packet.count()
    }

    /// Iterator over the report blocks.
    pub fn report_blocks(&self) -> ReportBlocks<'_> {
        let region = blocks_region(self.packet.raw(), SR_BLOCKS_AT, self.report_count());
        ReportBlocks {
            chunks: region.chunks_exact(REPORT_BLOCK_LEN),
        }
    }

    /// Report block `index`, if present.
    pub fn report_block(&self, index: usize) -> Option<ReportBlock<&[u8]>> {
        let range = block_range(SR_BLOCKS_AT, self.report_count(), index)?;
        self.packet
            .raw()
            .get(range)
            .map(|buffer| ReportBlock { buffer })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SenderReport<T> {
    /// Rewrites the sender SSRC.
    pub fn set_ssrc(&mut self, ssrc: u32) {
        set_be32(self.packet.raw_mut(), 4, ssrc);
    }

    /// Rewrites the NTP timestamp.
    pub fn set_ntp_timestamp(&mut self, ntp: u64) {
        let raw = self.packet.raw_mut();
        raw[SR_INFO_AT..SR_INFO_AT + 8].copy_from_slice(&ntp.to_be_bytes());
    }

    /// Rewrites the RTP timestamp.
    pub fn set_rtp_timestamp(&mut self, ts: u32) {
        set_be32(self.packet.raw_mut(), 16, ts);
    }

    /// Rewrites the packet count.
    pub fn set_packet_count(&mut self, count: u32) {
        set_be32(self.packet.raw_mut(), 20, count);
    }

    /// Rewrites the octet count.
    pub fn set_octet_count(&mut self, count: u32) {
        set_be32(self.packet.raw_mut(), 24, count);
    }

    /// Mutable view of report block `index`, if present.
    pub fn report_block_mut(&mut self, index: usize) -> Option<ReportBlock<&mut [u8]>> {
        let range = block_range(SR_BLOCKS_AT, self.report_count(), index)?;
        self.packet
            .raw_mut()
            .get_mut(range)
            .map(|buffer| ReportBlock { buffer })
    }
}

/// Builds a sender report; returns the bytes written.
pub fn build_sender_report(
    ssrc: u32,
    info: &SenderInfo,
    blocks: &[ReportBlockRepr],
    out: &mut [u8],
) -> Result<usize> {
    let count = report_count(L_SR, blocks.len())?;
    let total = SR_BLOCKS_AT + blocks.len() * REPORT_BLOCK_LEN;
    let mut w = Writer::start(L_SR, out, total)?;
    w.header(count, PT_SR, total)?;
    w.u32(ssrc)?;
    w.u64(info.ntp_timestamp)?;
    w.u32(info.rtp_timestamp)?;
    w.u32(info.packet_count)?;
    w.u32(info.octet_count)?;
    for block in blocks {
        block.write(&mut w)?;
    }
    Ok(w.finish())
}

// ---------------------------------------------------------------------------
// Receiver report
// ---------------------------------------------------------------------------

/// A view of a receiver report (PT 201).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverReport<T> {
    packet: Packet<T>,
}

impl<T: AsRef<[u8]>> ReceiverReport<T> {
    /// Validates the header and every announced report block.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Packet::with_layer(L_RR, buffer)?;
        expect_type(L_RR, &packet, PT_RR)?;
        let need = RR_BLOCKS_AT + usize::from(packet.count()) * REPORT_BLOCK_LEN;
        if need > packet.end {
            return Err(truncated(L_RR, need, packet.end));
        }
        Ok(Self { packet })
    }

    /// The common header view.
    pub fn packet(&self) -> &Packet<T> {
        &self.packet
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.packet.buffer
    }

    /// SSRC of the reporting receiver.
    pub fn ssrc(&self) -> u32 {
        be32(self.packet.raw(), 4)
    }

    /// Number of report blocks.
    pub fn report_count(&self) -> u8 {
        self.packet.count()
    }

    /// Iterator over the report blocks.
    pub fn report_blocks(&self) -> ReportBlocks<'_> {
        let region = blocks_region(self.packet.raw(), RR_BLOCKS_AT, self.report_count());
        ReportBlocks {
            chunks: region.chunks_exact(REPORT_BLOCK_LEN),
        }
    }

    /// Report block `index`, if present.
    pub fn report_block(&self, index: usize) -> Option<ReportBlock<&[u8]>> {
        let range = block_range(RR_BLOCKS_AT, self.report_count(), index)?;
        self.packet
            .raw()
            .get(range)
            .map(|buffer| ReportBlock { buffer })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ReceiverReport<T> {
    /// Rewrites the reporter SSRC.
    pub fn set_ssrc(&mut self, ssrc: u32) {
        set_be32(self.packet.raw_mut(), 4, ssrc);
    }

    /// Mutable view of report block `index`, if present.
    pub fn report_block_mut(&mut self, index: usize) -> Option<ReportBlock<&mut [u8]>> {
        let range = block_range(RR_BLOCKS_AT, self.report_count(), index)?;
        self.packet
            .raw_mut()
            .get_mut(range)
            .map(|buffer| ReportBlock { buffer })
    }
}

/// Builds a receiver report (possibly with no blocks); returns the bytes written.
pub fn build_receiver_report(
    ssrc: u32,
    blocks: &[ReportBlockRepr],
    out: &mut [u8],
) -> Result<usize> {
    let count = report_count(L_RR, blocks.len())?;
    let total = RR_BLOCKS_AT + blocks.len() * REPORT_BLOCK_LEN;
    let mut w = Writer::start(L_RR, out, total)?;
    w.header(count, PT_RR, total)?;
    w.u32(ssrc)?;
    for block in blocks {
        block.write(&mut w)?;
    }
    Ok(w.finish())
}

// ---------------------------------------------------------------------------
// SDES
// ---------------------------------------------------------------------------

/// One SDES item: its type and its (UTF-8, not checked) text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesItem<'a> {
    /// Item type, e.g. [`SDES_CNAME`]; never [`SDES_END`].
    pub kind: u8,
    /// Item text, at most 255 bytes.
    pub value: &'a [u8],
}

/// One SDES chunk to build: a source and its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunkRepr<'a> {
    /// SSRC or CSRC the items describe.
    pub ssrc: u32,
    /// Items of this source.
    pub items: &'a [SdesItem<'a>],
}

/// One parsed SDES chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    ssrc: u32,
    items: &'a [u8],
}

impl<'a> SdesChunk<'a> {
    /// SSRC or CSRC the items describe.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Iterator over the chunk's items.
    pub fn items(&self) -> SdesItems<'a> {
        SdesItems { rest: self.items }
    }

    /// The first CNAME item's text, if any.
    pub fn cname(&self) -> Option<&'a [u8]> {
        self.items()
            .find(|item| item.kind == SDES_CNAME)
            .map(|item| item.value)
    }
}

/// Iterator over the items of an SDES chunk.
#[derive(Debug, Clone)]
pub struct SdesItems<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SdesItems<'a> {
    type Item = SdesItem<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let kind = *self.rest.first()?;
        if kind == SDES_END {
            return None;
        }
        let len = usize::from(*self.rest.get(1)?);
        let value = self.rest.get(2..2 + len)?;
        self.rest = self.rest.get(2 + len..)?;
        Some(SdesItem { kind, value })
    }
}

/// Splits the chunk at the (word-aligned) start of `buf`; returns its SSRC,
/// its item bytes without the terminator, and the bytes it occupies.
fn split_sdes_chunk(buf: &[u8]) -> Result<(u32, &[u8], usize)> {
    ensure_len(L_SDES, buf, 4)?;
    let mut at = 4;
    loop {
        let kind = *buf.get(at).ok_or(truncated(L_SDES, at + 1, buf.len()))?;
        if kind == SDES_END {
            break;
        }
        let len = usize::from(
            *buf.get(at + 1)
                .ok_or(truncated(L_SDES, at + 2, buf.len()))?,
        );
        let next = at + 2 + len;
        if next > buf.len() {
            return Err(truncated(L_SDES, next, buf.len()));
        }
        at = next;
    }
    // The terminating null octet, then null padding to the next word.
    let consumed = (at + 1).next_multiple_of(4);
    if consumed > buf.len() {
        return Err(truncated(L_SDES, consumed, buf.len()));
    }
    Ok((be32(buf, 0), &buf[4..at], consumed))
}

/// Iterator over the chunks of an SDES packet.
#[derive(Debug, Clone)]
pub struct SdesChunks<'a> {
    rest: &'a [u8],
    remaining: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let (ssrc, items, consumed) = split_sdes_chunk(self.rest).ok()?;
        self.rest = self.rest.get(consumed..)?;
        self.remaining -= 1;
        Some(SdesChunk { ssrc, items })
    }
}

/// A view of a source description packet (PT 202).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sdes<T> {
    packet: Packet<T>,
}

impl<T: AsRef<[u8]>> Sdes<T> {
    /// Validates the header and walks every announced chunk and item.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Packet::with_layer(L_SDES, buffer)?;
        expect_type(L_SDES, &packet, PT_SDES)?;
        let mut rest = packet.payload();
        for _ in 0..packet.count() {
            let (_, _, consumed) = split_sdes_chunk(rest)?;
            rest = rest.get(consumed..).unwrap_or_default();
        }
        Ok(Self { packet })
    }

    /// The common header view.
    pub fn packet(&self) -> &Packet<T> {
        &self.packet
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.packet.buffer
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u8 {
        self.packet.count()
    }

    /// Iterator over the chunks.
    pub fn chunks(&self) -> SdesChunks<'_> {
        SdesChunks {
            rest: self.packet.payload(),
            remaining: self.packet.count(),
        }
    }
}

fn sdes_chunk_len(chunk: &SdesChunkRepr<'_>) -> Result<usize> {
    let mut len: usize = 4;
    for item in chunk.items {
        if item.kind == SDES_END {
            return Err(malformed(
                L_SDES,
                "item type 0 is reserved for the terminator",
            ));
        }
        if item.value.len() > usize::from(u8::MAX) {
            return Err(malformed(L_SDES, "item longer than 255 bytes"));
        }
        len = len.saturating_add(2 + item.value.len());
    }
    Ok(len.saturating_add(1).next_multiple_of(4))
}

/// Builds an SDES packet; returns the bytes written.
pub fn build_sdes(chunks: &[SdesChunkRepr<'_>], out: &mut [u8]) -> Result<usize> {
    if chunks.len() > MAX_COUNT {
        return Err(malformed(L_SDES, "more than 31 chunks"));
    }
    let mut total = HEADER_LEN;
    for chunk in chunks {
        total = total.saturating_add(sdes_chunk_len(chunk)?);
    }
    let mut w = Writer::start(L_SDES, out, total)?;
    w.header(chunks.len() as u8, PT_SDES, total)?;
    for chunk in chunks {
        let start = w.pos;
        w.u32(chunk.ssrc)?;
        for item in chunk.items {
            w.u8(item.kind)?;
            w.u8(item.value.len() as u8)?;
            w.bytes(item.value)?;
        }
        let end = (w.pos - start + 1).next_multiple_of(4) + start;
        w.zeros(end - w.pos)?;
    }
    Ok(w.finish())
}

/// Builds an SDES packet with a single chunk holding only a CNAME.
pub fn build_sdes_cname(ssrc: u32, cname: &[u8], out: &mut [u8]) -> Result<usize> {
    let items = [SdesItem {
        kind: SDES_CNAME,
        value: cname,
    }];
    build_sdes(
        &[SdesChunkRepr {
            ssrc,
            items: &items,
        }],
        out,
    )
}

// ---------------------------------------------------------------------------
// BYE
// ---------------------------------------------------------------------------

/// Iterator over a list of 32-bit SSRCs.
#[derive(Debug, Clone)]
pub struct Ssrcs<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for Ssrcs<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        self.chunks.next().and_then(|c| read_be32(c, 0))
    }
}

impl<'a> Ssrcs<'a> {
    fn over(region: &'a [u8]) -> Self {
        Self {
            chunks: region.chunks_exact(4),
        }
    }
}

/// A view of a goodbye packet (PT 203).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bye<T> {
    packet: Packet<T>,
}

impl<T: AsRef<[u8]>> Bye<T> {
    /// Validates the header, the SSRC list and the optional reason.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Packet::with_layer(L_BYE, buffer)?;
        expect_type(L_BYE, &packet, PT_BYE)?;
        let reason_at = HEADER_LEN + usize::from(packet.count()) * 4;
        if reason_at > packet.end {
            return Err(truncated(L_BYE, reason_at, packet.end));
        }
        if reason_at < packet.end {
            let len = usize::from(packet.raw()[reason_at]);
            let need = reason_at + 1 + len;
            if need > packet.end {
                return Err(truncated(L_BYE, need, packet.end));
            }
        }
        Ok(Self { packet })
    }

    /// The common header view.
    pub fn packet(&self) -> &Packet<T> {
        &self.packet
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.packet.buffer
    }

    fn reason_at(&self) -> usize {
        HEADER_LEN + usize::from(self.packet.count()) * 4
    }

    /// Iterator over the SSRCs/CSRCs leaving.
    pub fn ssrcs(&self) -> Ssrcs<'_> {
        let region = self
            .packet
            .raw()
            .get(HEADER_LEN..self.reason_at())
            .unwrap_or_default();
        Ssrcs::over(region)
    }

    /// The reason for leaving, if present.
    pub fn reason(&self) -> Option<&[u8]> {
        let raw = self.packet.raw();
        let at = self.reason_at();
        if at >= self.packet.end {
            return None;
        }
        let len = usize::from(*raw.get(at)?);
        raw.get(at + 1..at + 1 + len)
    }
}

/// Builds a BYE packet; returns the bytes written.
pub fn build_bye(ssrcs: &[u32], reason: Option<&[u8]>, out: &mut [u8]) -> Result<usize> {
    if ssrcs.len() > MAX_COUNT {
        return Err(malformed(L_BYE, "more than 31 sources"));
    }
    let reason_len = match reason {
        Some(r) if r.len() > usize::from(u8::MAX) => {
            return Err(malformed(L_BYE, "reason longer than 255 bytes"));
        }
        Some(r) => (1 + r.len()).next_multiple_of(4),
        None => 0,
    };
    let total = HEADER_LEN + ssrcs.len() * 4 + reason_len;
    let mut w = Writer::start(L_BYE, out, total)?;
    w.header(ssrcs.len() as u8, PT_BYE, total)?;
    for &ssrc in ssrcs {
        w.u32(ssrc)?;
    }
    if let Some(r) = reason {
        w.u8(r.len() as u8)?;
        w.bytes(r)?;
        w.zeros(reason_len - 1 - r.len())?;
    }
    Ok(w.finish())
}

// ---------------------------------------------------------------------------
// APP
// ---------------------------------------------------------------------------

/// A view of an application-defined packet (PT 204).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App<T> {
    packet: Packet<T>,
}

impl<T: AsRef<[u8]>> App<T> {
    /// Validates the header, SSRC and name.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Packet::with_layer(L_APP, buffer)?;
        expect_type(L_APP, &packet, PT_APP)?;
        if packet.end < 12 {
            return Err(truncated(L_APP, 12, packet.end));
        }
        Ok(Self { packet })
    }

    /// The common header view.
    pub fn packet(&self) -> &Packet<T> {
        &self.packet
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.packet.buffer
    }

    /// The 5-bit subtype.
    pub fn subtype(&self) -> u8 {
        self.packet.count()
    }

    /// SSRC/CSRC of the sender.
    pub fn ssrc(&self) -> u32 {
        be32(self.packet.raw(), 4)
    }

    /// The four-character name.
    pub fn name(&self) -> [u8; 4] {
        let raw = self.packet.raw();
        [raw[8], raw[9], raw[10], raw[11]]
    }

    /// Application-dependent data.
    pub fn data(&self) -> &[u8] {
        self.packet
            .raw()
            .get(12..self.packet.end)
            .unwrap_or_default()
    }
}

/// Builds an APP packet; `data` must be a whole number of 32-bit words.
pub fn build_app(
    subtype: u8,
    ssrc: u32,
    name: [u8; 4],
    data: &[u8],
    out: &mut [u8],
) -> Result<usize> {
    if usize::from(subtype) > MAX_COUNT {
        return Err(malformed(L_APP, "subtype exceeds 5 bits"));
    }
    if !data.len().is_multiple_of(4) {
        return Err(malformed(L_APP, "data is not a multiple of 32 bits"));
    }
    let total = 12usize.saturating_add(data.len());
    let mut w = Writer::start(L_APP, out, total)?;
    w.header(subtype, PT_APP, total)?;
    w.u32(ssrc)?;
    w.bytes(&name)?;
    w.bytes(data)?;
    Ok(w.finish())
}

// ---------------------------------------------------------------------------
// Feedback (RFC 4585)
// ---------------------------------------------------------------------------

/// A view of any RTPFB or PSFB feedback packet: the common feedback header and FCI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feedback<T> {
    packet: Packet<T>,
}

impl<T: AsRef<[u8]>> Feedback<T> {
    /// Validates the header (PT 205 or 206) and both SSRCs.
    pub fn new_checked(buffer: T) -> Result<Self> {
        Self::with_layer(L_FB, buffer)
    }

    fn with_layer(layer: &'static str, buffer: T) -> Result<Self> {
        let packet = Packet::with_layer(layer, buffer)?;
        if !matches!(packet.packet_type(), PT_RTPFB | PT_PSFB) {
            return Err(malformed(layer, "not a feedback packet"));
        }
        if packet.end < FEEDBACK_HEADER_LEN {
            return Err(truncated(layer, FEEDBACK_HEADER_LEN, packet.end));
        }
        Ok(Self { packet })
    }

    fn expecting(layer: &'static str, buffer: T, pt: u8, fmt: u8) -> Result<Self> {
        let fb = Self::with_layer(layer, buffer)?;
        if fb.packet.packet_type() != pt || fb.fmt() != fmt {
            return Err(malformed(layer, "unexpected payload type or FMT"));
        }
        Ok(fb)
    }

    /// The common header view.
    pub fn packet(&self) -> &Packet<T> {
        &self.packet
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.packet.buffer
    }

    /// The feedback message type (FMT).
    pub fn fmt(&self) -> u8 {
        self.packet.count()
    }

    /// SSRC of the packet sender.
    pub fn sender_ssrc(&self) -> u32 {
        be32(self.packet.raw(), 4)
    }

    /// SSRC of the media source.
    pub fn media_ssrc(&self) -> u32 {
        be32(self.packet.raw(), 8)
    }

    /// Feedback control information.
    pub fn fci(&self) -> &[u8] {
        self.packet
            .raw()
            .get(FEEDBACK_HEADER_LEN..self.packet.end)
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Feedback<T> {
    /// Rewrites the SSRC of the packet sender.
    pub fn set_sender_ssrc(&mut self, ssrc: u32) {
        set_be32(self.packet.raw_mut(), 4, ssrc);
    }

    /// Rewrites the SSRC of the media source.
    pub fn set_media_ssrc(&mut self, ssrc: u32) {
        set_be32(self.packet.raw_mut(), 8, ssrc);
    }
}

/// Gives each typed feedback view the common header accessors and mutators.
macro_rules! feedback_common {
    ($name:ident) => {
        impl<T: AsRef<[u8]>> $name<T> {
            /// The common feedback view.
            pub fn feedback(&self) -> &Feedback<T> {
                &self.feedback
            }

            /// Consumes the view, returning the buffer.
            pub fn into_inner(self) -> T {
                self.feedback.packet.buffer
            }

            /// SSRC of the packet sender.
            pub fn sender_ssrc(&self) -> u32 {
                self.feedback.sender_ssrc()
            }

            /// SSRC of the media source.
            pub fn media_ssrc(&self) -> u32 {
                self.feedback.media_ssrc()
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// The common feedback view, for rewriting.
            pub fn feedback_mut(&mut self) -> &mut Feedback<T> {
                &mut self.feedback
            }

            /// Rewrites the SSRC of the packet sender.
            pub fn set_sender_ssrc(&mut self, ssrc: u32) {
                self.feedback.set_sender_ssrc(ssrc);
            }

            /// Rewrites the SSRC of the media source.
            pub fn set_media_ssrc(&mut self, ssrc: u32) {
                self.feedback.set_media_ssrc(ssrc);
            }
        }
    };
}

fn feedback_total(layer: &'static str, fci_len: usize) -> Result<usize> {
    let total = FEEDBACK_HEADER_LEN.saturating_add(fci_len);
    if total > MAX_PACKET_LEN {
        return Err(malformed(layer, "packet exceeds the RTCP length field"));
    }
    Ok(total)
}

fn write_feedback_header(
    w: &mut Writer<'_>,
    pt: u8,
    fmt: u8,
    total: usize,
    sender_ssrc: u32,
    media_ssrc: u32,
) -> Result<()> {
    w.header(fmt, pt, total)?;
    w.u32(sender_ssrc)?;
    w.u32(media_ssrc)
}

// ---------------------------------------------------------------------------
// Generic NACK
// ---------------------------------------------------------------------------

/// One generic NACK entry: a lost packet ID and a bitmask of the 16 after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NackPair {
    /// Sequence number of a lost packet.
    pub pid: u16,
    /// Bit i set means `pid + i + 1` is lost too.
    pub blp: u16,
}

impl NackPair {
    /// Iterator over the sequence numbers this entry reports lost.
    pub fn lost_seqs(self) -> PairLostSeqs {
        PairLostSeqs {
            pid: self.pid,
            mask: 1 | (u32::from(self.blp) << 1),
        }
    }
}

/// Iterator over the sequence numbers of one [`NackPair`].
#[derive(Debug, Clone)]
pub struct PairLostSeqs {
    pid: u16,
    // Bit 0 is the PID itself, bits 1..=16 the BLP.
    mask: u32,
}

impl Iterator for PairLostSeqs {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        if self.mask == 0 {
            return None;
        }
        let offset = self.mask.trailing_zeros();
        self.mask &= self.mask - 1;
        Some(self.pid.wrapping_add(offset as u16))
    }
}

/// Iterator over the entries of a NACK's FCI.
#[derive(Debug, Clone)]
pub struct NackPairs<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for NackPairs<'_> {
    type Item = NackPair;

    fn next(&mut self) -> Option<NackPair> {
        let c = self.chunks.next()?;
        Some(NackPair {
            pid: read_be16(c, 0)?,
            blp: read_be16(c, 2)?,
        })
    }
}

/// Iterator over every sequence number a NACK reports lost, entry by entry.
#[derive(Debug, Clone)]
pub struct NackLostSeqs<'a> {
    pairs: NackPairs<'a>,
    current: Option<PairLostSeqs>,
}

impl Iterator for NackLostSeqs<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        loop {
            if let Some(seq) = self.current.as_mut().and_then(Iterator::next) {
                return Some(seq);
            }
            self.current = Some(self.pairs.next()?.lost_seqs());
        }
    }
}

/// A view of a generic NACK (RTPFB FMT 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nack<T> {
    feedback: Feedback<T>,
}

feedback_common!(Nack);

impl<T: AsRef<[u8]>> Nack<T> {
    /// Validates the feedback header and a non-empty list of 4-byte entries.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let feedback = Feedback::expecting(L_NACK, buffer, PT_RTPFB, FMT_NACK)?;
        let fci = feedback.fci().len();
        if fci == 0 || !fci.is_multiple_of(NACK_ENTRY_LEN) {
            return Err(malformed(L_NACK, "FCI is not a non-empty list of entries"));
        }
        Ok(Self { feedback })
    }

    /// Iterator over the FCI entries.
    pub fn pairs(&self) -> NackPairs<'_> {
        NackPairs {
            chunks: self.feedback.fci().chunks_exact(NACK_ENTRY_LEN),
        }
    }

    /// Iterator over every sequence number reported lost.
    pub fn lost_seqs(&self) -> NackLostSeqs<'_> {
        NackLostSeqs {
            pairs: self.pairs(),
            current: None,
        }
    }

    /// Every sequence number reported lost, collected.
    pub fn lost_seq_vec(&self) -> Vec<u16> {
        self.lost_seqs().collect()
    }
}

/// Iterator that packs lost sequence numbers into the fewest NACK entries.
///
/// Built by [`nack_pairs_from_lost`] over a sorted slice; it starts after the
/// widest gap between lost numbers, so a loss window that spans the
/// 65535→0 wrap is packed as one run.
#[derive(Debug, Clone)]
pub struct LostToNackPairs<'a> {
    sorted: &'a [u16],
    start: usize,
    done: usize,
}

impl Iterator for LostToNackPairs<'_> {
    type Item = NackPair;

    fn next(&mut self) -> Option<NackPair> {
        let n = self.sorted.len();
        if self.done >= n {
            return None;
        }
        let pid = *self.sorted.get((self.start + self.done) % n)?;
        self.done += 1;
        let mut blp = 0u16;
        while self.done < n {
            let seq = *self.sorted.get((self.start + self.done) % n)?;
            let offset = seq.wrapping_sub(pid);
            if offset > 16 {
                break;
            }
            if offset > 0 {
                blp |= 1 << (offset - 1);
            }
            self.done += 1;
        }
        Some(NackPair { pid, blp })
    }
}

/// Sorts `lost` in place and returns an iterator packing it into NACK entries.
///
/// The packing is greedy from the point after the widest gap, which is minimal
/// whenever some gap exceeds 16, as it must while fewer than 4096 are lost.
/// Duplicates are reported once.
pub fn nack_pairs_from_lost(lost: &mut [u16]) -> LostToNackPairs<'_> {
    lost.sort_unstable();
    let mut start = 0;
    if let (Some(&first), Some(&last)) = (lost.first(), lost.last()) {
        let mut widest = u32::from(first) + 65536 - u32::from(last);
        for (i, pair) in lost.windows(2).enumerate() {
            let gap = u32::from(pair[1]) - u32::from(pair[0]);
            if gap > widest {
                widest = gap;
                start = i + 1;
            }
        }
    }
    LostToNackPairs {
        sorted: lost,
        start,
        done: 0,
    }
}

/// Builds a generic NACK from explicit FCI entries; returns the bytes written.
pub fn build_nack_pairs(
    sender_ssrc: u32,
    media_ssrc: u32,
    pairs: &[NackPair],
    out: &mut [u8],
) -> Result<usize> {
    if pairs.is_empty() {
        return Err(malformed(L_NACK, "no entries"));
    }
    let total = feedback_total(L_NACK, pairs.len().saturating_mul(NACK_ENTRY_LEN))?;
    let mut w = Writer::start(L_NACK, out, total)?;
    write_feedback_header(&mut w, PT_RTPFB, FMT_NACK, total, sender_ssrc, media_ssrc)?;
    for pair in pairs {
        w.u16(pair.pid)?;
        w.u16(pair.blp)?;
    }
    Ok(w.finish())
}

/// Builds a generic NACK reporting `lost` (sorted in place, duplicates
/// allowed) with the fewest entries; returns the bytes written.
pub fn build_nack(
    sender_ssrc: u32,
    media_ssrc: u32,
    lost: &mut [u16],
    out: &mut [u8],
) -> Result<usize> {
    if lost.is_empty() {
        return Err(malformed(L_NACK, "no lost packets"));
    }
    let entries = nack_pairs_from_lost(lost).count();
    let total = feedback_total(L_NACK, entries * NACK_ENTRY_LEN)?;
    let mut w = Writer::start(L_NACK, out, total)?;
    write_feedback_header(&mut w, PT_RTPFB, FMT_NACK, total, sender_ssrc, media_ssrc)?;
    // Already sorted: this second pass only re-walks.
    for pair in nack_pairs_from_lost(lost) {
        w.u16(pair.pid)?;
        w.u16(pair.blp)?;
    }
    Ok(w.finish())
}

// ---------------------------------------------------------------------------
// Transport-wide congestion control feedback
// ---------------------------------------------------------------------------

/// One packet's entry in transport-cc feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TwccPacket {
    /// Transport-wide sequence number.
    pub seq: u16,
    /// `None` if not received; otherwise the arrival time minus the previous
    /// received packet's (or, for the first, minus the reference time), in
    /// microseconds, a multiple of [`TWCC_DELTA_TICK_US`].
    pub delta_us: Option<i32>,
}

const SYM_NOT_RECEIVED: u8 = 0;
const SYM_SMALL_DELTA: u8 = 1;
const SYM_LARGE_DELTA: u8 = 2;

/// Number of packet statuses a chunk describes.
fn chunk_len(chunk: u16) -> usize {
    if chunk & 0x8000 == 0 {
        usize::from(chunk & 0x1FFF)
    } else if chunk & 0x4000 == 0 {
        14
    } else {
        7
    }
}

/// Status symbol `index` of a chunk (`index < chunk_len(chunk)`).
fn chunk_symbol(chunk: u16, index: usize) -> u8 {
    if chunk & 0x8000 == 0 {
        ((chunk >> 13) & 0x3) as u8
    } else if chunk & 0x4000 == 0 {
        13usize
            .checked_sub(index)
            .map_or(0, |shift| ((chunk >> shift) & 0x1) as u8)
    } else {
        12usize
            .checked_sub(index * 2)
            .map_or(0, |shift| ((chunk >> shift) & 0x3) as u8)
    }
}

/// Offset in the FCI where the receive deltas start, after enough chunks
/// to describe `status_count` packets.
fn twcc_chunks_end(fci: &[u8], status_count: u16) -> Result<usize> {
    let mut at = TWCC_CHUNKS_AT;
    let mut described = 0usize;
    while described < usize::from(status_count) {
        let chunk = read_be16(fci, at).ok_or(truncated(
            L_TWCC,
            FEEDBACK_HEADER_LEN + at + 2,
            FEEDBACK_HEADER_LEN + fci.len(),
        ))?;
        at += 2;
        described += chunk_len(chunk);
    }
    Ok(at)
}

/// Iterator over the packets of transport-cc feedback.
#[derive(Debug, Clone)]
pub struct TwccPackets<'a> {
    chunks: &'a [u8],
    deltas: &'a [u8],
    seq: u16,
    remaining: usize,
    chunk: u16,
    chunk_used: usize,
    chunk_size: usize,
}

impl<'a> TwccPackets<'a> {
    fn over(fci: &'a [u8], chunks_end: usize) -> Self {
        Self {
            chunks: fci.get(TWCC_CHUNKS_AT..chunks_end).unwrap_or_default(),
            deltas: fci.get(chunks_end..).unwrap_or_default(),
            seq: read_be16(fci, 0).unwrap_or(0),
            remaining: read_be16(fci, 2).map_or(0, usize::from),
            chunk: 0,
            chunk_used: 0,
            chunk_size: 0,
        }
    }

    fn step(&mut self) -> Result<Option<TwccPacket>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        while self.chunk_used >= self.chunk_size {
            let chunk =
                read_be16(self.chunks, 0).ok_or(malformed(L_TWCC, "status chunks end early"))?;
            self.chunks = self.chunks.get(2..).unwrap_or_default();
            self.chunk = chunk;
            self.chunk_used = 0;
            self.chunk_size = chunk_len(chunk);
        }
        let symbol = chunk_symbol(self.chunk, self.chunk_used);
        self.chunk_used += 1;
        let delta_us = match symbol {
            SYM_NOT_RECEIVED => None,
            SYM_SMALL_DELTA => {
                let (&tick, rest) = self
                    .deltas
                    .split_first()
                    .ok_or(malformed(L_TWCC, "receive deltas end early"))?;
                self.deltas = rest;
                Some(i32::from(tick) * TWCC_DELTA_TICK_US)
            }
            SYM_LARGE_DELTA => {
                let ticks = read_be16(self.deltas, 0)
                    .ok_or(malformed(L_TWCC, "receive deltas end early"))?
                    as i16;
                self.deltas = self.deltas.get(2..).unwrap_or_default();
                Some(i32::from(ticks) * TWCC_DELTA_TICK_US)
            }
            _ => return Err(malformed(L_TWCC, "reserved packet status symbol")),
        };
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        self.remaining -= 1;
        Ok(Some(TwccPacket { seq, delta_us }))
    }
}

impl Iterator for TwccPackets<'_> {
    type Item = TwccPacket;

    fn next(&mut self) -> Option<TwccPacket> {
        self.step().ok().flatten()
    }
}

/// A view of transport-wide congestion control feedback (RTPFB FMT 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportCc<T> {
    feedback: Feedback<T>,
    chunks_end: usize,
}

feedback_common!(TransportCc);

impl<T: AsRef<[u8]>> TransportCc<T> {
    /// Validates the header, every status chunk and every receive delta.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let feedback = Feedback::expecting(L_TWCC, buffer, PT_RTPFB, FMT_TRANSPORT_CC)?;
        let fci = feedback.fci();
        if fci.len() < TWCC_CHUNKS_AT {
            return Err(truncated(
                L_TWCC,
                FEEDBACK_HEADER_LEN + TWCC_CHUNKS_AT,
                FEEDBACK_HEADER_LEN + fci.len(),
            ));
        }
        let status_count = be16(fci, 2);
        let chunks_end = twcc_chunks_end(fci, status_count)?;
        let mut walk = TwccPackets::over(fci, chunks_end);
        while walk.step()?.is_some() {}
        // Only the zero padding to the next word may follow the deltas.
        if walk.deltas.len() > 3 {
            return Err(malformed(L_TWCC, "bytes after the receive deltas"));
        }
        Ok(Self {
            feedback,
            chunks_end,
        })
    }

    /// Sequence number of the first packet described.
    pub fn base_seq(&self) -> u16 {
        be16(self.feedback.fci(), 0)
    }

    /// Number of packets described.
    pub fn status_count(&self) -> u16 {
        be16(self.feedback.fci(), 2)
    }

    /// Reference time in units of 64 ms (signed 24-bit).
    pub fn reference_time(&self) -> i32 {
        sign_extend_24(be32(self.feedback.fci(), 4) >> 8)
    }

    /// Reference time in microseconds.
    pub fn reference_time_us(&self) -> i64 {
        i64::from(self.reference_time()) * TWCC_REFERENCE_TICK_US
    }

    /// Feedback packet count, for detecting lost feedback.
    pub fn fb_pkt_count(&self) -> u8 {
        self.feedback.fci()[7]
    }

    /// Iterator over every described packet, in sequence order.
    pub fn packets(&self) -> TwccPackets<'_> {
        TwccPackets::over(self.feedback.fci(), self.chunks_end)
    }

    /// Every described packet, collected.
    pub fn packet_vec(&self) -> Vec<TwccPacket> {
        self.packets().collect()
    }
}

fn twcc_symbol(packet: &TwccPacket) -> Result<u8> {
    let Some(delta) = packet.delta_us else {
        return Ok(SYM_NOT_RECEIVED);
    };
    if delta % TWCC_DELTA_TICK_US != 0 {
        return Err(malformed(
            L_TWCC,
            "receive delta is not a multiple of 250 us",
        ));
    }
    let ticks = delta / TWCC_DELTA_TICK_US;
    if (0..=i32::from(u8::MAX)).contains(&ticks) {
        Ok(SYM_SMALL_DELTA)
    } else if i16::try_from(ticks).is_ok() {
        Ok(SYM_LARGE_DELTA)
    } else {
        Err(malformed(L_TWCC, "receive delta out of range"))
    }
}

/// Status symbol of an already validated packet.
fn checked_symbol(packet: &TwccPacket) -> u8 {
    twcc_symbol(packet).unwrap_or(SYM_NOT_RECEIVED)
}

/// Picks the chunk that describes the most statuses from the start of
/// `packets` (already validated); returns it and how many statuses it covers.
fn next_twcc_chunk(packets: &[TwccPacket]) -> (u16, usize) {
    let Some(first) = packets.first().map(checked_symbol) else {
        return (0, 0);
    };
    let symbols = || packets.iter().map(checked_symbol);
    let run = symbols()
        .take(TWCC_MAX_RUN)
        .take_while(|&s| s == first)
        .count();
    let one_bit = packets.len().min(14);
    let one_bit_fits = symbols().take(one_bit).all(|s| s <= SYM_SMALL_DELTA);
    let two_bit = packets.len().min(7);
    if one_bit_fits && one_bit > run {
        let mut chunk = 0x8000u16;
        for (i, s) in symbols().take(one_bit).enumerate() {
            chunk |= u16::from(s) << (13 - i);
        }
        (chunk, one_bit)
    } else if !one_bit_fits && two_bit > run {
        let mut chunk = 0xC000u16;
        for (i, s) in symbols().take(two_bit).enumerate() {
            chunk |= u16::from(s) << (12 - 2 * i);
        }
        (chunk, two_bit)
    } else {
        ((u16::from(first) << 13) | run as u16, run)
    }
}

/// Iterator over the status chunks that describe `packets`.
struct TwccChunks<'a> {
    rest: &'a [TwccPacket],
}

impl Iterator for TwccChunks<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        let (chunk, covered) = next_twcc_chunk(self.rest);
        if covered == 0 {
            return None;
        }
        self.rest = self.rest.get(covered..).unwrap_or_default();
        Some(chunk)
    }
}

/// Checks that `packets` are consecutive with encodable deltas; returns the
/// number of receive delta bytes they need.
fn twcc_delta_bytes(packets: &[TwccPacket]) -> Result<usize> {
    let mut delta_bytes = 0usize;
    let mut expected = packets.first().map_or(0, |p| p.seq);
    for packet in packets {
        if packet.seq != expected {
            return Err(malformed(L_TWCC, "sequence numbers are not consecutive"));
        }
        expected = expected.wrapping_add(1);
        // A symbol's value is also the size of its receive delta.
        delta_bytes += usize::from(twcc_symbol(packet)?);
    }
    Ok(delta_bytes)
}

/// Builds transport-cc feedback for consecutive packets starting at
/// `packets[0].seq`; returns the bytes written.
///
/// `reference_time` is in units of 64 ms and must fit 24 signed bits;
/// receive deltas must be multiples of 250 µs within a signed 16-bit count of
/// those. Zero bytes pad the FCI to a word, so the packet may sit anywhere in
/// a compound.
pub fn build_transport_cc(
    sender_ssrc: u32,
    media_ssrc: u32,
    reference_time: i32,
    fb_pkt_count: u8,
    packets: &[TwccPacket],
    out: &mut [u8],
) -> Result<usize> {
    let status_count =
        u16::try_from(packets.len()).map_err(|_| malformed(L_TWCC, "more than 65535 packets"))?;
    if !(-(1 << 23)..(1 << 23)).contains(&reference_time) {
        return Err(malformed(L_TWCC, "reference time exceeds 24 bits"));
    }
    let delta_bytes = twcc_delta_bytes(packets)?;
    let chunks = TwccChunks { rest: packets }.count();
    let fci_len = (TWCC_CHUNKS_AT + chunks * 2 + delta_bytes).next_multiple_of(4);
    let total = feedback_total(L_TWCC, fci_len)?;
    let mut w = Writer::start(L_TWCC, out, total)?;
    write_feedback_header(
        &mut w,
        PT_RTPFB,
        FMT_TRANSPORT_CC,
        total,
        sender_ssrc,
        media_ssrc,
    )?;
    w.u16(packets.first().map_or(0, |p| p.seq))?;
    w.u16(status_count)?;
    w.u32(((reference_time as u32) << 8) | u32::from(fb_pkt_count))?;
    for chunk in (TwccChunks { rest: packets }) {
        w.u16(chunk)?;
    }
    for packet in packets {
        let ticks = packet.delta_us.unwrap_or(0) / TWCC_DELTA_TICK_US;
        match checked_symbol(packet) {
            SYM_SMALL_DELTA => w.u8(ticks as u8)?,
            SYM_LARGE_DELTA => w.u16(ticks as i16 as u16)?,
            _ => {}
        }
    }
    let pad = total - w.pos;
    w.zeros(pad)?;
    Ok(w.finish())
}

// ---------------------------------------------------------------------------
// PLI, FIR, REMB
// ---------------------------------------------------------------------------

/// A view of a picture loss indication (PSFB FMT 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pli<T> {
    feedback: Feedback<T>,
}

feedback_common!(Pli);

impl<T: AsRef<[u8]>> Pli<T> {
    /// Validates the feedback header; PLI has no FCI.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let feedback = Feedback::expecting(L_PLI, buffer, PT_PSFB, FMT_PLI)?;
        Ok(Self { feedback })
    }
}

/// Builds a PLI; returns the bytes written.
pub fn build_pli(sender_ssrc: u32, media_ssrc: u32, out: &mut [u8]) -> Result<usize> {
    let total = FEEDBACK_HEADER_LEN;
    let mut w = Writer::start(L_PLI, out, total)?;
    write_feedback_header(&mut w, PT_PSFB, FMT_PLI, total, sender_ssrc, media_ssrc)?;
    Ok(w.finish())
}

/// One FIR entry: the source asked for a key frame and the request number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FirEntry {
    /// SSRC of the media sender that should send a decoder refresh point.
    pub ssrc: u32,
    /// Command sequence number, incremented per new request.
    pub seq_nr: u8,
}

/// Iterator over the entries of a FIR.
#[derive(Debug, Clone)]
pub struct FirEntries<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for FirEntries<'_> {
    type Item = FirEntry;

    fn next(&mut self) -> Option<FirEntry> {
        let c = self.chunks.next()?;
        Some(FirEntry {
            ssrc: read_be32(c, 0)?,
            seq_nr: *c.get(4)?,
        })
    }
}

/// A view of a full intra request (PSFB FMT 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fir<T> {
    feedback: Feedback<T>,
}

feedback_common!(Fir);

impl<T: AsRef<[u8]>> Fir<T> {
    /// Validates the feedback header and a non-empty list of 8-byte entries.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let feedback = Feedback::expecting(L_FIR, buffer, PT_PSFB, FMT_FIR)?;
        let fci = feedback.fci().len();
        if fci == 0 || !fci.is_multiple_of(FIR_ENTRY_LEN) {
            return Err(malformed(L_FIR, "FCI is not a non-empty list of entries"));
        }
        Ok(Self { feedback })
    }

    /// Iterator over the entries.
    pub fn entries(&self) -> FirEntries<'_> {
        FirEntries {
            chunks: self.feedback.fci().chunks_exact(FIR_ENTRY_LEN),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Fir<T> {
    /// Rewrites the SSRC of entry `index`; returns false if there is no such entry.
    pub fn set_entry_ssrc(&mut self, index: usize, ssrc: u32) -> bool {
        let end = self.feedback.packet.end;
        let at = index
            .saturating_mul(FIR_ENTRY_LEN)
            .saturating_add(FEEDBACK_HEADER_LEN);
        if at.saturating_add(FIR_ENTRY_LEN) > end {
            return false;
        }
        set_be32(self.feedback.packet.raw_mut(), at, ssrc);
        true
    }
}

/// Builds a FIR (media SSRC 0, as RFC 5104 requires); returns the bytes written.
pub fn build_fir(sender_ssrc: u32, entries: &[FirEntry], out: &mut [u8]) -> Result<usize> {
    if entries.is_empty() {
        return Err(malformed(L_FIR, "no entries"));
    }
    let total = feedback_total(L_FIR, entries.len().saturating_mul(FIR_ENTRY_LEN))?;
    let mut w = Writer::start(L_FIR, out, total)?;
    write_feedback_header(&mut w, PT_PSFB, FMT_FIR, total, sender_ssrc, 0)?;
    for entry in entries {
        w.u32(entry.ssrc)?;
        w.u8(entry.seq_nr)?;
        w.zeros(3)?;
    }
    Ok(w.finish())
}

/// A view of a receiver estimated maximum bitrate message (PSFB FMT 15, "REMB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remb<T> {
    feedback: Feedback<T>,
}

feedback_common!(Remb);

fn is_remb_fci(fci: &[u8]) -> bool {
    fci.get(..4) == Some(&REMB_ID[..])
}

impl<T: AsRef<[u8]>> Remb<T> {
    /// Validates the feedback header, identifier and SSRC list.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let feedback = Feedback::expecting(L_REMB, buffer, PT_PSFB, FMT_AFB)?;
        let fci = feedback.fci();
        if fci.len() < REMB_SSRCS_AT {
            return Err(truncated(
                L_REMB,
                FEEDBACK_HEADER_LEN + REMB_SSRCS_AT,
                FEEDBACK_HEADER_LEN + fci.len(),
            ));
        }
        if !is_remb_fci(fci) {
            return Err(malformed(L_REMB, "missing REMB identifier"));
        }
        let need = REMB_SSRCS_AT + usize::from(fci[4]) * 4;
        if need > fci.len() {
            return Err(truncated(
                L_REMB,
                FEEDBACK_HEADER_LEN + need,
                FEEDBACK_HEADER_LEN + fci.len(),
            ));
        }
        Ok(Self { feedback })
    }

    /// Number of SSRCs the estimate applies to.
    pub fn ssrc_count(&self) -> u8 {
        self.feedback.fci()[4]
    }

    /// The 6-bit bitrate exponent.
    pub fn exponent(&self) -> u8 {
        self.feedback.fci()[5] >> 2
    }

    /// The 18-bit bitrate mantissa.
    pub fn mantissa(&self) -> u32 {
        be32(self.feedback.fci(), 4) & 0x3_FFFF
    }

    /// Estimated maximum bitrate in bits per second (saturating at `u64::MAX`).
    pub fn bitrate_bps(&self) -> u64 {
        let value = u128::from(self.mantissa()) << self.exponent();
        u64::try_from(value).unwrap_or(u64::MAX)
    }

    /// Iterator over the SSRCs the estimate applies to.
    pub fn ssrcs(&self) -> Ssrcs<'_> {
        let end = REMB_SSRCS_AT + usize::from(self.ssrc_count()) * 4;
        Ssrcs::over(
            self.feedback
                .fci()
                .get(REMB_SSRCS_AT..end)
                .unwrap_or_default(),
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Remb<T> {
    /// Rewrites SSRC `index` of the list; returns false if there is no such entry.
    pub fn set_ssrc_entry(&mut self, index: usize, ssrc: u32) -> bool {
        if index >= usize::from(self.ssrc_count()) {
            return false;
        }
        let at = FEEDBACK_HEADER_LEN + REMB_SSRCS_AT + index * 4;
        set_be32(self.feedback.packet.raw_mut(), at, ssrc);
        true
    }
}

/// Builds a REMB; the bitrate is rounded down to what 18 mantissa bits can
/// carry. Returns the bytes written.
pub fn build_remb(
    sender_ssrc: u32,
    bitrate_bps: u64,
    ssrcs: &[u32],
    out: &mut [u8],
) -> Result<usize> {
    let count = u8::try_from(ssrcs.len()).map_err(|_| malformed(L_REMB, "more than 255 SSRCs"))?;
    let significant = u64::BITS - bitrate_bps.leading_zeros();
    let exponent = significant.saturating_sub(REMB_MANTISSA_BITS);
    let mantissa = (bitrate_bps >> exponent) as u32;
    let total = feedback_total(L_REMB, REMB_SSRCS_AT + ssrcs.len() * 4)?;
    let mut w = Writer::start(L_REMB, out, total)?;
    write_feedback_header(&mut w, PT_PSFB, FMT_AFB, total, sender_ssrc, 0)?;
    w.bytes(&REMB_ID)?;
    w.u8(count)?;
    w.u8(((exponent as u8) << 2) | ((mantissa >> 16) as u8 & 0x3))?;
    w.u16(mantissa as u16)?;
    for &ssrc in ssrcs {
        w.u32(ssrc)?;
    }
    Ok(w.finish())
}

// ---------------------------------------------------------------------------
// Typed packets and compound iteration
// ---------------------------------------------------------------------------

/// One RTCP packet, classified by payload type and FMT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<T> {
    /// Sender report.
    SenderReport(SenderReport<T>),
    /// Receiver report.
    ReceiverReport(ReceiverReport<T>),
    /// Source description.
    Sdes(Sdes<T>),
    /// Goodbye.
    Bye(Bye<T>),
    /// Application-defined.
    App(App<T>),
    /// Generic NACK.
    Nack(Nack<T>),
    /// Transport-wide congestion control feedback.
    TransportCc(TransportCc<T>),
    /// Picture loss indication.
    Pli(Pli<T>),
    /// Full intra request.
    Fir(Fir<T>),
    /// Receiver estimated maximum bitrate.
    Remb(Remb<T>),
    /// Any other RTPFB or PSFB message.
    Feedback(Feedback<T>),
    /// Any other payload type (e.g. XR), header checked only.
    Other(Packet<T>),
}

impl<T: AsRef<[u8]>> RtcpPacket<T> {
    /// Classifies and validates the packet at the start of `buffer`.
    pub fn parse(buffer: T) -> Result<Self> {
        let (pt, fmt, remb) = {
            let raw = buffer.as_ref();
            let f = frame(L_RTCP, raw)?;
            let fci = raw.get(FEEDBACK_HEADER_LEN..f.end).unwrap_or_default();
            (raw[1], raw[0] & 0x1F, is_remb_fci(fci))
        };
        Ok(match (pt, fmt) {
            (PT_SR, _) => Self::SenderReport(SenderReport::new_checked(buffer)?),
            (PT_RR, _) => Self::ReceiverReport(ReceiverReport::new_checked(buffer)?),
            (PT_SDES, _) => Self::Sdes(Sdes::new_checked(buffer)?),
            (PT_BYE, _) => Self::Bye(Bye::new_checked(buffer)?),
            (PT_APP, _) => Self::App(App::new_checked(buffer)?),
            (PT_RTPFB, FMT_NACK) => Self::Nack(Nack::new_checked(buffer)?),
            (PT_RTPFB, FMT_TRANSPORT_CC) => Self::TransportCc(TransportCc::new_checked(buffer)?),
            (PT_PSFB, FMT_PLI) => Self::Pli(Pli::new_checked(buffer)?),
            (PT_PSFB, FMT_FIR) => Self::Fir(Fir::new_checked(buffer)?),
            (PT_PSFB, FMT_AFB) if remb => Self::Remb(Remb::new_checked(buffer)?),
            (PT_RTPFB | PT_PSFB, _) => Self::Feedback(Feedback::new_checked(buffer)?),
            _ => Self::Other(Packet::new_checked(buffer)?),
        })
    }

    /// The common header view.
    pub fn packet(&self) -> &Packet<T> {
        match self {
            Self::SenderReport(p) => &p.packet,
            Self::ReceiverReport(p) => &p.packet,
            Self::Sdes(p) => &p.packet,
            Self::Bye(p) => &p.packet,
            Self::App(p) => &p.packet,
            Self::Nack(p) => &p.feedback.packet,
            Self::TransportCc(p) => &p.feedback.packet,
            Self::Pli(p) => &p.feedback.packet,
            Self::Fir(p) => &p.feedback.packet,
            Self::Remb(p) => &p.feedback.packet,
            Self::Feedback(p) => &p.packet,
            Self::Other(p) => p,
        }
    }

    /// The payload type.
    pub fn packet_type(&self) -> u8 {
        self.packet().packet_type()
    }

    /// The packet's bytes, padding included.
    pub fn as_bytes(&self) -> &[u8] {
        self.packet().as_bytes()
    }

    /// The common feedback view, if this is an RTPFB or PSFB packet.
    pub fn feedback(&self) -> Option<&Feedback<T>> {
        match self {
            Self::Nack(p) => Some(&p.feedback),
            Self::TransportCc(p) => Some(&p.feedback),
            Self::Pli(p) => Some(&p.feedback),
            Self::Fir(p) => Some(&p.feedback),
            Self::Remb(p) => Some(&p.feedback),
            Self::Feedback(p) => Some(p),
            _ => None,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RtcpPacket<T> {
    /// The common feedback view for rewriting SSRCs, if this is feedback.
    pub fn feedback_mut(&mut self) -> Option<&mut Feedback<T>> {
        match self {
            Self::Nack(p) => Some(&mut p.feedback),
            Self::TransportCc(p) => Some(&mut p.feedback),
            Self::Pli(p) => Some(&mut p.feedback),
            Self::Fir(p) => Some(&mut p.feedback),
            Self::Remb(p) => Some(&mut p.feedback),
            Self::Feedback(p) => Some(p),
            _ => None,
        }
    }
}

/// Length of the packet at the start of `buf`, checked to fit.
fn next_packet_len(buf: &[u8]) -> Result<usize> {
    frame(L_COMPOUND, buf).map(|f| f.total)
}

/// Iterator over the packets of a compound RTCP packet.
///
/// Yields one typed view per packet. The first malformed packet (bad version,
/// length past the end, trailing bytes that are no packet, or a body that does
/// not parse) is yielded as an error and ends the iteration.
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Compound<'a> {
    /// Bytes not yet walked.
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<RtcpPacket<&'a [u8]>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let split = next_packet_len(self.rest).and_then(|len| {
            self.rest
                .split_at_checked(len)
                .ok_or(malformed(L_COMPOUND, "packet overruns the buffer"))
        });
        let parsed = split.and_then(|(head, tail)| {
            self.rest = tail;
            RtcpPacket::parse(head)
        });
        if parsed.is_err() {
            self.failed = true;
        }
        Some(parsed)
    }
}

/// Walks the packets of a compound RTCP packet.
pub fn iter_compound(buf: &[u8]) -> Compound<'_> {
    Compound {
        rest: buf,
        failed: false,
    }
}

/// Iterator over the packets of a compound RTCP packet, with mutable views
/// for in-place rewriting. Errors end it as for [`Compound`].
#[derive(Debug)]
pub struct CompoundMut<'a> {
    rest: &'a mut [u8],
    failed: bool,
}

impl<'a> Iterator for CompoundMut<'a> {
    type Item = Result<RtcpPacket<&'a mut [u8]>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let rest = core::mem::take(&mut self.rest);
        let parsed = match next_packet_len(rest) {
            Ok(len) => match rest.split_at_mut_checked(len) {
                Some((head, tail)) => {
                    self.rest = tail;
                    RtcpPacket::parse(head)
                }
                None => Err(malformed(L_COMPOUND, "packet overruns the buffer")),
            },
            Err(e) => Err(e),
        };
        if parsed.is_err() {
            self.failed = true;
        }
        Some(parsed)
    }
}

/// Walks the packets of a compound RTCP packet with mutable views.
pub fn iter_compound_mut(buf: &mut [u8]) -> CompoundMut<'_> {
    CompoundMut {
        rest: buf,
        failed: false,
    }
}

/// Validates a compound RTCP packet along the lines of RFC 3550 A.2 and
/// returns the number of packets in it.
///
/// Every packet must be version 2 and parse as its type; the lengths must add
/// up to the buffer exactly; only the last packet may be padded; and unless
/// `allow_reduced_size` (RFC 5506), the first packet must be an SR or RR.
pub fn validate_compound(buf: &[u8], allow_reduced_size: bool) -> Result<usize> {
    if buf.is_empty() {
        return Err(truncated(L_COMPOUND, HEADER_LEN, 0));
    }
    let mut walk = iter_compound(buf);
    let mut count = 0usize;
    while let Some(item) = walk.next() {
        let packet = item?;
        if count == 0 && !allow_reduced_size && !matches!(packet.packet_type(), PT_SR | PT_RR) {
            return Err(malformed(L_COMPOUND, "first packet is neither SR nor RR"));
        }
        if packet.packet().padding() && !walk.remaining().is_empty() {
            return Err(malformed(
                L_COMPOUND,
                "padding on a packet that is not the last",
            ));
        }
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Runs a builder into a roomy buffer and returns exactly what it wrote.
    fn build(f: impl FnOnce(&mut [u8]) -> Result<usize>) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000];
        let n = f(&mut buf).expect("build");
        buf.truncate(n);
        buf
    }

    fn block(ssrc: u32, lost: i32) -> ReportBlockRepr {
        ReportBlockRepr {
            ssrc,
            fraction_lost: 42,
            cumulative_lost: lost,
            extended_highest_seq: 0x0001_FFFE,
            jitter: 77,
            last_sr: 0xDEAD_BEEF,
            delay_since_last_sr: 65_536,
        }
    }

    fn sample_sr() -> Vec<u8> {
        let info = SenderInfo {
            ntp_timestamp: 0xE5A1_B2C3_4000_0000,
            rtp_timestamp: 90_000,
            packet_count: 1234,
            octet_count: 987_654,
        };
        build(|o| build_sender_report(0x1111_1111, &info, &[block(0xA, -5), block(0xB, 100)], o))
    }

    fn sample_twcc_packets() -> Vec<TwccPacket> {
        let mut packets = Vec::new();
        let deltas: Vec<Option<i32>> = vec![
            Some(0),
            Some(250),
            None,
            Some(63_750),
            Some(64_000),
            Some(-250),
            None,
            None,
            Some(8_191_750),
            Some(-8_192_000),
        ];
        for (i, d) in deltas.into_iter().enumerate() {
            packets.push(TwccPacket {
                seq: 65_530u16.wrapping_add(i as u16),
                delta_us: d,
            });
        }
        // A long run of losses and a long run of small deltas.
        for i in 0..9000u16 {
            packets.push(TwccPacket {
                seq: 65_530u16.wrapping_add(10 + i),
                delta_us: None,
            });
        }
        for i in 0..40u16 {
            packets.push(TwccPacket {
                seq: 65_530u16.wrapping_add(9010 + i),
                delta_us: Some(1000),
            });
        }
        packets
    }

    /// Every kind of packet this module builds, each on its own.
    fn all_packets() -> Vec<Vec<u8>> {
        let items = [
            SdesItem {
                kind: SDES_CNAME,
                value: b"user@host",
            },
            SdesItem {
                kind: SDES_TOOL,
                value: b"sb",
            },
        ];
        let exact = [SdesItem {
            kind: SDES_NAME,
            value: b"ab",
        }];
        vec![
            sample_sr(),
            build(|o| build_receiver_report(0x2222, &[block(1, 0), block(2, -8_388_608)], o)),
            build(|o| build_receiver_report(0x2222, &[], o)),
            build(|o| {
                build_sdes(
                    &[
                        SdesChunkRepr {
                            ssrc: 1,
                            items: &items,
                        },
                        SdesChunkRepr {
                            ssrc: 2,
                            items: &exact,
                        },
                    ],
                    o,
                )
            }),
            build(|o| build_bye(&[1, 2, 3], Some(b"shutdown"), o)),
            build(|o| build_bye(&[9], None, o)),
            build(|o| build_app(3, 7, *b"SWBD", &[1, 2, 3, 4, 5, 6, 7, 8], o)),
            build(|o| build_nack(5, 6, &mut [100, 101, 117, 118, 300], o)),
            build(|o| build_transport_cc(5, 6, -3, 9, &sample_twcc_packets(), o)),
            build(|o| build_pli(5, 6, o)),
            build(|o| {
                build_fir(
                    5,
                    &[
                        FirEntry { ssrc: 6, seq_nr: 1 },
                        FirEntry {
                            ssrc: 7,
                            seq_nr: 200,
                        },
                    ],
                    o,
                )
            }),
            build(|o| build_remb(5, 2_500_000, &[6, 7, 8], o)),
        ]
    }

    /// Touches every accessor of a parsed packet so a bad bound would panic here.
    fn exercise<T: AsRef<[u8]>>(packet: &RtcpPacket<T>) {
        use std::hint::black_box;
        black_box((packet.packet_type(), packet.as_bytes()));
        let p = packet.packet();
        black_box((
            p.payload(),
            p.padding_len(),
            p.count(),
            p.padding(),
            p.total_len(),
        ));
        if let Some(fb) = packet.feedback() {
            black_box((fb.sender_ssrc(), fb.media_ssrc(), fb.fci(), fb.fmt()));
        }
        let block = |b: ReportBlock<&[u8]>| {
            black_box(b.repr());
        };
        match packet {
            RtcpPacket::SenderReport(sr) => {
                black_box((sr.sender_info(), sr.ssrc(), sr.report_count()));
                sr.report_blocks().for_each(block);
                (0..40).filter_map(|i| sr.report_block(i)).for_each(block);
            }
            RtcpPacket::ReceiverReport(rr) => {
                black_box((rr.ssrc(), rr.report_count()));
                rr.report_blocks().for_each(block);
                (0..40).filter_map(|i| rr.report_block(i)).for_each(block);
            }
            RtcpPacket::Sdes(sdes) => {
                black_box(sdes.chunk_count());
                for chunk in sdes.chunks() {
                    black_box((chunk.ssrc(), chunk.cname()));
                    chunk.items().for_each(|i| {
                        black_box(i);
                    });
                }
            }
            RtcpPacket::Bye(bye) => {
                black_box((bye.ssrcs().collect::<Vec<_>>(), bye.reason()));
            }
            RtcpPacket::App(app) => {
                black_box((app.subtype(), app.ssrc(), app.name(), app.data()));
            }
            RtcpPacket::Nack(nack) => {
                black_box((nack.lost_seq_vec(), nack.pairs().count()));
            }
            RtcpPacket::TransportCc(cc) => {
                black_box((cc.reference_time_us(), cc.fb_pkt_count(), cc.base_seq()));
                let packets = cc.packet_vec();
                assert_eq!(packets.len(), usize::from(cc.status_count()));
                black_box(packets);
            }
            RtcpPacket::Pli(pli) => {
                black_box((pli.sender_ssrc(), pli.media_ssrc()));
            }
            RtcpPacket::Fir(fir) => {
                black_box(fir.entries().collect::<Vec<_>>());
            }
            RtcpPacket::Remb(remb) => {
                black_box((remb.bitrate_bps(), remb.ssrcs().collect::<Vec<_>>()));
                black_box((remb.exponent(), remb.mantissa(), remb.ssrc_count()));
            }
            RtcpPacket::Feedback(_) | RtcpPacket::Other(_) => {}
        }
    }

    /// Parses `bytes` every way this module offers; must never panic.
    fn parse_every_way(bytes: &[u8]) {
        for packet in iter_compound(bytes).flatten() {
            exercise(&packet);
        }
        let _ = validate_compound(bytes, false);
        let _ = validate_compound(bytes, true);
        let mut copy = bytes.to_vec();
        for item in iter_compound_mut(&mut copy).flatten() {
            let mut p = item;
            if let Some(fb) = p.feedback_mut() {
                fb.set_media_ssrc(1);
            }
            match &mut p {
                RtcpPacket::SenderReport(sr) => {
                    sr.set_rtp_timestamp(3);
                    if let Some(mut b) = sr.report_block_mut(0) {
                        b.set_ssrc(4);
                    }
                }
                RtcpPacket::ReceiverReport(rr) => {
                    if let Some(mut b) = rr.report_block_mut(30) {
                        b.set_ssrc(4);
                    }
                }
                RtcpPacket::Fir(fir) => {
                    fir.set_entry_ssrc(0, 5);
                    fir.set_entry_ssrc(usize::MAX, 5);
                }
                RtcpPacket::Remb(remb) => {
                    remb.set_ssrc_entry(0, 5);
                    remb.set_ssrc_entry(254, 5);
                }
                _ => {}
            }
        }
        let _ = SenderReport::new_checked(bytes).map(|v| v.report_blocks().count());
        let _ = ReceiverReport::new_checked(bytes).map(|v| v.report_blocks().count());
        let _ = Sdes::new_checked(bytes).map(|v| v.chunks().count());
        let _ = Bye::new_checked(bytes).map(|v| v.reason().is_some());
        let _ = App::new_checked(bytes).map(|v| v.data().len());
        let _ = Nack::new_checked(bytes).map(|v| v.lost_seqs().count());
        let _ = TransportCc::new_checked(bytes).map(|v| v.packets().count());
        let _ = Pli::new_checked(bytes).map(|v| v.media_ssrc());
        let _ = Fir::new_checked(bytes).map(|v| v.entries().count());
        let _ = Remb::new_checked(bytes).map(|v| v.bitrate_bps());
        let _ = Feedback::new_checked(bytes).map(|v| v.fci().len());
        let _ = Packet::new_checked(bytes).map(|v| v.payload().len());
        let _ = ReportBlock::new_checked(bytes).map(|v| v.repr());
    }

    #[test]
    fn sender_report_round_trip() {
        let bytes = sample_sr();
        assert_eq!(bytes.len(), 28 + 2 * 24);
        assert_eq!(bytes[0], 0x82);
        let sr = SenderReport::new_checked(&bytes[..]).unwrap();
        assert_eq!(sr.ssrc(), 0x1111_1111);
        assert_eq!(sr.ntp_timestamp(), 0xE5A1_B2C3_4000_0000);
        assert_eq!(sr.rtp_timestamp(), 90_000);
        assert_eq!(sr.packet_count(), 1234);
        assert_eq!(sr.octet_count(), 987_654);
        assert_eq!(sr.report_count(), 2);
        let blocks: Vec<_> = sr.report_blocks().map(|b| b.repr()).collect();
        assert_eq!(blocks, vec![block(0xA, -5), block(0xB, 100)]);
        assert_eq!(sr.report_block(1).unwrap().cumulative_lost(), 100);
        assert!(sr.report_block(2).is_none());
        assert_eq!(sr.packet().total_len(), bytes.len());
    }

    #[test]
    fn cumulative_lost_is_signed_24_bit_and_clamped() {
        let rr = build(|o| {
            build_receiver_report(
                1,
                &[block(1, i32::MIN), block(2, i32::MAX), block(3, -1)],
                o,
            )
        });
        let rr = ReceiverReport::new_checked(&rr[..]).unwrap();
        let lost: Vec<i32> = rr.report_blocks().map(|b| b.cumulative_lost()).collect();
        assert_eq!(lost, vec![-8_388_608, 8_388_607, -1]);
    }

    #[test]
    fn receiver_report_round_trip() {
        let blocks = [block(1, 0), block(2, -8_388_608), block(3, 8_388_607)];
        let bytes = build(|o| build_receiver_report(0x2222, &blocks, o));
        let rr = ReceiverReport::new_checked(&bytes[..]).unwrap();
        assert_eq!(rr.ssrc(), 0x2222);
        let parsed: Vec<_> = rr.report_blocks().map(|b| b.repr()).collect();
        assert_eq!(parsed, blocks);
        let empty = build(|o| build_receiver_report(7, &[], o));
        assert_eq!(empty.len(), 8);
        assert_eq!(
            ReceiverReport::new_checked(&empty[..])
                .unwrap()
                .report_blocks()
                .count(),
            0
        );
    }

    #[test]
    fn too_many_report_blocks_rejected() {
        let blocks = vec![block(1, 0); 32];
        let mut out = [0u8; 2048];
        assert!(matches!(
            build_receiver_report(1, &blocks, &mut out),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn sdes_round_trip() {
        let a = [
            SdesItem {
                kind: SDES_CNAME,
                value: b"alice@198.18.0.1",
            },
            SdesItem {
                kind: SDES_TOOL,
                value: b"switchboard",
            },
        ];
        // 4 (ssrc) + 2 + 2 = 8: the terminator needs a whole extra word.
        let b = [SdesItem {
            kind: SDES_NAME,
            value: b"ab",
        }];
        let chunks = [
            SdesChunkRepr {
                ssrc: 10,
                items: &a,
            },
            SdesChunkRepr {
                ssrc: 11,
                items: &b,
            },
            SdesChunkRepr {
                ssrc: 12,
                items: &[],
            },
        ];
        let bytes = build(|o| build_sdes(&chunks, o));
        assert_eq!(bytes.len() % 4, 0);
        let sdes = Sdes::new_checked(&bytes[..]).unwrap();
        assert_eq!(sdes.chunk_count(), 3);
        let parsed: Vec<_> = sdes.chunks().collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].ssrc(), 10);
        assert_eq!(parsed[0].cname(), Some(&b"alice@198.18.0.1"[..]));
        assert_eq!(parsed[0].items().collect::<Vec<_>>(), a);
        assert_eq!(parsed[1].items().collect::<Vec<_>>(), b);
        assert_eq!(parsed[1].cname(), None);
        assert_eq!(parsed[2].items().count(), 0);

        let cname = build(|o| build_sdes_cname(99, b"x", o));
        let sdes = Sdes::new_checked(&cname[..]).unwrap();
        assert_eq!(sdes.chunks().next().unwrap().cname(), Some(&b"x"[..]));
    }

    #[test]
    fn sdes_builder_rejects_bad_items() {
        let mut out = [0u8; 1024];
        let long = [0u8; 256];
        let bad = [SdesItem {
            kind: SDES_CNAME,
            value: &long,
        }];
        let end = [SdesItem {
            kind: SDES_END,
            value: b"",
        }];
        for items in [&bad[..], &end[..]] {
            let chunk = [SdesChunkRepr { ssrc: 1, items }];
            assert!(build_sdes(&chunk, &mut out).is_err());
        }
    }

    #[test]
    fn bye_round_trip() {
        let bytes = build(|o| build_bye(&[1, 2, 3], Some(b"camera off"), o));
        let bye = Bye::new_checked(&bytes[..]).unwrap();
        assert_eq!(bye.ssrcs().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(bye.reason(), Some(&b"camera off"[..]));
        let bytes = build(|o| build_bye(&[4], None, o));
        let bye = Bye::new_checked(&bytes[..]).unwrap();
        assert_eq!(bye.ssrcs().collect::<Vec<_>>(), vec![4]);
        assert_eq!(bye.reason(), None);
        let bytes = build(|o| build_bye(&[], Some(b""), o));
        let bye = Bye::new_checked(&bytes[..]).unwrap();
        assert_eq!(bye.reason(), Some(&b""[..]));
    }

    #[test]
    fn app_round_trip() {
        let bytes = build(|o| build_app(17, 0xABCD, *b"SWBD", &[9; 12], o));
        let app = App::new_checked(&bytes[..]).unwrap();
        assert_eq!(app.subtype(), 17);
        assert_eq!(app.ssrc(), 0xABCD);
        assert_eq!(&app.name(), b"SWBD");
        assert_eq!(app.data(), &[9; 12]);
        let mut out = [0u8; 64];
        assert!(build_app(32, 1, *b"SWBD", &[], &mut out).is_err());
        assert!(build_app(1, 1, *b"SWBD", &[1, 2, 3], &mut out).is_err());
    }

    #[test]
    fn nack_round_trip_and_packing() {
        let mut lost = [300u16, 100, 101, 117, 118, 100];
        let bytes = build(|o| build_nack(5, 6, &mut lost, o));
        let nack = Nack::new_checked(&bytes[..]).unwrap();
        assert_eq!((nack.sender_ssrc(), nack.media_ssrc()), (5, 6));
        let pairs: Vec<_> = nack.pairs().collect();
        assert_eq!(
            pairs,
            vec![
                NackPair { pid: 100, blp: 1 },
                NackPair { pid: 117, blp: 1 },
                NackPair { pid: 300, blp: 0 },
            ]
        );
        assert_eq!(nack.lost_seq_vec(), vec![100, 101, 117, 118, 300]);
        // The last bit of BLP reaches PID + 16.
        let bytes = build(|o| build_nack(5, 6, &mut [116, 100], o));
        let nack = Nack::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            nack.pairs().collect::<Vec<_>>(),
            vec![NackPair {
                pid: 100,
                blp: 0x8000
            }]
        );
    }

    #[test]
    fn nack_packs_across_wrap() {
        let mut lost = [0u16, 65_534, 1, 65_535];
        let bytes = build(|o| build_nack(1, 2, &mut lost, o));
        let nack = Nack::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            nack.pairs().collect::<Vec<_>>(),
            vec![NackPair {
                pid: 65_534,
                blp: 0b111
            }]
        );
        assert_eq!(nack.lost_seq_vec(), vec![65_534, 65_535, 0, 1]);
    }

    #[test]
    fn nack_from_explicit_pairs() {
        let pairs = [NackPair {
            pid: 65_535,
            blp: 0xFFFF,
        }];
        let bytes = build(|o| build_nack_pairs(1, 2, &pairs, o));
        let nack = Nack::new_checked(&bytes[..]).unwrap();
        let expected: Vec<u16> = (0..17).map(|i| 65_535u16.wrapping_add(i)).collect();
        assert_eq!(nack.lost_seq_vec(), expected);
        let mut out = [0u8; 64];
        assert!(build_nack_pairs(1, 2, &[], &mut out).is_err());
        assert!(build_nack(1, 2, &mut [], &mut out).is_err());
    }

    #[test]
    fn transport_cc_round_trip() {
        let packets = sample_twcc_packets();
        let bytes = build(|o| build_transport_cc(0xAA, 0xBB, -3, 9, &packets, o));
        assert_eq!(bytes.len() % 4, 0);
        let cc = TransportCc::new_checked(&bytes[..]).unwrap();
        assert_eq!((cc.sender_ssrc(), cc.media_ssrc()), (0xAA, 0xBB));
        assert_eq!(cc.base_seq(), 65_530);
        assert_eq!(usize::from(cc.status_count()), packets.len());
        assert_eq!(cc.reference_time(), -3);
        assert_eq!(cc.reference_time_us(), -192_000);
        assert_eq!(cc.fb_pkt_count(), 9);
        assert_eq!(cc.packet_vec(), packets);
    }

    #[test]
    fn transport_cc_parses_hand_written_chunks() {
        // base 10, 4 packets: a 2-bit vector (small, large, lost, small) then
        // deltas 1 tick, -2 ticks (i16), 255 ticks.
        let mut bytes = vec![0x8F, PT_RTPFB, 0, 6, 0, 0, 0, 1, 0, 0, 0, 2];
        bytes.extend_from_slice(&[0, 10, 0, 4, 0x00, 0x00, 0x10, 7]);
        bytes.extend_from_slice(&[0b1101_1000, 0b0100_0000]);
        bytes.extend_from_slice(&[1, 0xFF, 0xFE, 255, 0, 0]);
        let cc = TransportCc::new_checked(&bytes[..]).unwrap();
        assert_eq!(cc.reference_time(), 0x10);
        assert_eq!(
            cc.packet_vec(),
            vec![
                TwccPacket {
                    seq: 10,
                    delta_us: Some(250)
                },
                TwccPacket {
                    seq: 11,
                    delta_us: Some(-500)
                },
                TwccPacket {
                    seq: 12,
                    delta_us: None
                },
                TwccPacket {
                    seq: 13,
                    delta_us: Some(63_750)
                },
            ]
        );
        // A run-length chunk of 3 "small delta" then a 1-bit vector.
        let mut bytes = vec![0x8F, PT_RTPFB, 0, 6, 0, 0, 0, 1, 0, 0, 0, 2];
        bytes.extend_from_slice(&[0xFF, 0xFF, 0, 5, 0x80, 0x00, 0x00, 0]);
        bytes.extend_from_slice(&[0x20, 0x03, 0b1001_0000, 0]);
        bytes.extend_from_slice(&[4, 4, 4, 8, 0, 0, 0, 0]);
        let cc = TransportCc::new_checked(&bytes[..]).unwrap();
        assert_eq!(cc.reference_time(), -(1 << 23));
        let got: Vec<_> = cc.packets().map(|p| (p.seq, p.delta_us)).collect();
        assert_eq!(
            got,
            vec![
                (65_535, Some(1000)),
                (0, Some(1000)),
                (1, Some(1000)),
                (2, None),
                (3, Some(2000)),
            ]
        );
    }

    #[test]
    fn transport_cc_builder_rejects_unencodable_input() {
        let mut out = [0u8; 256];
        let gap = [
            TwccPacket {
                seq: 1,
                delta_us: None,
            },
            TwccPacket {
                seq: 3,
                delta_us: None,
            },
        ];
        assert!(build_transport_cc(1, 2, 0, 0, &gap, &mut out).is_err());
        let odd = [TwccPacket {
            seq: 1,
            delta_us: Some(100),
        }];
        assert!(build_transport_cc(1, 2, 0, 0, &odd, &mut out).is_err());
        let big = [TwccPacket {
            seq: 1,
            delta_us: Some(32_768 * 250),
        }];
        assert!(build_transport_cc(1, 2, 0, 0, &big, &mut out).is_err());
        assert!(build_transport_cc(1, 2, 1 << 23, 0, &[], &mut out).is_err());
        let empty = build(|o| build_transport_cc(1, 2, 0, 0, &[], o));
        assert_eq!(
            TransportCc::new_checked(&empty[..])
                .unwrap()
                .packets()
                .count(),
            0
        );
    }

    #[test]
    fn pli_fir_remb_round_trip() {
        let bytes = build(|o| build_pli(5, 6, o));
        let pli = Pli::new_checked(&bytes[..]).unwrap();
        assert_eq!((pli.sender_ssrc(), pli.media_ssrc()), (5, 6));

        let entries = [
            FirEntry { ssrc: 6, seq_nr: 1 },
            FirEntry {
                ssrc: 7,
                seq_nr: 255,
            },
        ];
        let bytes = build(|o| build_fir(5, &entries, o));
        let fir = Fir::new_checked(&bytes[..]).unwrap();
        assert_eq!(fir.media_ssrc(), 0);
        assert_eq!(fir.entries().collect::<Vec<_>>(), entries);

        let bytes = build(|o| build_remb(5, 2_500_000, &[6, 7], o));
        let remb = Remb::new_checked(&bytes[..]).unwrap();
        assert_eq!(remb.bitrate_bps(), 2_500_000);
        assert_eq!(remb.ssrc_count(), 2);
        assert_eq!(remb.ssrcs().collect::<Vec<_>>(), vec![6, 7]);
        assert_eq!(remb.media_ssrc(), 0);
        let mut bytes = bytes;
        let mut remb = Remb::new_checked(&mut bytes[..]).unwrap();
        assert!(remb.set_ssrc_entry(1, 9));
        assert!(!remb.set_ssrc_entry(2, 9));
        assert!(!remb.set_ssrc_entry(usize::MAX, 9));
        assert_eq!(remb.ssrcs().collect::<Vec<_>>(), vec![6, 9]);
    }

    #[test]
    fn remb_bitrate_encoding() {
        for bitrate in [
            0u64,
            1,
            262_143,
            262_144,
            1_000_001,
            123_456_789_012,
            u64::MAX,
        ] {
            let bytes = build(|o| build_remb(1, bitrate, &[], o));
            let remb = Remb::new_checked(&bytes[..]).unwrap();
            let got = remb.bitrate_bps();
            assert!(got <= bitrate, "{got} > {bitrate}");
            // Rounding down loses less than one part in 2^17.
            assert!(bitrate - got <= bitrate >> 17, "{bitrate} -> {got}");
            assert!(remb.mantissa() < 1 << 18);
        }
        // An exponent of 63 saturates instead of overflowing.
        let mut bytes = build(|o| build_remb(1, 1, &[], o));
        bytes[12 + 5] = 0xFF;
        bytes[12 + 6] = 0xFF;
        bytes[12 + 7] = 0xFF;
        assert_eq!(
            Remb::new_checked(&bytes[..]).unwrap().bitrate_bps(),
            u64::MAX
        );
    }

    fn sample_compound() -> Vec<u8> {
        let mut compound = sample_sr();
        compound.extend(build(|o| build_sdes_cname(0x1111_1111, b"sfu", o)));
        compound.extend(build(|o| build_nack(0x1111_1111, 0x3333, &mut [7, 9], o)));
        compound.extend(build(|o| build_remb(0x1111_1111, 1_500_000, &[0x3333], o)));
        compound.extend(build(|o| {
            build_transport_cc(0x1111_1111, 0x3333, 5, 1, &sample_twcc_packets()[..12], o)
        }));
        compound.extend(build(|o| build_pli(0x1111_1111, 0x3333, o)));
        compound
    }

    #[test]
    fn compound_iteration() {
        let compound = sample_compound();
        assert_eq!(validate_compound(&compound, false), Ok(6));
        let kinds: Vec<u8> = iter_compound(&compound)
            .map(|p| {
                let p = p.unwrap();
                exercise(&p);
                match p {
                    RtcpPacket::SenderReport(_) => 0,
                    RtcpPacket::Sdes(_) => 1,
                    RtcpPacket::Nack(_) => 2,
                    RtcpPacket::Remb(_) => 3,
                    RtcpPacket::TransportCc(_) => 4,
                    RtcpPacket::Pli(_) => 5,
                    _ => 99,
                }
            })
            .collect();
        assert_eq!(kinds, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn every_built_packet_parses_as_itself() {
        for bytes in all_packets() {
            let mut walk = iter_compound(&bytes);
            let packet = walk.next().unwrap().unwrap();
            assert!(walk.next().is_none());
            assert_eq!(packet.as_bytes(), &bytes[..]);
            assert!(!matches!(
                packet,
                RtcpPacket::Feedback(_) | RtcpPacket::Other(_)
            ));
            exercise(&packet);
            assert_eq!(validate_compound(&bytes, true), Ok(1));
        }
    }

    #[test]
    fn reduced_size_needs_the_flag() {
        let pli = build(|o| build_pli(1, 2, o));
        assert!(matches!(
            validate_compound(&pli, false),
            Err(WireError::Malformed { .. })
        ));
        assert_eq!(validate_compound(&pli, true), Ok(1));
    }

    #[test]
    fn in_place_rewrites() {
        let mut compound = sample_compound();
        for packet in iter_compound_mut(&mut compound) {
            match packet.unwrap() {
                RtcpPacket::SenderReport(mut sr) => {
                    sr.set_ssrc(0xCAFE);
                    sr.set_rtp_timestamp(0xFEED);
                    sr.set_ntp_timestamp(42);
                    sr.set_packet_count(1);
                    sr.set_octet_count(2);
                    let mut b = sr.report_block_mut(1).unwrap();
                    b.set_ssrc(0xBEEF);
                    b.set_cumulative_lost(-7);
                    b.set_fraction_lost(1);
                    b.set_extended_highest_seq(2);
                    b.set_jitter(3);
                    b.set_last_sr(4);
                    b.set_delay_since_last_sr(5);
                    assert!(sr.report_block_mut(2).is_none());
                }
                RtcpPacket::Nack(mut nack) => {
                    nack.set_sender_ssrc(0xCAFE);
                    nack.set_media_ssrc(0xD00D);
                }
                mut other => {
                    if let Some(fb) = other.feedback_mut() {
                        fb.set_media_ssrc(0xD00D);
                    }
                }
            }
        }
        let mut walk = iter_compound(&compound);
        let Some(Ok(RtcpPacket::SenderReport(sr))) = walk.next() else {
            panic!("first packet is the SR");
        };
        assert_eq!(sr.ssrc(), 0xCAFE);
        assert_eq!(sr.rtp_timestamp(), 0xFEED);
        assert_eq!(sr.ntp_timestamp(), 42);
        assert_eq!((sr.packet_count(), sr.octet_count()), (1, 2));
        assert_eq!(sr.report_block(0).unwrap().repr(), block(0xA, -5));
        assert_eq!(
            sr.report_block(1).unwrap().repr(),
            ReportBlockRepr {
                ssrc: 0xBEEF,
                fraction_lost: 1,
                cumulative_lost: -7,
                extended_highest_seq: 2,
                jitter: 3,
                last_sr: 4,
                delay_since_last_sr: 5,
            }
        );
        let rest: Vec<_> = walk.map(|p| p.unwrap()).collect();
        for p in &rest {
            if let Some(fb) = p.feedback() {
                assert_eq!(fb.media_ssrc(), 0xD00D);
            }
        }
        let RtcpPacket::Nack(nack) = &rest[1] else {
            panic!("third packet is the NACK");
        };
        assert_eq!(nack.sender_ssrc(), 0xCAFE);
        assert_eq!(nack.lost_seq_vec(), vec![7, 9]);
    }

    #[test]
    fn fir_entry_rewrite() {
        let mut bytes = build(|o| build_fir(5, &[FirEntry { ssrc: 6, seq_nr: 1 }], o));
        let mut fir = Fir::new_checked(&mut bytes[..]).unwrap();
        assert!(fir.set_entry_ssrc(0, 99));
        assert!(!fir.set_entry_ssrc(1, 99));
        assert_eq!(fir.entries().next().unwrap().ssrc, 99);
    }

    #[test]
    fn every_truncation_is_rejected() {
        for bytes in &all_packets() {
            for len in 0..bytes.len() {
                let prefix = &bytes[..len];
                assert!(validate_compound(prefix, true).is_err(), "prefix {len}");
                assert!(RtcpPacket::parse(prefix).is_err(), "prefix {len}");
                parse_every_way(prefix);
            }
        }
        // A compound cut anywhere but between packets fails as a whole.
        let compound = sample_compound();
        let mut boundaries = vec![0];
        for p in iter_compound(&compound) {
            boundaries.push(boundaries.last().unwrap() + p.unwrap().as_bytes().len());
        }
        for len in 0..compound.len() {
            let prefix = &compound[..len];
            let expected_packets = boundaries.iter().position(|&b| b == len);
            match expected_packets {
                Some(0) => assert!(validate_compound(prefix, true).is_err()),
                Some(n) => assert_eq!(validate_compound(prefix, true), Ok(n)),
                None => {
                    assert!(validate_compound(prefix, true).is_err(), "prefix {len}");
                    let last = iter_compound(prefix).last().unwrap();
                    assert!(last.is_err(), "prefix {len}");
                }
            }
            parse_every_way(prefix);
        }
    }

    #[test]
    fn lying_length_fields() {
        // Length field beyond the buffer.
        let mut sr = sample_sr();
        sr[3] += 1;
        assert!(matches!(
            RtcpPacket::parse(&sr[..]),
            Err(WireError::BadLength { .. })
        ));
        sr[2..4].copy_from_slice(&[0xFF, 0xFF]);
        assert!(matches!(
            RtcpPacket::parse(&sr[..]),
            Err(WireError::BadLength { .. })
        ));
        // Report count larger than the length field allows.
        let mut sr = sample_sr();
        sr[0] = 0x83;
        assert!(matches!(
            SenderReport::new_checked(&sr[..]),
            Err(WireError::Truncated { .. })
        ));
        // Shorter length field: the SR no longer holds its blocks.
        let mut sr = sample_sr();
        sr[3] = 8;
        assert!(RtcpPacket::parse(&sr[..]).is_err());
        // SDES count above the chunks present.
        let mut sdes = build(|o| build_sdes_cname(1, b"abc", o));
        sdes[0] = 0x82;
        assert!(Sdes::new_checked(&sdes[..]).is_err());
        // BYE reason length past the end.
        let mut bye = build(|o| build_bye(&[1], Some(b"abc"), o));
        bye[8] = 200;
        assert!(Bye::new_checked(&bye[..]).is_err());
        // REMB announcing more SSRCs than present.
        let mut remb = build(|o| build_remb(1, 1000, &[2], o));
        remb[16] = 3;
        assert!(Remb::new_checked(&remb[..]).is_err());
        // Transport-cc counting more packets than chunks describe.
        let mut cc = build(|o| build_transport_cc(1, 2, 0, 0, &sample_twcc_packets()[..3], o));
        cc[14..16].copy_from_slice(&[0x7F, 0xFF]);
        assert!(TransportCc::new_checked(&cc[..]).is_err());
        // NACK whose FCI is not whole entries (via padding).
        let mut nack = build(|o| build_nack(1, 2, &mut [5], o));
        nack[0] |= 0x20;
        nack[15] = 2;
        assert!(Nack::new_checked(&nack[..]).is_err());
    }

    #[test]
    fn bad_padding_and_version() {
        let mut rr = build(|o| build_receiver_report(1, &[], o));
        rr[0] |= 0x20;
        rr[7] = 0;
        assert!(matches!(
            RtcpPacket::parse(&rr[..]),
            Err(WireError::Malformed { .. })
        ));
        rr[7] = 9;
        assert!(RtcpPacket::parse(&rr[..]).is_err());
        let mut rr = build(|o| build_receiver_report(1, &[], o));
        rr[0] = 0x40;
        assert!(matches!(
            RtcpPacket::parse(&rr[..]),
            Err(WireError::BadVersion { version: 1, .. })
        ));
    }

    #[test]
    fn padding_only_on_the_last_packet() {
        // An RR padded by one word, then a PLI.
        let mut rr = vec![0xA0, PT_RR, 0, 2, 0, 0, 0, 1, 0, 0, 0, 4];
        let parsed = ReceiverReport::new_checked(&rr[..]).unwrap();
        assert_eq!(parsed.packet().padding_len(), 4);
        assert_eq!(validate_compound(&rr, false), Ok(1));
        rr.extend(build(|o| build_pli(1, 2, o)));
        assert!(matches!(
            validate_compound(&rr, false),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn zero_length_packets() {
        assert!(iter_compound(&[]).next().is_none());
        assert!(validate_compound(&[], true).is_err());
        // A header whose length field is 0: four bytes, too short for any body.
        for pt in [PT_SR, PT_RR, PT_SDES, PT_BYE, PT_APP, PT_RTPFB, PT_PSFB] {
            let bytes = [0x81, pt, 0, 0];
            let parsed = RtcpPacket::parse(&bytes[..]);
            if pt == PT_SDES || pt == PT_BYE {
                // One announced item, none present.
                assert!(parsed.is_err(), "pt {pt}");
            } else {
                assert!(parsed.is_err(), "pt {pt}");
            }
            let empty = [0x80, pt, 0, 0];
            let parsed = RtcpPacket::parse(&empty[..]);
            assert_eq!(parsed.is_ok(), pt == PT_SDES || pt == PT_BYE, "pt {pt}");
        }
        // Unknown payload types are passed through with only the header checked.
        let xr = [0x80, 207, 0, 0];
        assert!(matches!(
            RtcpPacket::parse(&xr[..]),
            Ok(RtcpPacket::Other(_))
        ));
    }

    #[test]
    fn trailing_garbage_ends_iteration_with_an_error() {
        for garbage in [
            &[0x80][..],
            &[0, 0, 0, 0],
            &[0x80, 200, 0xFF, 0xFF],
            &[0xFF; 9],
        ] {
            let mut compound = sample_compound();
            compound.extend_from_slice(garbage);
            let items: Vec<_> = iter_compound(&compound).collect();
            assert_eq!(items.len(), 7);
            assert!(items[..6].iter().all(Result::is_ok));
            assert!(items[6].is_err());
            assert!(validate_compound(&compound, false).is_err());
            let mut copy = compound.clone();
            assert_eq!(iter_compound_mut(&mut copy).count(), 7);
        }
    }

    #[test]
    fn malformed_feedback_bodies() {
        // Reserved transport-cc symbol.
        let mut bytes = vec![0x8F, PT_RTPFB, 0, 5, 0, 0, 0, 1, 0, 0, 0, 2];
        bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x01, 0, 0]);
        assert!(TransportCc::new_checked(&bytes[..]).is_err());
        // Missing receive delta.
        bytes[20] = 0x20;
        bytes[22] = 0;
        bytes[3] = 5;
        let mut short = bytes.clone();
        short[20..22].copy_from_slice(&[0x40, 0x01]);
        short.truncate(22);
        short.extend_from_slice(&[0, 0]);
        assert!(TransportCc::new_checked(&short[..]).is_ok());
        // Too many trailing bytes after the deltas.
        let mut long = bytes.clone();
        long[3] = 6;
        long.extend_from_slice(&[0; 4]);
        assert!(TransportCc::new_checked(&long[..]).is_err());
        // PSFB FMT 15 without the REMB identifier is generic feedback.
        let mut afb = build(|o| build_remb(1, 1000, &[], o));
        afb[12] = b'X';
        assert!(matches!(
            RtcpPacket::parse(&afb[..]),
            Ok(RtcpPacket::Feedback(_))
        ));
        assert!(Remb::new_checked(&afb[..]).is_err());
        // Typed views refuse other packet types.
        let pli = build(|o| build_pli(1, 2, o));
        assert!(Nack::new_checked(&pli[..]).is_err());
        assert!(SenderReport::new_checked(&pli[..]).is_err());
        assert!(Feedback::new_checked(&sample_sr()[..]).is_err());
    }

    #[test]
    fn builders_report_small_buffers() {
        let mut out = [0u8; 11];
        assert!(matches!(
            build_pli(1, 2, &mut out),
            Err(WireError::BufferTooSmall {
                need: 12,
                have: 11,
                ..
            })
        ));
        let mut out = [0u8; 27];
        assert!(matches!(
            build_sender_report(1, &SenderInfo::default(), &[], &mut out),
            Err(WireError::BufferTooSmall { .. })
        ));
        let mut out = [0u8; 40];
        assert!(build_transport_cc(1, 2, 0, 0, &sample_twcc_packets(), &mut out).is_err());
        assert!(build_nack(1, 2, &mut [1, 100, 200, 300, 400, 500, 600, 700], &mut out).is_err());
    }

    fn twcc_segments() -> impl Strategy<Value = Vec<Option<i32>>> {
        let delta = prop_oneof![
            Just(None),
            (0i32..=255).prop_map(|t| Some(t * TWCC_DELTA_TICK_US)),
            (-32_768i32..=32_767).prop_map(|t| Some(t * TWCC_DELTA_TICK_US)),
        ];
        proptest::collection::vec((delta, 1usize..40), 0..60).prop_map(|segments| {
            segments
                .into_iter()
                .flat_map(|(d, n)| {
                    // Runs repeat one status; deltas inside a received run vary.
                    (0..n).map(move |i| d.map(|v| if i.is_multiple_of(3) { v } else { 250 }))
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            parse_every_way(&bytes);
        }

        #[test]
        fn arbitrary_bodies_behind_valid_headers_never_panic(
            pt in 200u8..=207,
            count in 0u8..32,
            padding in any::<bool>(),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let words = body.len() / 4;
            let mut bytes = vec![0x80 | (u8::from(padding) << 5) | count, pt];
            bytes.extend_from_slice(&(words as u16).to_be_bytes());
            bytes.extend_from_slice(&body[..words * 4]);
            parse_every_way(&bytes);
        }

        #[test]
        fn mutated_compounds_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut bytes = sample_compound();
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            let cut = cut % (bytes.len() + 1);
            parse_every_way(&bytes[..cut]);
            parse_every_way(&bytes);
        }

        #[test]
        fn nack_round_trips_arbitrary_sets(lost in proptest::collection::vec(any::<u16>(), 1..400)) {
            let expected: BTreeSet<u16> = lost.iter().copied().collect();
            let mut lost = lost;
            let bytes = build(|o| build_nack(1, 2, &mut lost, o));
            let nack = Nack::new_checked(&bytes[..]).unwrap();
            let got = nack.lost_seq_vec();
            prop_assert_eq!(got.len(), expected.len());
            prop_assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected);
        }

        #[test]
        fn nack_round_trips_windows_across_wrap(
            base in 65_000u16..=65_535,
            offsets in proptest::collection::vec(0u16..1500, 1..200),
        ) {
            let lost: Vec<u16> = offsets.iter().map(|o| base.wrapping_add(*o)).collect();
            let expected: BTreeSet<u16> = lost.iter().copied().collect();
            let mut scratch = lost.clone();
            let bytes = build(|o| build_nack(1, 2, &mut scratch, o));
            let nack = Nack::new_checked(&bytes[..]).unwrap();
            // Expansion walks the window in order, so it is wrap-aware sorted.
            let got = nack.lost_seq_vec();
            let mut by_offset = got.clone();
            by_offset.sort_by_key(|s| s.wrapping_sub(base));
            prop_assert_eq!(&got, &by_offset);
            prop_assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected.clone());
            // Greedy packing inside one window: no entry could be saved.
            let mut count = 0;
            let mut covered_to: Option<u16> = None;
            for seq in by_offset.iter().map(|s| s.wrapping_sub(base)) {
                if covered_to.is_none_or(|end| seq > end) {
                    count += 1;
                    covered_to = Some(seq + 16);
                }
            }
            prop_assert_eq!(nack.pairs().count(), count);
        }

        #[test]
        fn transport_cc_round_trips(
            base in any::<u16>(),
            reference in -(1i32 << 23)..(1i32 << 23),
            fb_count in any::<u8>(),
            deltas in twcc_segments(),
        ) {
            let packets: Vec<TwccPacket> = deltas
                .into_iter()
                .enumerate()
                .map(|(i, delta_us)| TwccPacket { seq: base.wrapping_add(i as u16), delta_us })
                .collect();
            let bytes = build(|o| build_transport_cc(1, 2, reference, fb_count, &packets, o));
            let cc = TransportCc::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(cc.reference_time(), reference);
            prop_assert_eq!(cc.fb_pkt_count(), fb_count);
            prop_assert_eq!(cc.packet_vec(), packets);
            prop_assert_eq!(validate_compound(&bytes, true), Ok(1));
        }
    }
}
