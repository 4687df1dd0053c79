//! RTP header, RFC 8285 extensions, AV1 DD, VP8 and H.264 payload descriptors.
#![no_main]

use dataplane::wire::{
    av1_dd::DependencyDescriptor, h264, rtp::RtpPacket, rtp_ext::{self, ExtensionIter}, vp8::Vp8Payload,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = RtpPacket::new_checked_header(data) {
        let _ = (header.header_len(), header.payload(), header.csrcs().count());
    }
    let Ok(rtp) = RtpPacket::new_checked(data) else {
        let _ = DependencyDescriptor::parse(data);
        let _ = h264::is_keyframe(data);
        return;
    };
    if let (Some(profile), Some(ext)) = (rtp.extension_profile(), rtp.extension_data()) {
        let Ok(elements) = ExtensionIter::new(profile, ext) else {
            return;
        };
        for element in elements {
            let Ok((id, value)) = element else { break };
            let _ = rtp_ext::read_mid(value);
            let _ = rtp_ext::read_rid(value);
            let _ = rtp_ext::read_abs_send_time(value);
            let _ = rtp_ext::read_transport_cc(value);
            let _ = rtp_ext::read_audio_level(value);
            let _ = DependencyDescriptor::parse(value);
            let _ = id;
        }
    }
    let payload = rtp.payload();
    if let Ok(vp8) = Vp8Payload::new_checked(payload) {
        let _ = (vp8.picture_id(), vp8.tl0_pic_idx(), vp8.is_keyframe(), vp8.payload());
    }
    let _ = h264::is_keyframe(payload);

    // Rewrites as the forwarder does them: ids remapped, header fields set.
    let mut owned = data.to_vec();
    let mut rtp = RtpPacket::new_unchecked(&mut owned[..]);
    rtp.set_sequence_number(0xffff);
    rtp.set_timestamp(0xdead_beef);
    rtp.set_ssrc(1);
    if let Some(profile) = rtp.extension_profile() {
        if let Some(ext) = rtp.extension_data_mut() {
            let _ = rtp_ext::remap_ids(ext, profile, |id| id.wrapping_add(1) % 15);
        }
    }
});
