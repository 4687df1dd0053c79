//! Protection profiles and master keys.

use super::SrtpError;

/// An SRTP protection profile: cipher, authentication and their lengths
/// (RFC 3711 §5, RFC 5764 §4.1.2, RFC 7714 §12 and §14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80`: AES-128 counter mode, HMAC-SHA1 with an
    /// 80-bit tag on SRTP and SRTCP.
    AesCm128HmacSha1_80,
    /// `SRTP_AES128_CM_HMAC_SHA1_32`: as the 80-bit profile but with a 32-bit
    /// SRTP tag; SRTCP keeps the 80-bit tag (RFC 5764 §4.1.2).
    AesCm128HmacSha1_32,
    /// `SRTP_AEAD_AES_128_GCM`: AES-128-GCM with a 16-byte tag (RFC 7714).
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM`: AES-256-GCM with a 16-byte tag (RFC 7714).
    AeadAes256Gcm,
}

impl SrtpProfile {
    /// Every supported profile, in DTLS-SRTP id order.
    pub const ALL: [SrtpProfile; 4] = [
        SrtpProfile::AesCm128HmacSha1_80,
        SrtpProfile::AesCm128HmacSha1_32,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ];

    /// The profile for a DTLS-SRTP protection profile id (RFC 5764 §4.1.2,
    /// RFC 7714 §14.2), as negotiated in the `use_srtp` extension.
    pub const fn from_dtls_id(id: u16) -> Result<Self, SrtpError> {
        match id {
            0x0001 => Ok(Self::AesCm128HmacSha1_80),
            0x0002 => Ok(Self::AesCm128HmacSha1_32),
            0x0007 => Ok(Self::AeadAes128Gcm),
            0x0008 => Ok(Self::AeadAes256Gcm),
            other => Err(SrtpError::UnknownProfile(other)),
        }
    }

    /// The DTLS-SRTP protection profile id.
    pub const fn dtls_id(self) -> u16 {
        match self {
            Self::AesCm128HmacSha1_80 => 0x0001,
            Self::AesCm128HmacSha1_32 => 0x0002,
            Self::AeadAes128Gcm => 0x0007,
            Self::AeadAes256Gcm => 0x0008,
        }
    }

    /// The profile's registered name (RFC 5764, RFC 7714).
    pub const fn name(self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "SRTP_AES128_CM_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "SRTP_AES128_CM_HMAC_SHA1_32",
            Self::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            Self::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
        }
    }

    /// Whether the profile is an AEAD (GCM) profile.
    pub const fn is_aead(self) -> bool {
        matches!(self, Self::AeadAes128Gcm | Self::AeadAes256Gcm)
    }

    /// Length of the master key and of the session encryption keys.
    pub const fn master_key_len(self) -> usize {
        match self {
            Self::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    /// Length of the master salt and of the session salts.
    pub const fn master_salt_len(self) -> usize {
        if self.is_aead() {
            12
        } else {
            14
        }
    }

    /// Length of the authentication tag appended to SRTP packets.
    pub const fn rtp_tag_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 => 10,
            Self::AesCm128HmacSha1_32 => 4,
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => 16,
        }
    }

    /// Length of the authentication tag appended to SRTCP packets.
    pub const fn rtcp_tag_len(self) -> usize {
        if self.is_aead() {
            16
        } else {
            10
        }
    }

    /// Bytes that protecting an RTP packet adds (the tag; no MKI is used).
    pub const fn rtp_overhead(self) -> usize {
        self.rtp_tag_len()
    }

    /// Bytes that protecting an RTCP packet adds: the tag and the 4-byte
    /// E flag + SRTCP index word.
    pub const fn rtcp_overhead(self) -> usize {
        self.rtcp_tag_len() + 4
    }
}

/// A master key and master salt, as DTLS-SRTP exports them or SDES carries
/// them. The bytes are wiped when the value is dropped.
#[derive(Clone)]
pub struct MasterKey {
    key: [u8; 32],
    key_len: u8,
    salt: [u8; 14],
    salt_len: u8,
}

impl MasterKey {
    /// A master key of 16 or 32 bytes and a master salt of 12 or 14 bytes.
    /// Whether the lengths suit a profile is checked when a context is made.
    pub fn new(key: &[u8], salt: &[u8]) -> Result<Self, SrtpError> {
        if key.len() != 16 && key.len() != 32 {
            return Err(SrtpError::BadKeyLength {
                what: "master key",
                expected: 16,
                got: key.len(),
            });
        }
        if salt.len() != 12 && salt.len() != 14 {
            return Err(SrtpError::BadKeyLength {
                what: "master salt",
                expected: 14,
                got: salt.len(),
            });
        }
        let mut out = Self {
            key: [0; 32],
            key_len: key.len() as u8,
            salt: [0; 14],
            salt_len: salt.len() as u8,
        };
        out.key[..key.len()].copy_from_slice(key);
        out.salt[..salt.len()].copy_from_slice(salt);
        Ok(out)
    }

    /// Splits `key ‖ salt`, the layout SDES inline keys and libsrtp use, at
    /// the profile's lengths.
    pub fn from_concatenated(profile: SrtpProfile, bytes: &[u8]) -> Result<Self, SrtpError> {
        let key_len = profile.master_key_len();
        let expected = key_len + profile.master_salt_len();
        if bytes.len() != expected {
            return Err(SrtpError::BadKeyLength {
                what: "master key and salt",
                expected,
                got: bytes.len(),
            });
        }
        Self::new(&bytes[..key_len], &bytes[key_len..])
    }

    /// The master key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key[..usize::from(self.key_len)]
    }

    /// The master salt bytes.
    pub fn salt(&self) -> &[u8] {
        &self.salt[..usize::from(self.salt_len)]
    }

    /// Checks the lengths against `profile`.
    pub(crate) fn check_for(&self, profile: SrtpProfile) -> Result<(), SrtpError> {
        if self.key().len() != profile.master_key_len() {
            return Err(SrtpError::BadKeyLength {
                what: "master key",
                expected: profile.master_key_len(),
                got: self.key().len(),
            });
        }
        if self.salt().len() != profile.master_salt_len() {
            return Err(SrtpError::BadKeyLength {
                what: "master salt",
                expected: profile.master_salt_len(),
                got: self.salt().len(),
            });
        }
        Ok(())
    }
}

impl core::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Key material never reaches logs.
        f.debug_struct("MasterKey")
            .field("key_len", &self.key_len)
            .field("salt_len", &self.salt_len)
            .finish_non_exhaustive()
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.key);
        wipe(&mut self.salt);
    }
}

/// Overwrites secret bytes with zeros in a way the optimiser keeps.
pub(crate) fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference.
        unsafe { core::ptr::write_volatile(b, 0) };
    }
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtls_ids_round_trip() {
        for profile in SrtpProfile::ALL {
            assert_eq!(SrtpProfile::from_dtls_id(profile.dtls_id()), Ok(profile));
        }
        assert_eq!(
            SrtpProfile::from_dtls_id(0x0005),
            Err(SrtpError::UnknownProfile(0x0005))
        );
    }

    #[test]
    fn lengths_follow_the_rfcs() {
        use SrtpProfile::*;
        assert_eq!(
            (
                AesCm128HmacSha1_80.master_key_len(),
                AesCm128HmacSha1_80.master_salt_len()
            ),
            (16, 14)
        );
        assert_eq!(
            (
                AeadAes128Gcm.master_key_len(),
                AeadAes128Gcm.master_salt_len()
            ),
            (16, 12)
        );
        assert_eq!(
            (
                AeadAes256Gcm.master_key_len(),
                AeadAes256Gcm.master_salt_len()
            ),
            (32, 12)
        );
        assert_eq!(AesCm128HmacSha1_32.rtp_tag_len(), 4);
        assert_eq!(AesCm128HmacSha1_32.rtcp_tag_len(), 10);
        assert_eq!(AeadAes256Gcm.rtcp_overhead(), 20);
    }

    #[test]
    fn master_key_lengths_are_checked() {
        assert!(MasterKey::new(&[0; 15], &[0; 14]).is_err());
        assert!(MasterKey::new(&[0; 16], &[0; 13]).is_err());
        let key = MasterKey::new(&[1; 16], &[2; 12]).unwrap();
        assert!(key.check_for(SrtpProfile::AeadAes128Gcm).is_ok());
        assert!(matches!(
            key.check_for(SrtpProfile::AesCm128HmacSha1_80),
            Err(SrtpError::BadKeyLength {
                what: "master salt",
                expected: 14,
                got: 12
            })
        ));
        assert!(matches!(
            key.check_for(SrtpProfile::AeadAes256Gcm),
            Err(SrtpError::BadKeyLength {
                what: "master key",
                expected: 32,
                got: 16
            })
        ));
        let joined = MasterKey::from_concatenated(SrtpProfile::AeadAes256Gcm, &[7; 44]).unwrap();
        assert_eq!(joined.key(), &[7; 32]);
        assert_eq!(joined.salt(), &[7; 12]);
        assert!(MasterKey::from_concatenated(SrtpProfile::AeadAes256Gcm, &[7; 30]).is_err());
    }
}
