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
    // Connected sockets let whole frames go out in one sendmmsg and replies
    // come in with recvmmsg: one generator core then drives far more
    // participants than with a syscall per datagram.
    for p in participants.iter() {
        p.socket.connect(server)?;
    }
    let mut tx = Batch::new(64);
    let mut rx = Batch::new(RX_BATCH);
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
                        if p.socket.send(&buf[..len]).is_ok() && measuring {
                            result.sent += 1;
                        }
                        if measuring {
                            result.scheduled += 1;
                        }
                    }
                    p.next_audio += 20_000;
                }
                if p.next_video <= now_us {
                    tx.clear();
                    p.peer.video_frame(now_us, |_, bytes| tx.push(bytes))?;
                    let scheduled = tx.len() as u64;
                    let sent = tx.send(p.socket.as_raw_fd()) as u64;
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
            for _ in 0..64 / RX_BATCH {
                let got = rx.recv(p.socket.as_raw_fd());
                for k in 0..got {
                    let len = rx.lens[k];
                    buf[..len].copy_from_slice(&rx.data[k * SLOT..k * SLOT + len]);
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
                if got < RX_BATCH {
                    break;
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

/// Bytes per datagram slot of a [`Batch`].
const SLOT: usize = 2048;
/// Datagrams per recvmmsg.
const RX_BATCH: usize = 32;

/// Datagrams for one sendmmsg, or room for one recvmmsg, on a connected
/// socket; the buffers are reused.
struct Batch {
    data: Vec<u8>,
    lens: Vec<usize>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new(slots: usize) -> Self {
        Self {
            data: vec![0; slots * SLOT],
            lens: Vec::with_capacity(slots),
            iovs: Vec::with_capacity(slots),
            msgs: Vec::with_capacity(slots),
        }
    }

    fn slots(&self) -> usize {
        self.data.len() / SLOT
    }

    fn clear(&mut self) {
        self.lens.clear();
    }

    fn len(&self) -> usize {
        self.lens.len()
    }

    /// Queues a datagram; one beyond the batch's room is dropped (frames
    /// here are far smaller than a batch).
    fn push(&mut self, bytes: &[u8]) {
        let k = self.lens.len();
        if k < self.slots() && bytes.len() <= SLOT {
            self.data[k * SLOT..k * SLOT + bytes.len()].copy_from_slice(bytes);
            self.lens.push(bytes.len());
        }
    }

    fn prepare(&mut self, lens: &[usize]) {
        self.iovs.clear();
        self.msgs.clear();
        for (k, &len) in lens.iter().enumerate() {
            self.iovs.push(libc::iovec {
                iov_base: self.data[k * SLOT..].as_mut_ptr().cast(),
                iov_len: len,
            });
        }
        for k in 0..lens.len() {
            // SAFETY: an all-zero mmsghdr is valid.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut self.iovs[k];
            m.msg_hdr.msg_iovlen = 1;
            self.msgs.push(m);
        }
    }

    /// Sends the queued datagrams; returns how many the kernel took.
    fn send(&mut self, fd: std::os::fd::RawFd) -> usize {
        let lens = std::mem::take(&mut self.lens);
        self.prepare(&lens);
        self.lens = lens;
        let mut sent = 0;
        while sent < self.msgs.len() {
            let rest = &mut self.msgs[sent..];
            // SAFETY: the headers point into `self.iovs`/`self.data`,
            // which outlive the call.
            let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as u32, 0) };
            if n <= 0 {
                break;
            }
            sent += n as usize;
        }
        sent
    }

    /// Receives what is waiting, up to the batch's room, without blocking;
    /// lengths are left in `self.lens`.
    fn recv(&mut self, fd: std::os::fd::RawFd) -> usize {
        let full = vec![SLOT; self.slots()];
        self.prepare(&full);
        // SAFETY: as in `send`; a null timeout with MSG_DONTWAIT.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                self.msgs.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        self.lens.clear();
        let n = n.max(0) as usize;
        for m in &self.msgs[..n] {
            self.lens.push(m.msg_len as usize);
        }
        n
    }
}
