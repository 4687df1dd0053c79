//! HMAC-SHA1 (RFC 2104) with one keyed state per session key, reused for
//! every packet.
//!
//! `aws_lc_rs::hmac::Context` can only be made by copying the key's state
//! and is wiped and dropped after one tag; on small packets that costs as
//! much as the hash itself. This keeps aws-lc's own `HMAC_CTX`, keyed once
//! (the inner and outer pad states are precomputed), and restarts it from
//! the inner pad state for each message with `HMAC_Init_ex(ctx, NULL, 0,
//! NULL, NULL)`: no allocation, no copy of the key, nothing to drop.

use core::ptr::{self, NonNull};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_sys::{
    EVP_sha1, HMAC_CTX_free, HMAC_CTX_new, HMAC_Final, HMAC_Init_ex, HMAC_Update, HMAC_CTX,
};

use super::SrtpError;

/// Length of an untruncated HMAC-SHA1 tag.
pub(crate) const TAG_LEN: usize = 20;

/// An HMAC-SHA1 key with its reusable computation state.
pub(crate) struct HmacSha1 {
    /// Owned: made by `HMAC_CTX_new`, freed once in `drop`, never shared.
    ctx: NonNull<HMAC_CTX>,
}

// SAFETY: the `HMAC_CTX` is a flat heap block owned by this value alone (no
// thread-local or shared state, no pointers into other objects but aws-lc's
// static method tables); moving the owner to another thread moves sole access
// with it.
unsafe impl Send for HmacSha1 {}
// SAFETY: every method that touches the `HMAC_CTX` takes `&mut self`; a
// shared reference gives no access to it, so sharing one across threads
// cannot race.
unsafe impl Sync for HmacSha1 {}

impl HmacSha1 {
    /// Keys a new state with `key` (any length; RFC 3711 uses 20 bytes).
    pub(crate) fn new(key: &[u8]) -> Result<Self, SrtpError> {
        // SAFETY: `HMAC_CTX_new` has no preconditions; it returns a zeroed
        // context or null.
        let ctx = NonNull::new(unsafe { HMAC_CTX_new() }).ok_or(SrtpError::Crypto)?;
        // From here on `drop` frees the context, also on the error return.
        let this = Self { ctx };
        // SAFETY: `ctx` is a valid context we own; `key` is readable for
        // `key.len()` bytes for the duration of the call (aws-lc copies what
        // it needs into the pad states); `EVP_sha1()` returns a static
        // digest; the engine argument must be null.
        let ok = unsafe {
            HMAC_Init_ex(
                this.ctx.as_ptr(),
                key.as_ptr().cast(),
                key.len(),
                EVP_sha1(),
                ptr::null_mut(),
            )
        };
        if ok != 1 {
            return Err(SrtpError::Crypto);
        }
        Ok(this)
    }

    /// The HMAC of `data ‖ trailer` (the trailer is the ROC for SRTP, empty
    /// for SRTCP; passing it apart saves copying the packet). Should aws-lc's
    /// final step ever fail, it wipes the state: this and every later call
    /// then return [`SrtpError::Crypto`] rather than a tag under a lost key.
    #[inline]
    pub(crate) fn compute(
        &mut self,
        data: &[u8],
        trailer: &[u8],
    ) -> Result<[u8; TAG_LEN], SrtpError> {
        let ctx = self.ctx.as_ptr();
        let mut out = [0u8; TAG_LEN];
        let mut out_len: core::ffi::c_uint = 0;
        // SAFETY: `ctx` is valid, keyed in `new` and exclusively borrowed
        // through `&mut self`. With a null key and digest, `HMAC_Init_ex`
        // keeps the key and restarts from the inner pad state, also after a
        // computation left unfinished. The data pointers are readable for
        // their lengths during each call; empty parts are not passed. `out`
        // has room for the 20-byte SHA-1 output and `out_len` is a valid
        // place for its length.
        let ok = unsafe {
            HMAC_Init_ex(ctx, ptr::null(), 0, ptr::null(), ptr::null_mut()) == 1
                && (data.is_empty() || HMAC_Update(ctx, data.as_ptr(), data.len()) == 1)
                && (trailer.is_empty() || HMAC_Update(ctx, trailer.as_ptr(), trailer.len()) == 1)
                && HMAC_Final(ctx, out.as_mut_ptr(), &mut out_len) == 1
        };
        if !ok || out_len as usize != TAG_LEN {
            return Err(SrtpError::Crypto);
        }
        Ok(out)
    }

    /// Writes the HMAC of `data ‖ trailer`, truncated to `out.len()` bytes
    /// (1 ..= 20), to `out`.
    #[inline]
    pub(crate) fn sign(
        &mut self,
        data: &[u8],
        trailer: &[u8],
        out: &mut [u8],
    ) -> Result<(), SrtpError> {
        if out.is_empty() || out.len() > TAG_LEN {
            return Err(SrtpError::Crypto);
        }
        let tag = self.compute(data, trailer)?;
        out.copy_from_slice(&tag[..out.len()]);
        Ok(())
    }

    /// Checks in constant time that `tag` (1 ..= 20 bytes) is the HMAC of
    /// `data ‖ trailer` truncated to its length.
    #[inline]
    pub(crate) fn verify(
        &mut self,
        data: &[u8],
        trailer: &[u8],
        tag: &[u8],
    ) -> Result<(), SrtpError> {
        // An empty tag would match anything.
        if tag.is_empty() || tag.len() > TAG_LEN {
            return Err(SrtpError::AuthenticationFailed);
        }
        let computed = self.compute(data, trailer)?;
        verify_slices_are_equal(&computed[..tag.len()], tag)
            .map_err(|_| SrtpError::AuthenticationFailed)
    }
}

impl Drop for HmacSha1 {
    fn drop(&mut self) {
        // SAFETY: `ctx` came from `HMAC_CTX_new` and is freed exactly once,
        // here. `HMAC_CTX_free` wipes the pad states before freeing them.
        unsafe { HMAC_CTX_free(self.ctx.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::hmac;
    use proptest::prelude::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    /// RFC 2202 §3: the seven HMAC-SHA1 test cases (key, data, digest).
    fn rfc2202_cases() -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        vec![
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                unhex("b617318655057264e28bc0b6fb378c8ef146be00"),
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                unhex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                unhex("125d7342b9ac11cd91a39af48aa17b4f63f175d3"),
            ),
            (
                unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
                vec![0xcd; 50],
                unhex("4c9007f4026250c6bc8414f9bf50c86c2d7235da"),
            ),
            (
                vec![0x0c; 20],
                b"Test With Truncation".to_vec(),
                unhex("4c1a03424b55e07fe7f27be1d58bb9324a9a5a04"),
            ),
            (
                vec![0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                unhex("aa4ae5e15272d00e95705637ce8a3b55ed402112"),
            ),
            (
                vec![0xaa; 80],
                b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data"
                    .to_vec(),
                unhex("e8e99d0f45237d786d6bbaa7965c7808bbff1a91"),
            ),
        ]
    }

    #[test]
    fn rfc2202_vectors() {
        for (i, (key, data, digest)) in rfc2202_cases().into_iter().enumerate() {
            let mut mac = HmacSha1::new(&key).unwrap();
            // Twice, to show the reused state restarts cleanly.
            for _ in 0..2 {
                assert_eq!(
                    mac.compute(&data, &[]).unwrap().to_vec(),
                    digest,
                    "case {}",
                    i + 1
                );
            }
            // Any split of the message between data and trailer is the same.
            let (head, tail) = data.split_at(data.len() / 2);
            assert_eq!(mac.compute(head, tail).unwrap().to_vec(), digest);
            assert_eq!(mac.compute(&[], &data).unwrap().to_vec(), digest);
            mac.verify(&data, &[], &digest).unwrap();
            mac.verify(&data, &[], &digest[..12]).unwrap();
        }
    }

    /// RFC 2202 test case 5 also gives the tag truncated to 96 bits.
    #[test]
    fn rfc2202_truncated() {
        let mut mac = HmacSha1::new(&[0x0c; 20]).unwrap();
        let mut out = [0u8; 12];
        mac.sign(b"Test With Truncation", &[], &mut out).unwrap();
        assert_eq!(out.to_vec(), unhex("4c1a03424b55e07fe7f27be1"));
    }

    #[test]
    fn bad_tags_and_lengths_are_refused() {
        let mut mac = HmacSha1::new(&[0x0b; 20]).unwrap();
        let good = mac.compute(b"Hi There", &[]).unwrap();
        let mut bad = good;
        bad[9] ^= 1;
        assert_eq!(
            mac.verify(b"Hi There", &[], &bad[..10]),
            Err(SrtpError::AuthenticationFailed)
        );
        assert_eq!(
            mac.verify(b"Hi There", &[], &[]),
            Err(SrtpError::AuthenticationFailed)
        );
        assert_eq!(
            mac.verify(b"Hi There", &[], &[0; TAG_LEN + 1]),
            Err(SrtpError::AuthenticationFailed)
        );
        assert_eq!(mac.sign(b"Hi There", &[], &mut []), Err(SrtpError::Crypto));
        assert_eq!(
            mac.sign(b"Hi There", &[], &mut [0; TAG_LEN + 1]),
            Err(SrtpError::Crypto)
        );
        // A failed verification leaves the state usable.
        mac.verify(b"Hi There", &[], &good[..4]).unwrap();
    }

    #[test]
    fn empty_key_and_message() {
        // HMAC-SHA1("", "") is a well-known value.
        let mut mac = HmacSha1::new(&[]).unwrap();
        assert_eq!(
            mac.compute(&[], &[]).unwrap().to_vec(),
            unhex("fbdb1d1b18aa6c08324b7d64b71fb76370690e1d")
        );
    }

    #[test]
    fn send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<HmacSha1>();
    }

    proptest! {
        /// Agrees with aws-lc-rs's one-shot HMAC on random keys and
        /// messages, with the state reused across messages.
        #[test]
        fn matches_aws_lc_rs(
            key in proptest::collection::vec(any::<u8>(), 0..100),
            messages in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..300),
                 proptest::collection::vec(any::<u8>(), 0..8)),
                1..6,
            ),
        ) {
            let reference = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key);
            let mut mac = HmacSha1::new(&key).unwrap();
            for (data, trailer) in &messages {
                let mut whole = data.clone();
                whole.extend_from_slice(trailer);
                let expected = hmac::sign(&reference, &whole);
                let got = mac.compute(data, trailer).unwrap();
                prop_assert_eq!(&got[..], expected.as_ref());
                prop_assert!(mac.verify(data, trailer, &got[..10]).is_ok());
            }
        }
    }
}
