//! The benchmark's test bench: a generator namespace and an appliance
//! namespace joined by one veth pair, removed again on drop.
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544) only, so benchmark traffic
//! never leaves the two namespaces. Both ends have permanent neighbour
//! entries for each other (an XDP program that drops ARP would otherwise
//! stall the kernel's own senders) and transmit checksum offload off (a
//! kernel sender then writes complete UDP checksums that survive a rewrite).

use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::{AsRawFd, OwnedFd},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context, Result};

/// Prefix of every namespace a benchmark lab creates; the process id follows.
const NS_PREFIX: &str = "sbb";

// The namespace plumbing shared with the end-to-end tests.
pub use e2e::{gro_on, ip, mac_string, tx_checksum_off};

/// True if `addr` is in 198.18.0.0/15.
pub fn in_benchmark_range(addr: Ipv4Addr) -> bool {
    let o = addr.octets();
    o[0] == 198 && (o[1] & 0xfe) == 18
}

/// A named network namespace (under /var/run/netns), owned by a [`Lab`].
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An open handle on the namespace, for `setns`.
    pub fn open(&self) -> Result<OwnedFd> {
        let path = format!("/var/run/netns/{}", self.name);
        Ok(File::open(&path)
            .with_context(|| format!("opening {path}"))?
            .into())
    }

    /// Runs `f` on a thread that has entered this namespace and returns its
    /// result; a panic in `f` is resumed here.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.open()?;
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || {
                enter(&fd)?;
                Ok(f())
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

    /// The id of the XDP program attached to `ifname` in this namespace, if any.
    pub fn xdp_program_id(&self, ifname: &str) -> Result<Option<u32>> {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-j", "-d", "link", "show", "dev", ifname])
            .output()
            .context("running ip(8)")?;
        if !out.status.success() {
            bail!(
                "ip link show {ifname}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let links: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("parsing ip -j link show")?;
        Ok(links
            .get(0)
            .and_then(|l| l.get("xdp"))
            .and_then(|x| x.get("prog"))
            .and_then(|p| p.get("id"))
            .and_then(serde_json::Value::as_u64)
            .and_then(|id| u32::try_from(id).ok()))
    }
}

/// Moves the calling thread into the network namespace `fd`.
pub fn enter(fd: &OwnedFd) -> Result<()> {
    // SAFETY: a valid namespace fd; setns affects only the calling thread.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// One end of the veth pair.
#[derive(Debug, Clone)]
pub struct End {
    /// The namespace it lives in.
    pub ns: Netns,
    /// Interface name (unique on the host per process and lab, so kernel
    /// messages and tools name it unambiguously).
    pub ifname: String,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Its IPv4 address (/24).
    pub v4: Ipv4Addr,
}

impl End {
    /// Moves this end's receive processing (its NAPI poll, and with it the
    /// XDP program attached here) into a kernel thread pinned to `cpu`, or
    /// (`None`) back into the softirq of whichever CPU queued the frames.
    /// GRO gives a veth end its NAPI instance even while no XDP program is
    /// attached, so the thread survives program switches.
    pub fn napi_thread(&self, cpu: Option<usize>) -> Result<()> {
        let name = self.ifname.clone();
        self.ns.run(move || gro_on(&name))??;
        // sysfs shows the namespace of whoever mounted it: write it from a
        // process that `ip netns exec` gave a sysfs of the namespace.
        let threaded = u8::from(cpu.is_some());
        let status = Command::new("ip")
            .args(["netns", "exec", self.ns.name(), "sh", "-c"])
            .arg(format!(
                "echo {threaded} > /sys/class/net/{}/threaded",
                self.ifname
            ))
            .status()
            .context("running ip netns exec")?;
        if !status.success() {
            bail!(
                "threaded NAPI {} on {}: {status}",
                if threaded == 1 { "on" } else { "off" },
                self.ifname
            );
        }
        match cpu {
            Some(cpu) => self.pin_napi_thread(cpu),
            None => Ok(()),
        }
    }

    /// Pins this end's NAPI kernel threads to `cpu` (an XDP attach may
    /// start new ones); fails if threaded NAPI is not on.
    pub fn pin_napi_thread(&self, cpu: usize) -> Result<()> {
        // Thread names are cut to 15 bytes; the interface names are unique
        // and short enough that "napi/<ifname>-" still identifies them.
        let prefix = format!("napi/{}-", self.ifname);
        let mut pinned = 0;
        for entry in std::fs::read_dir("/proc")
            .context("reading /proc")?
            .flatten()
        {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
                continue;
            };
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if comm.trim_end().starts_with(&prefix) {
                pin(pid, cpu)?;
                pinned += 1;
            }
        }
        if pinned == 0 {
            bail!("no NAPI thread for {} (threaded NAPI off?)", self.ifname);
        }
        Ok(())
    }
}

/// A generator namespace and an appliance namespace joined by one veth pair.
/// Everything is deleted on drop, also when the benchmark panics; deleting a
/// namespace deletes its veth end and any XDP program still attached to it.
pub struct Lab {
    namespaces: Vec<String>,
    /// The traffic generator's (and the sink's) end.
    pub generator: End,
    /// The device under test's end.
    pub appliance: End,
}

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// Creates both namespaces and the veth pair between them. Namespaces
    /// left behind by benchmark processes that no longer run are removed
    /// first.
    pub fn new() -> Result<Self> {
        remove_stale_namespaces();
        let pid = std::process::id();
        let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{NS_PREFIX}{pid}x{seq}");
        // Interface names have at most 15 characters.
        let short = format!("{:06x}{}", pid & 0xff_ffff, seq % 10);
        let mut lab = Lab {
            namespaces: Vec::new(),
            generator: End {
                ns: Netns {
                    name: format!("{tag}-gen"),
                },
                ifname: format!("g{short}"),
                mac: [0x02, 0xbb, 0, 0, 0, 2],
                v4: Ipv4Addr::new(198, 18, 100, 2),
            },
            appliance: End {
                ns: Netns {
                    name: format!("{tag}-app"),
                },
                ifname: format!("a{short}"),
                mac: [0x02, 0xaa, 0, 0, 0, 1],
                v4: Ipv4Addr::new(198, 18, 100, 1),
            },
        };
        for end in [&lab.generator, &lab.appliance] {
            if !in_benchmark_range(end.v4) {
                bail!("{} is outside 198.18.0.0/15", end.v4);
            }
        }
        for name in [lab.generator.ns.name.clone(), lab.appliance.ns.name.clone()] {
            ip(&["netns", "add", &name])?;
            lab.namespaces.push(name);
        }
        lab.build()?;
        Ok(lab)
    }

    fn build(&self) -> Result<()> {
        let (g, a) = (&self.generator, &self.appliance);
        a.ns.ip(&[
            "link",
            "add",
            &a.ifname,
            "address",
            &mac_string(a.mac),
            "type",
            "veth",
            "peer",
            "name",
            &g.ifname,
            "address",
            &mac_string(g.mac),
            "netns",
            g.ns.name(),
        ])?;
        for (me, other) in [(g, a), (a, g)] {
            let dev = me.ifname.as_str();
            me.ns.ip(&["link", "set", "lo", "up"])?;
            me.ns
                .ip(&["addr", "add", &format!("{}/24", me.v4), "dev", dev])?;
            me.ns.ip(&["link", "set", dev, "up"])?;
            me.ns.ip(&[
                "neigh",
                "replace",
                &other.v4.to_string(),
                "lladdr",
                &mac_string(other.mac),
                "dev",
                dev,
                "nud",
                "permanent",
            ])?;
            let name = dev.to_owned();
            me.ns.run(move || tx_checksum_off(&name))??;
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.namespaces.drain(..).rev() {
            if let Err(err) = ip(&["netns", "del", &name]) {
                eprintln!("cleanup: {err}");
            }
        }
    }
}

/// Deletes benchmark namespaces whose process is gone (killed before its
/// drop could run).
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            if let Err(err) = ip(&["netns", "del", &name]) {
                eprintln!("removing stale namespace: {err}");
            }
        }
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    pin(0, cpu)
}

/// Nice value of the threads on the measured path: the generator's thread
/// (whose system calls also run the device under test and the sink) and
/// rtpengine. The machine is shared: at the default priority a build on the
/// same CPU takes a share of every measurement that differs from one to the
/// next, which is noise in every ratio, and rtpengine's best clean rate is
/// what the relay is compared with.
pub const BENCH_NICE: libc::c_int = -20;

/// Gives the calling thread [`BENCH_NICE`] (nice values are per thread on
/// Linux). With autogroup scheduling this ranks it among the threads of its
/// own session only.
pub fn prioritize_current_thread() -> Result<()> {
    // SAFETY: setpriority has no memory preconditions; `who` 0 is the caller.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BENCH_NICE) } != 0 {
        bail!(
            "setpriority({BENCH_NICE}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The nice value of the autogroup `/proc/<pid>/autogroup` describes, or
/// `None` where the kernel schedules that task without one: no autogroup
/// support (no file), or a task in a CPU cgroup of its own, as in a
/// container, for which the kernel prints nothing.
fn autogroup_nice(path: &str) -> Result<Option<i32>> {
    let current = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {path}")),
    };
    if current.trim().is_empty() {
        return Ok(None);
    }
    // "/autogroup-43 nice 0"
    current
        .split_whitespace()
        .last()
        .and_then(|n| n.parse::<i32>().ok())
        .map(Some)
        .with_context(|| format!("unexpected {path}: {current:?}"))
}

/// Gives the autogroup of process `pid` (a session leader the benchmark
/// started, so the group goes with it) [`BENCH_NICE`] against the other
/// sessions on the machine. Where the process is scheduled without an
/// autogroup there is nothing to do.
pub fn prioritize_autogroup(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/autogroup");
    if autogroup_nice(&path)?.is_none() {
        return Ok(());
    }
    std::fs::write(&path, BENCH_NICE.to_string()).with_context(|| format!("writing {path}"))
}

/// This process's autogroup raised to [`BENCH_NICE`] against the other
/// sessions on the machine while it lives, so the generator's side of every
/// ratio is measured like rtpengine's (see [`prioritize_autogroup`]); the
/// previous value comes back on drop. Where the process is scheduled
/// without an autogroup it does nothing.
pub struct AutogroupPriority {
    previous: Option<i32>,
}

impl AutogroupPriority {
    const PATH: &'static str = "/proc/self/autogroup";

    /// Raises this process's autogroup.
    pub fn raise() -> Result<Self> {
        let Some(previous) = autogroup_nice(Self::PATH)? else {
            return Ok(Self { previous: None });
        };
        std::fs::write(Self::PATH, BENCH_NICE.to_string())
            .with_context(|| format!("writing {}", Self::PATH))?;
        Ok(Self {
            previous: Some(previous),
        })
    }
}

impl Drop for AutogroupPriority {
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            if let Err(err) = std::fs::write(Self::PATH, previous.to_string()) {
                eprintln!("cleanup: restoring the autogroup nice value {previous}: {err}");
            }
        }
    }
}

/// Pins thread `tid` (0: the calling thread) to `cpu`.
pub fn pin(tid: libc::pid_t, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays inside it for cpu <
    // CPU_SETSIZE (checked); sched_setaffinity reads exactly its size.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            bail!("cpu {cpu} out of range");
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity({tid}, cpu {cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Number of CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The lowest-numbered CPU this process may run on.
pub fn first_allowed_cpu() -> usize {
    allowed_cpus().first().copied().unwrap_or(0)
}

/// The CPUs this process may run on, lowest first.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity writes at most
    // its size; CPU_ISSET reads inside it for i < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&i| libc::CPU_ISSET(i, &set))
            .collect()
    }
}
