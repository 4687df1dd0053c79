//! STUN messages (RFC 5389, RFC 8489) as ICE-lite (RFC 8445) needs them.
//!
//! [`Message`] is a zero-copy view: `new_checked` validates the header, walks
//! every attribute and checks the value of every attribute this module
//! interprets, so the typed getters cannot fail. [`MessageBuilder`] writes a
//! message into a caller buffer, computing MESSAGE-INTEGRITY (HMAC-SHA1) and
//! FINGERPRINT (CRC-32) last. [`build_ice_lite_binding_success`] and
//! [`build_error_response`] produce the answers an ICE-lite agent sends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::{constant_time, hmac};

use super::{be16, be32, ensure_len, Result, WireError};

/// The fixed value in bytes 4..8 of every RFC 5389 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Length of the STUN header.
pub const HEADER_LEN: usize = 20;
/// Length of a transaction ID.
pub const TRANSACTION_ID_LEN: usize = 12;
/// Length of a MESSAGE-INTEGRITY value (HMAC-SHA1).
pub const MESSAGE_INTEGRITY_LEN: usize = 20;

/// The Binding method.
pub const METHOD_BINDING: u16 = 0x001;
/// Message type of a Binding request.
pub const BINDING_REQUEST: u16 = 0x0001;
/// Message type of a Binding indication.
pub const BINDING_INDICATION: u16 = 0x0011;
/// Message type of a Binding success response.
pub const BINDING_SUCCESS_RESPONSE: u16 = 0x0101;
/// Message type of a Binding error response.
pub const BINDING_ERROR_RESPONSE: u16 = 0x0111;

/// MAPPED-ADDRESS attribute.
pub const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
/// USERNAME attribute.
pub const ATTR_USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY attribute (HMAC-SHA1).
pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
/// ERROR-CODE attribute.
pub const ATTR_ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES attribute.
pub const ATTR_UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// REALM attribute.
pub const ATTR_REALM: u16 = 0x0014;
/// NONCE attribute.
pub const ATTR_NONCE: u16 = 0x0015;
/// XOR-MAPPED-ADDRESS attribute.
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// PRIORITY attribute (ICE).
pub const ATTR_PRIORITY: u16 = 0x0024;
/// USE-CANDIDATE attribute (ICE).
pub const ATTR_USE_CANDIDATE: u16 = 0x0025;
/// SOFTWARE attribute.
pub const ATTR_SOFTWARE: u16 = 0x8022;
/// ALTERNATE-SERVER attribute.
pub const ATTR_ALTERNATE_SERVER: u16 = 0x8023;
/// FINGERPRINT attribute.
pub const ATTR_FINGERPRINT: u16 = 0x8028;
/// ICE-CONTROLLED attribute (ICE).
pub const ATTR_ICE_CONTROLLED: u16 = 0x8029;
/// ICE-CONTROLLING attribute (ICE).
pub const ATTR_ICE_CONTROLLING: u16 = 0x802A;

/// 300 Try Alternate.
pub const ERROR_TRY_ALTERNATE: u16 = 300;
/// 400 Bad Request.
pub const ERROR_BAD_REQUEST: u16 = 400;
/// 401 Unauthenticated.
pub const ERROR_UNAUTHENTICATED: u16 = 401;
/// 420 Unknown Attribute.
pub const ERROR_UNKNOWN_ATTRIBUTE: u16 = 420;
/// 438 Stale Nonce.
pub const ERROR_STALE_NONCE: u16 = 438;
/// 487 Role Conflict (ICE).
pub const ERROR_ROLE_CONFLICT: u16 = 487;
/// 500 Server Error.
pub const ERROR_SERVER_ERROR: u16 = 500;

const FINGERPRINT_XOR: u32 = 0x5354_554E;
const FINGERPRINT_LEN: usize = 4;
const ATTR_HEADER_LEN: usize = 4;
const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;
/// RFC 8489: the reason phrase is under 128 characters, at most 763 bytes.
const MAX_REASON_LEN: usize = 763;

const L: &str = "stun";

fn malformed(reason: &'static str) -> WireError {
    WireError::Malformed { layer: L, reason }
}

/// The standard reason phrase for an error code, or "Error" if it has none.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        ERROR_TRY_ALTERNATE => "Try Alternate",
        ERROR_BAD_REQUEST => "Bad Request",
        ERROR_UNAUTHENTICATED => "Unauthenticated",
        ERROR_UNKNOWN_ATTRIBUTE => "Unknown Attribute",
        ERROR_STALE_NONCE => "Stale Nonce",
        ERROR_ROLE_CONFLICT => "Role Conflict",
        ERROR_SERVER_ERROR => "Server Error",
        _ => "Error",
    }
}

/// RFC 7983 demultiplexing: a datagram whose first byte is 0..=3 is STUN.
pub fn is_stun_first_byte(first: u8) -> bool {
    first <= 3
}

/// Cheap pre-check before [`Message::new_checked`]: first-byte range, header
/// length, length field a multiple of 4 and the magic cookie.
pub fn looks_like_stun(buf: &[u8]) -> bool {
    buf.len() >= HEADER_LEN
        && is_stun_first_byte(buf[0])
        && be16(buf, 2).is_multiple_of(4)
        && be32(buf, 4) == MAGIC_COOKIE
}

// ---------------------------------------------------------------------------
// Message types
// ---------------------------------------------------------------------------

/// The class encoded in a message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, which expects a response.
    Request,
    /// An indication, which expects none.
    Indication,
    /// A success response.
    SuccessResponse,
    /// An error response.
    ErrorResponse,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Self::Request => 0b00,
            Self::Indication => 0b01,
            Self::SuccessResponse => 0b10,
            Self::ErrorResponse => 0b11,
        }
    }
}

/// Interleaves a 12-bit method and a class into a 14-bit message type.
pub fn compose_type(method: u16, class: Class) -> u16 {
    let m = method & 0x0FFF;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// The method of a message type.
pub fn type_method(message_type: u16) -> u16 {
    (message_type & 0x000F) | ((message_type & 0x00E0) >> 1) | ((message_type & 0x3E00) >> 2)
}

/// The class of a message type.
pub fn type_class(message_type: u16) -> Class {
    match ((message_type >> 7) & 0b10) | ((message_type >> 4) & 0b01) {
        0b00 => Class::Request,
        0b01 => Class::Indication,
        0b10 => Class::SuccessResponse,
        _ => Class::ErrorResponse,
    }
}

/// Whether this module interprets attribute `kind`; comprehension-required
/// attributes outside this set make a request fail with 420.
pub fn is_known_attribute(kind: u16) -> bool {
    matches!(
        kind,
        ATTR_MAPPED_ADDRESS
            | ATTR_USERNAME
            | ATTR_MESSAGE_INTEGRITY
            | ATTR_ERROR_CODE
            | ATTR_UNKNOWN_ATTRIBUTES
            | ATTR_REALM
            | ATTR_NONCE
            | ATTR_XOR_MAPPED_ADDRESS
            | ATTR_PRIORITY
            | ATTR_USE_CANDIDATE
            | ATTR_SOFTWARE
            | ATTR_ALTERNATE_SERVER
            | ATTR_FINGERPRINT
            | ATTR_ICE_CONTROLLED
            | ATTR_ICE_CONTROLLING
    )
}

/// Whether attribute `kind` is in the comprehension-required range.
pub fn is_comprehension_required(kind: u16) -> bool {
    kind < 0x8000
}

// ---------------------------------------------------------------------------
// Attribute values
// ---------------------------------------------------------------------------

/// One attribute: its type and value (padding excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// Attribute type.
    pub kind: u16,
    /// Attribute value, without padding.
    pub value: &'a [u8],
}

/// A decoded ERROR-CODE attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    /// The code, 300..=699.
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

fn parse_error_code(value: &[u8]) -> Option<ErrorCode<'_>> {
    let class = u16::from(*value.get(2)? & 0x07);
    let number = u16::from(*value.get(3)?);
    if !(3..=6).contains(&class) || number >= 100 {
        return None;
    }
    let reason = core::str::from_utf8(value.get(4..)?).ok()?;
    Some(ErrorCode {
        code: class * 100 + number,
        reason,
    })
}

/// The XOR mask of an address: the cookie followed by the transaction ID.
fn xor_mask(transaction_id: &[u8; TRANSACTION_ID_LEN]) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(transaction_id);
    mask
}

/// Decodes a (XOR-)MAPPED-ADDRESS value; `xor` carries the transaction ID
/// for the XOR variant.
fn decode_address(value: &[u8], xor: Option<&[u8; TRANSACTION_ID_LEN]>) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let mut port = be16(value.get(2..4)?, 0);
    let mask = xor.map_or([0u8; 16], xor_mask);
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match (family, value.len()) {
        (FAMILY_IPV4, 8) => {
            let mut octets = [0u8; 4];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = value.get(4 + i)? ^ mask[i];
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        (FAMILY_IPV6, 20) => {
            let mut octets = [0u8; 16];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = value.get(4 + i)? ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Encodes an XOR-MAPPED-ADDRESS value into `out`; returns its length.
fn encode_xor_address(
    addr: SocketAddr,
    transaction_id: &[u8; TRANSACTION_ID_LEN],
    out: &mut [u8; 20],
) -> usize {
    let mask = xor_mask(transaction_id);
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[0] = 0;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_IPV4;
            for ((o, a), m) in out[4..8].iter_mut().zip(ip.octets()).zip(mask) {
                *o = a ^ m;
            }
            8
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_IPV6;
            for ((o, a), m) in out[4..20].iter_mut().zip(ip.octets()).zip(mask) {
                *o = a ^ m;
            }
            20
        }
    }
}

/// Checks the value of every attribute this module interprets.
fn check_known_value(
    kind: u16,
    value: &[u8],
    transaction_id: &[u8; TRANSACTION_ID_LEN],
) -> Result<()> {
    let ok = match kind {
        ATTR_MESSAGE_INTEGRITY => value.len() == MESSAGE_INTEGRITY_LEN,
        ATTR_FINGERPRINT => value.len() == FINGERPRINT_LEN,
        ATTR_PRIORITY => value.len() == 4,
        ATTR_USE_CANDIDATE => value.is_empty(),
        ATTR_ICE_CONTROLLED | ATTR_ICE_CONTROLLING => value.len() == 8,
        ATTR_XOR_MAPPED_ADDRESS => decode_address(value, Some(transaction_id)).is_some(),
        ATTR_MAPPED_ADDRESS | ATTR_ALTERNATE_SERVER => decode_address(value, None).is_some(),
        ATTR_ERROR_CODE => parse_error_code(value).is_some(),
        ATTR_UNKNOWN_ATTRIBUTES => value.len().is_multiple_of(2),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(malformed("attribute value does not match its type"))
    }
}

// ---------------------------------------------------------------------------
// Message view
// ---------------------------------------------------------------------------

/// Iterator over the attributes of a message, with their offsets.
#[derive(Debug, Clone)]
struct RawAttributes<'a> {
    msg: &'a [u8],
    at: usize,
}

impl<'a> RawAttributes<'a> {
    /// The next attribute and its offset, or an error if it overruns the message.
    fn step(&mut self) -> Result<Option<(usize, Attribute<'a>)>> {
        if self.at >= self.msg.len() {
            return Ok(None);
        }
        let at = self.at;
        let header = self
            .msg
            .get(at..at + ATTR_HEADER_LEN)
            .ok_or(WireError::Truncated {
                layer: L,
                need: at + ATTR_HEADER_LEN,
                have: self.msg.len(),
            })?;
        let kind = be16(header, 0);
        let len = usize::from(be16(header, 2));
        let start = at + ATTR_HEADER_LEN;
        let padded_end = start + len.next_multiple_of(4);
        if padded_end > self.msg.len() {
            return Err(WireError::BadLength {
                layer: L,
                claimed: padded_end,
                actual: self.msg.len(),
            });
        }
        let value = self.msg.get(start..start + len).unwrap_or_default();
        self.at = padded_end;
        Ok(Some((at, Attribute { kind, value })))
    }
}

impl<'a> Iterator for RawAttributes<'a> {
    type Item = (usize, Attribute<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.step().ok().flatten()
    }
}

/// Iterator over every attribute of a message, in order.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    raw: RawAttributes<'a>,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Attribute<'a>;

    fn next(&mut self) -> Option<Attribute<'a>> {
        self.raw.next().map(|(_, attr)| attr)
    }
}

/// Iterator over a list of attribute types.
#[derive(Debug, Clone)]
pub struct AttributeTypes<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for AttributeTypes<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        let c = self.chunks.next()?;
        Some(u16::from_be_bytes([*c.first()?, *c.get(1)?]))
    }
}

/// Iterator over the comprehension-required attribute types of a message
/// that this module does not interpret.
#[derive(Debug, Clone)]
pub struct UnknownRequired<'a> {
    raw: RawAttributes<'a>,
    integrity_at: Option<usize>,
}

impl Iterator for UnknownRequired<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        loop {
            let (at, attr) = self.raw.next()?;
            // Attributes after MESSAGE-INTEGRITY are ignored, so never unknown.
            if self.integrity_at.is_some_and(|mi| at > mi) {
                return None;
            }
            if is_comprehension_required(attr.kind) && !is_known_attribute(attr.kind) {
                return Some(attr.kind);
            }
        }
    }
}

/// A view of one STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<T> {
    buffer: T,
    len: usize,
    integrity_at: Option<usize>,
    fingerprint_at: Option<usize>,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Validates the header (leading zero bits, length a multiple of 4 that
    /// fits the buffer, magic cookie), every attribute's bounds and the values
    /// of the attributes this module interprets. FINGERPRINT must come last.
    /// Bytes past the length field's end are ignored.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let raw = buffer.as_ref();
        ensure_len(L, raw, HEADER_LEN)?;
        if raw[0] & 0xC0 != 0 {
            return Err(malformed("leading bits are not zero"));
        }
        let length = usize::from(be16(raw, 2));
        if !length.is_multiple_of(4) {
            return Err(malformed("length is not a multiple of 4"));
        }
        if be32(raw, 4) != MAGIC_COOKIE {
            return Err(malformed("wrong magic cookie"));
        }
        let len = HEADER_LEN + length;
        let msg = raw.get(..len).ok_or(WireError::BadLength {
            layer: L,
            claimed: len,
            actual: raw.len(),
        })?;
        let transaction_id = read_transaction_id(msg);
        let mut walk = RawAttributes {
            msg,
            at: HEADER_LEN,
        };
        let mut integrity_at = None;
        let mut fingerprint_at = None;
        while let Some((at, attr)) = walk.step()? {
            if fingerprint_at.is_some() {
                return Err(malformed("attribute after FINGERPRINT"));
            }
            // Attributes after MESSAGE-INTEGRITY, except FINGERPRINT, are ignored.
            if integrity_at.is_none() || attr.kind == ATTR_FINGERPRINT {
                check_known_value(attr.kind, attr.value, &transaction_id)?;
            }
            match attr.kind {
                ATTR_MESSAGE_INTEGRITY if integrity_at.is_none() => integrity_at = Some(at),
                ATTR_FINGERPRINT => fingerprint_at = Some(at),
                _ => {}
            }
        }
        Ok(Self {
            buffer,
            len,
            integrity_at,
            fingerprint_at,
        })
    }

    fn raw(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn msg(&self) -> &[u8] {
        self.raw().get(..self.len).unwrap_or_default()
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message's bytes (header and attributes).
    pub fn as_bytes(&self) -> &[u8] {
        self.msg()
    }

    /// Length of the message including the header.
    pub fn total_len(&self) -> usize {
        self.len
    }

    /// The 14-bit message type.
    pub fn message_type(&self) -> u16 {
        be16(self.raw(), 0)
    }

    /// The method of the message type.
    pub fn method(&self) -> u16 {
        type_method(self.message_type())
    }

    /// The class of the message type.
    pub fn class(&self) -> Class {
        type_class(self.message_type())
    }

    /// The header's length field (attributes only).
    pub fn length(&self) -> u16 {
        be16(self.raw(), 2)
    }

    /// The transaction ID.
    pub fn transaction_id(&self) -> [u8; TRANSACTION_ID_LEN] {
        read_transaction_id(self.raw())
    }

    /// Every attribute in order, including any after MESSAGE-INTEGRITY
    /// (which are not authenticated and should be ignored).
    pub fn attributes(&self) -> Attributes<'_> {
        Attributes {
            raw: self.raw_attributes(),
        }
    }

    fn raw_attributes(&self) -> RawAttributes<'_> {
        RawAttributes {
            msg: self.msg(),
            at: HEADER_LEN,
        }
    }

    /// The value of the first attribute of type `kind`, ignoring attributes
    /// after MESSAGE-INTEGRITY other than FINGERPRINT.
    pub fn attribute(&self, kind: u16) -> Option<&[u8]> {
        self.raw_attributes()
            .take_while(|(at, attr)| {
                attr.kind == ATTR_FINGERPRINT || self.integrity_at.is_none_or(|mi| *at <= mi)
            })
            .find(|(_, attr)| attr.kind == kind)
            .map(|(_, attr)| attr.value)
    }

    /// USERNAME (for ICE, "remote-ufrag:local-ufrag").
    pub fn username(&self) -> Option<&[u8]> {
        self.attribute(ATTR_USERNAME)
    }

    /// PRIORITY.
    pub fn priority(&self) -> Option<u32> {
        self.attribute(ATTR_PRIORITY)
            .and_then(|v| v.get(..4))
            .map(|v| be32(v, 0))
    }

    /// Whether USE-CANDIDATE is present.
    pub fn use_candidate(&self) -> bool {
        self.attribute(ATTR_USE_CANDIDATE).is_some()
    }

    /// ICE-CONTROLLING tie-breaker.
    pub fn ice_controlling(&self) -> Option<u64> {
        self.attribute(ATTR_ICE_CONTROLLING).and_then(read_u64)
    }

    /// ICE-CONTROLLED tie-breaker.
    pub fn ice_controlled(&self) -> Option<u64> {
        self.attribute(ATTR_ICE_CONTROLLED).and_then(read_u64)
    }

    /// XOR-MAPPED-ADDRESS, decoded.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        let id = self.transaction_id();
        self.attribute(ATTR_XOR_MAPPED_ADDRESS)
            .and_then(|v| decode_address(v, Some(&id)))
    }

    /// MAPPED-ADDRESS, decoded.
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.attribute(ATTR_MAPPED_ADDRESS)
            .and_then(|v| decode_address(v, None))
    }

    /// ERROR-CODE, decoded.
    pub fn error_code(&self) -> Option<ErrorCode<'_>> {
        self.attribute(ATTR_ERROR_CODE).and_then(parse_error_code)
    }

    /// The attribute types listed in UNKNOWN-ATTRIBUTES, if present.
    pub fn unknown_attributes(&self) -> Option<AttributeTypes<'_>> {
        self.attribute(ATTR_UNKNOWN_ATTRIBUTES)
            .map(|v| AttributeTypes {
                chunks: v.chunks_exact(2),
            })
    }

    /// Comprehension-required attributes this module does not interpret:
    /// a request carrying any must be answered with 420 listing them.
    pub fn unknown_comprehension_required(&self) -> UnknownRequired<'_> {
        UnknownRequired {
            raw: self.raw_attributes(),
            integrity_at: self.integrity_at,
        }
    }

    /// The MESSAGE-INTEGRITY value, if present.
    pub fn message_integrity(&self) -> Option<&[u8]> {
        let at = self.integrity_at?;
        self.msg()
            .get(at + ATTR_HEADER_LEN..at + ATTR_HEADER_LEN + MESSAGE_INTEGRITY_LEN)
    }

    /// The FINGERPRINT value, if present.
    pub fn fingerprint(&self) -> Option<u32> {
        let at = self.fingerprint_at?;
        self.msg()
            .get(at + ATTR_HEADER_LEN..)
            .and_then(|v| v.get(..4))
            .map(|v| be32(v, 0))
    }

    /// Checks MESSAGE-INTEGRITY against `key` in constant time; see
    /// [`verify_message_integrity`].
    pub fn verify_message_integrity(&self, key: &[u8]) -> Result<()> {
        verify_message_integrity(self, key)
    }

    /// Checks FINGERPRINT; see [`verify_fingerprint`].
    pub fn verify_fingerprint(&self) -> Result<()> {
        verify_fingerprint(self)
    }
}

fn read_transaction_id(msg: &[u8]) -> [u8; TRANSACTION_ID_LEN] {
    let mut id = [0u8; TRANSACTION_ID_LEN];
    if let Some(src) = msg.get(8..HEADER_LEN) {
        id.copy_from_slice(src);
    }
    id
}

fn read_u64(value: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The header of `prefix` with its length field set as if the message ended
/// `trailer` bytes after `prefix`, as MESSAGE-INTEGRITY and FINGERPRINT require.
fn adjusted_header(prefix: &[u8], trailer: usize) -> Result<[u8; HEADER_LEN]> {
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(prefix.get(..HEADER_LEN).ok_or(WireError::Truncated {
        layer: L,
        need: HEADER_LEN,
        have: prefix.len(),
    })?);
    let length = u16::try_from(prefix.len() - HEADER_LEN + trailer)
        .map_err(|_| malformed("message too long"))?;
    header[2..4].copy_from_slice(&length.to_be_bytes());
    Ok(header)
}

/// HMAC-SHA1 over `prefix` (the message up to MESSAGE-INTEGRITY).
fn integrity_tag(prefix: &[u8], key: &[u8]) -> Result<hmac::Tag> {
    let header = adjusted_header(prefix, ATTR_HEADER_LEN + MESSAGE_INTEGRITY_LEN)?;
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(&header);
    ctx.update(prefix.get(HEADER_LEN..).unwrap_or_default());
    Ok(ctx.sign())
}

/// FINGERPRINT value for `prefix` (the message up to FINGERPRINT).
fn fingerprint_of(prefix: &[u8]) -> Result<u32> {
    let header = adjusted_header(prefix, ATTR_HEADER_LEN + FINGERPRINT_LEN)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(prefix.get(HEADER_LEN..).unwrap_or_default());
    Ok(crc.finalize() ^ FINGERPRINT_XOR)
}

/// Checks MESSAGE-INTEGRITY: HMAC-SHA1 keyed with `key` (for ICE, the
/// short-term password) over the message up to the attribute, with the
/// header length covering it, compared in constant time.
///
/// `Malformed` if the message has no MESSAGE-INTEGRITY (answer 400);
/// `Integrity` if it does not verify (answer 401).
pub fn verify_message_integrity<T: AsRef<[u8]>>(msg: &Message<T>, key: &[u8]) -> Result<()> {
    let at = msg
        .integrity_at
        .ok_or(malformed("no MESSAGE-INTEGRITY attribute"))?;
    let prefix = msg.msg().get(..at).unwrap_or_default();
    let received = msg
        .message_integrity()
        .ok_or(malformed("no MESSAGE-INTEGRITY attribute"))?;
    let tag = integrity_tag(prefix, key)?;
    constant_time::verify_slices_are_equal(tag.as_ref(), received).map_err(|_| {
        WireError::Integrity {
            layer: L,
            what: "MESSAGE-INTEGRITY",
        }
    })
}

/// Checks FINGERPRINT: CRC-32 of the message up to the attribute, with the
/// header length covering it, XOR 0x5354554e.
///
/// `Malformed` if the message has no FINGERPRINT; `Integrity` if it is wrong.
pub fn verify_fingerprint<T: AsRef<[u8]>>(msg: &Message<T>) -> Result<()> {
    let at = msg
        .fingerprint_at
        .ok_or(malformed("no FINGERPRINT attribute"))?;
    let prefix = msg.msg().get(..at).unwrap_or_default();
    let received = msg
        .fingerprint()
        .ok_or(malformed("no FINGERPRINT attribute"))?;
    if fingerprint_of(prefix)? == received {
        Ok(())
    } else {
        Err(WireError::Integrity {
            layer: L,
            what: "FINGERPRINT",
        })
    }
}

// ---------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------

/// How far a builder has got: MESSAGE-INTEGRITY and FINGERPRINT close the
/// attribute list in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Attributes,
    Integrity,
    Fingerprint,
}

/// Writes a STUN message into a caller buffer.
///
/// Attributes are appended with zero padding; [`Self::add_message_integrity`]
/// and [`Self::add_fingerprint`] come last, in that order.
#[derive(Debug)]
pub struct MessageBuilder<'a> {
    out: &'a mut [u8],
    len: usize,
    transaction_id: [u8; TRANSACTION_ID_LEN],
    stage: Stage,
}

impl<'a> MessageBuilder<'a> {
    /// Writes the header of a message of `message_type` with `transaction_id`.
    pub fn new(
        out: &'a mut [u8],
        message_type: u16,
        transaction_id: [u8; TRANSACTION_ID_LEN],
    ) -> Result<Self> {
        if message_type & 0xC000 != 0 {
            return Err(malformed("message type exceeds 14 bits"));
        }
        let have = out.len();
        let header = out.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall {
            layer: L,
            need: HEADER_LEN,
            have,
        })?;
        header[0..2].copy_from_slice(&message_type.to_be_bytes());
        header[2..4].copy_from_slice(&[0, 0]);
        header[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        header[8..20].copy_from_slice(&transaction_id);
        Ok(Self {
            out,
            len: HEADER_LEN,
            transaction_id,
            stage: Stage::Attributes,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.len
    }

    /// Appends an attribute header and zero padding for a `value_len`-byte
    /// value; returns the value's slot for the caller to fill.
    fn reserve(&mut self, kind: u16, value_len: usize) -> Result<&mut [u8]> {
        let wire_len =
            u16::try_from(value_len).map_err(|_| malformed("attribute value too long"))?;
        let start = self.len + ATTR_HEADER_LEN;
        let end = start + value_len.next_multiple_of(4);
        let length = u16::try_from(end - HEADER_LEN).map_err(|_| malformed("message too long"))?;
        let have = self.out.len();
        let slot = self
            .out
            .get_mut(self.len..end)
            .ok_or(WireError::BufferTooSmall {
                layer: L,
                need: end,
                have,
            })?;
        slot[0..2].copy_from_slice(&kind.to_be_bytes());
        slot[2..4].copy_from_slice(&wire_len.to_be_bytes());
        slot[ATTR_HEADER_LEN..].fill(0);
        self.out[2..4].copy_from_slice(&length.to_be_bytes());
        self.len = end;
        Ok(&mut self.out[start..start + value_len])
    }

    fn ensure_open(&self) -> Result<()> {
        if self.stage == Stage::Attributes {
            Ok(())
        } else {
            Err(malformed(
                "attribute after MESSAGE-INTEGRITY or FINGERPRINT",
            ))
        }
    }

    /// Appends an attribute with `value`, zero-padded to 4 bytes.
    /// MESSAGE-INTEGRITY and FINGERPRINT have their own methods.
    pub fn add_attribute(&mut self, kind: u16, value: &[u8]) -> Result<()> {
        self.ensure_open()?;
        if matches!(kind, ATTR_MESSAGE_INTEGRITY | ATTR_FINGERPRINT) {
            return Err(malformed(
                "MESSAGE-INTEGRITY and FINGERPRINT are computed, not given",
            ));
        }
        self.reserve(kind, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// Appends USERNAME.
    pub fn add_username(&mut self, username: &[u8]) -> Result<()> {
        self.add_attribute(ATTR_USERNAME, username)
    }

    /// Appends XOR-MAPPED-ADDRESS for `addr`.
    pub fn add_xor_mapped_address(&mut self, addr: SocketAddr) -> Result<()> {
        let mut value = [0u8; 20];
        let len = encode_xor_address(addr, &self.transaction_id, &mut value);
        self.add_attribute(ATTR_XOR_MAPPED_ADDRESS, &value[..len])
    }

    /// Appends PRIORITY.
    pub fn add_priority(&mut self, priority: u32) -> Result<()> {
        self.add_attribute(ATTR_PRIORITY, &priority.to_be_bytes())
    }

    /// Appends USE-CANDIDATE.
    pub fn add_use_candidate(&mut self) -> Result<()> {
        self.add_attribute(ATTR_USE_CANDIDATE, &[])
    }

    /// Appends ICE-CONTROLLING with its tie-breaker.
    pub fn add_ice_controlling(&mut self, tie_breaker: u64) -> Result<()> {
        self.add_attribute(ATTR_ICE_CONTROLLING, &tie_breaker.to_be_bytes())
    }

    /// Appends ICE-CONTROLLED with its tie-breaker.
    pub fn add_ice_controlled(&mut self, tie_breaker: u64) -> Result<()> {
        self.add_attribute(ATTR_ICE_CONTROLLED, &tie_breaker.to_be_bytes())
    }

    /// Appends ERROR-CODE; `code` must be 300..=699 and `reason` at most 763 bytes.
    pub fn add_error_code(&mut self, code: u16, reason: &str) -> Result<()> {
        self.ensure_open()?;
        if !(300..700).contains(&code) {
            return Err(malformed("error code outside 300..=699"));
        }
        if reason.len() > MAX_REASON_LEN {
            return Err(malformed("reason phrase too long"));
        }
        let slot = self.reserve(ATTR_ERROR_CODE, 4 + reason.len())?;
        slot[..4].copy_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
        slot[4..].copy_from_slice(reason.as_bytes());
        Ok(())
    }

    /// Appends UNKNOWN-ATTRIBUTES listing `kinds`.
    pub fn add_unknown_attributes(&mut self, kinds: &[u16]) -> Result<()> {
        self.ensure_open()?;
        let slot = self.reserve(ATTR_UNKNOWN_ATTRIBUTES, kinds.len().saturating_mul(2))?;
        for (dst, kind) in slot.chunks_exact_mut(2).zip(kinds) {
            dst.copy_from_slice(&kind.to_be_bytes());
        }
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY: HMAC-SHA1 keyed with `key` over everything
    /// written so far, with the header length covering the attribute.
    pub fn add_message_integrity(&mut self, key: &[u8]) -> Result<()> {
        self.ensure_open()?;
        let tag = integrity_tag(self.out.get(..self.len).unwrap_or_default(), key)?;
        self.reserve(ATTR_MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_LEN)?
            .copy_from_slice(tag.as_ref());
        self.stage = Stage::Integrity;
        Ok(())
    }

    /// Appends FINGERPRINT over everything written so far; nothing may follow.
    pub fn add_fingerprint(&mut self) -> Result<()> {
        if self.stage == Stage::Fingerprint {
            return Err(malformed("FINGERPRINT already added"));
        }
        let crc = fingerprint_of(self.out.get(..self.len).unwrap_or_default())?;
        self.reserve(ATTR_FINGERPRINT, FINGERPRINT_LEN)?
            .copy_from_slice(&crc.to_be_bytes());
        self.stage = Stage::Fingerprint;
        Ok(())
    }

    /// Ends the message; returns its length.
    pub fn finish(self) -> usize {
        self.len
    }
}

/// Builds the ICE-lite answer to a Binding request: a success response with
/// the request's transaction ID, XOR-MAPPED-ADDRESS of `src_addr`,
/// MESSAGE-INTEGRITY keyed with the local ICE password (short-term
/// credential) and FINGERPRINT. Returns the bytes written.
///
/// The caller has already checked the request's USERNAME and
/// MESSAGE-INTEGRITY ([`verify_message_integrity`] with the same password).
pub fn build_ice_lite_binding_success<T: AsRef<[u8]>>(
    request: &Message<T>,
    src_addr: SocketAddr,
    local_password: &[u8],
    out: &mut [u8],
) -> Result<usize> {
    if request.message_type() != BINDING_REQUEST {
        return Err(malformed("not a Binding request"));
    }
    let mut b = MessageBuilder::new(out, BINDING_SUCCESS_RESPONSE, request.transaction_id())?;
    b.add_xor_mapped_address(src_addr)?;
    b.add_message_integrity(local_password)?;
    b.add_fingerprint()?;
    Ok(b.finish())
}

/// Builds an error response to `request` (same method and transaction ID)
/// with ERROR-CODE `code` and `reason` (empty: the standard phrase), the
/// `unknown_attributes` if any (for 420), MESSAGE-INTEGRITY if
/// `integrity_key` is given (e.g. 487 to an authenticated request; never for
/// 400/401), and FINGERPRINT. Returns the bytes written.
pub fn build_error_response<T: AsRef<[u8]>>(
    request: &Message<T>,
    code: u16,
    reason: &str,
    unknown_attributes: &[u16],
    integrity_key: Option<&[u8]>,
    out: &mut [u8],
) -> Result<usize> {
    if request.class() != Class::Request {
        return Err(malformed("only requests are answered"));
    }
    let message_type = compose_type(request.method(), Class::ErrorResponse);
    let reason = if reason.is_empty() {
        reason_phrase(code)
    } else {
        reason
    };
    let mut b = MessageBuilder::new(out, message_type, request.transaction_id())?;
    b.add_error_code(code, reason)?;
    if !unknown_attributes.is_empty() {
        b.add_unknown_attributes(unknown_attributes)?;
    }
    if let Some(key) = integrity_key {
        b.add_message_integrity(key)?;
    }
    b.add_fingerprint()?;
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    /// RFC 5769 section 2.1: sample request.
    fn rfc5769_request() -> Vec<u8> {
        hex::decode(concat!(
            "000100582112a442b7e7a701bc34d686fa87dfae",
            "802200105354554e207465737420636c69656e74",
            "002400046e0001ff",
            "80290008932ff9b151263b36",
            "000600096576746a3a68367659202020",
            "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2",
            "80280004e57a3bcf",
        ))
        .unwrap()
    }

    /// RFC 5769 section 2.2: sample IPv4 response.
    fn rfc5769_ipv4_response() -> Vec<u8> {
        hex::decode(concat!(
            "0101003c2112a442b7e7a701bc34d686fa87dfae",
            "8022000b7465737420766563746f7220",
            "002000080001a147e112a643",
            "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7",
            "80280004c07d4c96",
        ))
        .unwrap()
    }

    /// RFC 5769 section 2.3: sample IPv6 response.
    fn rfc5769_ipv6_response() -> Vec<u8> {
        hex::decode(concat!(
            "010100482112a442b7e7a701bc34d686fa87dfae",
            "8022000b7465737420766563746f7220",
            "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9",
            "00080014a382954e4be67bf11784c97c8292c275bfe3ed41",
            "80280004c8fb0b4c",
        ))
        .unwrap()
    }

    const TID: [u8; 12] = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    fn v4() -> SocketAddr {
        "192.0.2.1:32853".parse().unwrap()
    }

    fn v6() -> SocketAddr {
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap()
    }

    fn build(f: impl FnOnce(&mut [u8]) -> Result<usize>) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let n = f(&mut buf).expect("build");
        buf.truncate(n);
        buf
    }

    /// An ICE connectivity check as a browser sends it.
    fn ice_request(extra: &[(u16, &[u8])]) -> Vec<u8> {
        build(|out| {
            let mut b = MessageBuilder::new(out, BINDING_REQUEST, TID)?;
            b.add_username(b"remote:local")?;
            b.add_priority(0x6E00_01FF)?;
            b.add_ice_controlling(0x0102_0304_0506_0708)?;
            b.add_use_candidate()?;
            for (kind, value) in extra {
                b.add_attribute(*kind, value)?;
            }
            b.add_message_integrity(b"local-password")?;
            b.add_fingerprint()?;
            Ok(b.finish())
        })
    }

    /// Touches every accessor of a parsed message.
    fn exercise<T: AsRef<[u8]>>(msg: &Message<T>) {
        use std::hint::black_box;
        black_box((msg.message_type(), msg.method(), msg.class(), msg.length()));
        black_box((msg.transaction_id(), msg.total_len(), msg.as_bytes()));
        black_box(msg.attributes().collect::<Vec<_>>());
        black_box((msg.username(), msg.priority(), msg.use_candidate()));
        black_box((msg.ice_controlling(), msg.ice_controlled()));
        black_box((
            msg.xor_mapped_address(),
            msg.mapped_address(),
            msg.error_code(),
        ));
        black_box(msg.unknown_attributes().map(Iterator::collect::<Vec<_>>));
        black_box(msg.unknown_comprehension_required().collect::<Vec<_>>());
        black_box((msg.message_integrity(), msg.fingerprint()));
        let _ = black_box(msg.verify_message_integrity(PASSWORD));
        let _ = black_box(msg.verify_fingerprint());
        black_box(msg.attribute(ATTR_SOFTWARE));
        // Whatever is answered must itself parse and verify.
        let mut out = [0u8; 256];
        if let Ok(n) = build_ice_lite_binding_success(msg, v4(), PASSWORD, &mut out) {
            let resp = Message::new_checked(&out[..n]).unwrap();
            resp.verify_message_integrity(PASSWORD).unwrap();
            resp.verify_fingerprint().unwrap();
        }
        if let Ok(n) = build_error_response(msg, 420, "", &[0x7777], Some(PASSWORD), &mut out) {
            let resp = Message::new_checked(&out[..n]).unwrap();
            resp.verify_message_integrity(PASSWORD).unwrap();
            resp.verify_fingerprint().unwrap();
        }
    }

    #[test]
    fn rfc5769_sample_request() {
        let bytes = rfc5769_request();
        let msg = Message::new_checked(&bytes[..]).unwrap();
        assert_eq!(msg.message_type(), BINDING_REQUEST);
        assert_eq!(msg.class(), Class::Request);
        assert_eq!(msg.method(), METHOD_BINDING);
        assert_eq!(msg.transaction_id(), TID);
        assert_eq!(msg.attribute(ATTR_SOFTWARE), Some(&b"STUN test client"[..]));
        assert_eq!(msg.username(), Some(&b"evtj:h6vY"[..]));
        assert_eq!(msg.priority(), Some(0x6E00_01FF));
        assert_eq!(msg.ice_controlled(), Some(0x932F_F9B1_5126_3B36));
        assert_eq!(msg.ice_controlling(), None);
        assert!(!msg.use_candidate());
        assert_eq!(msg.unknown_comprehension_required().count(), 0);
        assert_eq!(msg.fingerprint(), Some(0xE57A_3BCF));
        msg.verify_message_integrity(PASSWORD).unwrap();
        msg.verify_fingerprint().unwrap();
        assert_eq!(
            verify_message_integrity(&msg, b"wrong password"),
            Err(WireError::Integrity {
                layer: "stun",
                what: "MESSAGE-INTEGRITY"
            })
        );
    }

    #[test]
    fn rfc5769_ipv4_response_vector() {
        let bytes = rfc5769_ipv4_response();
        let msg = Message::new_checked(&bytes[..]).unwrap();
        assert_eq!(msg.message_type(), BINDING_SUCCESS_RESPONSE);
        assert_eq!(msg.class(), Class::SuccessResponse);
        assert_eq!(msg.attribute(ATTR_SOFTWARE), Some(&b"test vector"[..]));
        assert_eq!(msg.xor_mapped_address(), Some(v4()));
        verify_message_integrity(&msg, PASSWORD).unwrap();
        verify_fingerprint(&msg).unwrap();
    }

    #[test]
    fn rfc5769_ipv6_response_vector() {
        let bytes = rfc5769_ipv6_response();
        let msg = Message::new_checked(&bytes[..]).unwrap();
        assert_eq!(msg.xor_mapped_address(), Some(v6()));
        verify_message_integrity(&msg, PASSWORD).unwrap();
        verify_fingerprint(&msg).unwrap();
    }

    #[test]
    fn corrupted_vectors_fail_their_checks() {
        for bytes in [
            rfc5769_request(),
            rfc5769_ipv4_response(),
            rfc5769_ipv6_response(),
        ] {
            // Flip a bit of the transaction ID: both checks cover it.
            let mut bad = bytes.clone();
            bad[19] ^= 1;
            let msg = Message::new_checked(&bad[..]).unwrap();
            assert!(matches!(
                msg.verify_message_integrity(PASSWORD),
                Err(WireError::Integrity { .. })
            ));
            assert!(matches!(
                msg.verify_fingerprint(),
                Err(WireError::Integrity { .. })
            ));
            // Flip a bit of the FINGERPRINT value only: MESSAGE-INTEGRITY still holds.
            let mut bad = bytes.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            let msg = Message::new_checked(&bad[..]).unwrap();
            msg.verify_message_integrity(PASSWORD).unwrap();
            assert!(msg.verify_fingerprint().is_err());
        }
    }

    #[test]
    fn builder_reproduces_the_rfc5769_request() {
        let expected = rfc5769_request();
        let mut out = [0u8; 128];
        let mut b = MessageBuilder::new(&mut out, BINDING_REQUEST, TID).unwrap();
        b.add_attribute(ATTR_SOFTWARE, b"STUN test client").unwrap();
        b.add_priority(0x6E00_01FF).unwrap();
        b.add_ice_controlled(0x932F_F9B1_5126_3B36).unwrap();
        b.add_username(b"evtj:h6vY").unwrap();
        b.add_message_integrity(PASSWORD).unwrap();
        b.add_fingerprint().unwrap();
        let n = b.finish();
        assert_eq!(n, expected.len());
        // The vector pads USERNAME with spaces, the builder with zeros; the
        // MAC and CRC cover padding, so compare with the vector's padding zeroed.
        let msg = Message::new_checked(&out[..n]).unwrap();
        msg.verify_message_integrity(PASSWORD).unwrap();
        msg.verify_fingerprint().unwrap();
        assert_eq!(&out[..69], &expected[..69]);
        assert_eq!(msg.username(), Some(&b"evtj:h6vY"[..]));
    }

    #[test]
    fn builder_reproduces_the_rfc5769_responses() {
        for (expected, addr) in [
            (rfc5769_ipv4_response(), v4()),
            (rfc5769_ipv6_response(), v6()),
        ] {
            let bytes = build(|out| {
                let mut b = MessageBuilder::new(out, BINDING_SUCCESS_RESPONSE, TID)?;
                // SOFTWARE "test vector" is padded with one space in the vector.
                b.add_attribute(ATTR_SOFTWARE, b"test vector")?;
                let n = b.written();
                b.out[n - 1] = b' ';
                b.add_xor_mapped_address(addr)?;
                b.add_message_integrity(PASSWORD)?;
                b.add_fingerprint()?;
                Ok(b.finish())
            });
            assert_eq!(hex::encode(&bytes), hex::encode(&expected));
        }
    }

    #[test]
    fn ice_lite_binding_success() {
        let request = ice_request(&[]);
        let req = Message::new_checked(&request[..]).unwrap();
        req.verify_message_integrity(b"local-password").unwrap();
        req.verify_fingerprint().unwrap();
        assert_eq!(req.username(), Some(&b"remote:local"[..]));
        assert_eq!(req.priority(), Some(0x6E00_01FF));
        assert_eq!(req.ice_controlling(), Some(0x0102_0304_0506_0708));
        assert!(req.use_candidate());
        for src in [v4(), v6(), "198.18.0.7:0".parse().unwrap()] {
            let mut out = [0u8; 128];
            let n = build_ice_lite_binding_success(&req, src, b"local-password", &mut out).unwrap();
            let resp = Message::new_checked(&out[..n]).unwrap();
            assert_eq!(resp.message_type(), BINDING_SUCCESS_RESPONSE);
            assert_eq!(resp.transaction_id(), TID);
            assert_eq!(resp.xor_mapped_address(), Some(src));
            resp.verify_message_integrity(b"local-password").unwrap();
            resp.verify_fingerprint().unwrap();
            assert!(resp.verify_message_integrity(b"other").is_err());
            let kinds: Vec<u16> = resp.attributes().map(|a| a.kind).collect();
            assert_eq!(
                kinds,
                vec![
                    ATTR_XOR_MAPPED_ADDRESS,
                    ATTR_MESSAGE_INTEGRITY,
                    ATTR_FINGERPRINT
                ]
            );
            // Too small a buffer is an error, at every size.
            for short in 0..n {
                let mut small = vec![0u8; short];
                assert!(matches!(
                    build_ice_lite_binding_success(&req, src, b"local-password", &mut small),
                    Err(WireError::BufferTooSmall { .. })
                ));
            }
        }
        // Only Binding requests get a success response.
        let resp = build(|o| build_ice_lite_binding_success(&req, v4(), b"p", o));
        let resp = Message::new_checked(&resp[..]).unwrap();
        let mut out = [0u8; 128];
        assert!(build_ice_lite_binding_success(&resp, v4(), b"p", &mut out).is_err());
    }

    #[test]
    fn unknown_comprehension_required_attributes_get_420() {
        let request = ice_request(&[(0x0030, b"x"), (0x8030, b"optional"), (0x0031, b"")]);
        let req = Message::new_checked(&request[..]).unwrap();
        let unknown: Vec<u16> = req.unknown_comprehension_required().collect();
        assert_eq!(unknown, vec![0x0030, 0x0031]);
        let bytes =
            build(|o| build_error_response(&req, ERROR_UNKNOWN_ATTRIBUTE, "", &unknown, None, o));
        let resp = Message::new_checked(&bytes[..]).unwrap();
        assert_eq!(resp.message_type(), BINDING_ERROR_RESPONSE);
        assert_eq!(resp.class(), Class::ErrorResponse);
        assert_eq!(resp.transaction_id(), TID);
        assert_eq!(
            resp.error_code(),
            Some(ErrorCode {
                code: 420,
                reason: "Unknown Attribute"
            })
        );
        assert_eq!(
            resp.unknown_attributes().unwrap().collect::<Vec<_>>(),
            unknown
        );
        assert!(resp.message_integrity().is_none());
        resp.verify_fingerprint().unwrap();
        assert!(matches!(
            resp.verify_message_integrity(b"x"),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn error_responses() {
        let request = ice_request(&[]);
        let req = Message::new_checked(&request[..]).unwrap();
        for (code, key) in [
            (ERROR_BAD_REQUEST, None),
            (ERROR_UNAUTHENTICATED, None),
            (ERROR_ROLE_CONFLICT, Some(&b"local-password"[..])),
            (ERROR_SERVER_ERROR, None),
            (699, None),
        ] {
            let bytes = build(|o| build_error_response(&req, code, "", &[], key, o));
            let resp = Message::new_checked(&bytes[..]).unwrap();
            let error = resp.error_code().unwrap();
            assert_eq!(error.code, code);
            assert_eq!(error.reason, reason_phrase(code));
            assert!(resp.unknown_attributes().is_none());
            assert_eq!(resp.message_integrity().is_some(), key.is_some());
            if let Some(key) = key {
                resp.verify_message_integrity(key).unwrap();
            }
            resp.verify_fingerprint().unwrap();
        }
        let bytes = build(|o| build_error_response(&req, 400, "Missing USERNAME", &[], None, o));
        let resp = Message::new_checked(&bytes[..]).unwrap();
        assert_eq!(resp.error_code().unwrap().reason, "Missing USERNAME");
        let mut out = [0u8; 256];
        for code in [0, 299, 700, 1000] {
            assert!(build_error_response(&req, code, "", &[], None, &mut out).is_err());
        }
        // Responses are never answered.
        assert!(build_error_response(&resp, 400, "", &[], None, &mut out).is_err());
    }

    #[test]
    fn message_type_encoding() {
        assert_eq!(
            compose_type(METHOD_BINDING, Class::Request),
            BINDING_REQUEST
        );
        assert_eq!(
            compose_type(METHOD_BINDING, Class::Indication),
            BINDING_INDICATION
        );
        assert_eq!(
            compose_type(METHOD_BINDING, Class::SuccessResponse),
            BINDING_SUCCESS_RESPONSE
        );
        assert_eq!(
            compose_type(METHOD_BINDING, Class::ErrorResponse),
            BINDING_ERROR_RESPONSE
        );
        for method in 0..0x1000u16 {
            for class in [
                Class::Request,
                Class::Indication,
                Class::SuccessResponse,
                Class::ErrorResponse,
            ] {
                let t = compose_type(method, class);
                assert_eq!(t & 0xC000, 0);
                assert_eq!((type_method(t), type_class(t)), (method, class));
            }
        }
    }

    #[test]
    fn demultiplexing_checks() {
        assert!(is_stun_first_byte(0) && is_stun_first_byte(3));
        assert!(!is_stun_first_byte(4) && !is_stun_first_byte(0x80));
        assert!(looks_like_stun(&rfc5769_request()));
        assert!(!looks_like_stun(&rfc5769_request()[..19]));
        let mut rtp = rfc5769_request();
        rtp[0] = 0x80;
        assert!(!looks_like_stun(&rtp));
    }

    #[test]
    fn every_truncation_is_rejected() {
        let mut all = vec![
            rfc5769_request(),
            rfc5769_ipv4_response(),
            rfc5769_ipv6_response(),
        ];
        all.push(ice_request(&[(0x0030, b"abc")]));
        for bytes in &all {
            for len in 0..bytes.len() {
                let prefix = &bytes[..len];
                assert!(Message::new_checked(prefix).is_err(), "prefix {len}");
                assert!(!looks_like_stun(prefix) || len >= HEADER_LEN);
            }
        }
    }

    #[test]
    fn hostile_headers() {
        let good = rfc5769_request();
        let mut bad = good.clone();
        bad[0] |= 0x40;
        assert!(matches!(
            Message::new_checked(&bad[..]),
            Err(WireError::Malformed { .. })
        ));
        let mut bad = good.clone();
        bad[3] += 2;
        assert!(Message::new_checked(&bad[..]).is_err());
        let mut bad = good.clone();
        bad[3] += 4;
        assert!(matches!(
            Message::new_checked(&bad[..]),
            Err(WireError::BadLength { .. })
        ));
        let mut bad = good.clone();
        bad[2..4].copy_from_slice(&[0xFF, 0xFC]);
        assert!(matches!(
            Message::new_checked(&bad[..]),
            Err(WireError::BadLength { .. })
        ));
        let mut bad = good.clone();
        bad[4] ^= 1;
        assert!(matches!(
            Message::new_checked(&bad[..]),
            Err(WireError::Malformed { .. })
        ));
        // Bytes past the length field are not part of the message.
        let mut longer = good.clone();
        longer.extend_from_slice(&[0xAB; 7]);
        let msg = Message::new_checked(&longer[..]).unwrap();
        assert_eq!(msg.as_bytes(), &good[..]);
        msg.verify_fingerprint().unwrap();
        // An empty message (header only) is fine.
        let header = &good[..HEADER_LEN];
        let mut empty = header.to_vec();
        empty[2..4].copy_from_slice(&[0, 0]);
        let msg = Message::new_checked(&empty[..]).unwrap();
        assert_eq!(msg.attributes().count(), 0);
        assert!(msg.verify_fingerprint().is_err());
        assert!(msg.verify_message_integrity(PASSWORD).is_err());
    }

    #[test]
    fn hostile_attributes() {
        let good = rfc5769_request();
        // SOFTWARE's length overruns the message.
        let mut bad = good.clone();
        bad[22..24].copy_from_slice(&[0x00, 0xF0]);
        assert!(matches!(
            Message::new_checked(&bad[..]),
            Err(WireError::BadLength { .. })
        ));
        // Length 0xFFFF on the last attribute.
        let mut bad = good.clone();
        let fp = bad.len() - 8;
        bad[fp + 2..fp + 4].copy_from_slice(&[0xFF, 0xFF]);
        assert!(Message::new_checked(&bad[..]).is_err());
        // PRIORITY with a wrong length (padding keeps the walk aligned).
        let mut bad = good.clone();
        bad[42..44].copy_from_slice(&[0x00, 0x03]);
        assert!(Message::new_checked(&bad[..]).is_err());
        // Attribute after FINGERPRINT.
        let mut bad = good.clone();
        bad.extend_from_slice(&[0x80, 0x22, 0, 0]);
        bad[3] += 4;
        assert!(matches!(
            Message::new_checked(&bad[..]),
            Err(WireError::Malformed { .. })
        ));
        // XOR-MAPPED-ADDRESS with an unknown family or a wrong length.
        let mut bad = rfc5769_ipv4_response();
        bad[41] = 3;
        assert!(Message::new_checked(&bad[..]).is_err());
        let mut bad = rfc5769_ipv6_response();
        bad[41] = 1;
        assert!(Message::new_checked(&bad[..]).is_err());
        // Bad ERROR-CODE class and non-UTF-8 reason.
        let req_bytes = ice_request(&[]);
        let req = Message::new_checked(&req_bytes[..]).unwrap();
        let mut err = build(|o| build_error_response(&req, 400, "Bad", &[], None, o));
        err[26] = 7;
        assert!(Message::new_checked(&err[..]).is_err());
        let mut err = build(|o| build_error_response(&req, 400, "Bad", &[], None, o));
        err[28] = 0xFF;
        assert!(Message::new_checked(&err[..]).is_err());
    }

    #[test]
    fn attributes_after_message_integrity_are_ignored() {
        // Hand-append a USERNAME and an unknown required attribute after
        // MESSAGE-INTEGRITY, then a fresh FINGERPRINT.
        let bytes = build(|out| {
            let mut b = MessageBuilder::new(out, BINDING_REQUEST, TID)?;
            b.add_priority(5)?;
            b.add_message_integrity(PASSWORD)?;
            let mut n = b.finish();
            for (kind, value) in [
                (ATTR_USERNAME, &b"late"[..]),
                (0x0033, &b"????"[..]),
                (ATTR_PRIORITY, &b"x"[..]),
            ] {
                out[n..n + 2].copy_from_slice(&kind.to_be_bytes());
                out[n + 2..n + 4].copy_from_slice(&(value.len() as u16).to_be_bytes());
                out[n + 4..n + 4 + value.len()].copy_from_slice(value);
                n += 4 + value.len().next_multiple_of(4);
            }
            let length = (n - HEADER_LEN) as u16;
            out[2..4].copy_from_slice(&length.to_be_bytes());
            let crc = fingerprint_of(&out[..n])?;
            out[n..n + 4].copy_from_slice(&[0x80, 0x28, 0, 4]);
            out[n + 4..n + 8].copy_from_slice(&crc.to_be_bytes());
            n += 8;
            out[2..4].copy_from_slice(&((n - HEADER_LEN) as u16).to_be_bytes());
            Ok(n)
        });
        let msg = Message::new_checked(&bytes[..]).unwrap();
        assert_eq!(msg.attributes().count(), 6);
        assert_eq!(msg.username(), None);
        assert_eq!(msg.priority(), Some(5));
        assert_eq!(msg.unknown_comprehension_required().count(), 0);
        msg.verify_message_integrity(PASSWORD).unwrap();
        msg.verify_fingerprint().unwrap();
    }

    #[test]
    fn builder_misuse_is_an_error() {
        let mut out = [0u8; 64];
        assert!(MessageBuilder::new(&mut out, 0x4001, TID).is_err());
        assert!(matches!(
            MessageBuilder::new(&mut out[..19], BINDING_REQUEST, TID),
            Err(WireError::BufferTooSmall { .. })
        ));
        let mut b = MessageBuilder::new(&mut out, BINDING_REQUEST, TID).unwrap();
        assert!(b.add_attribute(ATTR_MESSAGE_INTEGRITY, &[0; 20]).is_err());
        assert!(b.add_attribute(ATTR_FINGERPRINT, &[0; 4]).is_err());
        assert!(b.add_attribute(ATTR_SOFTWARE, &[0; 41]).is_err());
        assert_eq!(b.written(), HEADER_LEN);
        b.add_message_integrity(b"k").unwrap();
        assert!(b.add_priority(1).is_err());
        assert!(b.add_message_integrity(b"k").is_err());
        b.add_fingerprint().unwrap();
        assert!(b.add_fingerprint().is_err());
        assert!(b.add_use_candidate().is_err());
        let n = b.finish();
        assert_eq!(n, HEADER_LEN + 24 + 8);
        let mut big = vec![0u8; 70_000];
        let mut b = MessageBuilder::new(&mut big, BINDING_REQUEST, TID).unwrap();
        assert!(b.add_attribute(ATTR_SOFTWARE, &[0; 65_535]).is_err());
        assert!(b.add_error_code(400, &"x".repeat(764)).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(msg) = Message::new_checked(&bytes[..]) {
                exercise(&msg);
            }
            let _ = looks_like_stun(&bytes);
        }

        #[test]
        fn arbitrary_attributes_behind_valid_headers_never_panic(
            message_type in 0u16..0x4000,
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let len = body.len() / 4 * 4;
            let mut bytes = message_type.to_be_bytes().to_vec();
            bytes.extend_from_slice(&(len as u16).to_be_bytes());
            bytes.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
            bytes.extend_from_slice(&TID);
            bytes.extend_from_slice(&body[..len]);
            if let Ok(msg) = Message::new_checked(&bytes[..]) {
                exercise(&msg);
            }
        }

        #[test]
        fn mutated_messages_never_panic(
            which in 0usize..4,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let mut bytes = match which {
                0 => rfc5769_request(),
                1 => rfc5769_ipv4_response(),
                2 => rfc5769_ipv6_response(),
                _ => ice_request(&[(0x0030, b"abc")]),
            };
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            let cut = cut % (bytes.len() + 1);
            for candidate in [&bytes[..], &bytes[..cut]] {
                if let Ok(msg) = Message::new_checked(candidate) {
                    exercise(&msg);
                }
            }
        }

        #[test]
        fn build_parse_round_trip(
            username in proptest::collection::vec(any::<u8>(), 0..100),
            priority in any::<u32>(),
            tie_breaker in any::<u64>(),
            controlling in any::<bool>(),
            use_candidate in any::<bool>(),
            tid in any::<[u8; 12]>(),
            password in proptest::collection::vec(any::<u8>(), 0..64),
            v6_octets in any::<[u8; 16]>(),
            v4_octets in any::<[u8; 4]>(),
            port in any::<u16>(),
            use_v6 in any::<bool>(),
        ) {
            let bytes = build(|out| {
                let mut b = MessageBuilder::new(out, BINDING_REQUEST, tid)?;
                b.add_username(&username)?;
                b.add_priority(priority)?;
                if controlling {
                    b.add_ice_controlling(tie_breaker)?;
                } else {
                    b.add_ice_controlled(tie_breaker)?;
                }
                if use_candidate {
                    b.add_use_candidate()?;
                }
                b.add_message_integrity(&password)?;
                b.add_fingerprint()?;
                Ok(b.finish())
            });
            let req = Message::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(req.transaction_id(), tid);
            prop_assert_eq!(req.username(), Some(&username[..]));
            prop_assert_eq!(req.priority(), Some(priority));
            prop_assert_eq!(req.use_candidate(), use_candidate);
            let (ing, ed) = if controlling { (Some(tie_breaker), None) } else { (None, Some(tie_breaker)) };
            prop_assert_eq!((req.ice_controlling(), req.ice_controlled()), (ing, ed));
            prop_assert!(req.verify_message_integrity(&password).is_ok());
            prop_assert!(req.verify_fingerprint().is_ok());

            let src = if use_v6 {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(v6_octets)), port)
            } else {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(v4_octets)), port)
            };
            let resp = build(|o| build_ice_lite_binding_success(&req, src, &password, o));
            let resp = Message::new_checked(&resp[..]).unwrap();
            prop_assert_eq!(resp.transaction_id(), tid);
            prop_assert_eq!(resp.xor_mapped_address(), Some(src));
            prop_assert!(resp.verify_message_integrity(&password).is_ok());
            prop_assert!(resp.verify_fingerprint().is_ok());
        }
    }
}
