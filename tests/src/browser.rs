//! Headless Chromium in a network namespace, driven over WebDriver.
//!
//! `chromedriver` is started with `ip netns exec`, so it and the Chromium it
//! launches see only the namespace's interfaces: WebRTC gathers the
//! namespace's 198.18.x address and its media crosses the lab's veth pairs.
//! The WebDriver endpoint listens on the namespace's loopback and is reached
//! through [`crate::http`], whose sockets are made inside the namespace.
//!
//! Camera and microphone are Chromium's fake devices, and the permission
//! prompt answers itself; a page given camera permission exposes its real
//! host addresses in ICE (no mDNS names), which keeps candidates readable in
//! logs. Everything a browser started (its process group, any process left
//! in the namespace that the group spawned, the profile directory) is
//! removed on drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::http::Request;
use crate::{Netns, TempDir};

/// chromedriver's port inside the browser's namespace (one browser per
/// namespace, so a fixed port cannot collide).
const DRIVER_PORT: u16 = 9515;

/// The Chromium executable: Debian's `/usr/bin/chromium` is a shell wrapper
/// that adds flags from /etc/chromium.d; the binary behind it is run
/// directly so only the flags below apply.
pub fn chromium_binary() -> PathBuf {
    let real = Path::new("/usr/lib/chromium/chromium");
    if real.is_file() {
        real.to_path_buf()
    } else {
        PathBuf::from("/usr/bin/chromium")
    }
}

/// How a browser is started.
#[derive(Debug, Clone, Default)]
pub struct BrowserOptions {
    /// Origins treated as secure although served over plain HTTP (the lab
    /// has no certificates; `getUserMedia` needs a secure context).
    pub secure_origins: Vec<String>,
    /// Further Chromium flags.
    pub extra_args: Vec<String>,
}

/// A headless Chromium with one WebDriver session.
pub struct Browser {
    ns: Netns,
    driver: Child,
    session: Option<String>,
    dir: TempDir,
    /// `browserVersion` as the session reports it.
    pub version: String,
}

impl Browser {
    /// Starts chromedriver in `ns` and opens a session (at most 60 s).
    pub fn launch(ns: &Netns, opts: &BrowserOptions) -> Result<Self> {
        let dir = TempDir::new("chromium")?;
        let driver_log = dir.path().join("chromedriver.log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name(), "chromedriver"])
            .arg(format!("--port={DRIVER_PORT}"))
            .arg(format!("--log-path={}", driver_log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group: chromedriver and every Chromium process
        // it forks are signalled together on drop.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd
            .spawn()
            .context("starting chromedriver (chromium-driver)")?;
        let mut browser = Self {
            ns: ns.clone(),
            driver,
            session: None,
            dir,
            version: String::new(),
        };
        browser.wait_for_driver()?;
        browser.open_session(opts)?;
        Ok(browser)
    }

    fn driver_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, DRIVER_PORT))
    }

    fn wait_for_driver(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.driver.try_wait()? {
                bail!(
                    "chromedriver exited with {status}: {}",
                    self.driver_log_tail(2000)
                );
            }
            let ready = Request::new("GET", "/status")
                .timeout(Duration::from_secs(1))
                .send(Some(&self.ns), self.driver_addr())
                .ok()
                .and_then(|r| r.json().ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "chromedriver not ready within 20 s: {}",
                    self.driver_log_tail(2000)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn open_session(&mut self, opts: &BrowserOptions) -> Result<()> {
        let profile = self.dir.path().join("profile");
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--password-store=basic",
            // Every interface of the namespace, no proxy: the lab has one.
            "--force-webrtc-ip-handling-policy=default",
            // Host candidates as addresses, not mDNS names, whatever the
            // permission state (the lab runs no mDNS responder).
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            // Hidden tabs would throttle timers and rendering.
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--enable-logging",
            "--v=0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        if !opts.secure_origins.is_empty() {
            args.push(format!(
                "--unsafely-treat-insecure-origin-as-secure={}",
                opts.secure_origins.join(",")
            ));
        }
        args.extend(opts.extra_args.iter().cloned());
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium_binary(),
                        "args": args,
                    },
                },
            },
        });
        let value = self.command("POST", "/session", Some(&caps), Duration::from_secs(60))?;
        let id = value["sessionId"]
            .as_str()
            .context("new session without sessionId")?;
        self.session = Some(id.to_owned());
        self.version = value["capabilities"]["browserVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        Ok(())
    }

    /// One WebDriver command; returns its `value`, or the driver's error.
    fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value> {
        let bytes = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let mut req = Request::new(method, path).timeout(timeout);
        if body.is_some() {
            req = req.body("application/json; charset=utf-8", &bytes);
        }
        let r = req
            .send(Some(&self.ns), self.driver_addr())
            .with_context(|| format!("WebDriver {method} {path}"))?;
        let mut v = r.json()?;
        let value = v["value"].take();
        if r.status != 200 {
            bail!(
                "WebDriver {method} {path}: {} {}: {}",
                r.status,
                value["error"].as_str().unwrap_or("?"),
                value["message"].as_str().unwrap_or("")
            );
        }
        Ok(value)
    }

    fn session_path(&self, tail: &str) -> Result<String> {
        let id = self.session.as_deref().context("no WebDriver session")?;
        Ok(format!("/session/{id}{tail}"))
    }

    /// Navigates to `url` and waits for the page to load.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.command(
            "POST",
            &self.session_path("/url")?,
            Some(&json!({ "url": url })),
            Duration::from_secs(60),
        )?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and
    /// returns what it returns, as JSON.
    pub fn execute(&self, script: &str, args: &[Value]) -> Result<Value> {
        self.command(
            "POST",
            &self.session_path("/execute/sync")?,
            Some(&json!({ "script": script, "args": args })),
            Duration::from_secs(30),
        )
    }

    /// Evaluates `expr` until it is truthy (polling every `every`), at
    /// most `timeout`; returns the truthy value.
    pub fn wait_for(&self, expr: &str, timeout: Duration, every: Duration) -> Result<Value> {
        let script = format!("return ({expr});");
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.execute(&script, &[])?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if Instant::now() + every > deadline {
                return Err(anyhow!("{expr} still false after {timeout:?}"));
            }
            std::thread::sleep(every);
        }
    }

    /// The namespace the browser runs in.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The last `max` bytes of chromedriver's log.
    pub fn driver_log_tail(&self, max: usize) -> String {
        tail(&self.dir.path().join("chromedriver.log"), max)
    }

    /// Lines of Chromium's own log (`chrome_debug.log` in the profile)
    /// containing any of `needles` (all lines if empty), the last `max`
    /// bytes of them.
    pub fn chrome_log(&self, needles: &[&str], max: usize) -> String {
        let text = tail(&self.dir.path().join("profile/chrome_debug.log"), 4 << 20);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| needles.is_empty() || needles.iter().any(|n| l.contains(n)))
            .collect();
        let joined = lines.join("\n");
        let from = joined.len().saturating_sub(max);
        joined.get(from..).unwrap_or(joined.as_str()).to_owned()
    }

    fn stop(&mut self) {
        if let Ok(path) = self.session_path("") {
            if let Err(e) = self.command("DELETE", &path, None, Duration::from_secs(10)) {
                eprintln!("cleanup: closing the WebDriver session: {e}");
            }
            self.session = None;
        }
        let pgid = self.driver.id() as libc::pid_t;
        // The group stays ours until its leader is reaped (below), so the
        // id cannot name anyone else's processes.
        // SAFETY: plain kill(2) on our own child's process group.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !namespace_pids(&self.ns).is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.driver.wait();
        // Chromium helpers that left the group (a zygote may) and are still
        // in the namespace were started by this browser: the namespace
        // holds nothing else.
        for pid in namespace_pids(&self.ns) {
            // SAFETY: a pid listed in the browser's own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Processes whose network namespace is `ns` (`ip netns pids`).
pub fn namespace_pids(ns: &Netns) -> Vec<libc::pid_t> {
    Command::new("ip")
        .args(["netns", "pids", ns.name()])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn tail(path: &Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let from = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}
