//! Interoperability of `dataplane::srtp` with libsrtp 2 (built from source
//! against OpenSSL by `srtp2-sys`), for every profile in both directions:
//! byte-identical output, RTCP, rollover across 65535 → 0, replays and
//! forgeries rejected by both implementations, varied payload sizes, CSRCs
//! and header extensions.

use std::ffi::c_int;
use std::sync::Once;

use dataplane::srtp::{MasterKey, SrtpConfig, SrtpContext, SrtpError, SrtpProfile};
use srtp2_sys as ffi;

/// libsrtp may write up to this many bytes after a packet.
const LIBSRTP_TRAILER: usize = ffi::SRTP_MAX_TRAILER_LEN as usize + 4;

fn libsrtp_init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: called once, before any other libsrtp function.
        let status = unsafe { ffi::srtp_init() };
        assert_eq!(status, ffi::srtp_err_status_t_srtp_err_status_ok);
    });
}

/// One libsrtp session (all SSRCs of one direction).
struct Libsrtp {
    session: ffi::srtp_t,
}

impl Libsrtp {
    fn new(profile: SrtpProfile, key_and_salt: &[u8], inbound: bool, encrypt_rtcp: bool) -> Self {
        libsrtp_init();
        // libsrtp reads `key` during srtp_create only; keep a padded copy
        // alive until then (it reads the maximum key length for the policy).
        let mut key = key_and_salt.to_vec();
        key.resize(64, 0);
        // SAFETY: an all-zero srtp_policy_t is valid (null pointers, zero
        // lengths); the setters below fill the crypto policies.
        let mut policy: ffi::srtp_policy_t = unsafe { std::mem::zeroed() };
        // SAFETY: the setters only write the struct they are given.
        unsafe {
            match profile {
                SrtpProfile::AesCm128HmacSha1_80 => {
                    ffi::srtp_crypto_policy_set_rtp_default(&mut policy.rtp);
                    ffi::srtp_crypto_policy_set_rtcp_default(&mut policy.rtcp);
                }
                SrtpProfile::AesCm128HmacSha1_32 => {
                    ffi::srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&mut policy.rtp);
                    ffi::srtp_crypto_policy_set_rtcp_default(&mut policy.rtcp);
                }
                SrtpProfile::AeadAes128Gcm => {
                    ffi::srtp_crypto_policy_set_aes_gcm_128_16_auth(&mut policy.rtp);
                    ffi::srtp_crypto_policy_set_aes_gcm_128_16_auth(&mut policy.rtcp);
                }
                SrtpProfile::AeadAes256Gcm => {
                    ffi::srtp_crypto_policy_set_aes_gcm_256_16_auth(&mut policy.rtp);
                    ffi::srtp_crypto_policy_set_aes_gcm_256_16_auth(&mut policy.rtcp);
                }
            }
        }
        if !encrypt_rtcp {
            policy.rtcp.sec_serv = ffi::srtp_sec_serv_t_sec_serv_auth;
        }
        policy.ssrc.type_ = if inbound {
            ffi::srtp_ssrc_type_t_ssrc_any_inbound
        } else {
            ffi::srtp_ssrc_type_t_ssrc_any_outbound
        };
        policy.key = key.as_mut_ptr();
        policy.window_size = 128;
        policy.allow_repeat_tx = 0;
        let mut session: ffi::srtp_t = std::ptr::null_mut();
        // SAFETY: `policy` and `key` are valid for the call; libsrtp copies
        // what it keeps.
        let status = unsafe { ffi::srtp_create(&mut session, &policy) };
        assert_eq!(status, ffi::srtp_err_status_t_srtp_err_status_ok);
        Self { session }
    }

    fn call(
        &mut self,
        f: unsafe extern "C" fn(
            ffi::srtp_t,
            *mut std::ffi::c_void,
            *mut c_int,
        ) -> ffi::srtp_err_status_t,
        packet: &[u8],
    ) -> Result<Vec<u8>, ffi::srtp_err_status_t> {
        let mut buf = packet.to_vec();
        buf.resize(packet.len() + LIBSRTP_TRAILER, 0);
        let mut len = packet.len() as c_int;
        // SAFETY: `buf` holds the packet plus the trailer room libsrtp
        // documents it may write.
        let status = unsafe { f(self.session, buf.as_mut_ptr().cast(), &mut len) };
        if status != ffi::srtp_err_status_t_srtp_err_status_ok {
            return Err(status);
        }
        buf.truncate(len as usize);
        Ok(buf)
    }

    fn protect(&mut self, p: &[u8]) -> Result<Vec<u8>, ffi::srtp_err_status_t> {
        self.call(ffi::srtp_protect, p)
    }
    fn unprotect(&mut self, p: &[u8]) -> Result<Vec<u8>, ffi::srtp_err_status_t> {
        self.call(ffi::srtp_unprotect, p)
    }
    fn protect_rtcp(&mut self, p: &[u8]) -> Result<Vec<u8>, ffi::srtp_err_status_t> {
        self.call(ffi::srtp_protect_rtcp, p)
    }
    fn unprotect_rtcp(&mut self, p: &[u8]) -> Result<Vec<u8>, ffi::srtp_err_status_t> {
        self.call(ffi::srtp_unprotect_rtcp, p)
    }
}

impl Drop for Libsrtp {
    fn drop(&mut self) {
        // SAFETY: `session` came from srtp_create and is freed once.
        unsafe { ffi::srtp_dealloc(self.session) };
    }
}

const AUTH_FAIL: ffi::srtp_err_status_t = ffi::srtp_err_status_t_srtp_err_status_auth_fail;
const REPLAY_FAIL: ffi::srtp_err_status_t = ffi::srtp_err_status_t_srtp_err_status_replay_fail;

fn key_material(profile: SrtpProfile, seed: u8) -> Vec<u8> {
    (0..profile.master_key_len() + profile.master_salt_len())
        .map(|i| {
            seed.wrapping_mul(17)
                .wrapping_add((i as u8).wrapping_mul(101))
        })
        .collect()
}

/// Our sender and receiver plus libsrtp's, all keyed with one master key.
struct Peers {
    profile: SrtpProfile,
    ours_tx: SrtpContext,
    ours_rx: SrtpContext,
    lib_tx: Libsrtp,
    lib_rx: Libsrtp,
}

impl Peers {
    fn new(profile: SrtpProfile, encrypt_rtcp: bool) -> Self {
        let bytes = key_material(profile, profile.dtls_id() as u8);
        let key = MasterKey::from_concatenated(profile, &bytes).unwrap();
        let config = SrtpConfig {
            encrypt_rtcp,
            ..SrtpConfig::default()
        };
        Self {
            profile,
            ours_tx: SrtpContext::with_config(profile, &key, config).unwrap(),
            ours_rx: SrtpContext::with_config(profile, &key, config).unwrap(),
            lib_tx: Libsrtp::new(profile, &bytes, false, encrypt_rtcp),
            lib_rx: Libsrtp::new(profile, &bytes, true, encrypt_rtcp),
        }
    }

    fn ours_protect(&mut self, p: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = p.to_vec();
        buf.resize(p.len() + self.profile.rtp_overhead(), 0);
        let n = self.ours_tx.protect_rtp(&mut buf, p.len())?;
        buf.truncate(n);
        Ok(buf)
    }

    fn ours_unprotect(&mut self, p: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = p.to_vec();
        let n = self.ours_rx.unprotect_rtp(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    fn ours_protect_rtcp(&mut self, p: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = p.to_vec();
        buf.resize(p.len() + self.profile.rtcp_overhead(), 0);
        let n = self.ours_tx.protect_rtcp(&mut buf, p.len())?;
        buf.truncate(n);
        Ok(buf)
    }

    fn ours_unprotect_rtcp(&mut self, p: &[u8]) -> Result<Vec<u8>, SrtpError> {
        let mut buf = p.to_vec();
        let n = self.ours_rx.unprotect_rtcp(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// An RTP packet: `csrcs` CSRCs, optionally an RFC 8285 one-byte extension
/// block (audio level and a 3-byte element), `payload_len` payload bytes.
fn rtp_packet(seq: u16, ssrc: u32, csrcs: usize, extension: bool, payload_len: usize) -> Vec<u8> {
    let ts = u32::from(seq).wrapping_mul(3000);
    let mut p = vec![
        0x80 | (u8::from(extension) << 4) | csrcs as u8,
        0x60 | u8::from(seq.is_multiple_of(30)) << 7,
        (seq >> 8) as u8,
        seq as u8,
    ];
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for i in 0..csrcs {
        p.extend_from_slice(&(0xc000_0000 + i as u32).to_be_bytes());
    }
    if extension {
        p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x02, 0x10, 0x85, 0x22, 1, 2, 3, 0, 0]);
    }
    p.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(13) ^ seq as u8));
    p
}

/// A compound RTCP packet: SR (one report block) followed by an SDES CNAME.
fn rtcp_packet(ssrc: u32, n: u32) -> Vec<u8> {
    let mut p = vec![0x81, 200, 0, 12];
    p.extend_from_slice(&ssrc.to_be_bytes());
    for word in [0xe5a1_0000 + n, 0x1234_5678, n * 960, n, n * 1000] {
        p.extend_from_slice(&u32::to_be_bytes(word));
    }
    for word in [0x0bad_cafe, 0, n, 0, 0, 0] {
        p.extend_from_slice(&u32::to_be_bytes(word));
    }
    p.extend_from_slice(&[0x81, 202, 0, 3]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[1, 5, b'a', b'l', b'i', b'c', b'e', 0]);
    p
}

const PAYLOAD_SIZES: [usize; 5] = [0, 1, 160, 1200, 1400];
const SHAPES: [(usize, bool); 4] = [(0, false), (0, true), (3, false), (2, true)];

#[test]
fn rtp_ours_to_libsrtp_is_byte_identical() {
    for profile in SrtpProfile::ALL {
        let mut peers = Peers::new(profile, true);
        let mut seq = 1000u16;
        for size in PAYLOAD_SIZES {
            for (csrcs, ext) in SHAPES {
                for ssrc in [0x1111_1111, 0xdead_beef] {
                    let plain = rtp_packet(seq, ssrc, csrcs, ext, size);
                    let ours = peers.ours_protect(&plain).unwrap();
                    let theirs = peers.lib_tx.protect(&plain).unwrap();
                    assert_eq!(
                        ours, theirs,
                        "{profile:?} size {size} csrcs {csrcs} ext {ext}"
                    );
                    assert_eq!(peers.lib_rx.unprotect(&ours).unwrap(), plain, "{profile:?}");
                }
                seq = seq.wrapping_add(1);
            }
        }
    }
}

#[test]
fn rtp_libsrtp_to_ours() {
    for profile in SrtpProfile::ALL {
        let mut peers = Peers::new(profile, true);
        let mut seq = 40_000u16;
        for size in PAYLOAD_SIZES {
            for (csrcs, ext) in SHAPES {
                let plain = rtp_packet(seq, 0x0102_0304, csrcs, ext, size);
                let theirs = peers.lib_tx.protect(&plain).unwrap();
                assert_eq!(theirs.len(), plain.len() + profile.rtp_tag_len());
                assert_eq!(
                    peers.ours_unprotect(&theirs).unwrap(),
                    plain,
                    "{profile:?} size {size} csrcs {csrcs} ext {ext}"
                );
                seq = seq.wrapping_add(3);
            }
        }
    }
}

#[test]
fn rtcp_both_directions_encrypted_and_not() {
    for profile in SrtpProfile::ALL {
        for encrypt in [true, false] {
            let mut peers = Peers::new(profile, encrypt);
            let ssrc = 0x5eed_0001;
            // libsrtp sends its first SRTCP packet with index 1; align ours
            // (index 0 first, as RFC 3711 §3.4 says) to compare bytes.
            let warm_up = peers.ours_protect_rtcp(&rtcp_packet(ssrc, 0)).unwrap();
            assert_eq!(
                peers.lib_rx.unprotect_rtcp(&warm_up).unwrap(),
                rtcp_packet(ssrc, 0)
            );
            for n in 1..20 {
                let plain = rtcp_packet(ssrc, n);
                let ours = peers.ours_protect_rtcp(&plain).unwrap();
                let theirs = peers.lib_tx.protect_rtcp(&plain).unwrap();
                assert_eq!(ours, theirs, "{profile:?} encrypt {encrypt} packet {n}");
                assert_eq!(peers.lib_rx.unprotect_rtcp(&ours).unwrap(), plain);
                assert_eq!(peers.ours_unprotect_rtcp(&theirs).unwrap(), plain);
                if !encrypt {
                    assert_eq!(ours[..plain.len()], plain[..], "body in the clear");
                }
            }
        }
    }
}

#[test]
fn rollover_across_65535_in_both_directions() {
    for profile in SrtpProfile::ALL {
        let mut peers = Peers::new(profile, true);
        let mut seq = 65_000u16;
        for n in 0..4_000u32 {
            let plain = rtp_packet(
                seq,
                0xabcd_ef01,
                (n % 3) as usize,
                n % 2 == 0,
                64 + (n % 50) as usize,
            );
            let ours = peers.ours_protect(&plain).unwrap();
            let theirs = peers.lib_tx.protect(&plain).unwrap();
            assert_eq!(ours, theirs, "{profile:?} seq {seq}");
            assert_eq!(
                peers.lib_rx.unprotect(&ours).unwrap(),
                plain,
                "{profile:?} seq {seq}"
            );
            assert_eq!(
                peers.ours_unprotect(&theirs).unwrap(),
                plain,
                "{profile:?} seq {seq}"
            );
            seq = seq.wrapping_add(1);
        }
        assert_eq!(peers.ours_tx.rtp_tx_roc(0xabcd_ef01), Some(1));
        assert_eq!(peers.ours_rx.rtp_rx_roc(0xabcd_ef01), Some(1));
    }
}

#[test]
fn replays_are_rejected_by_both() {
    for profile in SrtpProfile::ALL {
        let mut peers = Peers::new(profile, true);
        let plain = rtp_packet(7, 42, 1, true, 160);
        let ours = peers.ours_protect(&plain).unwrap();
        let theirs = peers.lib_tx.protect(&plain).unwrap();
        assert!(peers.lib_rx.unprotect(&ours).is_ok());
        assert_eq!(
            peers.lib_rx.unprotect(&ours),
            Err(REPLAY_FAIL),
            "{profile:?}"
        );
        assert!(peers.ours_unprotect(&theirs).is_ok());
        assert_eq!(
            peers.ours_unprotect(&theirs),
            Err(SrtpError::ReplayedPacket),
            "{profile:?}"
        );

        let plain = rtcp_packet(42, 1);
        let ours = peers.ours_protect_rtcp(&plain).unwrap();
        let theirs = peers.lib_tx.protect_rtcp(&plain).unwrap();
        assert!(peers.lib_rx.unprotect_rtcp(&ours).is_ok());
        assert_eq!(
            peers.lib_rx.unprotect_rtcp(&ours),
            Err(REPLAY_FAIL),
            "{profile:?}"
        );
        assert!(peers.ours_unprotect_rtcp(&theirs).is_ok());
        assert_eq!(
            peers.ours_unprotect_rtcp(&theirs),
            Err(SrtpError::ReplayedPacket),
            "{profile:?}"
        );
    }
}

/// Byte offsets to tamper with in a protected RTP packet of `len` bytes
/// whose header is `header_len` bytes: header (payload type and timestamp),
/// payload, and the tag.
fn rtp_forgery_offsets(len: usize, header_len: usize) -> [(usize, &'static str); 4] {
    [
        (1, "header payload type"),
        (5, "header timestamp"),
        (header_len + 3, "payload"),
        (len - 1, "tag"),
    ]
}

#[test]
fn forgeries_are_rejected_by_both() {
    for profile in SrtpProfile::ALL {
        let mut peers = Peers::new(profile, true);
        let plain = rtp_packet(100, 77, 2, true, 160);
        let header_len = plain.len() - 160;
        let ours = peers.ours_protect(&plain).unwrap();
        let theirs = peers.lib_tx.protect(&plain).unwrap();
        for (at, what) in rtp_forgery_offsets(ours.len(), header_len) {
            for bit in [0x01u8, 0x80] {
                let mut forged = ours.clone();
                forged[at] ^= bit;
                assert_eq!(
                    peers.lib_rx.unprotect(&forged),
                    Err(AUTH_FAIL),
                    "{profile:?} {what}"
                );
                let mut forged = theirs.clone();
                forged[at] ^= bit;
                assert_eq!(
                    peers.ours_unprotect(&forged),
                    Err(SrtpError::AuthenticationFailed),
                    "{profile:?} {what}"
                );
            }
        }
        // The genuine packets still pass afterwards: nothing was committed.
        assert_eq!(peers.lib_rx.unprotect(&ours).unwrap(), plain);
        assert_eq!(peers.ours_unprotect(&theirs).unwrap(), plain);

        let plain = rtcp_packet(77, 3);
        let ours = peers.ours_protect_rtcp(&plain).unwrap();
        let theirs = peers.lib_tx.protect_rtcp(&plain).unwrap();
        let tag_at = if profile.is_aead() {
            ours.len() - 5
        } else {
            ours.len() - 1
        };
        for (at, what) in [(1, "header"), (12, "body"), (tag_at, "tag")] {
            let mut forged = ours.clone();
            forged[at] ^= 0x10;
            assert_eq!(
                peers.lib_rx.unprotect_rtcp(&forged),
                Err(AUTH_FAIL),
                "{profile:?} {what}"
            );
            let mut forged = theirs.clone();
            forged[at] ^= 0x10;
            assert_eq!(
                peers.ours_unprotect_rtcp(&forged),
                Err(SrtpError::AuthenticationFailed),
                "{profile:?} {what}"
            );
        }
        assert_eq!(peers.lib_rx.unprotect_rtcp(&ours).unwrap(), plain);
        assert_eq!(peers.ours_unprotect_rtcp(&theirs).unwrap(), plain);
    }
}

#[test]
fn keys_from_different_masters_do_not_interoperate() {
    for profile in SrtpProfile::ALL {
        let mut peers = Peers::new(profile, true);
        let other = key_material(profile, 0x55);
        let mut stranger = Libsrtp::new(profile, &other, false, true);
        let plain = rtp_packet(1, 9, 0, false, 100);
        let foreign = stranger.protect(&plain).unwrap();
        assert_eq!(
            peers.ours_unprotect(&foreign),
            Err(SrtpError::AuthenticationFailed),
            "{profile:?}"
        );
    }
}
