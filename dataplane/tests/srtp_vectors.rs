//! The packet path of `dataplane::srtp` allocates nothing, neither in Rust
//! nor in the C of aws-lc.
//!
//! This test binary interposes the C allocator (`malloc` and friends, which
//! Rust's system allocator and aws-lc's `OPENSSL_malloc` both end in) and
//! counts calls per thread, so the count covers everything a protect or
//! unprotect call does on the calling thread. It is a binary of its own
//! because the interposition applies to the whole process.
//!
//! The RFC 3711 Appendix B and RFC 7714 §16–17 known-answer tests are unit
//! tests inside the module (they need session keys, which the public API
//! never takes); libsrtp interop is in `srtp_libsrtp.rs`.

use dataplane::srtp::{MasterKey, SrtpContext, SrtpProfile};

mod alloc_count;
use alloc_count::allocations;

fn rtp(seq: u16, ssrc: u32, payload: usize, buf: &mut [u8]) -> usize {
    // One CSRC and a one-byte-header extension, as browsers send video.
    let header = [
        0x91,
        0x60,
        (seq >> 8) as u8,
        seq as u8,
        0,
        0,
        0x10,
        0, //
        (ssrc >> 24) as u8,
        (ssrc >> 16) as u8,
        (ssrc >> 8) as u8,
        ssrc as u8, //
        0,
        0,
        0,
        1,
        0xbe,
        0xde,
        0,
        1,
        0x10,
        0x7f,
        0,
        0,
    ];
    buf[..header.len()].copy_from_slice(&header);
    let len = header.len() + payload;
    buf[header.len()..len].fill(seq as u8);
    len
}

fn rtcp(ssrc: u32, buf: &mut [u8]) -> usize {
    let packet = [
        0x80,
        201,
        0,
        7,
        (ssrc >> 24) as u8,
        (ssrc >> 16) as u8,
        (ssrc >> 8) as u8,
        ssrc as u8,
    ];
    buf[..8].copy_from_slice(&packet);
    buf[8..32].fill(0x42);
    32
}

#[test]
fn the_counter_sees_rust_allocations() {
    let before = allocations();
    let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(100));
    std::hint::black_box(&v);
    assert!(allocations() > before);
}

/// Runs `packets` RTP packets (and some RTCP, replays and forgeries) from
/// `tx` to `rx` on three new SSRCs from `ssrc_base`, across a rollover.
fn drive(tx: &mut SrtpContext, rx: &mut SrtpContext, buf: &mut [u8], ssrc_base: u32, packets: u32) {
    let mut seq = 65_500u16;
    for n in 0..packets {
        let ssrc = ssrc_base + n % 3;
        let len = rtp(seq, ssrc, [0, 160, 1200][(n % 3) as usize], buf);
        let protected = tx.protect_rtp(buf, len).unwrap();
        assert_eq!(rx.unprotect_rtp(&mut buf[..protected]).unwrap(), len);
        if n % 3 == 2 {
            seq = seq.wrapping_add(1);
        }
        if n % 50 == 0 {
            let len = rtcp(ssrc, buf);
            let protected = tx.protect_rtcp(buf, len).unwrap();
            let mut replay = [0u8; 64];
            replay[..protected].copy_from_slice(&buf[..protected]);
            assert_eq!(rx.unprotect_rtcp(&mut buf[..protected]).unwrap(), len);
            assert!(rx.unprotect_rtcp(&mut replay[..protected]).is_err());
            buf[..40].fill(0x80);
            assert!(rx.unprotect_rtp(&mut buf[..40]).is_err());
        }
    }
}

#[test]
fn protect_and_unprotect_do_not_allocate() {
    for profile in SrtpProfile::ALL {
        let bytes: Vec<u8> = (0..profile.master_key_len() + profile.master_salt_len())
            .map(|i| i as u8 ^ 0x5a)
            .collect();
        let key = MasterKey::from_concatenated(profile, &bytes).unwrap();
        let mut tx = SrtpContext::new(profile, &key).unwrap();
        let mut rx = SrtpContext::new(profile, &key).unwrap();
        let mut buf = vec![0u8; 1600];

        // The first failed AES-GCM open on a thread makes aws-lc allocate
        // that thread's error queue, once; warm it up so the count below is
        // about packets.
        drive(&mut tx, &mut rx, &mut buf, 0x1000, 60);

        let before = allocations();
        drive(&mut tx, &mut rx, &mut buf, 0x2000, 2_000);
        let during = allocations() - before;
        assert_eq!(
            during, 0,
            "{profile:?}: {during} allocations on the packet path"
        );
        assert_eq!(rx.rtp_rx_roc(0x2000), Some(1));
        assert_eq!(rx.stream_count(), 6);
    }
}
