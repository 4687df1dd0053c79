//! Per-subscriber translation tables: payload types and RFC 8285 extension
//! ids, both negotiated separately by publisher and subscriber.

use super::RewriteError;

/// Largest RTP payload type (7-bit field).
const MAX_PAYLOAD_TYPE: u8 = 127;

/// Publisher payload type → subscriber payload type, one entry per codec
/// (and per RTX/RED/FEC format) the subscriber negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadTypeMap {
    to: [Option<u8>; MAX_PAYLOAD_TYPE as usize + 1],
}

impl Default for PayloadTypeMap {
    fn default() -> Self {
        Self::new()
    }
}

impl PayloadTypeMap {
    /// A map with no entries: every payload type is unmapped.
    pub const fn new() -> Self {
        Self {
            to: [None; MAX_PAYLOAD_TYPE as usize + 1],
        }
    }

    /// Maps publisher payload type `from` to subscriber payload type `to`,
    /// replacing any previous entry for `from`.
    pub fn insert(&mut self, from: u8, to: u8) -> Result<(), RewriteError> {
        for pt in [from, to] {
            if pt > MAX_PAYLOAD_TYPE {
                return Err(RewriteError::InvalidPayloadType(pt));
            }
        }
        self.to[usize::from(from)] = Some(to);
        Ok(())
    }

    /// Removes the entry for `from`, returning what it mapped to.
    pub fn remove(&mut self, from: u8) -> Option<u8> {
        self.to.get_mut(usize::from(from)).and_then(Option::take)
    }

    /// The subscriber payload type for publisher payload type `from`.
    pub fn get(&self, from: u8) -> Option<u8> {
        self.to.get(usize::from(from)).copied().flatten()
    }
}

/// Publisher extension id → subscriber extension id (RFC 8285). Ids the
/// subscriber did not negotiate are absent and get erased from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionIdMap {
    /// Indexed by publisher id; 0 means "not negotiated by the subscriber",
    /// which is also what [`crate::wire::rtp_ext::remap_ids`] reads as erase.
    to: [u8; 256],
}

impl Default for ExtensionIdMap {
    fn default() -> Self {
        Self::new()
    }
}

impl ExtensionIdMap {
    /// A map with no entries: every extension element is erased.
    pub const fn new() -> Self {
        Self { to: [0; 256] }
    }

    /// Maps publisher extension id `from` to subscriber id `to`. Id 0 is
    /// reserved by RFC 8285 and refused. Whether `to` fits the one-byte form
    /// (1..=14) depends on each packet's block and is checked when applied.
    pub fn insert(&mut self, from: u8, to: u8) -> Result<(), RewriteError> {
        for id in [from, to] {
            if id == 0 {
                return Err(RewriteError::InvalidExtensionId(id));
            }
        }
        self.to[usize::from(from)] = to;
        Ok(())
    }

    /// Removes the entry for `from`, returning what it mapped to.
    pub fn remove(&mut self, from: u8) -> Option<u8> {
        let old = std::mem::take(&mut self.to[usize::from(from)]);
        (old != 0).then_some(old)
    }

    /// The subscriber id for publisher id `from`.
    pub fn get(&self, from: u8) -> Option<u8> {
        let to = self.to[usize::from(from)];
        (to != 0).then_some(to)
    }

    /// The subscriber id for `from`, or 0 (erase) if it has none.
    pub(crate) fn get_or_erase(&self, from: u8) -> u8 {
        self.to[usize::from(from)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_types_map_and_unmap() {
        let mut map = PayloadTypeMap::new();
        map.insert(96, 100).unwrap();
        map.insert(111, 109).unwrap();
        assert_eq!(map.get(96), Some(100));
        assert_eq!(map.get(111), Some(109));
        assert_eq!(map.get(97), None);
        assert_eq!(map.get(200), None);
        assert_eq!(map.remove(96), Some(100));
        assert_eq!(map.get(96), None);
        assert_eq!(map.remove(96), None);
    }

    #[test]
    fn payload_types_above_127_are_refused() {
        let mut map = PayloadTypeMap::new();
        assert_eq!(
            map.insert(128, 96),
            Err(RewriteError::InvalidPayloadType(128))
        );
        assert_eq!(
            map.insert(96, 255),
            Err(RewriteError::InvalidPayloadType(255))
        );
        assert_eq!(map, PayloadTypeMap::new());
    }

    #[test]
    fn extension_ids_map_unmap_and_refuse_zero() {
        let mut map = ExtensionIdMap::new();
        map.insert(3, 5).unwrap();
        map.insert(200, 12).unwrap();
        assert_eq!(map.get(3), Some(5));
        assert_eq!(map.get(200), Some(12));
        assert_eq!(map.get(4), None);
        assert_eq!(map.get_or_erase(4), 0);
        assert_eq!(map.insert(0, 1), Err(RewriteError::InvalidExtensionId(0)));
        assert_eq!(map.insert(1, 0), Err(RewriteError::InvalidExtensionId(0)));
        assert_eq!(map.remove(3), Some(5));
        assert_eq!(map.remove(3), None);
    }
}
