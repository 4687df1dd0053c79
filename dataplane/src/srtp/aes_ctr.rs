//! AES in counter mode over aws-lc's `AES_KEY`, keyed once per session key.
//!
//! aws-lc-rs's `EncryptingKey::less_safe_encrypt` reaches the same
//! `AES_ctr128_encrypt`, but its per-call checks and context handling cost
//! 20–40 ns, close to the cipher's own time on a 160-byte payload. Calling
//! aws-lc directly with the key schedule kept here leaves only the cipher.

use core::ffi::c_uint;
use core::sync::atomic::{compiler_fence, Ordering};

use aws_lc_sys::{AES_ctr128_encrypt, AES_set_encrypt_key, AES_KEY};

use super::profile::wipe;
use super::SrtpError;

/// AES block and counter length.
pub(crate) const BLOCK_LEN: usize = 16;

/// An AES-128 or AES-256 encryption key schedule for counter mode.
pub(crate) struct AesCtr {
    // A flat array of round keys: moving it is a plain copy.
    schedule: AES_KEY,
}

impl AesCtr {
    /// Expands a 16- or 32-byte key.
    pub(crate) fn new(key: &[u8]) -> Result<Self, SrtpError> {
        let bits: c_uint = match key.len() {
            16 => 128,
            32 => 256,
            got => {
                return Err(SrtpError::BadKeyLength {
                    what: "AES key",
                    expected: 16,
                    got,
                })
            }
        };
        let mut schedule = AES_KEY {
            rd_key: [0; 60],
            rounds: 0,
        };
        // SAFETY: `key` is readable for `bits / 8` bytes (checked above) and
        // `schedule` is a valid, writable `AES_KEY`.
        let status = unsafe { AES_set_encrypt_key(key.as_ptr(), bits, &mut schedule) };
        let this = Self { schedule };
        // `AES_set_encrypt_key` returns 0 on success, negative on failure.
        if status != 0 {
            return Err(SrtpError::Crypto);
        }
        Ok(this)
    }

    /// XORs the keystream that starts at counter block `iv` into `data`.
    /// The counter is a 128-bit big-endian integer (RFC 3711 §4.1.1).
    #[inline]
    pub(crate) fn apply(&self, iv: [u8; BLOCK_LEN], data: &mut [u8]) {
        if data.is_empty() {
            return;
        }
        let mut counter = iv;
        let mut partial = [0u8; BLOCK_LEN];
        let mut used: c_uint = 0;
        let at = data.as_mut_ptr();
        // SAFETY: `at` is valid for reads and writes of `data.len()` bytes
        // and aws-lc allows input and output to be the same buffer; the key
        // schedule was set by `AES_set_encrypt_key`; `counter` and `partial`
        // are the 16-byte blocks the call expects, and `used` starts at 0 as
        // a fresh keystream requires.
        unsafe {
            AES_ctr128_encrypt(
                at,
                at,
                data.len(),
                &self.schedule,
                counter.as_mut_ptr(),
                partial.as_mut_ptr(),
                &mut used,
            );
        }
        // The last keystream block may be partly unused: do not leave it on
        // the stack.
        wipe(&mut partial);
    }
}

impl Drop for AesCtr {
    fn drop(&mut self) {
        let zero = AES_KEY {
            rd_key: [0; 60],
            rounds: 0,
        };
        // SAFETY: `self.schedule` is a valid, aligned, exclusive place; a
        // volatile write is not elided as a dead store.
        unsafe { core::ptr::write_volatile(&mut self.schedule, zero) };
        compiler_fence(Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128, AES_256};
    use aws_lc_rs::iv::FixedLength;
    use proptest::prelude::*;

    fn reference(key: &[u8], iv: [u8; 16], data: &mut [u8]) {
        let algorithm = if key.len() == 32 { &AES_256 } else { &AES_128 };
        let key = EncryptingKey::ctr(UnboundCipherKey::new(algorithm, key).unwrap()).unwrap();
        key.less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(iv)))
            .unwrap();
    }

    /// NIST SP 800-38A F.5.1, the first two blocks of CTR-AES128.Encrypt.
    #[test]
    fn sp800_38a_ctr_aes128() {
        let key = hex::decode("2b7e151628aed2a6abf7158809cf4f3c").unwrap();
        let iv: [u8; 16] = hex::decode("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
            .unwrap()
            .try_into()
            .unwrap();
        let mut data =
            hex::decode("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
                .unwrap();
        AesCtr::new(&key).unwrap().apply(iv, &mut data);
        assert_eq!(
            hex::encode(data),
            "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff"
        );
    }

    #[test]
    fn key_lengths_are_checked() {
        assert!(matches!(
            AesCtr::new(&[0; 24]),
            Err(SrtpError::BadKeyLength { got: 24, .. })
        ));
        assert!(AesCtr::new(&[]).is_err());
        assert!(AesCtr::new(&[0; 16]).is_ok());
        assert!(AesCtr::new(&[0; 32]).is_ok());
    }

    #[test]
    fn empty_data_is_left_alone() {
        AesCtr::new(&[1; 16]).unwrap().apply([2; 16], &mut []);
    }

    proptest! {
        /// Agrees with aws-lc-rs's AES-CTR for both key sizes, any length,
        /// and counters about to carry out of their low 32 or 64 bits.
        #[test]
        fn matches_aws_lc_rs(
            long_key in any::<bool>(),
            key in any::<[u8; 32]>(),
            mut iv in any::<[u8; 16]>(),
            carry in 0usize..3,
            data in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let key = if long_key { &key[..] } else { &key[..16] };
            match carry {
                1 => iv[12..].copy_from_slice(&[0xff, 0xff, 0xff, 0xfe]),
                2 => iv[8..].copy_from_slice(&[0xff; 8]),
                _ => {}
            }
            let mut ours = data.clone();
            AesCtr::new(key).unwrap().apply(iv, &mut ours);
            let mut theirs = data;
            reference(key, iv, &mut theirs);
            prop_assert_eq!(ours, theirs);
        }
    }
}
