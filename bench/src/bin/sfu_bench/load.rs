//! The traffic generator: synthetic participants (real SRTP, their own
//! keys) on their own sockets in the generator's namespace, sending the
//! consult profile on schedule and timing what comes back.
//!
//! Latency is read from the abs-send-time header extension, which both the
//! SFU (mapped to the subscriber's id) and the plain forwarder carry
//! unchanged and which SRTP leaves in the clear: the receiver does not
//! decrypt, so the generator's own crypto stays on the sending side.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use dataplane::sfu::peer::Peer;
use dataplane::wire::rtp::RtpPacket;
use dataplane::wire::rtp_ext::{self, AbsSendTime};

/// One participant of the load.
pub struct Participant {
    pub peer: Peer,
    pub socket: UdpSocket,
    next_audio: u64,
    next_video: u64,
}

impl Participant {
    /// `phase_us` staggers the participants' schedules.
    pub fn new(peer: Peer, socket: UdpSocket, phase_us: u64) -> Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self {
            peer,
            socket,
            next_audio: phase_us % 20_000,
            next_video: phase_us % 33_333,
        })
    }
}

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Media packets sent in the measured window.
    pub sent: u64,
    /// Media packets received in it.
    pub received: u64,
    /// Media packets the schedule wanted sent in it.
    pub scheduled: u64,
    /// Forwarding latencies in µs (sampled, sorted).
    pub latencies_us: Vec<u32>,
    /// Length of the measured window.
    pub window: Duration,
}

impl LoadResult {
    pub fn percentile(&self, p: f64) -> Option<u32> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us.get(i).copied()
    }
}

/// Runs the schedule for `warmup + window` and measures during `window`
/// (plus a short drain for packets in flight); `ext_id` is the
/// abs-send-time id.
pub fn run(
    participants: &mut [Participant],
    server: SocketAddr,
    warmup: Duration,
    window: Duration,
    ext_id: u8,
) -> Result<LoadResult> {
    // SAFETY: plain epoll calls on fds this function's callers own.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        bail!("epoll_create1: {}", std::io::Error::last_os_error());
    }
    for (i, p) in participants.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: valid epoll fd, socket fd and event.
        let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, p.socket.as_raw_fd(), &mut ev) };
        if rc != 0 {
            bail!("epoll_ctl: {}", std::io::Error::last_os_error());
        }
    }
    let start = Instant::now();
    let measure_from = warmup;
    let send_until = warmup + window;
    let end = send_until + Duration::from_millis(200);
    let mut result = LoadResult {
        window,
        latencies_us: Vec::with_capacity(1 << 20),
        ..LoadResult::default()
    };
    let frame_us = 1_000_000 / u64::from(participants.first().map_or(30, |p| p.peer.config().fps));
    let mut buf = [0u8; 2048];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    // Bounded by time; each iteration either sends, reads or waits ≤ 1 ms.
    let max_iterations = end.as_millis() as u64 * 1000;
    for _ in 0..max_iterations {
        let t = start.elapsed();
        if t >= end {
            break;
        }
        let now_us = t.as_micros() as u64;
        let measuring = t >= measure_from && t < send_until;
        if t < send_until {
            for p in participants.iter_mut() {
                if p.next_audio <= now_us {
                    if p.peer.config().audio_ssrc.is_some() {
                        let len = p.peer.audio_packet(now_us, &mut buf)?;
                        if p.socket.send_to(&buf[..len], server).is_ok() && measuring {
                            result.sent += 1;
                        }
                        if measuring {
                            result.scheduled += 1;
                        }
                    }
                    p.next_audio += 20_000;
                }
                if p.next_video <= now_us {
                    let socket = &p.socket;
                    let (mut sent, mut scheduled) = (0u64, 0u64);
                    p.peer.video_frame(now_us, |_, bytes| {
                        scheduled += 1;
                        if socket.send_to(bytes, server).is_ok() {
                            sent += 1;
                        }
                    })?;
                    if measuring {
                        result.sent += sent;
                        result.scheduled += scheduled;
                    }
                    p.next_video += frame_us;
                }
            }
        }
        // SAFETY: `events` has the stated length.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 1) };
        let arrival = start.elapsed();
        let counting = arrival >= measure_from + Duration::from_millis(5);
        let now_raw = AbsSendTime::from_duration(arrival).raw();
        for ev in events.iter().take(n.max(0) as usize) {
            let p = &mut participants[ev.u64 as usize];
            for _ in 0..64 {
                let Ok((len, _)) = p.socket.recv_from(&mut buf) else {
                    break;
                };
                // RTCP is decrypted: PLIs make the publisher send a key
                // frame, as a browser would.
                if dataplane::wire::demux::is_rtcp(&buf[..len]) {
                    let _ = p.peer.receive(&mut buf[..len]);
                    continue;
                }
                let data = &buf[..len];
                if !counting {
                    continue;
                }
                result.received += 1;
                if let Some(sent_raw) = abs_send_time(data, ext_id) {
                    // 6.18 fixed point seconds, 24 bits: wraps every 64 s.
                    let diff = now_raw.wrapping_sub(sent_raw) & 0x00ff_ffff;
                    let us = (u64::from(diff) * 1_000_000) >> 18;
                    if result.latencies_us.len() < result.latencies_us.capacity() {
                        result.latencies_us.push(us as u32);
                    }
                }
            }
        }
    }
    // SAFETY: closing the epoll fd created above.
    unsafe { libc::close(ep) };
    result.latencies_us.sort_unstable();
    Ok(result)
}

fn abs_send_time(packet: &[u8], id: u8) -> Option<u32> {
    let rtp = RtpPacket::new_checked_header(packet).ok()?;
    let data = rtp_ext::find(rtp.extension_profile()?, rtp.extension_data()?, id).ok()??;
    rtp_ext::read_abs_send_time(data).ok().map(|a| a.raw())
}
