//! Helpers for end-to-end tests: the privilege gate, and network-namespace
//! labs of veth pairs that remove themselves when dropped.
//!
//! Every address a lab hands out is in the benchmarking ranges 198.18.0.0/15
//! (RFC 2544) and 2001:2::/48 (RFC 5180); [`Lab::star`] refuses anything
//! else, so test traffic goes nowhere real. Namespace names carry the process
//! id and a counter, so tests can run in parallel.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context, Result};

pub mod appliance;
pub mod browser;
pub mod http;
mod tmp;

pub use tmp::TempDir;

/// True if privileged tests can run. Outside CI, says why it skips and
/// returns false when not root; under `CI=true` a missing privilege fails.
pub fn privileged_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none_or(|v| v != "true"),
        "CI=true but not running as root: these tests need CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN"
    );
    eprintln!("skipping: needs root (network namespaces, veth, XDP/TC attach); runs in CI as root");
    false
}

/// Runs `ip` with `args`; an error carries its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip(8) (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A named network namespace (under /var/run/netns). Removal is the [`Lab`]'s job.
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a thread that has entered this namespace and returns its
    /// result (a panic in `f` is resumed here). Sockets and links created
    /// inside stay in the namespace after the thread ends.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: a valid namespace fd; setns affects only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            });
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }
}

/// One end of a veth pair.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The namespace the interface lives in.
    pub ns: Netns,
    /// Interface name (unique within its namespace only).
    pub ifname: String,
    /// Its MAC address, set at creation.
    pub mac: [u8; 6],
    /// Its IPv4 address (/24).
    pub v4: Ipv4Addr,
    /// Its IPv6 address (/64).
    pub v6: Ipv6Addr,
}

/// A veth pair between the appliance and one peer host.
#[derive(Debug, Clone)]
pub struct Link {
    /// The appliance's end, `a<i>` in the appliance namespace.
    pub appliance: Endpoint,
    /// The peer's end, `p<i>` in the peer's own namespace.
    pub peer: Endpoint,
}

/// An appliance namespace joined by one veth pair to each of several peer
/// namespaces (a star). Link `i` uses 198.18.i.0/24 and 2001:2:0:i::/64,
/// the appliance being `.1`/`::1` and the peer `.2`/`::2`. Both ends have
/// permanent neighbour entries for each other and transmit checksum offload
/// off (so UDP checksums leave the sender complete). Everything is deleted
/// on drop, also when a test panics.
pub struct Lab {
    namespaces: Vec<String>,
    /// The appliance's namespace.
    pub appliance: Netns,
    /// The links, in order.
    pub links: Vec<Link>,
}

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

fn in_test_ranges(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 198 && (o[1] & 0xfe) == 18
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0
        }
    }
}

impl Lab {
    /// Builds a star of `peers` links (1..=200).
    pub fn star(peers: u8) -> Result<Self> {
        if peers == 0 || peers > 200 {
            bail!("a lab has 1..=200 peers, not {peers}");
        }
        let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("sbt{}x{seq}", std::process::id());
        let mut lab = Lab {
            namespaces: Vec::new(),
            appliance: Netns {
                name: format!("{tag}-app"),
            },
            links: Vec::new(),
        };
        lab.add_ns(&lab.appliance.name.clone())?;
        lab.appliance.ip(&["link", "set", "lo", "up"])?;
        for i in 1..=peers {
            let peer_ns = Netns {
                name: format!("{tag}-p{i}"),
            };
            lab.add_ns(&peer_ns.name)?;
            peer_ns.ip(&["link", "set", "lo", "up"])?;
            let link = lab.add_link(i, peer_ns)?;
            lab.links.push(link);
        }
        Ok(lab)
    }

    fn add_ns(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        Ok(())
    }

    fn add_link(&self, i: u8, peer_ns: Netns) -> Result<Link> {
        let appliance = Endpoint {
            ns: self.appliance.clone(),
            ifname: format!("a{i}"),
            mac: [0x02, 0xaa, 0, 0, 0, i],
            v4: Ipv4Addr::new(198, 18, i, 1),
            v6: Ipv6Addr::new(0x2001, 2, 0, u16::from(i), 0, 0, 0, 1),
        };
        let peer = Endpoint {
            ns: peer_ns,
            ifname: format!("p{i}"),
            mac: [0x02, 0xbb, 0, 0, 0, i],
            v4: Ipv4Addr::new(198, 18, i, 2),
            v6: Ipv6Addr::new(0x2001, 2, 0, u16::from(i), 0, 0, 0, 2),
        };
        for e in [&appliance, &peer] {
            for addr in [IpAddr::V4(e.v4), IpAddr::V6(e.v6)] {
                if !in_test_ranges(addr) {
                    bail!("{addr} is outside 198.18.0.0/15 and 2001:2::/48");
                }
            }
        }
        // Created directly in the two namespaces, so names never meet in the
        // root namespace and parallel labs cannot collide.
        self.appliance.ip(&[
            "link",
            "add",
            &appliance.ifname,
            "address",
            &mac_string(appliance.mac),
            "type",
            "veth",
            "peer",
            "name",
            &peer.ifname,
            "address",
            &mac_string(peer.mac),
            "netns",
            peer.ns.name(),
        ])?;
        for (me, other) in [(&appliance, &peer), (&peer, &appliance)] {
            let ns = &me.ns;
            let dev = me.ifname.as_str();
            ns.ip(&["addr", "add", &format!("{}/24", me.v4), "dev", dev])?;
            ns.ip(&["addr", "add", &format!("{}/64", me.v6), "dev", dev, "nodad"])?;
            ns.ip(&["link", "set", dev, "up"])?;
            for addr in [other.v4.to_string(), other.v6.to_string()] {
                ns.ip(&[
                    "neigh",
                    "replace",
                    &addr,
                    "lladdr",
                    &mac_string(other.mac),
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ])?;
            }
            let name = dev.to_owned();
            ns.run(move || tx_checksum_off(&name))?;
        }
        Ok(Link { appliance, peer })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends, and with them any XDP
        // or TC attachment still on them.
        for name in self.namespaces.drain(..).rev() {
            if let Err(err) = ip(&["netns", "del", &name]) {
                eprintln!("cleanup: {err}");
            }
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Turns transmit checksum offload off on `ifname` in the calling thread's
/// namespace (what `ethtool -K IF tx off` does), so a veth sender computes
/// complete UDP checksums that survive a rewrite on the way.
pub fn tx_checksum_off(ifname: &str) -> Result<()> {
    const ETHTOOL_STXCSUM: u32 = 0x17;
    ethtool_set(ifname, ETHTOOL_STXCSUM, 0, "ETHTOOL_STXCSUM off")
}

/// Turns generic receive offload on for `ifname` (in the calling thread's
/// network namespace). On veth this gives the receiving end a NAPI instance
/// even without an XDP program, which threaded NAPI needs.
pub fn gro_on(ifname: &str) -> Result<()> {
    const ETHTOOL_SGRO: u32 = 0x2c;
    ethtool_set(ifname, ETHTOOL_SGRO, 1, "ETHTOOL_SGRO on")
}

/// One legacy `SIOCETHTOOL` set-value command.
fn ethtool_set(ifname: &str, cmd: u32, data: u32, what: &str) -> Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    if ifname.len() >= libc::IFNAMSIZ {
        bail!("interface name {ifname:?} too long");
    }
    let mut value = EthtoolValue { cmd, data };
    // SAFETY: zeroed ifreq is valid; the name fits (checked above) and stays
    // NUL-terminated; ifru_data points at `value`, alive across the ioctl.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let rc = libc::ioctl(fd, libc::SIOCETHTOOL, &mut req);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            bail!("{what} on {ifname}: {err}");
        }
    }
    Ok(())
}

/// Names of this process's namespaces that still exist (for leak checks).
pub fn leftover_namespaces() -> Vec<String> {
    let prefix = format!("sbt{}x", std::process::id());
    std::fs::read_dir("/var/run/netns")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// A raw AF_PACKET socket on one interface: sees frames as they are on the wire.
pub struct Capture {
    fd: std::os::fd::OwnedFd,
}

impl Capture {
    /// Opens a capture on `ifname` in the calling thread's namespace.
    pub fn open(ifname: &str) -> Result<Self> {
        use std::os::fd::FromRawFd;
        let name = std::ffi::CString::new(ifname)?;
        // SAFETY: plain libc calls with valid arguments; the fd is owned at once.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr());
            if ifindex == 0 {
                bail!("no interface {ifname}");
            }
            let proto = (libc::ETH_P_ALL as u16).to_be();
            let raw = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            );
            if raw < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let fd = std::os::fd::OwnedFd::from_raw_fd(raw);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            let rc = libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if rc != 0 {
                bail!(
                    "bind AF_PACKET to {ifname}: {}",
                    std::io::Error::last_os_error()
                );
            }
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            let rc = libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            if rc != 0 {
                bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
            }
            Ok(Self { fd })
        }
    }

    /// Every frame received (not sent) on the interface until none arrives
    /// for 200 ms, at most `max` frames.
    pub fn drain(&self, max: usize) -> Vec<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65536];
        while frames.len() < max {
            // SAFETY: buf and sll are valid for the lengths given.
            let (n, pkttype) = unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                let n = libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut sll as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                );
                (n, sll.sll_pkttype)
            };
            if n < 0 {
                break;
            }
            if pkttype != libc::PACKET_OUTGOING {
                frames.push(buf[..n as usize].to_vec());
            }
        }
        frames
    }
}

/// A UDP datagram read off the wire with every checksum verified from scratch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireUdp {
    /// Ethernet destination.
    pub dst_mac: [u8; 6],
    /// Ethernet source.
    pub src_mac: [u8; 6],
    /// IP source and UDP source port.
    pub src: std::net::SocketAddr,
    /// IP destination and UDP destination port.
    pub dst: std::net::SocketAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// The UDP payload.
    pub payload: Vec<u8>,
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

/// Parses an untagged Ethernet frame carrying IPv4 or IPv6 UDP; `Ok(None)`
/// for anything else, `Err` if a length or checksum is wrong.
pub fn parse_udp_frame(f: &[u8]) -> Result<Option<WireUdp>> {
    use std::net::SocketAddr;
    if f.len() < 14 {
        return Ok(None);
    }
    let mac = |at: usize| -> [u8; 6] { f[at..at + 6].try_into().expect("6 bytes") };
    let (src_ip, dst_ip, ttl, l4, pseudo): (IpAddr, IpAddr, u8, usize, Vec<u8>) =
        match u16::from_be_bytes([f[12], f[13]]) {
            0x0800 => {
                let h = f.get(14..34).context("short IPv4 header")?;
                if h[9] != 17 {
                    return Ok(None);
                }
                if h[0] != 0x45 {
                    bail!("unexpected IPv4 version/IHL {:#x}", h[0]);
                }
                if fold(ones_sum(h)) != 0xffff {
                    bail!("IPv4 header checksum invalid");
                }
                let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
                let src: [u8; 4] = h[12..16].try_into()?;
                let dst: [u8; 4] = h[16..20].try_into()?;
                let mut pseudo = h[12..20].to_vec();
                pseudo.extend_from_slice(&[0, 17]);
                pseudo.extend_from_slice(&((total - 20) as u16).to_be_bytes());
                (src.into(), dst.into(), h[8], 34, pseudo)
            }
            0x86dd => {
                let h = f.get(14..54).context("short IPv6 header")?;
                if h[6] != 17 {
                    return Ok(None);
                }
                let src: [u8; 16] = h[8..24].try_into()?;
                let dst: [u8; 16] = h[24..40].try_into()?;
                let mut pseudo = h[8..40].to_vec();
                pseudo.extend_from_slice(&[0, 0, h[4], h[5], 0, 0, 0, 17]);
                (src.into(), dst.into(), h[7], 54, pseudo)
            }
            _ => return Ok(None),
        };
    let udp_hdr = f.get(l4..l4 + 8).context("short UDP header")?;
    let udp_len = usize::from(u16::from_be_bytes([udp_hdr[4], udp_hdr[5]]));
    let udp = f
        .get(l4..l4 + udp_len)
        .context("UDP length past the frame")?;
    let csum = u16::from_be_bytes([udp[6], udp[7]]);
    if csum == 0 {
        if src_ip.is_ipv6() {
            bail!("zero UDP checksum over IPv6");
        }
    } else if fold(ones_sum(&pseudo) + ones_sum(udp)) != 0xffff {
        bail!("UDP checksum invalid");
    }
    Ok(Some(WireUdp {
        dst_mac: mac(0),
        src_mac: mac(6),
        src: SocketAddr::new(src_ip, u16::from_be_bytes([udp[0], udp[1]])),
        dst: SocketAddr::new(dst_ip, u16::from_be_bytes([udp[2], udp[3]])),
        ttl,
        payload: udp[8..].to_vec(),
    }))
}

/// True if `tool` is on PATH. Outside CI, says why it skips and returns
/// false when it is missing; under `CI=true` a missing tool fails (the CI
/// set-up installs it).
pub fn tool_or_skip(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    if found {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none_or(|v| v != "true"),
        "CI=true but {tool} is missing (Debian package {package})"
    );
    eprintln!("skipping: {tool} not found (Debian package {package})");
    false
}

/// Synthetic SFU participants over real UDP: [`dataplane::sfu::peer::Peer`]s
/// (real SRTP, their own keys) on sockets in their own namespaces, driven
/// on one thread with a bounded schedule.
pub mod sfu {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result};
    use dataplane::sfu::peer::Peer;

    use super::Netns;

    /// Most datagrams one peer reads per poll, so one busy socket cannot
    /// starve the others.
    const POLL_BUDGET: usize = 256;

    /// A synthetic participant on a UDP socket.
    pub struct UdpPeer {
        /// The endpoint logic.
        pub peer: Peer,
        /// Its socket (non-blocking), bound in its namespace.
        pub socket: UdpSocket,
        /// The worker address it sends to.
        pub server: SocketAddr,
        /// Drop every n-th media datagram received (loss injected in the
        /// receiver, where no `tc netem` is available).
        pub drop_every: Option<u64>,
        /// Media datagrams dropped by `drop_every`.
        pub injected_losses: u64,
        /// Datagrams received (before injected loss).
        pub datagrams: u64,
        media_seen: u64,
    }

    impl UdpPeer {
        /// Binds `addr` inside `ns` and wraps `peer`.
        pub fn bind(ns: &Netns, addr: SocketAddr, server: SocketAddr, peer: Peer) -> Result<Self> {
            let socket = ns.run(move || -> Result<UdpSocket> {
                let s = UdpSocket::bind(addr).with_context(|| format!("bind {addr}"))?;
                s.set_nonblocking(true)?;
                // One thread drives every peer: a deep receive buffer keeps
                // a descheduled driver from turning into packet loss.
                let size: libc::c_int = 4 << 20;
                // SAFETY: a valid fd and a pointer to a c_int of that length.
                unsafe {
                    libc::setsockopt(
                        std::os::fd::AsRawFd::as_raw_fd(&s),
                        libc::SOL_SOCKET,
                        libc::SO_RCVBUFFORCE,
                        (&size as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                Ok(s)
            })?;
            Ok(Self::with_socket(socket, server, peer))
        }

        /// Wraps an already bound socket (made non-blocking here).
        pub fn with_socket(socket: UdpSocket, server: SocketAddr, peer: Peer) -> Self {
            // A blocking socket would stall the one driving thread.
            let _ = socket.set_nonblocking(true);
            Self {
                peer,
                socket,
                server,
                drop_every: None,
                injected_losses: 0,
                datagrams: 0,
                media_seen: 0,
            }
        }

        /// The socket's address.
        pub fn local_addr(&self) -> SocketAddr {
            self.socket.local_addr().expect("bound socket")
        }

        /// Sends `bytes` to the worker; a full socket buffer is a loss.
        pub fn send(&self, bytes: &[u8]) {
            let _ = self.socket.send_to(bytes, self.server);
        }

        /// Reads what is waiting; returns how many datagrams.
        pub fn poll(&mut self) -> usize {
            let mut buf = [0u8; 2048];
            let mut n = 0;
            while n < POLL_BUDGET {
                let Ok((len, _)) = self.socket.recv_from(&mut buf) else {
                    break;
                };
                n += 1;
                self.datagrams += 1;
                let media = !dataplane::wire::demux::is_rtcp(&buf[..len]);
                if media {
                    self.media_seen += 1;
                    if self
                        .drop_every
                        .is_some_and(|e| self.media_seen.is_multiple_of(e))
                    {
                        self.injected_losses += 1;
                        continue;
                    }
                }
                // Failures are counted in the peer's report.
                let _ = self.peer.receive(&mut buf[..len]);
            }
            n
        }

        /// Sends one RTCP packet built by `build` into a scratch buffer.
        pub fn send_rtcp(
            &mut self,
            build: impl FnOnce(&mut Peer, &mut [u8]) -> Option<usize>,
        ) -> bool {
            let mut buf = [0u8; 1500];
            match build(&mut self.peer, &mut buf) {
                Some(len) => {
                    self.send(&buf[..len]);
                    true
                }
                None => false,
            }
        }
    }

    /// Runs every peer's media for `duration` (audio every 20 ms, video at
    /// the peers' frame rate), reading all sockets, and calls `tick` every
    /// 10 ms with the elapsed time. Then keeps reading for `drain`.
    pub fn drive(
        peers: &mut [UdpPeer],
        duration: Duration,
        drain: Duration,
        mut tick: impl FnMut(Duration, &mut [UdpPeer]),
    ) -> Result<()> {
        let start = Instant::now();
        let fps = peers.first().map_or(30, |p| p.peer.config().fps.max(1));
        let frame = Duration::from_secs(1) / fps;
        let (mut next_audio, mut next_video, mut next_tick) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let mut buf = [0u8; 1500];
        // Bounded in time and in iterations (1 ms sleeps at most).
        let max_iterations = (duration + drain).as_millis() as u64 * 4 + 1000;
        for _ in 0..max_iterations {
            let t = start.elapsed();
            if t >= duration + drain {
                break;
            }
            if t < duration {
                if t >= next_audio {
                    for p in peers.iter_mut() {
                        if p.peer.config().audio_ssrc.is_some() {
                            let len = p.peer.audio_packet(t.as_micros() as u64, &mut buf)?;
                            p.send(&buf[..len]);
                        }
                    }
                    next_audio += Duration::from_millis(20);
                }
                if t >= next_video {
                    for p in peers.iter_mut() {
                        let (socket, server) = (&p.socket, p.server);
                        p.peer.video_frame(t.as_micros() as u64, |_, bytes| {
                            let _ = socket.send_to(bytes, server);
                        })?;
                    }
                    next_video += frame;
                }
                if t >= next_tick {
                    tick(t, peers);
                    next_tick += Duration::from_millis(10);
                }
            }
            let mut got = 0;
            for p in peers.iter_mut() {
                got += p.poll();
            }
            if got == 0 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        Ok(())
    }
}
