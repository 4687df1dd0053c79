//! rtpengine (Debian `rtpengine-daemon`) as the benchmark's userspace peer:
//! the daemon started in the appliance namespace with kernel forwarding off
//! (`--table=-1`), and a client for its ng control protocol (bencode over
//! UDP) that sets up one relayed call.

use std::{
    io::Read,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{bencode::Value, lab::Netns};

/// The daemon's executable.
pub const BINARY: &str = "rtpengine";
/// The Debian package that ships it.
pub const PACKAGE: &str = "rtpengine-daemon";
/// Port of the ng control socket, on the appliance namespace's loopback.
const NG_PORT: u16 = 2223;
/// How long the daemon may take to answer its first ping.
const STARTUP: Duration = Duration::from_secs(10);
/// How long one ng request may wait for its reply.
const NG_TIMEOUT: Duration = Duration::from_secs(2);

/// True if the rtpengine binary is on PATH.
pub fn available() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(BINARY).is_file()))
}

/// The installed rtpengine's version, as it reports it.
pub fn version() -> Option<String> {
    let out = Command::new(BINARY).arg("--version").output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
}

/// A running rtpengine, killed (and reaped) on drop. It dies with the
/// thread that started it too (`PR_SET_PDEATHSIG`), so a benchmark killed
/// outright leaves no daemon behind.
pub struct Rtpengine {
    child: Child,
    log: PathBuf,
    ng: UdpSocket,
    cookie: u64,
}

/// Where rtpengine relays the benchmark stream.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// Where the caller must send: rtpengine's port for the callee's leg.
    pub send_to: SocketAddrV4,
    /// The source rtpengine uses towards the callee.
    pub relayed_from: SocketAddrV4,
}

impl Rtpengine {
    /// Starts rtpengine in `ns`, media on `media_addr` (ports
    /// `ports.0..=ports.1`), userspace forwarding only, `threads` worker
    /// threads (0: rtpengine's default, one per CPU), kept off `avoid_cpu`
    /// when another CPU is allowed, logging to `log` (kept afterwards), and
    /// waits until it answers a ping.
    pub fn start(
        ns: &Netns,
        media_addr: Ipv4Addr,
        ports: (u16, u16),
        threads: usize,
        avoid_cpu: Option<usize>,
        log: PathBuf,
    ) -> Result<Self> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let ns_fd = ns.open()?;
        let mut cmd = Command::new(BINARY);
        cmd.args([
            "--config-file=none",
            // Kernel forwarding off: every packet goes through the daemon.
            "--table=-1",
            &format!("--interface={media_addr}"),
            &format!("--listen-ng=127.0.0.1:{NG_PORT}"),
            &format!("--port-min={}", ports.0),
            &format!("--port-max={}", ports.1),
            // Ports of deleted calls are free again at once: every trial has a call of its own.
            "--delete-delay=0",
            "--foreground",
            "--log-stderr",
            "--log-level=6",
        ]);
        if threads > 0 {
            cmd.arg(format!("--num-threads={threads}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let raw_ns = ns_fd.as_raw_fd();
        let cpus = avoid_cpu.and_then(cpus_except);
        // SAFETY: only async-signal-safe system calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(raw_ns, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(set) = &cpus {
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // A session of its own is an autogroup of its own, whose
                // priority is raised below (see `lab::BENCH_NICE`).
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {BINARY} (Debian package {PACKAGE})"))?;
        drop(ns_fd);
        let ng = ns.run(|| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)))??;
        ng.connect((Ipv4Addr::LOCALHOST, NG_PORT))?;
        ng.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut engine = Self {
            child,
            log,
            ng,
            cookie: 0,
        };
        // Dropping `engine` on an error kills the daemon.
        crate::lab::prioritize_autogroup(engine.child.id())?;
        engine.wait_ready()?;
        Ok(engine)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("rtpengine exited with {status}: {}", self.log_tail());
            }
            match self.request_once(&Value::dict([("command", Value::str("ping"))])) {
                Ok(reply) if reply.get("result").and_then(Value::as_str) == Some("pong") => {
                    return Ok(())
                }
                Ok(reply) => bail!("rtpengine answered ping with {reply:?}"),
                Err(_) if Instant::now() < deadline => continue,
                Err(err) => bail!(
                    "rtpengine did not answer a ping within {STARTUP:?} ({err}): {}",
                    self.log_tail()
                ),
            }
        }
    }

    /// The end of the daemon's log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one ng request and waits for its reply (one attempt).
    fn request_once(&mut self, message: &Value) -> Result<Value> {
        self.cookie += 1;
        let cookie = format!("sb{}", self.cookie);
        let mut datagram = cookie.as_bytes().to_vec();
        datagram.push(b' ');
        message.encode_into(&mut datagram);
        self.ng.send(&datagram)?;
        let deadline = Instant::now() + NG_TIMEOUT;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            let n = match self.ng.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            };
            let reply = &buf[..n];
            // Replies to earlier, timed-out requests carry other cookies.
            let Some(body) = reply
                .strip_prefix(cookie.as_bytes())
                .and_then(|r| r.strip_prefix(b" "))
            else {
                continue;
            };
            return Value::decode(body);
        }
        bail!("no ng reply within {NG_TIMEOUT:?}")
    }

    /// Sends an ng command and returns its reply; an `error` result is an error.
    pub fn command(&mut self, message: &Value) -> Result<Value> {
        let reply = self.request_once(message)?;
        match reply.get("result").and_then(Value::as_str) {
            Some("ok") | Some("pong") => Ok(reply),
            _ => bail!(
                "rtpengine refused {:?}: {:?}",
                message.get("command").and_then(Value::as_str),
                reply
                    .get("error-reason")
                    .and_then(Value::as_str)
                    .unwrap_or("(no reason given)")
            ),
        }
    }

    /// Sets up one call (offer and answer) relaying RTP from `caller` to
    /// `callee` (plain RTP/AVP: the payload is opaque to rtpengine, as SRTP
    /// passed through is).
    pub fn call(
        &mut self,
        call_id: &str,
        caller: SocketAddrV4,
        callee: SocketAddrV4,
    ) -> Result<Call> {
        let offer = self.command(&Value::dict([
            ("command", Value::str("offer")),
            ("call-id", Value::str(call_id)),
            ("from-tag", Value::str("caller")),
            ("sdp", Value::str(&sdp(caller))),
            (
                "replace",
                Value::List(vec![Value::str("origin"), Value::str("session-connection")]),
            ),
        ]))?;
        let to_callee = media_of(&offer).context("offer reply")?;
        let answer = self.command(&Value::dict([
            ("command", Value::str("answer")),
            ("call-id", Value::str(call_id)),
            ("from-tag", Value::str("caller")),
            ("to-tag", Value::str("callee")),
            ("sdp", Value::str(&sdp(callee))),
            (
                "replace",
                Value::List(vec![Value::str("origin"), Value::str("session-connection")]),
            ),
        ]))?;
        let to_caller = media_of(&answer).context("answer reply")?;
        Ok(Call {
            send_to: to_caller,
            relayed_from: to_callee,
        })
    }

    /// Ends a call.
    pub fn delete(&mut self, call_id: &str) -> Result<()> {
        self.command(&Value::dict([
            ("command", Value::str("delete")),
            ("call-id", Value::str(call_id)),
            ("from-tag", Value::str("caller")),
        ]))?;
        Ok(())
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        if let Err(err) = self.child.kill() {
            eprintln!("cleanup: killing rtpengine {}: {err}", self.child.id());
        }
        let _ = self.child.wait();
    }
}

/// The CPUs this process may use without `cpu`, if any remain.
fn cpus_except(cpu: usize) -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity writes at most
    // its size; CPU_ISSET/CPU_CLR stay inside it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize
            || libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0
        {
            return None;
        }
        libc::CPU_CLR(cpu, &mut set);
        (libc::CPU_COUNT(&set) > 0).then_some(set)
    }
}

/// A one-stream SDP for an endpoint at `at`: video, one dynamic payload type.
fn sdp(at: SocketAddrV4) -> String {
    let ip = at.ip();
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=switchboard-bench\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=video {} RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=sendrecv\r\n",
        at.port()
    )
}

/// The media address of the first stream in the SDP of an ng reply.
fn media_of(reply: &Value) -> Result<SocketAddrV4> {
    let sdp = reply
        .get("sdp")
        .and_then(Value::as_str)
        .context("no SDP in the reply")?;
    let mut ip = None;
    let mut port = None;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(addr) = line.strip_prefix("c=IN IP4 ") {
            ip = Some(addr.trim().parse::<Ipv4Addr>().context("c= address")?);
        }
        if let Some(m) = line.strip_prefix("m=") {
            let p = m
                .split_whitespace()
                .nth(1)
                .context("m= line without port")?;
            port = Some(p.parse::<u16>().context("m= port")?);
        }
    }
    match (ip, port) {
        (Some(ip), Some(port)) if port != 0 => Ok(SocketAddrV4::new(ip, port)),
        _ => bail!("SDP without a usable c=/m= pair: {sdp:?}"),
    }
}

impl std::fmt::Debug for Rtpengine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtpengine")
            .field("pid", &self.child.id())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_media_address_from_an_sdp_reply() {
        let reply = Value::dict([
            ("result", Value::str("ok")),
            (
                "sdp",
                Value::str(
                    "v=0\r\no=- 1 1 IN IP4 198.18.100.1\r\ns=x\r\nc=IN IP4 198.18.100.1\r\n\
                     t=0 0\r\nm=video 30002 RTP/AVP 96\r\n",
                ),
            ),
        ]);
        assert_eq!(
            media_of(&reply).unwrap(),
            "198.18.100.1:30002".parse().unwrap()
        );
        assert!(media_of(&Value::dict([("result", Value::str("ok"))])).is_err());
    }

    #[test]
    fn offers_one_video_stream() {
        let s = sdp("198.18.100.2:5004".parse().unwrap());
        assert!(s.contains("c=IN IP4 198.18.100.2\r\n"));
        assert!(s.contains("m=video 5004 RTP/AVP 96\r\n"));
    }
}
