//! The io_uring engine. See the [worker documentation](super) for the design.
//!
//! Memory the kernel reads or writes asynchronously — the provided buffer
//! ring and its buffers, the multishot `msghdr`, and the `msghdr`s, iovecs,
//! addresses and control messages of in-flight sends — is allocated once
//! and never moved or reused before the completion that releases it.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::{io_err, Shared, WorkerConfig, WorkerError};
use crate::sfu::{Sfu, TransmitQueue};

/// Size of each provided receive buffer (header, address, datagram).
const RX_BUF_LEN: usize = 2048;
/// The buffer group id of the ring.
const BGID: u16 = 7;
/// Address space reserved in each receive buffer (a `sockaddr_in6`).
const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// `io_uring_recvmsg_out` header at the start of each receive buffer.
const RECVMSG_OUT_LEN: usize = 16;
/// Most datagrams in one GSO send (the kernel's UDP_MAX_SEGMENTS is 64).
const MAX_GSO_SEGMENTS: usize = 64;
/// Most bytes in one GSO send.
const MAX_GSO_BYTES: usize = 60_000;
/// Longest wait for completions, so commands and stop are seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(10);
/// user_data of the multishot receive.
const RECV_TAG: u64 = u64::MAX;
/// Marks a copied send completion already accounted for.
const HANDLED_TAG: u64 = u64::MAX - 1;
/// user_data of the read of the wake eventfd.
const WAKE_TAG: u64 = u64::MAX - 2;
/// `SOL_UDP` / `UDP_SEGMENT`.
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;

/// The provided buffer ring and its buffers.
struct BufRing {
    ring: *mut types::BufRingEntry,
    ring_layout: Layout,
    bufs: Box<[u8]>,
    entries: u16,
    /// Our copy of the tail (the kernel only reads it).
    tail: u16,
}

impl BufRing {
    fn new(entries: u16) -> Result<Self, WorkerError> {
        let entries = entries.next_power_of_two().clamp(16, 1 << 15);
        let size = usize::from(entries) * std::mem::size_of::<types::BufRingEntry>();
        let ring_layout = Layout::from_size_align(size, 4096).map_err(|_| WorkerError::Io {
            what: "buffer ring layout",
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        // SAFETY: a non-zero size layout.
        let ring = unsafe { alloc_zeroed(ring_layout) }.cast::<types::BufRingEntry>();
        if ring.is_null() {
            return Err(WorkerError::Io {
                what: "allocating the buffer ring",
                source: std::io::Error::from(std::io::ErrorKind::OutOfMemory),
            });
        }
        let bufs = vec![0u8; usize::from(entries) * RX_BUF_LEN].into_boxed_slice();
        let mut this = Self {
            ring,
            ring_layout,
            bufs,
            entries,
            tail: 0,
        };
        for bid in 0..entries {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// Queues buffer `bid` for the kernel (visible after [`Self::publish`]).
    fn push(&mut self, bid: u16) {
        let mask = self.entries - 1;
        let addr = self.bufs[usize::from(bid) * RX_BUF_LEN..].as_mut_ptr() as u64;
        // SAFETY: the index is masked into the ring's `entries` entries.
        let entry = unsafe { &mut *self.ring.add(usize::from(self.tail & mask)) };
        entry.set_addr(addr);
        entry.set_len(RX_BUF_LEN as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes pushed buffers visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field lives inside the first ring entry, which
        // the kernel reads with acquire semantics.
        unsafe {
            let tail = types::BufRingEntry::tail(self.ring).cast_mut();
            (*(tail as *const AtomicU16)).store(self.tail, Ordering::Release);
        }
    }

    fn buf_mut(&mut self, bid: u16, len: usize) -> &mut [u8] {
        let start = usize::from(bid) * RX_BUF_LEN;
        &mut self.bufs[start..start + len.min(RX_BUF_LEN)]
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout. The ring is
        // unregistered (the IoUring dropped) before this runs: `Engine`
        // declares `ring` before `bufs`.
        unsafe { dealloc(self.ring.cast(), self.ring_layout) };
    }
}

/// Storage for one batch of `sendmsg`s.
struct SendSlots {
    msgs: Vec<libc::msghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in6>,
    cmsgs: Vec<[u64; 4]>,
    order: Vec<u32>,
    /// Datagrams and bytes of each queued `sendmsg`, to account for a
    /// failed or short send when its completion arrives.
    msg_datagrams: Vec<u32>,
    msg_bytes: Vec<usize>,
}

struct Engine {
    // Field order matters: the ring is dropped (and the buffer ring with it
    // unregistered) before the memory it points into.
    ring: IoUring,
    bufs: BufRing,
    recv_msg: Box<libc::msghdr>,
    slots: SendSlots,
    /// The queue whose datagrams are in flight.
    sending: TransmitQueue,
    inflight: usize,
    gso: bool,
    cq_entries: usize,
    fd: types::Fd,
    /// Owns the descriptor `fd` names; closed after the ring is gone.
    socket: std::net::UdpSocket,
    /// The wake eventfd (owned by the worker, which outlives the ring) and
    /// the buffer its pending read fills.
    wake_fd: types::Fd,
    wake_buf: Box<[u8; 8]>,
}

pub(crate) fn run(
    socket: std::net::UdpSocket,
    local: SocketAddr,
    config: &WorkerConfig,
    mut sfu: Sfu,
    shared: Shared,
    ready: mpsc::SyncSender<Result<(), WorkerError>>,
) -> Result<(), WorkerError> {
    let wake_fd = types::Fd(shared.wake.eventfd.as_raw_fd());
    let mut engine = match Engine::new(socket, config, sfu.config().queue_capacity, wake_fd) {
        Ok(e) => e,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(()));
    let counters = &shared.counters;
    let mut recycled: Vec<u16> = Vec::with_capacity(usize::from(engine.bufs.entries));
    // Completions are copied out of the CQ so sends can be flushed (and
    // their completions reaped) in the middle of a batch.
    let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(engine.cq_entries);
    let high_water = engine.sending.capacity().saturating_sub(256).max(1);
    let mut rearm = false;
    let mut rearm_wake = false;
    let mut drops_read = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        shared.drain_commands(&mut sfu);
        let now = Instant::now();
        let wait = sfu
            .poll_timeout()
            .saturating_duration_since(now)
            .min(MAX_WAIT);
        let ts = types::Timespec::new()
            .sec(wait.as_secs())
            .nsec(wait.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        match engine.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if e.raw_os_error() == Some(libc::ETIME)
                    || e.raw_os_error() == Some(libc::EINTR)
                    || e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(io_err("io_uring_enter")(e)),
        }
        let now = Instant::now();
        let mut received = 0u64;
        let mut rx_bytes = 0u64;
        let mut rx_errors = 0u64;
        recycled.clear();
        cqes.clear();
        engine.reap(&mut cqes);
        let mut i = 0;
        while i < cqes.len() {
            let (user_data, res, flags) = cqes[i];
            i += 1;
            if user_data == HANDLED_TAG {
                continue;
            }
            if user_data == WAKE_TAG {
                // Commands or stop: seen at the top of the loop.
                rearm_wake = true;
                continue;
            }
            if user_data != RECV_TAG {
                engine.on_send_completion(user_data, res, counters);
                continue;
            }
            if !cqueue::more(flags) {
                rearm = true;
            }
            let Some(bid) = cqueue::buffer_select(flags) else {
                // ENOBUFS ends the multishot receive while datagrams queue
                // up in the socket; counted so an undersized ring shows.
                if res == -libc::ENOBUFS {
                    counters.rx_no_buffers.fetch_add(1, Ordering::Relaxed);
                } else if res < 0 {
                    rx_errors += 1;
                }
                continue;
            };
            recycled.push(bid);
            if res < 0 {
                continue;
            }
            let buf = engine.bufs.buf_mut(bid, res as usize);
            match parse_recvmsg(buf, &engine.recv_msg) {
                Some((remote, start, len)) => {
                    received += 1;
                    rx_bytes += len as u64;
                    let datagram = &mut buf[start..start + len];
                    if super::is_punted(datagram) {
                        shared.punt(local, remote, datagram, now);
                    } else {
                        sfu.handle_datagram(now, local, remote, datagram);
                    }
                }
                None => rx_errors += 1,
            }
            // Send before the core's queue can overflow: wait for the
            // previous sends (their completions join this batch) and hand
            // the queue to the kernel.
            if sfu.transmits().len() >= high_water {
                // Buffers already handled go back first, so the receive
                // keeps running (and never starves) while sends complete.
                engine.recycle(&mut recycled);
                engine.wait_sends(&mut cqes, i, counters)?;
                engine.flush(&mut sfu, counters);
            }
        }
        engine.recycle(&mut recycled);
        if rearm {
            engine.arm_recv().map_err(io_err("arming recvmsg"))?;
            counters.rx_arms.fetch_add(1, Ordering::Relaxed);
            rearm = false;
        }
        if rearm_wake {
            engine.arm_wake().map_err(io_err("arming the wake read"))?;
            rearm_wake = false;
        }
        if now >= sfu.poll_timeout() {
            sfu.handle_timeout(now);
        }
        // The previous batch's buffers are free once all its sends completed.
        if engine.inflight == 0 {
            engine.flush(&mut sfu, counters);
        }
        counters.rx_datagrams.fetch_add(received, Ordering::Relaxed);
        counters.rx_bytes.fetch_add(rx_bytes, Ordering::Relaxed);
        counters.rx_errors.fetch_add(rx_errors, Ordering::Relaxed);
        super::poll_socket_drops(&engine.socket, counters, &mut drops_read, now);
        counters.batches.fetch_add(1, Ordering::Relaxed);
    }
    // Wait (bounded) for in-flight sends before their buffers are freed.
    let deadline = Instant::now() + Duration::from_secs(1);
    while engine.inflight > 0 && Instant::now() < deadline {
        let ts = types::Timespec::new().nsec(10_000_000);
        let args = types::SubmitArgs::new().timespec(&ts);
        let _ = engine.ring.submitter().submit_with_args(1, &args);
        for cqe in engine.ring.completion() {
            if cqe.user_data() != RECV_TAG && cqe.user_data() != WAKE_TAG {
                engine.inflight = engine.inflight.saturating_sub(1);
            }
        }
    }
    Ok(())
}

/// Remote address, payload offset and payload length of a multishot
/// `recvmsg` buffer; `None` if truncated or of an unknown family.
fn parse_recvmsg(buf: &[u8], msg: &libc::msghdr) -> Option<(SocketAddr, usize, usize)> {
    if buf.len() < RECVMSG_OUT_LEN + NAME_LEN {
        return None;
    }
    let word = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    let (namelen, payloadlen, flags) = (word(0) as usize, word(8) as usize, word(12));
    if flags & (libc::MSG_TRUNC as u32) != 0 {
        return None;
    }
    let name = &buf[RECVMSG_OUT_LEN..RECVMSG_OUT_LEN + NAME_LEN.min(namelen)];
    let start = RECVMSG_OUT_LEN + msg.msg_namelen as usize + msg.msg_controllen;
    let len = payloadlen.min(buf.len().checked_sub(start)?);
    let family = u16::from_ne_bytes([*name.first()?, *name.get(1)?]);
    let port = u16::from_be_bytes([*name.get(2)?, *name.get(3)?]);
    let remote = match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))
        }
        libc::AF_INET6 => {
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let ip = Ipv6Addr::from(ip);
            // Dual-stack sockets see IPv4 peers as mapped addresses.
            match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
            }
        }
        _ => return None,
    };
    Some((remote, start, len))
}

/// Writes `addr` as a C socket address into `out`; returns its length.
fn write_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_in6) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_in fits inside sockaddr_in6 and both are
            // plain C structs.
            let sin = unsafe { &mut *(out as *mut libc::sockaddr_in6).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = v6.port().to_be();
            out.sin6_flowinfo = 0;
            out.sin6_addr = libc::in6_addr {
                s6_addr: v6.ip().octets(),
            };
            out.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

impl Engine {
    fn new(
        socket: std::net::UdpSocket,
        config: &WorkerConfig,
        queue_capacity: usize,
        wake_fd: types::Fd,
    ) -> Result<Self, WorkerError> {
        let rx = usize::from(config.rx_buffers.max(16));
        // Completions: every receive buffer plus every send of a batch,
        // with room to spare so the CQ does not overflow between reaps.
        let cq = (rx + queue_capacity).next_power_of_two() as u32 * 2;
        let sq = (queue_capacity.next_power_of_two() as u32).clamp(64, 4096);
        let ring = IoUring::builder()
            .setup_cqsize(cq)
            .build(sq)
            .map_err(io_err("io_uring_setup"))?;
        let bufs = BufRing::new(config.rx_buffers)?;
        // SAFETY: the ring memory stays allocated and in place until after
        // the IoUring is dropped (field order of Engine).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.ring as u64, bufs.entries, BGID, 0)
                .map_err(io_err("registering the provided buffer ring"))?;
        }
        // SAFETY: an all-zero msghdr is valid.
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msg.msg_namelen = NAME_LEN as libc::socklen_t;
        // SAFETY: all-zero C structs are valid.
        let zero_msg: libc::msghdr = unsafe { std::mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: as above.
        let zero_name: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let slots = SendSlots {
            msgs: vec![zero_msg; queue_capacity],
            iovs: vec![zero_iov; queue_capacity],
            names: vec![zero_name; queue_capacity],
            cmsgs: vec![[0u64; 4]; queue_capacity],
            order: Vec::with_capacity(queue_capacity),
            msg_datagrams: vec![0; queue_capacity],
            msg_bytes: vec![0; queue_capacity],
        };
        let mut engine = Self {
            ring,
            bufs,
            recv_msg,
            slots,
            sending: TransmitQueue::new(queue_capacity),
            inflight: 0,
            gso: config.gso,
            cq_entries: cq as usize,
            fd: types::Fd(socket.as_raw_fd()),
            socket,
            wake_fd,
            wake_buf: Box::new([0u8; 8]),
        };
        engine.arm_recv().map_err(io_err("arming recvmsg"))?;
        engine.arm_wake().map_err(io_err("arming the wake read"))?;
        Ok(engine)
    }

    /// Copies completions out of the CQ, as many as `cqes` has room for.
    fn reap(&mut self, cqes: &mut Vec<(u64, i32, u32)>) {
        let room = cqes.capacity() - cqes.len();
        for cqe in self.ring.completion().take(room) {
            cqes.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
    }

    /// Hands handled receive buffers back to the kernel.
    fn recycle(&mut self, recycled: &mut Vec<u16>) {
        for &bid in recycled.iter() {
            self.bufs.push(bid);
        }
        if !recycled.is_empty() {
            self.bufs.publish();
        }
        recycled.clear();
    }

    /// Accounts for the completion of `sendmsg` number `user_data`.
    fn on_send_completion(&mut self, user_data: u64, res: i32, counters: &super::EngineCounters) {
        self.inflight = self.inflight.saturating_sub(1);
        let m = user_data as usize;
        let datagrams = self.slots.msg_datagrams.get(m).copied().unwrap_or(1);
        let bytes = self.slots.msg_bytes.get(m).copied().unwrap_or(0);
        if res < 0 {
            counters.tx_errors.fetch_add(1, Ordering::Relaxed);
            counters
                .tx_failed_datagrams
                .fetch_add(u64::from(datagrams), Ordering::Relaxed);
            // A kernel without UDP GSO on this path: send one by one.
            if res == -libc::EIO || res == -libc::EINVAL {
                self.gso = false;
            }
        } else if (res as usize) < bytes {
            // UDP sends all or nothing; a short count means lost segments.
            counters.tx_errors.fetch_add(1, Ordering::Relaxed);
            counters
                .tx_failed_datagrams
                .fetch_add(u64::from(datagrams), Ordering::Relaxed);
        }
    }

    /// Waits (bounded) until every in-flight send completed. Send
    /// completions already copied into `cqes[pending..]` count too: waiting
    /// for them in the kernel would never end. Receive completions reaped
    /// meanwhile are appended to `cqes` for the caller to handle.
    fn wait_sends(
        &mut self,
        cqes: &mut Vec<(u64, i32, u32)>,
        pending: usize,
        counters: &super::EngineCounters,
    ) -> Result<(), WorkerError> {
        self.complete_sends_in(&mut cqes[pending..], counters);
        // Bounded: sends on a UDP socket complete at submission.
        let deadline = Instant::now() + MAX_WAIT;
        while self.inflight > 0 && Instant::now() < deadline {
            let ts = types::Timespec::new().nsec(1_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if e.raw_os_error() == Some(libc::ETIME)
                        || e.raw_os_error() == Some(libc::EINTR)
                        || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(io_err("io_uring_enter")(e)),
            }
            let from = cqes.len();
            self.reap(cqes);
            if from == cqes.len() && cqes.len() == cqes.capacity() {
                // No room for more completions: the batch must be handled
                // first; the core's queue absorbs (or counts) the rest.
                break;
            }
            self.complete_sends_in(&mut cqes[from..], counters);
        }
        Ok(())
    }

    /// Accounts for the send completions in `cqes` and marks them handled.
    fn complete_sends_in(
        &mut self,
        cqes: &mut [(u64, i32, u32)],
        counters: &super::EngineCounters,
    ) {
        for entry in cqes {
            if entry.0 != RECV_TAG && entry.0 != HANDLED_TAG && entry.0 != WAKE_TAG {
                self.on_send_completion(entry.0, entry.1, counters);
                entry.0 = HANDLED_TAG;
            }
        }
    }

    /// Takes the core's queued datagrams and submits their sends, if the
    /// previous ones have completed.
    fn flush(&mut self, sfu: &mut Sfu, counters: &super::EngineCounters) {
        if self.inflight > 0 || sfu.transmits().is_empty() {
            return;
        }
        self.sending.clear();
        sfu.swap_transmits(&mut self.sending);
        let (messages, gso, datagrams, unsent) = self.queue_sends();
        counters
            .tx_failed_datagrams
            .fetch_add(unsent as u64, Ordering::Relaxed);
        counters
            .tx_datagrams
            .fetch_add(datagrams as u64, Ordering::Relaxed);
        let bytes: usize = self.slots.msg_bytes[..messages].iter().sum();
        counters.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        counters
            .tx_messages
            .fetch_add(messages as u64, Ordering::Relaxed);
        counters
            .gso_messages
            .fetch_add(gso as u64, Ordering::Relaxed);
        // Submit now, so the sends go while the next batch is handled.
        let _ = self.ring.submit();
    }

    fn arm_recv(&mut self) -> std::io::Result<()> {
        let entry = opcode::RecvMsgMulti::new(self.fd, &*self.recv_msg, BGID)
            .build()
            .user_data(RECV_TAG);
        self.push(entry)
    }

    /// Queues a read of the wake eventfd: its completion ends the wait for
    /// completions as soon as a command or a stop arrives.
    fn arm_wake(&mut self) -> std::io::Result<()> {
        let entry = opcode::Read::new(self.wake_fd, self.wake_buf.as_mut_ptr(), 8)
            .build()
            .user_data(WAKE_TAG);
        self.push(entry)
    }

    fn push(&mut self, entry: squeue::Entry) -> std::io::Result<()> {
        // SAFETY: everything the entry points to lives in `self` and is not
        // touched until its completion.
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.ring.submit()?;
        }
        Ok(())
    }

    /// Queues `sendmsg`s for everything in `self.sending`, grouped by
    /// destination; returns (messages, GSO messages, datagrams, datagrams
    /// whose send could not be submitted).
    fn queue_sends(&mut self) -> (usize, usize, usize, usize) {
        let n = self.sending.len();
        let queued = self.sending.as_slice();
        let order = &mut self.slots.order;
        order.clear();
        order.extend(0..n as u32);
        // Group by destination, keeping each destination's order.
        order.sort_unstable_by_key(|&i| (queued[i as usize].remote, i));
        let (mut messages, mut gso_messages) = (0usize, 0usize);
        let mut i = 0;
        let mut entries_to_push = 0usize;
        while i < n {
            let first = &queued[order[i] as usize];
            let seg = first.len();
            let mut end = i + 1;
            let mut bytes = seg;
            if self.gso {
                while end < n && end - i < MAX_GSO_SEGMENTS {
                    let next = &queued[order[end] as usize];
                    let prev_len = queued[order[end - 1] as usize].len();
                    if next.remote != first.remote
                        || next.len() > seg
                        || prev_len != seg
                        || bytes + next.len() > MAX_GSO_BYTES
                    {
                        break;
                    }
                    bytes += next.len();
                    end += 1;
                }
            }
            let m = messages;
            for (k, &q) in order[i..end].iter().enumerate() {
                let t = &queued[q as usize];
                self.slots.iovs[i + k] = libc::iovec {
                    iov_base: t.data().as_ptr() as *mut libc::c_void,
                    iov_len: t.len(),
                };
            }
            let namelen = write_sockaddr(first.remote, &mut self.slots.names[m]);
            let msg = &mut self.slots.msgs[m];
            msg.msg_name = (&mut self.slots.names[m] as *mut libc::sockaddr_in6).cast();
            msg.msg_namelen = namelen;
            msg.msg_iov = &mut self.slots.iovs[i];
            msg.msg_iovlen = end - i;
            if end - i > 1 {
                let cmsg_buf = &mut self.slots.cmsgs[m];
                // SAFETY: the buffer holds CMSG_SPACE(2) bytes, 8-aligned.
                unsafe {
                    let space = libc::CMSG_SPACE(2) as usize;
                    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
                    msg.msg_controllen = space;
                    let cmsg = libc::CMSG_FIRSTHDR(msg);
                    (*cmsg).cmsg_level = SOL_UDP;
                    (*cmsg).cmsg_type = UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
                    let data = libc::CMSG_DATA(cmsg).cast::<u16>();
                    data.write_unaligned(seg as u16);
                }
                gso_messages += 1;
            } else {
                msg.msg_control = std::ptr::null_mut();
                msg.msg_controllen = 0;
            }
            self.slots.msg_datagrams[m] = (end - i) as u32;
            self.slots.msg_bytes[m] = bytes;
            messages += 1;
            entries_to_push += 1;
            i = end;
        }
        let mut unsent = 0usize;
        for m in 0..entries_to_push {
            let entry = opcode::SendMsg::new(self.fd, &self.slots.msgs[m])
                .build()
                .user_data(m as u64);
            // A full SQ is submitted and retried inside push; a failure to
            // submit leaves the datagrams unsent, which is counted.
            if self.push(entry).is_ok() {
                self.inflight += 1;
            } else {
                unsent += self.slots.msg_datagrams[m] as usize;
            }
        }
        (messages, gso_messages, n, unsent)
    }
}
