//! Offering load: live frames as fast as the kernel can send them
//! (saturation) or paced by the generator program to a set rate, or UDP
//! packets from a socket paced at a fixed rate. Every loop is bounded by its
//! duration and by the packet count of each call, and ends early on a stop
//! request.

use std::{
    net::{SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use dataplane::xdp::LiveGenerator;

use crate::stop;

/// Frames per kernel batch when saturating: the NAPI budget, so the device
/// under test takes each batch in one poll.
const SATURATE_BATCH: u32 = 64;
/// A live-frame kernel call is sized to last about this long. Each call
/// costs some 15–30 ms of set-up and tear-down during which nothing is
/// sent, so calls must be long for the rate to be the generator's; a stop
/// request still ends a call at once (a pending signal ends it).
const CALL_TARGET: Duration = Duration::from_millis(1000);
/// The longest a paced sender sleeps before looking at the clock again.
const MAX_NAP: Duration = Duration::from_millis(1);
/// A paced sender sends at most this much of its schedule in one burst
/// (and at most [`SEND_BATCH`] packets).
const BURST_WINDOW: Duration = Duration::from_micros(250);

/// What one run of the generator sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offered {
    /// Frames sent.
    pub frames: u64,
    /// Wall-clock time from first to last send.
    pub secs: f64,
}

impl Offered {
    /// Frames per second.
    pub fn pps(&self) -> f64 {
        if self.secs > 0.0 {
            self.frames as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Sends live frames out of `ifindex` (in the calling thread's network
/// namespace) for `duration`: as fast as the kernel takes them, or at the
/// rate the generator is set to (see [`LiveGenerator::set_rate`]).
pub fn saturate_for(
    generator: &mut LiveGenerator,
    ifindex: u32,
    duration: Duration,
) -> Result<Offered> {
    let before = generator.sent()?;
    let start = Instant::now();
    saturate(generator, ifindex, start, duration)?;
    let secs = start.elapsed().as_secs_f64();
    if stop::requested() {
        bail!("interrupted");
    }
    Ok(Offered {
        frames: generator.sent()? - before,
        secs,
    })
}

/// Sends `pps` packets per second with `sender` for `duration`.
pub fn paced_for(sender: &mut SocketSender, pps: f64, duration: Duration) -> Result<Offered> {
    let start = Instant::now();
    let frames = paced(sender, pps, start, duration)?;
    let secs = start.elapsed().as_secs_f64();
    if stop::requested() {
        bail!("interrupted");
    }
    Ok(Offered { frames, secs })
}

fn saturate(
    generator: &mut LiveGenerator,
    ifindex: u32,
    start: Instant,
    duration: Duration,
) -> Result<()> {
    let mut chunk: u32 = 16_384;
    while start.elapsed() < duration && !stop::requested() {
        let call = Instant::now();
        generator.run(ifindex, chunk, SATURATE_BATCH)?;
        let rate = f64::from(chunk) / call.elapsed().as_secs_f64().max(1e-6);
        let left = duration.saturating_sub(start.elapsed()).min(CALL_TARGET);
        chunk = (rate * left.as_secs_f64()).clamp(256.0, 100_000_000.0) as u32;
    }
    Ok(())
}

fn paced(sender: &mut SocketSender, pps: f64, start: Instant, duration: Duration) -> Result<u64> {
    if !(pps.is_finite() && pps > 0.0) {
        bail!("a paced load needs a positive rate, not {pps}");
    }
    let _priority = RealtimePriority::enter();
    let burst = ((pps * BURST_WINDOW.as_secs_f64()) as u64).clamp(1, SEND_BATCH as u64);
    // Position in the schedule: frames sent plus frames skipped after stalls.
    let mut scheduled: u64 = 0;
    let mut sent: u64 = 0;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration || stop::requested() {
            return Ok(sent);
        }
        let due = (pps * elapsed.as_secs_f64()) as u64;
        // After a stall (the machine is shared) the missed packets are not
        // made up in one burst, which would measure burst tolerance instead
        // of rate; the shortfall shows in the offered rate.
        if due > scheduled + burst {
            scheduled = due - burst;
        }
        if due > scheduled {
            let n = (due - scheduled) as usize;
            sent += sender.send_burst(n)? as u64;
            scheduled += n as u64;
        } else {
            let next = Duration::from_secs_f64((scheduled + 1) as f64 / pps);
            std::thread::sleep(next.saturating_sub(elapsed).min(MAX_NAP));
        }
    }
}

/// A UDP sender for paced loads: RTP packets with consecutive sequence
/// numbers, sent in bursts with `sendmmsg`. Live frames cost about a
/// millisecond of set-up per kernel call, so they cannot be paced finely
/// at the rates a userspace relay takes; a socket can (up to a few hundred
/// thousand packets per second).
pub struct SocketSender {
    socket: UdpSocket,
    packets: Vec<Vec<u8>>,
    seq: u16,
}

/// Most packets one `sendmmsg` call carries.
const SEND_BATCH: usize = 64;

impl SocketSender {
    /// A socket bound to `from` (in the calling thread's network namespace)
    /// sending RTP packets of `udp_payload` bytes to `to`.
    pub fn new(from: SocketAddrV4, to: SocketAddrV4, udp_payload: usize) -> Result<Self> {
        let socket = UdpSocket::bind(from).with_context(|| format!("binding {from}"))?;
        socket
            .connect(to)
            .with_context(|| format!("connecting to {to}"))?;
        let packet = crate::frame::rtp_payload(udp_payload);
        Ok(Self {
            socket,
            packets: vec![packet; SEND_BATCH],
            seq: 0,
        })
    }

    /// Sends `n` (at most [`SEND_BATCH`]) packets; returns how many the
    /// kernel took.
    fn send_burst(&mut self, n: usize) -> Result<usize> {
        let n = n.min(SEND_BATCH);
        for packet in &mut self.packets[..n] {
            packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
            self.seq = self.seq.wrapping_add(1);
        }
        let mut iov: Vec<libc::iovec> = self.packets[..n]
            .iter_mut()
            .map(|p| libc::iovec {
                iov_base: p.as_mut_ptr().cast(),
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid (no name, no control data).
        let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (msg, iov) in msgs.iter_mut().zip(iov.iter_mut()) {
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds n headers whose iovecs point into live
        // packet buffers; the socket is connected, so no address is needed.
        let rc = unsafe {
            libc::sendmmsg(
                self.socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                0,
            )
        };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            // A full queue drops like a full link would: count what was taken.
            if matches!(err.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::EAGAIN)) {
                return Ok(0);
            }
            return Err(err).context("sendmmsg");
        }
        Ok(rc as usize)
    }
}

/// Real-time (FIFO) scheduling for the calling thread while it lives, so a
/// paced sender wakes on time on a busy machine; back to normal on drop. A
/// paced sender sleeps between bursts, so it never holds the CPU for long.
struct RealtimePriority {
    entered: bool,
}

impl RealtimePriority {
    /// Low among real-time priorities: above every normal task, below the kernel's own.
    const PRIORITY: libc::c_int = 10;

    fn enter() -> Self {
        let param = libc::sched_param {
            sched_priority: Self::PRIORITY,
        };
        // SAFETY: plain system call on the calling thread with a valid param.
        let entered = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
        Self { entered }
    }
}

impl Drop for RealtimePriority {
    fn drop(&mut self) {
        if self.entered {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as in `enter`.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
        }
    }
}
