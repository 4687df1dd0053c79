//! The benchmark's packets: Ethernet + IPv4 + UDP carrying an RTP header and
//! an opaque body standing in for SRTP ciphertext and tag, with every
//! checksum complete.

use std::net::SocketAddrV4;

/// Ethernet + IPv4 + UDP header bytes in front of the UDP payload.
pub const HEADERS: usize = 14 + 20 + 8;

/// Bytes an Ethernet frame occupies on the wire besides the frame itself:
/// FCS (4), preamble and start delimiter (8), inter-frame gap (12).
pub const WIRE_OVERHEAD: usize = 4 + 8 + 12;

/// RTP payload type used for every benchmark packet (dynamic range, video).
pub const PAYLOAD_TYPE: u8 = 96;

/// The SSRC of the benchmark stream.
pub const SSRC: u32 = 0x5b5b_0001;

/// Who sends a frame to whom, at both layers.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    /// Ethernet source.
    pub src_mac: [u8; 6],
    /// Ethernet destination.
    pub dst_mac: [u8; 6],
    /// IP source and UDP source port.
    pub src: SocketAddrV4,
    /// IP destination and UDP destination port.
    pub dst: SocketAddrV4,
}

/// An RTP packet of exactly `udp_payload` bytes (at least the 12-byte RTP
/// header) with sequence number 0.
pub fn rtp_payload(udp_payload: usize) -> Vec<u8> {
    assert!(udp_payload >= 12, "an RTP packet has a 12-byte header");
    let mut rtp = vec![0x80, PAYLOAD_TYPE, 0, 0];
    rtp.extend_from_slice(&0x0001_0000u32.to_be_bytes());
    rtp.extend_from_slice(&SSRC.to_be_bytes());
    rtp.extend((0..udp_payload - 12).map(|i| (i as u8).wrapping_mul(31) ^ 0xa5));
    rtp
}

/// [`rtp_payload`] in a complete Ethernet frame.
pub fn rtp_frame(ends: &Endpoints, udp_payload: usize) -> Vec<u8> {
    udp_frame(ends, &rtp_payload(udp_payload))
}

/// `payload` as one UDP datagram in an Ethernet + IPv4 frame (TTL 64, DF).
pub fn udp_frame(ends: &Endpoints, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + total);
    f.extend_from_slice(&ends.dst_mac);
    f.extend_from_slice(&ends.src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&ends.src.ip().octets());
    ip[16..20].copy_from_slice(&ends.dst.ip().octets());
    let csum = !fold(ones_sum(&ip));
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&ends.src.port().to_be_bytes());
    udp.extend_from_slice(&ends.dst.port().to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let csum = match !fold(ones_sum(&pseudo) + ones_sum(&udp)) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&udp);
    f
}

fn ones_sum(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// True if the IPv4 header and UDP checksums of `frame` verify from scratch.
pub fn checksums_valid(frame: &[u8]) -> bool {
    let Some(ip) = frame.get(14..34) else {
        return false;
    };
    if fold(ones_sum(ip)) != 0xffff {
        return false;
    }
    let udp_len = usize::from(u16::from_be_bytes([frame[38], frame[39]]));
    let Some(udp) = frame.get(34..34 + udp_len) else {
        return false;
    };
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    fold(ones_sum(&pseudo) + ones_sum(udp)) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends() -> Endpoints {
        Endpoints {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: "198.18.100.2:5004".parse().unwrap(),
            dst: "198.18.100.1:40000".parse().unwrap(),
        }
    }

    #[test]
    fn frames_have_the_asked_payload_and_valid_checksums() {
        for payload in [12, 160, 1200] {
            let f = rtp_frame(&ends(), payload);
            assert_eq!(f.len(), HEADERS + payload);
            assert!(checksums_valid(&f), "payload {payload}");
            assert_eq!(&f[HEADERS + 2..HEADERS + 4], &[0, 0], "sequence number 0");
        }
    }

    #[test]
    fn a_flipped_bit_breaks_the_checksum() {
        let mut f = rtp_frame(&ends(), 160);
        f[100] ^= 1;
        assert!(!checksums_valid(&f));
    }
}
