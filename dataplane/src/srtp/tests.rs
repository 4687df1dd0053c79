//! Known-answer tests from RFC 7714 §16–17, and behaviour of the context:
//! round trips, rollover, replay, stream bounds, tampering, and properties.

use super::kdf::SessionKeys;
use super::transform::Transform;
use super::*;
use proptest::prelude::*;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

/// A GCM context keyed directly with session keys: RFC 7714 publishes its
/// vectors for session keys, not master keys.
fn gcm_session_context(key: &[u8], config: SrtpConfig) -> SrtpContext {
    let profile = if key.len() == 32 {
        SrtpProfile::AeadAes256Gcm
    } else {
        SrtpProfile::AeadAes128Gcm
    };
    let mut keys = SessionKeys {
        enc: [0; 32],
        enc_len: key.len(),
        auth: [0; 20],
        salt: [0; 14],
    };
    keys.enc[..key.len()].copy_from_slice(key);
    keys.salt[..12].copy_from_slice(b"Quid pro quo");
    SrtpContext::from_transforms(
        profile,
        config,
        Transform::gcm(&keys).unwrap(),
        Transform::gcm(&keys).unwrap(),
    )
    .unwrap()
}

const KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
const KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// RFC 7714 §16: "Gallia est omnis divisa in partes tres" behind a 12-byte header.
const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                           20646976 69736120 696e2070 61727465 73207472 6573";

/// RFC 7714 §17.
const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                            4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";

fn protect_rtp_vec(ctx: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>> {
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + ctx.profile().rtp_overhead(), 0);
    let n = ctx.protect_rtp(&mut buf, packet.len())?;
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtp_vec(ctx: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>> {
    let mut buf = packet.to_vec();
    let n = ctx.unprotect_rtp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn protect_rtcp_vec(ctx: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>> {
    let mut buf = packet.to_vec();
    buf.resize(packet.len() + ctx.profile().rtcp_overhead(), 0);
    let n = ctx.protect_rtcp(&mut buf, packet.len())?;
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtcp_vec(ctx: &mut SrtpContext, packet: &[u8]) -> Result<Vec<u8>> {
    let mut buf = packet.to_vec();
    let n = ctx.unprotect_rtcp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Sets the next SRTCP index the context sends on `ssrc`.
fn set_rtcp_index(ctx: &mut SrtpContext, ssrc: u32, index: u32) {
    let slot = ctx.streams.find_or_insert(ssrc).unwrap();
    ctx.streams.stream_mut(slot).rtcp_tx_next = index;
}

#[test]
fn rfc7714_16_1_1_and_16_2_1_encryption() {
    for (key, expected) in [
        (
            KEY_128,
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
             0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
        ),
        (
            KEY_256,
            "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa b1801238
             9a58e2f3 b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff d6b0f9bb 7878d7a7 6c13",
        ),
    ] {
        let mut ctx = gcm_session_context(&unhex(key), SrtpConfig::default());
        let protected = protect_rtp_vec(&mut ctx, &unhex(RFC7714_RTP)).unwrap();
        assert_eq!(protected, unhex(expected), "key {key}");
    }
}

#[test]
fn rfc7714_16_1_2_and_16_2_2_decryption() {
    for (key, packet) in [
        (
            KEY_128,
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
             0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
        ),
        (
            KEY_256,
            "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa b1801238
             9a58e2f3 b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff d6b0f9bb 7878d7a7 6c13",
        ),
    ] {
        let mut ctx = gcm_session_context(&unhex(key), SrtpConfig::default());
        let plain = unprotect_rtp_vec(&mut ctx, &unhex(packet)).unwrap();
        assert_eq!(plain, unhex(RFC7714_RTP), "key {key}");
        // The same packet again is a replay.
        assert_eq!(
            unprotect_rtp_vec(&mut ctx, &unhex(packet)),
            Err(SrtpError::ReplayedPacket)
        );
        // Any flipped bit fails authentication (on a fresh context).
        let mut tampered = unhex(packet);
        for at in [1, 12, 30, tampered.len() - 1] {
            tampered[at] ^= 0x04;
            let mut fresh = gcm_session_context(&unhex(key), SrtpConfig::default());
            assert_eq!(
                unprotect_rtp_vec(&mut fresh, &tampered),
                Err(SrtpError::AuthenticationFailed),
                "bit flipped at {at}"
            );
            tampered[at] ^= 0x04;
        }
    }
}

#[test]
fn rfc7714_16_1_3_to_16_2_4_tagging_only() {
    let config = SrtpConfig {
        encrypt_rtp: false,
        ..SrtpConfig::default()
    };
    for (key, tagged) in [
        (
            KEY_128,
            "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976
             69736120 696e2070 61727465 73207472 65732249 3f82d2bc e397e9d7 9e3b19aa 4216",
        ),
        (
            KEY_256,
            "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976
             69736120 696e2070 61727465 73207472 6573a866 d5910f88 7463067c eefec452 15d4",
        ),
    ] {
        let mut tx = gcm_session_context(&unhex(key), config);
        assert_eq!(
            protect_rtp_vec(&mut tx, &unhex(RFC7714_RTP)).unwrap(),
            unhex(tagged)
        );
        let mut rx = gcm_session_context(&unhex(key), config);
        assert_eq!(
            unprotect_rtp_vec(&mut rx, &unhex(tagged)).unwrap(),
            unhex(RFC7714_RTP)
        );
    }
}

#[test]
fn rfc7714_17_1_srtcp_encryption() {
    let mut ctx = gcm_session_context(&unhex(KEY_128), SrtpConfig::default());
    set_rtcp_index(&mut ctx, 0x4d61_7273, 0x05d4);
    let protected = protect_rtcp_vec(&mut ctx, &unhex(RFC7714_RTCP)).unwrap();
    assert_eq!(
        protected,
        unhex(
            "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d
             c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872
             45d9eade 800005d4"
        )
    );
    // The index advances per packet.
    let next = protect_rtcp_vec(&mut ctx, &unhex(RFC7714_RTCP)).unwrap();
    assert_eq!(next[next.len() - 4..], [0x80, 0x00, 0x05, 0xd5]);
}

#[test]
fn rfc7714_17_2_srtcp_decryption() {
    let packet = unhex(
        "81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d bffe0a50
         a2eaa5c1 110555be 8415f658 c61de047 6f1b6fad 1d1eb30c 4446839f 57ff6f6c
         b26ac3be 800005d4",
    );
    let mut ctx = gcm_session_context(&unhex(KEY_256), SrtpConfig::default());
    assert_eq!(
        unprotect_rtcp_vec(&mut ctx, &packet).unwrap(),
        unhex(RFC7714_RTCP)
    );
    assert_eq!(
        unprotect_rtcp_vec(&mut ctx, &packet),
        Err(SrtpError::ReplayedPacket)
    );
    let mut tampered = packet.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1; // the index word is authenticated too
    let mut fresh = gcm_session_context(&unhex(KEY_256), SrtpConfig::default());
    assert_eq!(
        unprotect_rtcp_vec(&mut fresh, &tampered),
        Err(SrtpError::AuthenticationFailed)
    );
}

#[test]
fn rfc7714_17_3_srtcp_tagging_only() {
    let config = SrtpConfig {
        encrypt_rtcp: false,
        ..SrtpConfig::default()
    };
    let mut ctx = gcm_session_context(&unhex(KEY_128), config);
    set_rtcp_index(&mut ctx, 0x4d61_7273, 0x05d4);
    let tagged = protect_rtcp_vec(&mut ctx, &unhex(RFC7714_RTCP)).unwrap();
    assert_eq!(
        tagged,
        unhex(
            "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
             deadbeef deadbeef deadbeef deadbeef deadbeef 841dd968 3dd78ec9 2ae58790
             125f62b3 000005d4"
        )
    );
    // The receiver follows the E flag, whatever its own sending policy.
    let mut rx = gcm_session_context(&unhex(KEY_128), SrtpConfig::default());
    assert_eq!(
        unprotect_rtcp_vec(&mut rx, &tagged).unwrap(),
        unhex(RFC7714_RTCP)
    );
}

#[test]
fn rfc7714_17_4_srtcp_tag_verification() {
    let packet = unhex(
        "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
         deadbeef deadbeef deadbeef deadbeef deadbeef 91db4afb feee5a97 8fab4393
         ed2615fe 000005d4",
    );
    let mut ctx = gcm_session_context(&unhex(KEY_256), SrtpConfig::default());
    assert_eq!(
        unprotect_rtcp_vec(&mut ctx, &packet).unwrap(),
        unhex(RFC7714_RTCP)
    );
    let mut tampered = packet.clone();
    tampered[20] ^= 0x80; // unencrypted body is still authenticated
    let mut fresh = gcm_session_context(&unhex(KEY_256), SrtpConfig::default());
    assert_eq!(
        unprotect_rtcp_vec(&mut fresh, &tampered),
        Err(SrtpError::AuthenticationFailed)
    );
}

fn master_key(profile: SrtpProfile, fill: u8) -> MasterKey {
    let bytes: Vec<u8> = (0..profile.master_key_len() + profile.master_salt_len())
        .map(|i| fill.wrapping_add(i as u8).wrapping_mul(31))
        .collect();
    MasterKey::from_concatenated(profile, &bytes).unwrap()
}

fn pair(profile: SrtpProfile, config: SrtpConfig) -> (SrtpContext, SrtpContext) {
    let key = master_key(profile, 7);
    (
        SrtpContext::with_config(profile, &key, config).unwrap(),
        SrtpContext::with_config(profile, &key, config).unwrap(),
    )
}

/// An RTP packet with `csrcs` CSRCs, an optional one-byte-header extension
/// and `payload_len` payload bytes.
fn rtp_packet(seq: u16, ssrc: u32, csrcs: usize, extension: bool, payload_len: usize) -> Vec<u8> {
    let mut p = vec![
        0x80 | (u8::from(extension) << 4) | csrcs as u8,
        96,
        (seq >> 8) as u8,
        seq as u8,
        0,
        0,
        0x12,
        0x34,
    ];
    p.extend_from_slice(&ssrc.to_be_bytes());
    for i in 0..csrcs {
        p.extend_from_slice(&(0x1000 + i as u32).to_be_bytes());
    }
    if extension {
        p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0x00, 0x00]);
    }
    p.extend((0..payload_len).map(|i| (i * 7 + 3) as u8));
    p
}

fn rtcp_packet(ssrc: u32, body_words: usize) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, body_words as u8 + 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..body_words * 4).map(|i| i as u8));
    p
}

#[test]
fn every_profile_round_trips_rtp_and_rtcp() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile, SrtpConfig::default());
        for (seq, csrcs, ext, len) in [(1u16, 0, false, 0), (2, 2, true, 160), (3, 15, true, 1200)]
        {
            let plain = rtp_packet(seq, 0xcafe, csrcs, ext, len);
            let protected = protect_rtp_vec(&mut tx, &plain).unwrap();
            assert_eq!(protected.len(), plain.len() + profile.rtp_tag_len());
            let header_len = plain.len() - len;
            assert_eq!(
                protected[..header_len],
                plain[..header_len],
                "header stays clear"
            );
            if len > 0 {
                assert_ne!(protected[header_len..plain.len()], plain[header_len..]);
            }
            assert_eq!(unprotect_rtp_vec(&mut rx, &protected).unwrap(), plain);
        }
        let plain = rtcp_packet(0xcafe, 6);
        let protected = protect_rtcp_vec(&mut tx, &plain).unwrap();
        assert_eq!(protected.len(), plain.len() + profile.rtcp_overhead());
        assert_eq!(unprotect_rtcp_vec(&mut rx, &protected).unwrap(), plain);
        assert_eq!(
            unprotect_rtcp_vec(&mut rx, &protected),
            Err(SrtpError::ReplayedPacket)
        );
    }
}

#[test]
fn unencrypted_rtcp_round_trips_for_cm() {
    let config = SrtpConfig {
        encrypt_rtcp: false,
        ..SrtpConfig::default()
    };
    let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80, config);
    let plain = rtcp_packet(5, 3);
    let protected = protect_rtcp_vec(&mut tx, &plain).unwrap();
    assert_eq!(
        protected[..plain.len()],
        plain[..],
        "body left in the clear"
    );
    assert_eq!(
        protected[plain.len()..plain.len() + 4],
        [0, 0, 0, 0],
        "E clear, index 0"
    );
    assert_eq!(unprotect_rtcp_vec(&mut rx, &protected).unwrap(), plain);
}

#[test]
fn rollover_is_followed_by_both_ends() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile, SrtpConfig::default());
        let mut seq = 65_000u16;
        for _ in 0..3_000 {
            let plain = rtp_packet(seq, 1, 0, false, 20);
            let protected = protect_rtp_vec(&mut tx, &plain).unwrap();
            assert_eq!(unprotect_rtp_vec(&mut rx, &protected).unwrap(), plain);
            seq = seq.wrapping_add(1);
        }
        assert_eq!(tx.rtp_tx_roc(1), Some(1));
        assert_eq!(rx.rtp_rx_roc(1), Some(1));
    }
}

#[test]
fn reordering_within_the_window_is_accepted_and_replays_are_not() {
    let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80, SrtpConfig::default());
    let packets: Vec<Vec<u8>> = (0..200u16)
        .map(|seq| protect_rtp_vec(&mut tx, &rtp_packet(seq, 9, 0, false, 10)).unwrap())
        .collect();
    for seq in [0usize, 5, 3, 4, 199, 100, 72] {
        assert!(
            unprotect_rtp_vec(&mut rx, &packets[seq]).is_ok(),
            "seq {seq}"
        );
    }
    assert_eq!(
        unprotect_rtp_vec(&mut rx, &packets[100]),
        Err(SrtpError::ReplayedPacket)
    );
    assert_eq!(
        unprotect_rtp_vec(&mut rx, &packets[71]),
        Err(SrtpError::TooOld)
    );
    assert!(unprotect_rtp_vec(&mut rx, &packets[73]).is_ok());
}

#[test]
fn a_forged_packet_does_not_move_the_window_or_make_a_stream() {
    let (mut tx, mut rx) = pair(SrtpProfile::AeadAes128Gcm, SrtpConfig::default());
    let first = protect_rtp_vec(&mut tx, &rtp_packet(10, 3, 0, false, 50)).unwrap();
    let middle = protect_rtp_vec(&mut tx, &rtp_packet(11, 3, 0, false, 50)).unwrap();
    let mut ahead = protect_rtp_vec(&mut tx, &rtp_packet(5_000, 3, 0, false, 50)).unwrap();
    assert!(unprotect_rtp_vec(&mut rx, &first).is_ok());
    let last = ahead.len() - 1;
    ahead[last] ^= 1;
    assert_eq!(
        unprotect_rtp_vec(&mut rx, &ahead),
        Err(SrtpError::AuthenticationFailed)
    );
    assert!(
        unprotect_rtp_vec(&mut rx, &middle).is_ok(),
        "window did not jump"
    );

    let mut stranger = protect_rtp_vec(&mut tx, &rtp_packet(1, 77, 0, false, 50)).unwrap();
    stranger[20] ^= 1;
    assert_eq!(
        unprotect_rtp_vec(&mut rx, &stranger),
        Err(SrtpError::AuthenticationFailed)
    );
    assert_eq!(rx.stream_count(), 1);
}

#[test]
fn streams_are_bounded() {
    let config = SrtpConfig {
        max_streams: 2,
        ..SrtpConfig::default()
    };
    let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_32, config);
    let a = protect_rtp_vec(&mut tx, &rtp_packet(1, 1, 0, false, 8)).unwrap();
    let b = protect_rtp_vec(&mut tx, &rtp_packet(1, 2, 0, false, 8)).unwrap();
    assert_eq!(
        protect_rtp_vec(&mut tx, &rtp_packet(1, 3, 0, false, 8)),
        Err(SrtpError::TooManyStreams { max: 2 })
    );
    assert!(tx.remove_stream(2));
    let c = protect_rtp_vec(&mut tx, &rtp_packet(1, 3, 0, false, 8)).unwrap();
    assert!(unprotect_rtp_vec(&mut rx, &a).is_ok());
    assert!(unprotect_rtp_vec(&mut rx, &b).is_ok());
    assert_eq!(
        unprotect_rtp_vec(&mut rx, &c),
        Err(SrtpError::TooManyStreams { max: 2 })
    );
}

#[test]
fn repeated_send_is_refused_unless_allowed() {
    let plain = rtp_packet(42, 1, 0, false, 16);
    let (mut tx, _) = pair(SrtpProfile::AeadAes256Gcm, SrtpConfig::default());
    let once = protect_rtp_vec(&mut tx, &plain).unwrap();
    assert_eq!(
        protect_rtp_vec(&mut tx, &plain),
        Err(SrtpError::ReplayedPacket)
    );
    let config = SrtpConfig {
        allow_repeat_tx: true,
        ..SrtpConfig::default()
    };
    let (mut tx, _) = pair(SrtpProfile::AeadAes256Gcm, config);
    assert_eq!(protect_rtp_vec(&mut tx, &plain).unwrap(), once);
    assert_eq!(protect_rtp_vec(&mut tx, &plain).unwrap(), once);
}

#[test]
fn buffer_and_input_checks() {
    let (mut tx, mut rx) = pair(SrtpProfile::AesCm128HmacSha1_80, SrtpConfig::default());
    let plain = rtp_packet(1, 1, 0, false, 4);
    let mut short = plain.clone();
    assert_eq!(
        tx.protect_rtp(&mut short, plain.len()),
        Err(SrtpError::BufferTooSmall {
            need: plain.len() + 10,
            have: plain.len()
        })
    );
    assert!(matches!(
        tx.protect_rtp(&mut short, usize::MAX),
        Err(SrtpError::BufferTooSmall { .. })
    ));
    let mut rtcp = rtcp_packet(1, 1);
    let len = rtcp.len();
    assert!(matches!(
        tx.protect_rtcp(&mut rtcp, len),
        Err(SrtpError::BufferTooSmall { .. })
    ));
    assert!(matches!(
        rx.unprotect_rtp(&mut [0x80; 21]),
        Err(SrtpError::Malformed(_))
    ));
    assert!(matches!(
        rx.unprotect_rtp(&mut [0x40; 40]),
        Err(SrtpError::InvalidHeader(_))
    ));
    assert!(matches!(
        rx.unprotect_rtcp(&mut [0x40; 40]),
        Err(SrtpError::Malformed(_))
    ));
    // A CSRC count that runs into the tag is a header error, not a panic.
    let mut lying = rtp_packet(1, 1, 0, false, 10);
    lying[0] |= 0x0f;
    assert!(matches!(
        rx.unprotect_rtp(&mut lying),
        Err(SrtpError::InvalidHeader(_))
    ));
    assert!(matches!(
        SrtpContext::with_config(
            SrtpProfile::AeadAes128Gcm,
            &master_key(SrtpProfile::AeadAes128Gcm, 1),
            SrtpConfig {
                replay_window: 0,
                ..SrtpConfig::default()
            }
        ),
        Err(SrtpError::InvalidConfig(_))
    ));
    assert!(matches!(
        SrtpContext::new(
            SrtpProfile::AeadAes128Gcm,
            &master_key(SrtpProfile::AesCm128HmacSha1_80, 1)
        ),
        Err(SrtpError::BadKeyLength { .. })
    ));
}

#[test]
fn a_context_can_move_to_its_worker_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<SrtpContext>();
    let (mut tx, _) = pair(SrtpProfile::AeadAes128Gcm, SrtpConfig::default());
    let protected =
        std::thread::spawn(move || protect_rtp_vec(&mut tx, &rtp_packet(1, 1, 0, false, 4)))
            .join()
            .unwrap();
    assert!(protected.is_ok());
}

#[test]
fn srtcp_index_exhaustion_is_reported() {
    let (mut tx, _) = pair(SrtpProfile::AesCm128HmacSha1_80, SrtpConfig::default());
    set_rtcp_index(&mut tx, 1, MAX_RTCP_INDEX);
    assert!(protect_rtcp_vec(&mut tx, &rtcp_packet(1, 1)).is_ok());
    assert_eq!(
        protect_rtcp_vec(&mut tx, &rtcp_packet(1, 1)),
        Err(SrtpError::KeyExhausted)
    );
}

fn any_profile() -> impl Strategy<Value = SrtpProfile> {
    prop::sample::select(SrtpProfile::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn protect_then_unprotect_is_identity(
        profile in any_profile(),
        seq in any::<u16>(),
        ssrc in any::<u32>(),
        csrcs in 0usize..=15,
        extension in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..1500),
    ) {
        let (mut tx, mut rx) = pair(profile, SrtpConfig::default());
        let mut plain = rtp_packet(seq, ssrc, csrcs, extension, 0);
        plain.extend_from_slice(&payload);
        let protected = protect_rtp_vec(&mut tx, &plain).unwrap();
        prop_assert_eq!(unprotect_rtp_vec(&mut rx, &protected).unwrap(), plain);

        let mut rtcp = rtcp_packet(ssrc, 0);
        rtcp.extend_from_slice(&payload);
        let protected = protect_rtcp_vec(&mut tx, &rtcp).unwrap();
        prop_assert_eq!(unprotect_rtcp_vec(&mut rx, &protected).unwrap(), rtcp);
    }

    #[test]
    fn unprotect_never_panics(
        profile in any_profile(),
        mut bytes in proptest::collection::vec(any::<u8>(), 0..300),
        version_two in any::<bool>(),
    ) {
        if version_two && !bytes.is_empty() {
            bytes[0] = (bytes[0] & 0x3f) | 0x80;
        }
        let (_, mut rx) = pair(profile, SrtpConfig::default());
        let mut copy = bytes.clone();
        prop_assert!(rx.unprotect_rtp(&mut copy).is_err());
        let mut copy = bytes.clone();
        prop_assert!(rx.unprotect_rtcp(&mut copy).is_err());
        prop_assert_eq!(rx.stream_count(), 0);
    }

    /// A stream whose sequence numbers jump forward by up to 2^15 − 1 keeps
    /// both ends' rollover counters in step with the true index.
    #[test]
    fn rollover_counter_tracks_forward_jumps(
        profile in any_profile(),
        start in any::<u16>(),
        jumps in proptest::collection::vec(1u64..32_768, 1..40),
    ) {
        let (mut tx, mut rx) = pair(profile, SrtpConfig::default());
        let mut index = u64::from(start);
        for jump in jumps {
            let plain = rtp_packet(index as u16, 4, 0, false, 8);
            let protected = protect_rtp_vec(&mut tx, &plain).unwrap();
            prop_assert_eq!(unprotect_rtp_vec(&mut rx, &protected).unwrap(), plain);
            prop_assert_eq!(rx.rtp_rx_roc(4), Some((index >> 16) as u32));
            index += jump;
        }
    }
}
