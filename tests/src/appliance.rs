//! The appliance as its users run it: `switchboard run --config FILE` in a
//! network namespace, with a configuration the test writes, and its HTTP API
//! reached from inside that namespace.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::http::{Request, Response};
use crate::{Netns, TempDir};

/// Admin bearer token of test appliances.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

/// The `switchboard` binary: `$SWITCHBOARD_BIN`, else built now (a no-op
/// when it is fresh) into this test binary's target directory, so a test
/// never runs a stale appliance.
pub fn switchboard_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SWITCHBOARD_BIN") {
        return Ok(PathBuf::from(path));
    }
    // target/<profile>/deps/<test> -> target/<profile>
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary is not in target/<profile>/deps")?;
    let target_dir = profile_dir.parent().context("no target directory")?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace directory")?;
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "switchboard",
            "--bin",
            "switchboard",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build -p switchboard")?;
    if !status.success() {
        bail!("cargo build -p switchboard failed: {status}");
    }
    let bin = profile_dir.join("switchboard");
    if !bin.is_file() {
        bail!("{} missing after the build", bin.display());
    }
    Ok(bin)
}

/// What the test's configuration says.
#[derive(Debug, Clone)]
pub struct ApplianceConfig {
    /// `http.listen`.
    pub listen: SocketAddr,
    /// `media.advertised_addresses`.
    pub advertised: Vec<IpAddr>,
    /// `media.port_min`; one worker, so one port.
    pub media_port: u16,
    /// `log.level`.
    pub log_level: String,
}

/// A running `switchboard run`; stopped (SIGTERM, then SIGKILL) and its
/// files removed on drop.
pub struct Appliance {
    child: Child,
    ns: Netns,
    dir: TempDir,
    /// The API's address (inside the namespace).
    pub api: SocketAddr,
}

impl Appliance {
    /// Writes the configuration and starts the appliance inside `ns`;
    /// returns once `/healthz` answers (at most 20 s).
    pub fn start(ns: &Netns, cfg: &ApplianceConfig) -> Result<Self> {
        Self::start_with(ns, cfg, "")
    }

    /// [`start`](Self::start) with `extra` TOML tables appended to the
    /// configuration (tables the base configuration does not have).
    pub fn start_with(ns: &Netns, cfg: &ApplianceConfig, extra: &str) -> Result<Self> {
        let bin = switchboard_binary()?;
        let dir = TempDir::new("appliance")?;
        let advertised: Vec<String> = cfg.advertised.iter().map(|a| format!("\"{a}\"")).collect();
        let config = format!(
            "[http]\nlisten = \"{listen}\"\n\
             [admin]\ntoken = \"{ADMIN_TOKEN}\"\n\
             [media]\nadvertised_addresses = [{adv}]\nport_min = {port}\nport_max = {port}\nworkers = 1\n\
             [audit]\npath = \"{audit}\"\nfsync = \"group\"\ngroup_commit_ms = 5\n\
             [drain]\ntimeout_secs = 1\n\
             [log]\nlevel = \"{level}\"\n{extra}",
            listen = cfg.listen,
            adv = advertised.join(", "),
            port = cfg.media_port,
            audit = dir.path().join("audit.jsonl").display(),
            level = cfg.log_level,
        );
        let config_path = dir.path().join("switchboard.toml");
        std::fs::write(&config_path, config)?;
        let log = File::create(dir.path().join("switchboard.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(&bin)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} in {}", bin.display(), ns.name()))?;
        let mut appliance = Self {
            child,
            ns: ns.clone(),
            dir,
            api: cfg.listen,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = appliance.child.try_wait()? {
                bail!(
                    "switchboard run exited with {status}:\n{}",
                    appliance.log_tail(4000)
                );
            }
            match Request::new("GET", "/healthz")
                .timeout(Duration::from_secs(1))
                .send(Some(&appliance.ns), appliance.api)
            {
                Ok(r) if r.status == 200 => break,
                _ if Instant::now() > deadline => bail!(
                    "switchboard run did not answer /healthz within 20 s:\n{}",
                    appliance.log_tail(4000)
                ),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Ok(appliance)
    }

    /// The namespace it runs in.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// Sends `req` to the API.
    pub fn send(&self, req: &Request<'_>) -> Result<Response> {
        req.send(Some(&self.ns), self.api)
    }

    fn admin_json(&self, method: &str, path: &str, body: &Value) -> Result<Response> {
        let body = serde_json::to_vec(body)?;
        self.send(
            &Request::new(method, path)
                .bearer(ADMIN_TOKEN)
                .body("application/json", &body),
        )
    }

    /// Creates a consult; returns its id.
    pub fn create_consult(&self, priority: &str) -> Result<String> {
        let r = self.admin_json(
            "POST",
            "/v1/consults",
            &json!({"priority": priority, "residency": "eu"}),
        )?;
        if r.status != 201 {
            bail!("POST /v1/consults: {} {}", r.status, r.text());
        }
        Ok(r.json()?["id"]
            .as_str()
            .context("consult without id")?
            .to_owned())
    }

    /// Issues a join token.
    pub fn token(&self, consult: &str, participant: &str, role: &str) -> Result<String> {
        let r = self.admin_json(
            "POST",
            &format!("/v1/consults/{consult}/tokens"),
            &json!({"participant": participant, "role": role}),
        )?;
        if r.status != 201 {
            bail!("POST tokens: {} {}", r.status, r.text());
        }
        Ok(r.json()?["token"].as_str().context("no token")?.to_owned())
    }

    /// Pins the overload level (`None` returns to the measured one).
    pub fn force_overload_level(&self, level: Option<u8>) -> Result<()> {
        let r = self.admin_json("PUT", "/v1/admin/overload", &json!({ "level": level }))?;
        if r.status != 200 {
            bail!("PUT /v1/admin/overload: {} {}", r.status, r.text());
        }
        Ok(())
    }

    /// `GET path` with the admin token, as JSON.
    pub fn admin_get(&self, path: &str) -> Result<Value> {
        let r = self.send(&Request::new("GET", path).bearer(ADMIN_TOKEN))?;
        if r.status != 200 {
            bail!("GET {path}: {} {}", r.status, r.text());
        }
        r.json()
    }

    /// The last `max` bytes of its log (stdout and stderr).
    pub fn log_tail(&self, max: usize) -> String {
        let text = std::fs::read(self.dir.path().join("switchboard.log")).unwrap_or_default();
        let from = text.len().saturating_sub(max);
        String::from_utf8_lossy(&text[from..]).into_owned()
    }
}

impl Appliance {
    /// Kills the appliance at once (SIGKILL), as a power cut or a crash
    /// would: no drain, no goodbye to the pool.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        // Already gone (killed or exited): the pid may no longer be ours.
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child, still unreaped (so the pid is ours).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
