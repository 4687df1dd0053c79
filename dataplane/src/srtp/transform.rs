//! The cryptographic transforms, keyed once per context and reused for
//! every packet: AES-CM + HMAC-SHA1 (RFC 3711 §4) and AES-GCM (RFC 7714).
//!
//! Nothing here allocates. The AES key schedules and the HMAC inner/outer
//! pads are computed when the context is made; a packet costs an IV built on
//! the stack, one AES-CTR or AES-GCM call over the payload and, for HMAC, a
//! restart of the keyed state ([`HmacSha1`]) and the hash itself.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

use super::aes_ctr::AesCtr;
use super::hmac_sha1::HmacSha1;
use super::kdf::SessionKeys;
use super::profile::wipe;
use super::SrtpError;

/// GCM tag length for both AEAD profiles (RFC 7714 §13.2 forbids truncation).
pub(crate) const GCM_TAG_LEN: usize = 16;

/// One keyed transform: SRTP or SRTCP of one context.
// The key schedules are stored inline on purpose: a context is built once and
// never moved on the packet path, and inline keys save a pointer chase.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Transform {
    /// AES-CM with an HMAC-SHA1 tag (truncated by the caller).
    Cm {
        cipher: AesCtr,
        auth: HmacSha1,
        salt: [u8; 14],
    },
    /// AES-GCM with a 16-byte tag.
    Gcm { aead: LessSafeKey, salt: [u8; 12] },
}

impl Transform {
    pub(crate) fn cm(keys: &SessionKeys) -> Result<Self, SrtpError> {
        // CTR is its own inverse, so one key schedule serves both ways.
        let cipher = AesCtr::new(&keys.enc[..keys.enc_len])?;
        let auth = HmacSha1::new(&keys.auth)?;
        let mut salt = [0u8; 14];
        salt.copy_from_slice(&keys.salt[..14]);
        Ok(Self::Cm { cipher, auth, salt })
    }

    pub(crate) fn gcm(keys: &SessionKeys) -> Result<Self, SrtpError> {
        let algorithm = if keys.enc_len == 32 {
            &AES_256_GCM
        } else {
            &AES_128_GCM
        };
        let key =
            UnboundKey::new(algorithm, &keys.enc[..keys.enc_len]).map_err(|_| SrtpError::Crypto)?;
        let mut salt = [0u8; 12];
        salt.copy_from_slice(&keys.salt[..12]);
        Ok(Self::Gcm {
            aead: LessSafeKey::new(key),
            salt,
        })
    }
}

impl Drop for Transform {
    fn drop(&mut self) {
        match self {
            Self::Cm { salt, .. } => wipe(salt),
            Self::Gcm { salt, .. } => wipe(salt),
        }
    }
}

/// AES-CM IV (RFC 3711 §4.1.1): `(salt · 2^16) XOR (SSRC · 2^64) XOR (index · 2^16)`.
#[inline]
pub(crate) fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    let ssrc = ssrc.to_be_bytes();
    let index = index.to_be_bytes();
    for i in 0..4 {
        iv[4 + i] ^= ssrc[i];
    }
    // The 48-bit index is the low six bytes of the u64.
    for i in 0..6 {
        iv[8 + i] ^= index[2 + i];
    }
    iv
}

/// AES-GCM SRTP IV (RFC 7714 §8.1): `(00 00 ‖ SSRC ‖ ROC ‖ SEQ) XOR salt`.
#[inline]
pub(crate) fn gcm_rtp_iv(salt: &[u8; 12], ssrc: u32, index: u64) -> [u8; 12] {
    let mut iv = *salt;
    let ssrc = ssrc.to_be_bytes();
    let index = index.to_be_bytes();
    for i in 0..4 {
        iv[2 + i] ^= ssrc[i];
    }
    for i in 0..6 {
        iv[6 + i] ^= index[2 + i];
    }
    iv
}

/// AES-GCM SRTCP IV (RFC 7714 §9.1): `(00 00 ‖ SSRC ‖ 00 00 ‖ 0 ‖ index) XOR salt`.
#[inline]
pub(crate) fn gcm_rtcp_iv(salt: &[u8; 12], ssrc: u32, index: u32) -> [u8; 12] {
    let mut iv = *salt;
    let ssrc = ssrc.to_be_bytes();
    let index = index.to_be_bytes();
    for i in 0..4 {
        iv[2 + i] ^= ssrc[i];
        iv[8 + i] ^= index[i];
    }
    iv
}

/// Seals `in_out` in place with `aad`, returning the tag.
#[inline]
pub(crate) fn gcm_seal(
    aead: &LessSafeKey,
    iv: [u8; 12],
    aad: &[u8],
    in_out: &mut [u8],
) -> Result<[u8; GCM_TAG_LEN], SrtpError> {
    let tag = aead
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), in_out)
        .map_err(|_| SrtpError::Crypto)?;
    let mut out = [0u8; GCM_TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

/// Verifies `tag` and opens `in_out` in place.
#[inline]
pub(crate) fn gcm_open(
    aead: &LessSafeKey,
    iv: [u8; 12],
    aad: &[u8],
    tag: &[u8],
    in_out: &mut [u8],
) -> Result<(), SrtpError> {
    aead.open_in_place_separate_tag(
        Nonce::assume_unique_for_key(iv),
        Aad::from(aad),
        tag,
        in_out,
    )
    .map(drop)
    .map_err(|_| SrtpError::AuthenticationFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    /// RFC 3711 Appendix B.2: the AES-CM keystream segment for session key
    /// 2B7E…4F3C, salt F0F1…FCFD, SSRC 0, index 0, 0xFF02 blocks long.
    #[test]
    fn rfc3711_b2_keystream() {
        let cipher = AesCtr::new(&unhex("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap();
        let mut salt = [0u8; 14];
        salt.copy_from_slice(&unhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"));
        let iv = cm_iv(&salt, 0, 0);
        assert_eq!(iv.to_vec(), unhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));

        let mut keystream = vec![0u8; 0xFF02 * 16];
        cipher.apply(iv, &mut keystream);
        let block = |n: usize| keystream[n * 16..n * 16 + 16].to_vec();
        // Counter F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000, …0001, …0002.
        assert_eq!(block(0), unhex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(block(1), unhex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(block(2), unhex("41E95B3BB0A2E8DD477901E4FCA894C0"));
        // Counter …FCFDFEFF, …FCFDFF00, …FCFDFF01.
        assert_eq!(block(0xFEFF), unhex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
        assert_eq!(block(0xFF00), unhex("362B7C3C6773516318A077D7FC5073AE"));
        assert_eq!(block(0xFF01), unhex("6A2CC3787889374FBEB4C81B17BA6C44"));
    }

    /// The IV layouts printed in RFC 7714 §16 and §17.
    #[test]
    fn rfc7714_iv_layouts() {
        let mut salt = [0u8; 12];
        salt.copy_from_slice(b"Quid pro quo");
        assert_eq!(
            gcm_rtp_iv(&salt, 0x5501_a0b2, 0xf17b).to_vec(),
            unhex("51 75 3c 65 80 c2 72 6f 20 71 84 14")
        );
        assert_eq!(
            gcm_rtcp_iv(&salt, 0x4d61_7273, 0x05d4).to_vec(),
            unhex("51 75 24 05 52 03 72 6f 20 71 70 bb")
        );
        // ROC lands in bytes 6..10.
        assert_eq!(
            gcm_rtp_iv(&[0; 12], 0, 0x0102_0304_0506)[6..12],
            [1, 2, 3, 4, 5, 6]
        );
    }

    #[test]
    fn cm_iv_layout() {
        let iv = cm_iv(&[0; 14], 0x0102_0304, 0x0000_5566_7788_99aa);
        assert_eq!(iv.to_vec(), unhex("00000000010203045566778899aa0000"));
    }
}
