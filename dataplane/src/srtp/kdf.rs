//! Session key derivation (RFC 3711 §4.3 with the AES-CM PRF, key derivation
//! rate 0; RFC 7714 §11 for the GCM profiles, RFC 6188 §7 for AES-256).
//!
//! `x = (label << 48) XOR master_salt`, and the PRF output is the AES-CM
//! keystream under the master key from `IV = x · 2^16`. The GCM profiles use
//! the same PRF with their 96-bit master salt in the leading bytes of the
//! 112-bit salt position and zeros in the last two bytes, which is also what
//! libsrtp does.

use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
use aws_lc_rs::iv::FixedLength;

use super::profile::wipe;
use super::SrtpError;

/// Labels of RFC 3711 §4.3.2 and §4.3.2's SRTCP counterparts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Label {
    RtpEncryption = 0,
    RtpAuth = 1,
    RtpSalt = 2,
    RtcpEncryption = 3,
    RtcpAuth = 4,
    RtcpSalt = 5,
}

/// HMAC-SHA1 session authentication key length (RFC 3711 §4.2.1: n_a = 160).
pub(crate) const AUTH_KEY_LEN: usize = 20;

/// The keys one direction of one kind (SRTP or SRTCP) uses.
pub(crate) struct SessionKeys {
    pub enc: [u8; 32],
    pub enc_len: usize,
    pub auth: [u8; AUTH_KEY_LEN],
    pub salt: [u8; 14],
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        wipe(&mut self.enc);
        wipe(&mut self.auth);
        wipe(&mut self.salt);
    }
}

/// The AES-CM PRF keyed with one master key and salt.
pub(crate) struct Kdf {
    cipher: EncryptingKey,
    salt: [u8; 14],
}

impl Kdf {
    /// `master_key` is 16 or 32 bytes, `master_salt` 12 or 14 bytes.
    pub(crate) fn new(master_key: &[u8], master_salt: &[u8]) -> Result<Self, SrtpError> {
        let algorithm = match master_key.len() {
            16 => &AES_128,
            32 => &AES_256,
            got => {
                return Err(SrtpError::BadKeyLength {
                    what: "master key",
                    expected: 16,
                    got,
                })
            }
        };
        if master_salt.len() > 14 {
            return Err(SrtpError::BadKeyLength {
                what: "master salt",
                expected: 14,
                got: master_salt.len(),
            });
        }
        let key = UnboundCipherKey::new(algorithm, master_key).map_err(|_| SrtpError::Crypto)?;
        let cipher = EncryptingKey::ctr(key).map_err(|_| SrtpError::Crypto)?;
        let mut salt = [0u8; 14];
        salt[..master_salt.len()].copy_from_slice(master_salt);
        Ok(Self { cipher, salt })
    }

    /// Fills `out` with the PRF output for `label` (index 0, as the key
    /// derivation rate is 0).
    pub(crate) fn derive(&self, label: Label, out: &mut [u8]) -> Result<(), SrtpError> {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        // key_id = label ‖ r (r = 0 with rate 0) sits in the low 56 bits of
        // the 112-bit salt, so the label lands on byte 7.
        iv[7] ^= label as u8;
        out.fill(0);
        self.cipher
            .less_safe_encrypt(out, EncryptionContext::Iv128(FixedLength::from(iv)))
            .map_err(|_| SrtpError::Crypto)?;
        Ok(())
    }

    /// Derives the three session keys for SRTP (`rtcp == false`) or SRTCP.
    pub(crate) fn session_keys(
        &self,
        rtcp: bool,
        enc_len: usize,
        salt_len: usize,
    ) -> Result<SessionKeys, SrtpError> {
        let (enc_label, auth_label, salt_label) = if rtcp {
            (Label::RtcpEncryption, Label::RtcpAuth, Label::RtcpSalt)
        } else {
            (Label::RtpEncryption, Label::RtpAuth, Label::RtpSalt)
        };
        let mut keys = SessionKeys {
            enc: [0; 32],
            enc_len,
            auth: [0; AUTH_KEY_LEN],
            salt: [0; 14],
        };
        self.derive(enc_label, &mut keys.enc[..enc_len])?;
        self.derive(auth_label, &mut keys.auth)?;
        self.derive(salt_label, &mut keys.salt[..salt_len])?;
        Ok(keys)
    }
}

impl Drop for Kdf {
    fn drop(&mut self) {
        wipe(&mut self.salt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    /// RFC 3711 Appendix B.3.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let kdf = Kdf::new(
            &unhex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &unhex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap();

        let mut cipher_key = [0u8; 16];
        kdf.derive(Label::RtpEncryption, &mut cipher_key).unwrap();
        assert_eq!(
            cipher_key.to_vec(),
            unhex("C61E7A93744F39EE10734AFE3FF7A087")
        );

        let mut salt = [0u8; 14];
        kdf.derive(Label::RtpSalt, &mut salt).unwrap();
        assert_eq!(salt.to_vec(), unhex("30CBBC08863D8C85D49DB34A9AE1"));

        // The RFC prints 94 bytes of auth keystream; the first 20 are the
        // HMAC-SHA1 key.
        let mut auth = [0u8; 94];
        kdf.derive(Label::RtpAuth, &mut auth).unwrap();
        assert_eq!(
            auth.to_vec(),
            unhex(
                "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"
            )
        );

        let keys = kdf.session_keys(false, 16, 14).unwrap();
        assert_eq!(keys.enc[..16], cipher_key);
        assert_eq!(keys.auth[..], auth[..20]);
        assert_eq!(keys.salt, salt);
    }

    /// The SRTCP labels give different keys from the SRTP ones.
    #[test]
    fn rtcp_labels_differ() {
        let kdf = Kdf::new(&[0x11; 32], &[0x22; 12]).unwrap();
        let rtp = kdf.session_keys(false, 32, 12).unwrap();
        let rtcp = kdf.session_keys(true, 32, 12).unwrap();
        assert_ne!(rtp.enc, rtcp.enc);
        assert_ne!(rtp.auth, rtcp.auth);
        assert_ne!(rtp.salt[..12], rtcp.salt[..12]);
        assert_eq!(rtp.salt[12..], [0, 0]);
    }
}
