//! SRTP and SRTCP unprotect on hostile bytes, for every profile. The first
//! byte picks the profile and direction; the rest is the packet.
#![no_main]

use dataplane::srtp::{MasterKey, SrtpContext, SrtpProfile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else {
        return;
    };
    let profile = SrtpProfile::ALL[usize::from(selector & 3)];
    let key = MasterKey::new(&[0x42; 32][..profile.master_key_len()], &[0x24; 14][..profile.master_salt_len()])
        .expect("lengths come from the profile");
    let mut ctx = SrtpContext::new(profile, &key).expect("valid key");
    let mut buf = packet.to_vec();
    if selector & 4 == 0 {
        if let Ok(n) = ctx.unprotect_rtp(&mut buf) {
            assert!(n <= packet.len());
        }
    } else if let Ok(n) = ctx.unprotect_rtcp(&mut buf) {
        assert!(n <= packet.len());
    }
    // A protect/unprotect round trip must restore the plaintext exactly.
    let mut sender = SrtpContext::new(profile, &key).expect("valid key");
    let mut receiver = SrtpContext::new(profile, &key).expect("valid key");
    let mut buf = packet.to_vec();
    let len = buf.len();
    buf.resize(len + 32, 0);
    if let Ok(protected) = sender.protect_rtp(&mut buf, len) {
        let n = receiver
            .unprotect_rtp(&mut buf[..protected])
            .expect("our own packet unprotects");
        assert_eq!(&buf[..n], packet);
    }
});
