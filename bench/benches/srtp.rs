//! SRTP protect/unprotect throughput of `dataplane::srtp` against libsrtp 2
//! (built from source against OpenSSL by `srtp2-sys`), on the same packets in
//! the same process.
//!
//! Every measurement works on a ring of `RING` RTP packets with increasing
//! sequence numbers. Before each pass over the ring, outside the timed
//! section, both implementations get a fresh context/session and a fresh copy
//! of their input (plaintext for protect, SRTP packets for unprotect): the
//! work is in place, and a fresh receiver means no packet is ever a replay.
//! The timed section is the loop of protect or unprotect calls and nothing
//! else, identical for both sides.
//!
//! After the criterion groups, a criterion-independent pass interleaves the
//! two implementations round by round, prints the ratio table (our
//! throughput ÷ libsrtp's; above 1.0 means faster) and writes it as JSON to
//! `target/bench/srtp.json`.

use std::ffi::c_int;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use dataplane::srtp::{MasterKey, SrtpContext, SrtpProfile};
use srtp2_sys as ffi;

/// Packets per pass; 256 × 1.4 kB stays within L2.
const RING: usize = 256;
/// Room after each packet: libsrtp may write up to its maximum trailer.
const SLACK: usize = ffi::SRTP_MAX_TRAILER_LEN as usize + 4;
const PAYLOADS: [usize; 2] = [160, 1200];
const RTP_HEADER_LEN: usize = 12;

fn key_material(profile: SrtpProfile) -> Vec<u8> {
    (0..profile.master_key_len() + profile.master_salt_len())
        .map(|i| (i as u8).wrapping_mul(73).wrapping_add(11))
        .collect()
}

fn libsrtp_init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: called once, before any other libsrtp function.
        let status = unsafe { ffi::srtp_init() };
        assert_eq!(status, ffi::srtp_err_status_t_srtp_err_status_ok);
    });
}

/// A libsrtp session for one direction.
struct Libsrtp(ffi::srtp_t);

impl Libsrtp {
    fn new(profile: SrtpProfile, inbound: bool) -> Self {
        libsrtp_init();
        let mut key = key_material(profile);
        key.resize(64, 0);
        // SAFETY: an all-zero policy is valid; the setters fill it in.
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
        policy.ssrc.type_ = if inbound {
            ffi::srtp_ssrc_type_t_ssrc_any_inbound
        } else {
            ffi::srtp_ssrc_type_t_ssrc_any_outbound
        };
        policy.key = key.as_mut_ptr();
        policy.window_size = 128;
        let mut session: ffi::srtp_t = std::ptr::null_mut();
        // SAFETY: `policy` and `key` outlive the call; libsrtp copies them.
        let status = unsafe { ffi::srtp_create(&mut session, &policy) };
        assert_eq!(status, ffi::srtp_err_status_t_srtp_err_status_ok);
        Self(session)
    }
}

impl Drop for Libsrtp {
    fn drop(&mut self) {
        // SAFETY: the session came from srtp_create and is freed once.
        unsafe { ffi::srtp_dealloc(self.0) };
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Protect,
    Unprotect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Ours,
    Libsrtp,
}

/// The packets of one (profile, payload size) case.
struct Case {
    profile: SrtpProfile,
    /// Plain RTP packet length.
    plain_len: usize,
    /// Protected packet length.
    srtp_len: usize,
    /// Bytes per packet slot in the ring buffers.
    stride: usize,
    plain: Vec<u8>,
    protected: Vec<u8>,
    /// The buffer the timed loops work in.
    work: Vec<u8>,
}

impl Case {
    fn new(profile: SrtpProfile, payload: usize) -> Self {
        let plain_len = RTP_HEADER_LEN + payload;
        let srtp_len = plain_len + profile.rtp_overhead();
        let stride = (plain_len + SLACK).next_multiple_of(64);
        let mut plain = vec![0u8; RING * stride];
        for (seq, slot) in plain.chunks_exact_mut(stride).enumerate() {
            let seq = seq as u16 + 1;
            slot[..RTP_HEADER_LEN].copy_from_slice(&[
                0x80,
                96,
                (seq >> 8) as u8,
                seq as u8,
                0,
                0,
                (seq >> 8) as u8,
                seq as u8,
                0x51,
                0x52,
                0x53,
                0x54,
            ]);
            for (i, b) in slot[RTP_HEADER_LEN..plain_len].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31) ^ seq as u8;
            }
        }
        let mut case = Self {
            profile,
            plain_len,
            srtp_len,
            stride,
            protected: plain.clone(),
            work: plain.clone(),
            plain,
        };
        // Both implementations produce identical SRTP bytes (the interop
        // tests check it); ours makes the unprotect input for both.
        let mut ctx = case.ours();
        for slot in case.protected.chunks_exact_mut(stride) {
            let n = ctx.protect_rtp(slot, plain_len).expect("protect");
            assert_eq!(n, srtp_len);
        }
        case.verify();
        case
    }

    fn ours(&self) -> SrtpContext {
        let key = MasterKey::from_concatenated(self.profile, &key_material(self.profile)).unwrap();
        SrtpContext::new(self.profile, &key).unwrap()
    }

    /// Checks, once, that every timed loop does what it claims.
    fn verify(&mut self) {
        for imp in [Impl::Ours, Impl::Libsrtp] {
            self.pass(Op::Protect, imp);
            for (work, expected) in self
                .work
                .chunks_exact(self.stride)
                .zip(self.protected.chunks_exact(self.stride))
            {
                assert_eq!(
                    work[..self.srtp_len],
                    expected[..self.srtp_len],
                    "{imp:?} protect"
                );
            }
            self.pass(Op::Unprotect, imp);
            for (work, plain) in self
                .work
                .chunks_exact(self.stride)
                .zip(self.plain.chunks_exact(self.stride))
            {
                assert_eq!(
                    work[..self.plain_len],
                    plain[..self.plain_len],
                    "{imp:?} unprotect"
                );
            }
        }
    }

    /// One pass over the ring: fresh state and input untimed, then the timed
    /// loop. Returns the time of the loop.
    fn pass(&mut self, op: Op, imp: Impl) -> Duration {
        let source = match op {
            Op::Protect => &self.plain,
            Op::Unprotect => &self.protected,
        };
        self.work.copy_from_slice(source);
        let (stride, plain_len, srtp_len) = (self.stride, self.plain_len, self.srtp_len);
        match imp {
            Impl::Ours => {
                let mut ctx = self.ours();
                let start = Instant::now();
                for slot in self.work.chunks_exact_mut(stride) {
                    let result = match op {
                        Op::Protect => ctx.protect_rtp(slot, plain_len),
                        Op::Unprotect => ctx.unprotect_rtp(&mut slot[..srtp_len]),
                    };
                    black_box(result.expect("ours"));
                }
                start.elapsed()
            }
            Impl::Libsrtp => {
                let session = Libsrtp::new(self.profile, op == Op::Unprotect);
                let start = Instant::now();
                for slot in self.work.chunks_exact_mut(stride) {
                    let mut len = match op {
                        Op::Protect => plain_len,
                        Op::Unprotect => srtp_len,
                    } as c_int;
                    // SAFETY: the slot holds the packet plus SLACK bytes.
                    let status = unsafe {
                        match op {
                            Op::Protect => {
                                ffi::srtp_protect(session.0, slot.as_mut_ptr().cast(), &mut len)
                            }
                            Op::Unprotect => {
                                ffi::srtp_unprotect(session.0, slot.as_mut_ptr().cast(), &mut len)
                            }
                        }
                    };
                    assert_eq!(status, ffi::srtp_err_status_t_srtp_err_status_ok);
                    black_box(len);
                }
                let elapsed = start.elapsed();
                drop(session);
                elapsed
            }
        }
    }

    /// Time for `packets` packets, in whole and partial passes.
    fn time(&mut self, op: Op, imp: Impl, packets: u64) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = packets;
        while left > 0 {
            let pass = self.pass(op, imp);
            let n = left.min(RING as u64);
            // A partial pass is charged pro rata.
            total += pass.mul_f64(n as f64 / RING as f64);
            left -= n;
        }
        total
    }
}

fn short_name(profile: SrtpProfile) -> &'static str {
    match profile {
        SrtpProfile::AesCm128HmacSha1_80 => "aes_cm_128_hmac_sha1_80",
        SrtpProfile::AesCm128HmacSha1_32 => "aes_cm_128_hmac_sha1_32",
        SrtpProfile::AeadAes128Gcm => "aead_aes_128_gcm",
        SrtpProfile::AeadAes256Gcm => "aead_aes_256_gcm",
    }
}

fn srtp_benches(c: &mut Criterion) {
    for profile in SrtpProfile::ALL {
        let mut group = c.benchmark_group(format!("srtp/{}", short_name(profile)));
        group.throughput(Throughput::Elements(1));
        for payload in PAYLOADS {
            let mut case = Case::new(profile, payload);
            for (op, imp, name) in [
                (Op::Protect, Impl::Ours, "protect/ours"),
                (Op::Protect, Impl::Libsrtp, "protect/libsrtp"),
                (Op::Unprotect, Impl::Ours, "unprotect/ours"),
                (Op::Unprotect, Impl::Libsrtp, "unprotect/libsrtp"),
            ] {
                group.bench_function(BenchmarkId::new(name, payload), |b| {
                    b.iter_custom(|iters| case.time(op, imp, iters))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, srtp_benches);

/// Median of per-packet nanoseconds.
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Interleaves the two implementations pass by pass so drift in the machine's
/// speed hits both alike, and reports median per-packet times and ratios.
fn ratio_table() {
    const ROUNDS: usize = 301;
    let mut rows = Vec::new();
    println!();
    println!("SRTP throughput, ours ÷ libsrtp (same packets, same process; >1.0 = ours faster)");
    println!(
        "{:<26} {:>7} {:<10} {:>10} {:>10} {:>8}",
        "profile", "payload", "op", "ours ns", "libsrtp ns", "ratio"
    );
    for profile in SrtpProfile::ALL {
        for payload in PAYLOADS {
            let mut case = Case::new(profile, payload);
            for op in [Op::Protect, Op::Unprotect] {
                let mut ours = Vec::with_capacity(ROUNDS);
                let mut theirs = Vec::with_capacity(ROUNDS);
                for round in 0..ROUNDS {
                    // Alternate which goes first.
                    let order = if round % 2 == 0 {
                        [Impl::Ours, Impl::Libsrtp]
                    } else {
                        [Impl::Libsrtp, Impl::Ours]
                    };
                    for imp in order {
                        let ns = case.pass(op, imp).as_nanos() as f64 / RING as f64;
                        match imp {
                            Impl::Ours => ours.push(ns),
                            Impl::Libsrtp => theirs.push(ns),
                        }
                    }
                }
                let (ours, theirs) = (median(ours), median(theirs));
                let ratio = theirs / ours;
                let op_name = match op {
                    Op::Protect => "protect",
                    Op::Unprotect => "unprotect",
                };
                println!(
                    "{:<26} {:>7} {:<10} {:>10.1} {:>10.1} {:>7.2}x",
                    profile.name(),
                    payload,
                    op_name,
                    ours,
                    theirs,
                    ratio
                );
                rows.push(serde_json::json!({
                    "profile": profile.name(),
                    "payload_bytes": payload,
                    "op": op_name,
                    "ours_ns_per_packet": ours,
                    "libsrtp_ns_per_packet": theirs,
                    "ours_mpps": 1e3 / ours,
                    "libsrtp_mpps": 1e3 / theirs,
                    "ratio_ours_over_libsrtp": ratio,
                }));
            }
        }
    }
    let report = serde_json::json!({
        "what": "SRTP packets per second, ours / libsrtp, median of interleaved passes",
        "ring_packets": RING,
        "rounds": ROUNDS,
        "cases": rows,
    });
    let path = target_dir().join("bench").join("srtp.json");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create target/bench");
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json"))
        .expect("write srtp.json");
    println!("written to {}", path.display());
}

/// The cargo target directory: the bench binary is `<target>/<profile>/deps/srtp-…`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo bench` passes --bench; `cargo test --benches` does not, and
    // then criterion only smoke-tests each benchmark once.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list") {
        ratio_table();
    }
}
