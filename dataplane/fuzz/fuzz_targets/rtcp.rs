//! RTCP compound packets: every packet type parsed, feedback expanded.
#![no_main]

use dataplane::wire::rtcp::{self, RtcpPacket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rtcp::validate_compound(data, true);
    for packet in rtcp::iter_compound(data) {
        let Ok(packet) = packet else { break };
        match packet {
            RtcpPacket::Nack(nack) => {
                let _ = nack.lost_seqs().count();
            }
            RtcpPacket::TransportCc(twcc) => {
                let _ = twcc.packets().count();
            }
            RtcpPacket::Remb(remb) => {
                let _ = (remb.bitrate_bps(), remb.ssrcs().count());
            }
            RtcpPacket::Sdes(sdes) => {
                for chunk in sdes.chunks() {
                    let _ = chunk.cname();
                }
            }
            other => {
                let _ = other.as_bytes();
            }
        }
    }
    let mut owned = data.to_vec();
    for packet in rtcp::iter_compound_mut(&mut owned) {
        let Ok(mut packet) = packet else { break };
        if let Some(fb) = packet.feedback_mut() {
            fb.set_media_ssrc(7);
        }
    }
});
