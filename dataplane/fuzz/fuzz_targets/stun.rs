//! STUN messages: attributes, integrity, fingerprint, and the ICE-lite answer.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};

use dataplane::wire::stun::{self, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::new_checked(data) else {
        return;
    };
    let _ = (msg.username(), msg.priority(), msg.use_candidate(), msg.xor_mapped_address());
    let _ = (msg.ice_controlling(), msg.ice_controlled(), msg.error_code());
    let _ = msg.unknown_comprehension_required().count();
    let _ = stun::verify_message_integrity(&msg, b"password");
    let _ = stun::verify_fingerprint(&msg);
    let mut out = [0u8; 1500];
    let src = SocketAddr::from((Ipv4Addr::new(198, 18, 0, 1), 5000));
    if let Ok(n) = stun::build_ice_lite_binding_success(&msg, src, b"password", &mut out) {
        let answer = Message::new_checked(&out[..n]).expect("our answer parses");
        stun::verify_fingerprint(&answer).expect("our answer carries a valid FINGERPRINT");
        stun::verify_message_integrity(&answer, b"password")
            .expect("and a valid MESSAGE-INTEGRITY");
    }
    let _ = stun::build_error_response(&msg, 400, "", &[], None, &mut out);
});
