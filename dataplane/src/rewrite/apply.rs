//! Writing a [`Forward`] decision into the packet bytes, in place.

use super::{ExtensionIdMap, Forward, RewriteError};
use crate::wire::rtp::RtpPacket;
use crate::wire::rtp_ext::{remap_ids, ExtensionForm};

/// Rewrites the header of the decrypted RTP packet in `packet` for the
/// subscriber: SSRC, sequence number, timestamp, payload type and marker from
/// `forward`, and RFC 8285 extension ids through `extension_ids` (elements the
/// subscriber did not negotiate become padding).
///
/// An extension block whose profile is not RFC 8285 is left as it is: its
/// layout is unknown, and receivers skip profiles they do not know. On error
/// the packet is unchanged: the extension block is validated in full before
/// any byte is written, and the fixed header is written last.
pub fn apply_to_packet(
    packet: &mut [u8],
    forward: &Forward,
    extension_ids: &ExtensionIdMap,
) -> Result<(), RewriteError> {
    let mut rtp = RtpPacket::new_checked(packet)?;
    if let Some(profile) = rtp.extension_profile() {
        if ExtensionForm::from_profile(profile).is_some() {
            if let Some(data) = rtp.extension_data_mut() {
                remap_ids(data, profile, |id| extension_ids.get_or_erase(id))?;
            }
        }
    }
    rtp.set_ssrc(forward.ssrc);
    rtp.set_sequence_number(forward.seq);
    rtp.set_timestamp(forward.timestamp);
    rtp.set_payload_type(forward.payload_type);
    rtp.set_marker(forward.marker);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtp::RtpHeaderBuilder;
    use crate::wire::rtp_ext::{write_elements, ExtensionIter};
    use crate::wire::WireError;

    const PAYLOAD: &[u8] = b"media payload";

    fn forward() -> Forward {
        Forward {
            ssrc: 0xCAFE_F00D,
            seq: 4242,
            extended_seq: 4242,
            timestamp: 0x1234_5678,
            payload_type: 100,
            marker: true,
        }
    }

    /// An RTP packet with the given extension elements and [`PAYLOAD`].
    fn packet(form: Option<ExtensionForm>, elements: &[(u8, &[u8])]) -> Vec<u8> {
        let mut ext = [0u8; 64];
        let mut buf = vec![0u8; 128];
        let mut builder = RtpHeaderBuilder::new(96, 7, 90_000, 0x1111_1111);
        if let Some(form) = form {
            let len = write_elements(&mut ext, form, elements).unwrap();
            builder = builder.extension(form.profile(), &ext[..len]);
        }
        let header = builder.write(&mut buf).unwrap();
        buf.truncate(header);
        buf.extend_from_slice(PAYLOAD);
        buf
    }

    fn elements(buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let rtp = RtpPacket::new_checked(buf).unwrap();
        ExtensionIter::from_packet(&rtp)
            .unwrap()
            .map(|e| {
                let (id, data) = e.unwrap();
                (id, data.to_vec())
            })
            .collect()
    }

    #[test]
    fn writes_every_header_field_and_keeps_the_payload() {
        let mut buf = packet(None, &[]);
        apply_to_packet(&mut buf, &forward(), &ExtensionIdMap::new()).unwrap();
        let rtp = RtpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(rtp.ssrc(), 0xCAFE_F00D);
        assert_eq!(rtp.sequence_number(), 4242);
        assert_eq!(rtp.timestamp(), 0x1234_5678);
        assert_eq!(rtp.payload_type(), 100);
        assert!(rtp.marker());
        assert_eq!(rtp.payload(), PAYLOAD);
    }

    #[test]
    fn clears_a_marker_the_publisher_set() {
        let mut buf = packet(None, &[]);
        let mut fwd = forward();
        apply_to_packet(&mut buf, &fwd, &ExtensionIdMap::new()).unwrap();
        fwd.marker = false;
        apply_to_packet(&mut buf, &fwd, &ExtensionIdMap::new()).unwrap();
        assert!(!RtpPacket::new_checked(&buf[..]).unwrap().marker());
    }

    #[test]
    fn remaps_one_byte_ids_and_erases_unnegotiated_ones() {
        let mut buf = packet(
            Some(ExtensionForm::OneByte),
            &[(1, b"mid"), (3, &[0xAB, 0xCD]), (5, &[7])],
        );
        let mut ids = ExtensionIdMap::new();
        ids.insert(1, 4).unwrap();
        ids.insert(3, 9).unwrap();
        apply_to_packet(&mut buf, &forward(), &ids).unwrap();
        assert_eq!(
            elements(&buf),
            [(4, b"mid".to_vec()), (9, vec![0xAB, 0xCD])]
        );
        assert_eq!(RtpPacket::new_checked(&buf[..]).unwrap().payload(), PAYLOAD);
    }

    #[test]
    fn remaps_two_byte_ids() {
        let mut buf = packet(Some(ExtensionForm::TwoByte), &[(200, b"x"), (2, b"yz")]);
        let mut ids = ExtensionIdMap::new();
        ids.insert(200, 17).unwrap();
        ids.insert(2, 201).unwrap();
        apply_to_packet(&mut buf, &forward(), &ids).unwrap();
        assert_eq!(elements(&buf), [(17, b"x".to_vec()), (201, b"yz".to_vec())]);
    }

    #[test]
    fn an_id_the_one_byte_form_cannot_carry_is_refused_and_nothing_changes() {
        let original = packet(Some(ExtensionForm::OneByte), &[(1, b"a")]);
        let mut buf = original.clone();
        let mut ids = ExtensionIdMap::new();
        ids.insert(1, 20).unwrap();
        let err = apply_to_packet(&mut buf, &forward(), &ids).unwrap_err();
        assert!(matches!(
            err,
            RewriteError::Wire(WireError::Malformed { .. })
        ));
        assert_eq!(buf, original);
    }

    #[test]
    fn a_block_of_unknown_profile_is_left_alone() {
        let mut buf = RtpHeaderBuilder::new(96, 1, 2, 3)
            .extension(0xABCD, &[0x10, 0x20, 0x30, 0x40])
            .header_len()
            .map(|len| vec![0u8; len])
            .unwrap();
        RtpHeaderBuilder::new(96, 1, 2, 3)
            .extension(0xABCD, &[0x10, 0x20, 0x30, 0x40])
            .write(&mut buf)
            .unwrap();
        apply_to_packet(&mut buf, &forward(), &ExtensionIdMap::new()).unwrap();
        let rtp = RtpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(rtp.extension_data(), Some(&[0x10, 0x20, 0x30, 0x40][..]));
        assert_eq!(rtp.sequence_number(), 4242);
    }

    #[test]
    fn truncated_packets_are_an_error_not_a_panic() {
        let mut buf = packet(None, &[]);
        buf.truncate(8);
        let err = apply_to_packet(&mut buf, &forward(), &ExtensionIdMap::new()).unwrap_err();
        assert!(matches!(
            err,
            RewriteError::Wire(WireError::Truncated { .. })
        ));
    }
}
