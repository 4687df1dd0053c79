//! The SFU worker: one thread per core, each owning its rooms and a UDP
//! socket, driving a [`Sfu`] core with io_uring (or, as the baseline it is
//! measured against, with tokio).
//!
//! # How packets reach the worker that owns the room: a port per worker
//!
//! Every worker binds its own UDP port, and the control plane places a room
//! on one worker and advertises *that worker's port* in the ICE candidates
//! of every leg of the room. A datagram therefore arrives on the socket of
//! the only thread that holds its room's state, and the hot path needs no
//! lock, no cross-thread queue and no lookup of which worker owns a leg.
//!
//! The alternative, one port shared through `SO_REUSEPORT`, spreads
//! datagrams by a hash of the 4-tuple: the legs of one room would land on
//! different workers, so every packet of a consult would have to cross
//! threads to reach the subscribers' SRTP contexts. Fixing that needs an
//! eBPF `SO_REUSEPORT` program with a map from remote address to worker,
//! which the control plane would have to fill before the first packet of a
//! leg (ICE learns the address from that very packet), and which is one
//! more kernel object to keep consistent with the worker tables. A port per
//! worker costs only a candidate per worker in the SDP, keeps steering
//! deterministic and debuggable (`ss -uanp` shows who owns what), and works
//! unchanged behind the XDP program, which passes sfu legs' packets up with
//! `XDP_PASS`. The price is that a room cannot be split across cores; a
//! six-party room is a few thousand packets per second, far below one core.
//!
//! # Engines
//!
//! * [`Engine::IoUring`] (see [`uring`]): multishot `recvmsg` into a
//!   provided buffer ring (re-armed when the kernel ends it), the core run
//!   over each batch of completions, then every datagram it queued sent with
//!   one `sendmsg` SQE per destination run, all in one submit. Runs of
//!   equal-size datagrams to one destination go out as one UDP GSO
//!   (`UDP_SEGMENT`) `sendmsg` whose iovecs point at the queued buffers, so
//!   nothing is copied. Two transmit queues alternate: the core fills one
//!   while the other's sends are in flight, and a queue is only handed back
//!   to the core once all its completions have arrived.
//! * [`Engine::Tokio`] (see [`tokio_engine`]): the same core behind a tokio
//!   `UdpSocket` on a current-thread runtime: `recv_from`, then whatever more
//!   is readable without waiting, then one `send_to` per datagram.
//!
//! Commands from the control plane arrive over a channel and are applied
//! between batches; whoever sends one also writes an eventfd (the io_uring
//! engine keeps a read of it in the ring) or a tokio `Notify`, so the worker
//! wakes and applies it within microseconds instead of at its next timeout.
//!
//! # Punted datagrams
//!
//! STUN (first byte 0..=3) and DTLS (20..=63) datagrams (RFC 7983) never
//! reach the core: they are copied into a bounded channel the control plane
//! reads ([`Worker::take_punted`]), which runs ICE and DTLS for the legs and
//! answers through [`Worker::transmit`]. Only these datagrams allocate; a
//! full channel drops them (counted), which the peers' retransmissions
//! recover. Media never waits on the control plane.

pub mod tokio_engine;
pub mod uring;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sfu::{Command, CommandError, Reply, Sfu, SfuConfig};

/// Which I/O engine drives the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// io_uring: multishot recvmsg, buffer ring, batched sendmsg with GSO.
    IoUring,
    /// tokio `UdpSocket`: the baseline.
    Tokio,
}

impl Engine {
    /// A stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::IoUring => "io_uring",
            Self::Tokio => "tokio",
        }
    }
}

/// Why a worker could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A socket or io_uring call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// Pinning to a core failed.
    #[error("pinning to core {core}: {source}")]
    Affinity {
        /// The core.
        core: usize,
        /// The error.
        source: nix::Error,
    },
    /// The worker thread is gone.
    #[error("worker thread stopped")]
    Stopped,
    /// The worker did not answer in time.
    #[error("worker did not answer within {0:?}")]
    Timeout(Duration),
    /// The core refused the command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The worker thread panicked.
    #[error("worker thread panicked")]
    Panicked,
}

pub(crate) fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> WorkerError {
    move |source| WorkerError::Io { what, source }
}

/// How a worker is set up.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The engine.
    pub engine: Engine,
    /// Address to bind (port 0 picks one).
    pub bind: SocketAddr,
    /// Core to pin the thread to, if any.
    pub core: Option<usize>,
    /// The core's sizing.
    pub sfu: SfuConfig,
    /// Receive buffers (2 KiB each) in the provided buffer ring (rounded
    /// up to a power of two). Too few and the multishot receive ends with
    /// `ENOBUFS` under bursts ([`EngineCounters::rx_no_buffers`]).
    pub rx_buffers: u16,
    /// STUN/DTLS datagrams waiting for the control plane before more are
    /// dropped ([`EngineCounters::punt_dropped`]).
    pub punt_capacity: usize,
    /// Whether to send runs of equal-size datagrams with UDP GSO.
    pub gso: bool,
    /// Socket buffer sizes, bytes.
    pub socket_buffer: usize,
}

impl WorkerConfig {
    /// Defaults for `engine` on `bind`.
    pub fn new(engine: Engine, bind: SocketAddr) -> Self {
        Self {
            engine,
            bind,
            core: None,
            sfu: SfuConfig::default(),
            rx_buffers: DEFAULT_RX_BUFFERS,
            punt_capacity: DEFAULT_PUNT_CAPACITY,
            gso: true,
            socket_buffer: 8 << 20,
        }
    }
}

/// Default [`WorkerConfig::rx_buffers`]: 8 MiB of receive buffers, which
/// absorbs a burst of a few hundred consults between two batches (1024 ran
/// out with `ENOBUFS` at 250 consults).
pub const DEFAULT_RX_BUFFERS: u16 = 4096;
/// Default [`WorkerConfig::punt_capacity`].
pub const DEFAULT_PUNT_CAPACITY: usize = 1024;

/// A STUN or DTLS datagram the worker received, for the control plane.
#[derive(Debug, Clone)]
pub struct Punted {
    /// The worker's address it arrived at.
    pub local: SocketAddr,
    /// The sender.
    pub remote: SocketAddr,
    /// The UDP payload.
    pub data: Vec<u8>,
    /// When the worker received it.
    pub at: Instant,
}

/// Whether RFC 7983 demultiplexing makes `datagram` STUN or DTLS, which the
/// control plane handles.
pub fn is_punted(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(0..=3 | 20..=63))
}

/// Counters of the I/O engine (updated once per batch).
#[derive(Debug, Default)]
pub struct EngineCounters {
    /// Datagrams received.
    pub rx_datagrams: AtomicU64,
    /// Datagrams handed to the kernel for sending.
    pub tx_datagrams: AtomicU64,
    /// `sendmsg` operations (one per GSO run).
    pub tx_messages: AtomicU64,
    /// `sendmsg` operations that used GSO.
    pub gso_messages: AtomicU64,
    /// Sends the kernel refused.
    pub tx_errors: AtomicU64,
    /// Receive batches processed.
    pub batches: AtomicU64,
    /// Times the multishot receive was armed.
    pub rx_arms: AtomicU64,
    /// Datagrams the receive path dropped (truncated, unknown family).
    pub rx_errors: AtomicU64,
    /// Times the multishot receive ended for lack of provided buffers
    /// (`ENOBUFS`): datagrams wait in the socket meanwhile and are lost if
    /// it overflows.
    pub rx_no_buffers: AtomicU64,
    /// Datagrams in sends that failed, were short, or were never submitted.
    pub tx_failed_datagrams: AtomicU64,
    /// Datagrams the kernel dropped at the socket (receive buffer full),
    /// read from `SO_MEMINFO` every [`DROPS_POLL`].
    pub rx_socket_drops: AtomicU64,
    /// STUN/DTLS datagrams handed to the control plane.
    pub punted: AtomicU64,
    /// STUN/DTLS datagrams dropped because the control plane's channel was
    /// full (or nobody reads it).
    pub punt_dropped: AtomicU64,
    /// UDP payload bytes received.
    pub rx_bytes: AtomicU64,
    /// UDP payload bytes handed to the kernel for sending.
    pub tx_bytes: AtomicU64,
    /// Datagrams sent with [`Worker::transmit`].
    pub raw_tx: AtomicU64,
    /// [`Worker::transmit`] sends the kernel refused.
    pub raw_tx_errors: AtomicU64,
}

impl EngineCounters {
    /// A plain copy.
    pub fn snapshot(&self) -> EngineSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineSnapshot {
            rx_datagrams: l(&self.rx_datagrams),
            tx_datagrams: l(&self.tx_datagrams),
            tx_messages: l(&self.tx_messages),
            gso_messages: l(&self.gso_messages),
            tx_errors: l(&self.tx_errors),
            batches: l(&self.batches),
            rx_arms: l(&self.rx_arms),
            rx_errors: l(&self.rx_errors),
            rx_no_buffers: l(&self.rx_no_buffers),
            tx_failed_datagrams: l(&self.tx_failed_datagrams),
            rx_socket_drops: l(&self.rx_socket_drops),
            punted: l(&self.punted),
            rx_bytes: l(&self.rx_bytes),
            tx_bytes: l(&self.tx_bytes),
            punt_dropped: l(&self.punt_dropped),
            raw_tx: l(&self.raw_tx),
            raw_tx_errors: l(&self.raw_tx_errors),
        }
    }
}

/// A copy of [`EngineCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineSnapshot {
    /// Datagrams received.
    pub rx_datagrams: u64,
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// `sendmsg` operations.
    pub tx_messages: u64,
    /// GSO `sendmsg` operations.
    pub gso_messages: u64,
    /// Refused sends.
    pub tx_errors: u64,
    /// Receive batches.
    pub batches: u64,
    /// Multishot receive arms.
    pub rx_arms: u64,
    /// Receive-side drops.
    pub rx_errors: u64,
    /// Multishot receives ended by `ENOBUFS`.
    pub rx_no_buffers: u64,
    /// Datagrams in failed, short or unsubmitted sends.
    pub tx_failed_datagrams: u64,
    /// Datagrams dropped by the kernel at the socket.
    pub rx_socket_drops: u64,
    /// STUN/DTLS datagrams handed to the control plane.
    pub punted: u64,
    /// STUN/DTLS datagrams dropped for a full channel.
    pub punt_dropped: u64,
    /// UDP payload bytes received.
    pub rx_bytes: u64,
    /// UDP payload bytes sent.
    pub tx_bytes: u64,
    /// Datagrams sent with [`Worker::transmit`].
    pub raw_tx: u64,
    /// Refused [`Worker::transmit`] sends.
    pub raw_tx_errors: u64,
}

/// Wakes a worker's engine loop: an eventfd for io_uring (a read of it sits
/// in the ring) and a `Notify` for tokio.
#[derive(Debug)]
pub(crate) struct Wake {
    pub(crate) eventfd: OwnedFd,
    pub(crate) notify: tokio::sync::Notify,
}

impl Wake {
    fn new() -> Result<Self, WorkerError> {
        // Blocking on purpose: io_uring completes reads of an O_NONBLOCK
        // file with EAGAIN instead of waiting for it to become readable.
        // SAFETY: plain syscall; the fd is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io_err("eventfd")(std::io::Error::last_os_error()));
        }
        Ok(Self {
            // SAFETY: a fresh descriptor nobody else owns.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            notify: tokio::sync::Notify::new(),
        })
    }

    pub(crate) fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd. It
        // cannot block (the counter would have to near u64::MAX) and a
        // failure only delays the command to the engine's next timeout.
        let _ = unsafe { libc::write(self.eventfd.as_raw_fd(), one.as_ptr().cast(), 8) };
        self.notify.notify_one();
    }
}

pub(crate) struct Request {
    pub(crate) command: Command,
    pub(crate) reply: mpsc::SyncSender<Result<Reply, CommandError>>,
}

/// What an engine loop gets from its worker.
pub(crate) struct Shared {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) counters: Arc<EngineCounters>,
    pub(crate) commands: mpsc::Receiver<Request>,
    pub(crate) wake: Arc<Wake>,
    pub(crate) punt: mpsc::SyncSender<Punted>,
}

impl Shared {
    /// Hands a STUN/DTLS datagram to the control plane (copying it: these
    /// are rare and the receive buffer goes back to the kernel).
    pub(crate) fn punt(&self, local: SocketAddr, remote: SocketAddr, data: &[u8], at: Instant) {
        let p = Punted {
            local,
            remote,
            data: data.to_vec(),
            at,
        };
        match self.punt.try_send(p) {
            Ok(()) => self.counters.punted.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.punt_dropped.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Applies every waiting command.
    pub(crate) fn drain_commands(&self, sfu: &mut Sfu) {
        while let Ok(request) = self.commands.try_recv() {
            let result = sfu.command(Instant::now(), request.command);
            // The asker may have given up waiting; nothing to do then.
            let _ = request.reply.send(result);
        }
    }
}

/// A running worker thread. Shareable between threads: commands, raw
/// transmits and counters may come from anywhere.
#[derive(Debug)]
pub struct Worker {
    local: SocketAddr,
    engine: Engine,
    commands: mpsc::Sender<Request>,
    stop: Arc<AtomicBool>,
    counters: Arc<EngineCounters>,
    wake: Arc<Wake>,
    punted: Mutex<Option<mpsc::Receiver<Punted>>>,
    /// A duplicate of the worker's socket descriptor, for
    /// [`Self::transmit`] from other threads.
    raw: std::net::UdpSocket,
    thread: Option<JoinHandle<Result<(), WorkerError>>>,
}

/// The answer to a command sent with [`Worker::submit`].
#[derive(Debug)]
pub struct PendingReply {
    answer: mpsc::Receiver<Result<Reply, CommandError>>,
}

impl PendingReply {
    /// Waits up to `timeout` for the answer.
    pub fn wait(self, timeout: Duration) -> Result<Reply, WorkerError> {
        match self.answer.recv_timeout(timeout) {
            Ok(result) => Ok(result?),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(WorkerError::Timeout(timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(WorkerError::Stopped),
        }
    }

    /// The answer if it is there; `Ok(None)` if not yet.
    pub fn try_get(&self) -> Result<Option<Reply>, WorkerError> {
        match self.answer.try_recv() {
            Ok(result) => Ok(Some(result?)),
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(mpsc::TryRecvError::Disconnected) => Err(WorkerError::Stopped),
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("command", &self.command)
            .finish()
    }
}

/// How long [`Worker::command`] waits for an answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

impl Worker {
    /// Binds the socket (in the calling thread's network namespace, which
    /// the worker thread inherits) and starts the worker.
    pub fn spawn(config: WorkerConfig) -> Result<Self, WorkerError> {
        let socket = bind_socket(&config)?;
        let local = socket.local_addr().map_err(io_err("local_addr"))?;
        let raw = socket
            .try_clone()
            .map_err(io_err("duplicating the socket"))?;
        let (tx, rx) = mpsc::channel();
        let (punt_tx, punt_rx) = mpsc::sync_channel(config.punt_capacity.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(EngineCounters::default());
        let wake = Arc::new(Wake::new()?);
        let shared = Shared {
            stop: stop.clone(),
            counters: counters.clone(),
            commands: rx,
            wake: wake.clone(),
            punt: punt_tx,
        };
        let engine = config.engine;
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), WorkerError>>(1);
        let thread = std::thread::Builder::new()
            .name(format!("sfu-{}-{}", engine.as_str(), local.port()))
            .spawn(move || {
                if let Some(core) = config.core {
                    let mut set = nix::sched::CpuSet::new();
                    let pinned = set
                        .set(core)
                        .and_then(|()| {
                            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                        })
                        .map_err(|source| WorkerError::Affinity { core, source });
                    if let Err(e) = pinned {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                }
                let sfu = Sfu::new(config.sfu.clone(), Instant::now());
                match engine {
                    Engine::IoUring => uring::run(socket, local, &config, sfu, shared, ready_tx),
                    Engine::Tokio => {
                        tokio_engine::run(socket, local, &config, sfu, shared, ready_tx)
                    }
                }
            })
            .map_err(io_err("spawning the worker thread"))?;
        let ready = ready_rx.recv_timeout(COMMAND_TIMEOUT);
        let mut worker = Self {
            local,
            engine,
            commands: tx,
            stop,
            counters,
            wake,
            punted: Mutex::new(Some(punt_rx)),
            raw,
            thread: Some(thread),
        };
        match ready {
            Ok(Ok(())) => Ok(worker),
            Ok(Err(e)) => {
                worker.shutdown().ok();
                Err(e)
            }
            Err(_) => match worker.shutdown() {
                Err(e) => Err(e),
                Ok(()) => Err(WorkerError::Stopped),
            },
        }
    }

    /// The worker's socket address (advertised in its legs' candidates).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Its engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Its engine counters.
    pub fn counters(&self) -> EngineSnapshot {
        self.counters.snapshot()
    }

    /// Sends a command and waits for the answer (applied between batches).
    pub fn command(&self, command: Command) -> Result<Reply, WorkerError> {
        self.submit(command)?.wait(COMMAND_TIMEOUT)
    }

    /// Sends a command without waiting: the worker wakes and applies it
    /// between two batches; the answer arrives in the returned handle.
    pub fn submit(&self, command: Command) -> Result<PendingReply, WorkerError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.commands
            .send(Request { command, reply })
            .map_err(|_| WorkerError::Stopped)?;
        self.wake.wake();
        Ok(PendingReply { answer })
    }

    /// The receiving end of the STUN/DTLS datagrams the worker punts; there
    /// is one, so only the first call gets it.
    pub fn take_punted(&self) -> Option<mpsc::Receiver<Punted>> {
        self.punted.lock().ok()?.take()
    }

    /// Sends one datagram from the worker's socket to `remote` without
    /// blocking (STUN responses, DTLS flights). Callable from any thread;
    /// the kernel serialises it with the worker's own sends.
    pub fn transmit(&self, remote: SocketAddr, datagram: &[u8]) -> Result<(), WorkerError> {
        let sock = socket2::SockRef::from(&self.raw);
        let remote = match (self.local, remote) {
            // An IPv6 socket reaches IPv4 peers through mapped addresses.
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            _ => remote,
        };
        match sock.send_to_with_flags(datagram, &remote.into(), libc::MSG_DONTWAIT) {
            Ok(_) => {
                self.counters.raw_tx.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.counters.raw_tx_errors.fetch_add(1, Ordering::Relaxed);
                Err(io_err("sending a raw datagram")(e))
            }
        }
    }

    /// Asks the thread to stop without waiting for it (it is joined by
    /// [`Self::shutdown`] or on drop).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.wake();
    }

    /// Stops the thread and waits for it; returns its error, if it failed.
    pub fn shutdown(&mut self) -> Result<(), WorkerError> {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.wake();
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| WorkerError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // An error here was already reported to whoever called shutdown.
        let _ = self.shutdown();
    }
}

fn bind_socket(config: &WorkerConfig) -> Result<std::net::UdpSocket, WorkerError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = Domain::for_address(config.bind);
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(io_err("creating the UDP socket"))?;
    // Larger buffers absorb bursts between batches; the FORCE variants need
    // CAP_NET_ADMIN, so fall back to the capped ones.
    let size = config.socket_buffer as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if setsockopt_int(&socket, libc::SOL_SOCKET, force, size).is_err() {
            // Best effort: the default size still works, only burstiness suffers.
            let _ = setsockopt_int(&socket, libc::SOL_SOCKET, plain, size);
        }
    }
    socket
        .bind(&config.bind.into())
        .map_err(io_err("binding the UDP socket"))?;
    Ok(socket.into())
}

/// How often the engines read the socket's kernel drop count.
pub const DROPS_POLL: Duration = Duration::from_millis(100);

/// `SO_MEMINFO` (not exported by libc for every architecture).
const SO_MEMINFO: libc::c_int = 55;

/// Publishes the kernel's count of datagrams dropped at `socket` (a full
/// receive buffer never reaches the engine, so it is read from the kernel)
/// if `DROPS_POLL` passed since `last`.
pub(crate) fn poll_socket_drops(
    socket: &impl std::os::fd::AsRawFd,
    counters: &EngineCounters,
    last: &mut Instant,
    now: Instant,
) {
    if now.saturating_duration_since(*last) < DROPS_POLL {
        return;
    }
    *last = now;
    let mut info = [0u32; 16];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: a valid fd and a buffer of the length given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let at = libc::SK_MEMINFO_DROPS as usize;
    if rc == 0 && (len as usize) > at * 4 {
        counters
            .rx_socket_drops
            .store(u64::from(info[at]), Ordering::Relaxed);
    }
}

pub(crate) fn setsockopt_int(
    socket: &impl std::os::fd::AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a valid fd and a pointer to a c_int of the length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn spawn(engine: Engine, punt_capacity: usize) -> Worker {
        let mut config = WorkerConfig::new(engine, "127.0.0.1:0".parse().unwrap());
        config.punt_capacity = punt_capacity;
        config.rx_buffers = 64;
        Worker::spawn(config).unwrap()
    }

    /// Waits (bounded) until `done` holds for the worker's counters.
    fn wait_counters(worker: &Worker, done: impl Fn(&EngineSnapshot) -> bool) -> EngineSnapshot {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let c = worker.counters();
            if done(&c) || Instant::now() > deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn punts_stun_and_dtls_only(engine: Engine) {
        let worker = spawn(engine, 16);
        let punted = worker.take_punted().unwrap();
        assert!(worker.take_punted().is_none(), "one reader only");
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let stun = [0x00u8, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        let dtls = [22u8, 0xfe, 0xfd, 0, 0];
        // RTP from an unknown peer: the core's, dropped there, never punted.
        let rtp = [0x80u8, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9];
        for d in [&stun[..], &rtp[..], &dtls[..]] {
            peer.send_to(d, worker.local_addr()).unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..2 {
            let p = punted.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(p.remote, peer.local_addr().unwrap());
            assert_eq!(p.local, worker.local_addr());
            got.push(p.data);
        }
        assert_eq!(got, vec![stun.to_vec(), dtls.to_vec()]);
        let c = wait_counters(&worker, |c| c.rx_datagrams == 3);
        assert_eq!((c.rx_datagrams, c.punted, c.punt_dropped), (3, 2, 0));
        assert!(punted.try_recv().is_err(), "RTP must not be punted");

        // Replies leave from the worker's own port.
        worker
            .transmit(peer.local_addr().unwrap(), b"\x01\x01reply")
            .unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"\x01\x01reply"[..], worker.local_addr())
        );
        assert_eq!(worker.counters().raw_tx, 1);

        // Commands still answer.
        assert!(matches!(
            worker.command(Command::Stats),
            Ok(Reply::Stats(_))
        ));
        let pending = worker.submit(Command::Stats).unwrap();
        assert!(matches!(pending.wait(COMMAND_TIMEOUT), Ok(Reply::Stats(_))));
    }

    #[test]
    fn io_uring_punts_stun_and_dtls_and_transmits() {
        punts_stun_and_dtls_only(Engine::IoUring);
    }

    #[test]
    fn tokio_punts_stun_and_dtls_and_transmits() {
        punts_stun_and_dtls_only(Engine::Tokio);
    }

    #[test]
    fn a_full_punt_channel_drops_and_counts() {
        for engine in [Engine::IoUring, Engine::Tokio] {
            let worker = spawn(engine, 2);
            let punted = worker.take_punted().unwrap();
            let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
            for i in 0..6u8 {
                peer.send_to(&[1, i], worker.local_addr()).unwrap();
            }
            let c = wait_counters(&worker, |c| c.punted + c.punt_dropped == 6);
            assert_eq!((c.punted, c.punt_dropped), (2, 4), "{engine:?}");
            assert_eq!(punted.try_iter().count(), 2);
        }
    }

    #[test]
    fn rfc7983_classes() {
        for b in 0..=255u8 {
            assert_eq!(is_punted(&[b, 0]), b <= 3 || (20..=63).contains(&b), "{b}");
        }
        assert!(!is_punted(&[]));
    }
}
