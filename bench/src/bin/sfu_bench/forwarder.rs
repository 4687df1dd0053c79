//! The socket-limit reference: a plain `recvmmsg`/`sendmmsg` copy forwarder
//! without crypto. Each datagram from a participant is copied to every other
//! member of its room, byte for byte.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Result};

/// Datagrams per `recvmmsg`.
const BATCH: usize = 64;
/// Most copies of one batch (six-party rooms: five per datagram).
const OUT: usize = BATCH * 8;
const BUF: usize = 2048;

/// A running forwarder thread.
pub struct Forwarder {
    pub local: SocketAddr,
    /// Datagrams handed to the kernel.
    pub sent: Arc<AtomicU64>,
    /// Datagrams received.
    pub received: Arc<AtomicU64>,
    /// A second descriptor of the socket, to read its drop count.
    socket: UdpSocket,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Binds `bind` (in the calling thread's namespace) and forwards by
    /// `routes`: source → destinations.
    pub fn spawn(
        bind: SocketAddr,
        core: usize,
        routes: HashMap<SocketAddr, Vec<SocketAddr>>,
    ) -> Result<Self> {
        let socket = UdpSocket::bind(bind)?;
        let local = socket.local_addr()?;
        // Same socket buffers as the SFU worker.
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
            let size: libc::c_int = 8 << 20;
            // SAFETY: valid fd and option value.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    4,
                )
            };
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 10_000,
        };
        // SAFETY: valid fd and option value.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if rc != 0 {
            bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let (s, c, r) = (stop.clone(), sent.clone(), received.clone());
        let second = socket.try_clone()?;
        let thread = std::thread::Builder::new()
            .name("plain-forwarder".into())
            .spawn(move || {
                if let Err(e) = bench::lab::pin_current_thread(core) {
                    eprintln!("plain forwarder runs unpinned: {e}");
                }
                // The same priority the SFU workers get in the benchmark.
                // SAFETY: setpriority on the calling thread's id.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -20) };
                run(socket, routes, s, c, r);
            })?;
        Ok(Self {
            local,
            sent,
            received,
            socket: second,
            stop,
            thread: Some(thread),
        })
    }

    /// Datagrams the kernel dropped at the socket (receive buffer full).
    pub fn socket_drops(&self) -> u64 {
        super::generator::socket_drops(self.socket.as_raw_fd())
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn to_sockaddr(addr: SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = addr else {
        // The bench lab is IPv4 only.
        // SAFETY: an all-zero sockaddr_in is valid (and unroutable).
        return unsafe { std::mem::zeroed() };
    };
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(v4.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn run(
    socket: UdpSocket,
    routes: HashMap<SocketAddr, Vec<SocketAddr>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
) {
    let fd = socket.as_raw_fd();
    let routes: HashMap<SocketAddr, Vec<libc::sockaddr_in>> = routes
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().map(to_sockaddr).collect()))
        .collect();
    let mut rx_bufs = vec![[0u8; BUF]; BATCH];
    let mut tx_bufs = vec![[0u8; BUF]; OUT];
    // SAFETY: all-zero C structs are valid.
    let zero_name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut rx_names = vec![zero_name; BATCH];
    let mut tx_names = vec![zero_name; OUT];
    let mut rx_iov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut rx_msgs: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
    for buf in rx_bufs.iter_mut() {
        rx_iov.push(libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: BUF,
        });
    }
    for i in 0..BATCH {
        // SAFETY: all-zero mmsghdr is valid.
        let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
        m.msg_hdr.msg_name = (&mut rx_names[i] as *mut libc::sockaddr_in).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        m.msg_hdr.msg_iov = &mut rx_iov[i];
        m.msg_hdr.msg_iovlen = 1;
        rx_msgs.push(m);
    }
    let mut tx_iov = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0
        };
        OUT
    ];
    // SAFETY: as above.
    let mut tx_msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; OUT];
    while !stop.load(Ordering::Relaxed) {
        for m in rx_msgs.iter_mut() {
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        }
        // SAFETY: the mmsghdrs point at live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                rx_msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        received.fetch_add(n as u64, Ordering::Relaxed);
        let mut out = 0;
        for i in 0..n as usize {
            let len = rx_msgs[i].msg_len as usize;
            let name = rx_names[i];
            let from = SocketAddr::V4(SocketAddrV4::new(
                u32::from_be(name.sin_addr.s_addr).into(),
                u16::from_be(name.sin_port),
            ));
            let Some(dests) = routes.get(&from) else {
                continue;
            };
            for dest in dests {
                if out == OUT {
                    break;
                }
                tx_bufs[out][..len].copy_from_slice(&rx_bufs[i][..len]);
                tx_names[out] = *dest;
                tx_iov[out] = libc::iovec {
                    iov_base: tx_bufs[out].as_mut_ptr().cast(),
                    iov_len: len,
                };
                let h = &mut tx_msgs[out].msg_hdr;
                h.msg_name = (&mut tx_names[out] as *mut libc::sockaddr_in).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                h.msg_iov = &mut tx_iov[out];
                h.msg_iovlen = 1;
                out += 1;
            }
        }
        let mut done = 0;
        while done < out {
            // SAFETY: the first `out` mmsghdrs point at live buffers.
            let k =
                unsafe { libc::sendmmsg(fd, tx_msgs[done..].as_mut_ptr(), (out - done) as u32, 0) };
            if k <= 0 {
                break;
            }
            done += k as usize;
        }
        sent.fetch_add(done as u64, Ordering::Relaxed);
    }
}
