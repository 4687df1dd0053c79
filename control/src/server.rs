//! `switchboard run`: wires configuration, state, the HTTP server, the load
//! sampler and signal handling together.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{router, AppState};
use crate::audit::AuditLog;
use crate::config::Config;
use crate::drain::DrainAction;
use crate::dtls::DtlsIdentity;
use crate::media::worker::WorkerMediaPlane;
use crate::media::MediaPlane;
use crate::metrics::{ControlMetrics, Registry};
use crate::overload::LoadSample;
use crate::token::TokenSigner;

/// Start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A file named in the configuration could not be used.
    #[error("{key}: {reason}")]
    File {
        /// The config key naming the file.
        key: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// DTLS identity generation failed.
    #[error(transparent)]
    Dtls(#[from] crate::dtls::DtlsError),
    /// The media workers did not start.
    #[error(transparent)]
    Media(#[from] crate::media::worker::StartError),
    /// Binding the HTTP listener failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

fn read_file(key: &'static str, path: &str) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|e| StartError::File {
        key,
        reason: format!("reading {path}: {e}"),
    })
}

/// Builds the state for `config` over `media`, with a fresh DTLS identity
/// and metrics registry.
pub fn build_state(
    config: Config,
    media: Arc<dyn MediaPlane>,
) -> Result<Arc<AppState>, StartError> {
    let identity = DtlsIdentity::generate()?;
    tracing::info!(fingerprint = %identity.fingerprint_sdp(), "DTLS certificate generated");
    let metrics = ControlMetrics::new(Arc::new(Registry::new()));
    build_state_with(config, media, identity, metrics)
}

/// Builds the state for `config` over `media`, using `identity` (which the
/// media plane's DTLS sessions must share) and `metrics`.
pub fn build_state_with(
    config: Config,
    media: Arc<dyn MediaPlane>,
    identity: DtlsIdentity,
    metrics: ControlMetrics,
) -> Result<Arc<AppState>, StartError> {
    let signer = if config.tokens.signing_key_file.is_empty() {
        tracing::warn!(
            "tokens.signing_key_file is empty: generated a random signing key; join tokens \
             will not survive a restart and no other appliance accepts them"
        );
        TokenSigner::generate().map_err(|e| StartError::File {
            key: "tokens.signing_key_file",
            reason: e.to_string(),
        })?
    } else {
        let key = read_file("tokens.signing_key_file", &config.tokens.signing_key_file)?;
        TokenSigner::new(&key).map_err(|e| StartError::File {
            key: "tokens.signing_key_file",
            reason: e.to_string(),
        })?
    };
    let admin_token = if !config.admin.token_file.is_empty() {
        let raw = read_file("admin.token_file", &config.admin.token_file)?;
        let t = String::from_utf8(raw)
            .map_err(|_| StartError::File {
                key: "admin.token_file",
                reason: "not UTF-8".into(),
            })?
            .trim()
            .to_owned();
        if t.len() < 16 {
            return Err(StartError::File {
                key: "admin.token_file",
                reason: "the token must be at least 16 characters".into(),
            });
        }
        t
    } else {
        config.admin.token.clone()
    };
    if admin_token.is_empty() {
        tracing::warn!("no admin token configured: admin endpoints answer 401");
    }
    let audit = AuditLog::start(
        &config.audit.path,
        config.audit.fsync,
        Duration::from_millis(config.audit.group_commit_ms),
        config.audit.rotate_bytes,
    )
    .map_err(|e| StartError::File {
        key: "audit.path",
        reason: format!("opening {}: {e}", config.audit.path.display()),
    })?;
    Ok(Arc::new(AppState::new(
        config,
        signer,
        admin_token,
        identity,
        media,
        metrics,
        audit,
    )))
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The shared state.
    pub state: Arc<AppState>,
    /// The HTTP address actually bound.
    pub addr: std::net::SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `config.http.listen` and serves until [`Self::shutdown`].
    pub async fn start(state: Arc<AppState>) -> Result<Self, StartError> {
        let addr = state.config().http.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let (shutdown, mut rx) = watch::channel(false);
        let app =
            router(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
        });
        tracing::info!(%addr, "HTTP API listening");
        Ok(Self {
            state,
            addr,
            shutdown,
            task,
        })
    }

    /// Stops accepting, finishes open requests and returns.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.unwrap_or(Ok(()))
    }
}

/// CPU use from `/proc/stat` between two reads.
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: Option<(u64, u64)>,
}

/// `(busy, total)` jiffies from the aggregate `cpu` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 4 {
        return None;
    }
    // Guest time is already counted in user and nice.
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

impl CpuSampler {
    /// CPU percent of all cores since the previous call (`None` the first
    /// time or if `/proc/stat` is unreadable).
    pub fn sample(&mut self) -> Option<f64> {
        let now = parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
        self.percent_since(now)
    }

    fn percent_since(&mut self, now: (u64, u64)) -> Option<f64> {
        let prev = self.last.replace(now)?;
        let total = now.1.checked_sub(prev.1)?;
        let busy = now.0.checked_sub(prev.0)?;
        (total > 0).then(|| busy as f64 * 100.0 / total as f64)
    }
}

/// Runs the load sampler until the process ends.
pub fn spawn_load_sampler(state: Arc<AppState>, media: Arc<dyn MediaPlane>) {
    let interval = Duration::from_secs(state.config().overload.sample_interval_secs);
    tokio::spawn(async move {
        let mut cpu = CpuSampler::default();
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let Some(cpu_percent) = cpu.sample() else {
                continue;
            };
            let sample = LoadSample {
                egress_bps: media.stats().egress_bps,
                cpu_percent,
            };
            state.observe_load(Instant::now(), sample).await;
        }
    });
}

/// With `[cluster] etcd` set: keeps the appliance registered in the pool
/// and admitting only while it is (see [`crate::cluster`]).
pub fn spawn_pool_registration(
    state: &Arc<AppState>,
) -> Result<Option<tokio::task::JoinHandle<()>>, std::io::Error> {
    let cluster = state.config().cluster.clone();
    if cluster.etcd.is_empty() {
        return Ok(None);
    }
    let membership = crate::cluster::PoolMembership::new();
    state.join_pool(membership.clone());
    let pool = Arc::new(crate::pool::Pool::new(state.config()).map_err(std::io::Error::other)?);
    state.route_through(pool.clone());
    let record_state = state.clone();
    let registration =
        crate::cluster::spawn_registration(cluster, membership, move || record_state.pool_record())
            .map_err(std::io::Error::other)?;
    let cascade = tokio::spawn(crate::api::cascade_upkeep(state.clone()));
    let upkeep_state = state.clone();
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(pool.period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = upkeep_state.pool_upkeep().await {
                tracing::warn!(error = %e, "pool upkeep skipped");
            }
        }
    });
    // One handle for both: aborting it stops the upkeep as well.
    Ok(Some(tokio::spawn(async move {
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _upkeep = AbortOnDrop(upkeep);
        let _cascade = AbortOnDrop(cascade);
        let mut registration = AbortOnDrop(registration);
        let _ = (&mut registration.0).await;
    })))
}

/// Waits until the drain says to exit; returns the consults still open.
pub async fn drain_until_done(state: &AppState) -> usize {
    loop {
        let notified = state.consult_ended.notified();
        let action = state.drain().poll(Instant::now(), state.open_consults());
        match action {
            DrainAction::ExitIdle => return 0,
            DrainAction::ExitTimeout { remaining } => return remaining,
            DrainAction::Wait(deadline) => {
                let wait = deadline
                    .map_or(Duration::from_secs(1), |d| {
                        d.saturating_duration_since(Instant::now())
                    })
                    .min(Duration::from_secs(1));
                let _ = tokio::time::timeout(wait, notified).await;
            }
        }
    }
}

/// Changes the log filter (installed by the binary).
pub type LogReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Re-reads `path` and applies what can change live.
pub fn reload(state: &AppState, path: Option<&Path>, log: &LogReload) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: running on the embedded default; nothing to reload");
        return;
    };
    let new = match Config::load(Some(path)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: configuration rejected, keeping the running one");
            return;
        }
    };
    if let Err(e) = log(&new.log.level) {
        tracing::error!(error = %e, "SIGHUP: log level not applied");
    }
    state.reload(&new);
    let restart = state.config().restart_only_changes(&new);
    if !restart.is_empty() {
        tracing::warn!(keys = ?restart, "SIGHUP: these changes need a restart");
    }
    tracing::info!("SIGHUP: log level, overload thresholds and token lifetime reloaded");
}

/// The appliance stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Start-up failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Installing signal handlers or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Starts the media workers of `config` and the state over them.
pub fn build_state_over_workers(config: Config) -> Result<Arc<AppState>, StartError> {
    let identity = DtlsIdentity::generate()?;
    tracing::info!(fingerprint = %identity.fingerprint_sdp(), "DTLS certificate generated");
    let metrics = ControlMetrics::new(Arc::new(Registry::new()));
    let ingress = crate::media::ingress::IngressFilter::start(&config.xdp, &config.media)
        .map_err(crate::media::worker::StartError::from)?;
    if let Some(filter) = &ingress {
        for (interface, mode) in filter.attached() {
            tracing::info!(interface, %mode, "XDP ingress filter in front of the media ports");
        }
    }
    let media: Arc<dyn MediaPlane> = Arc::new(WorkerMediaPlane::start_with_ingress(
        &config.media,
        identity.clone(),
        metrics.clone(),
        ingress,
    )?);
    build_state_with(config, media, identity, metrics)
}

/// Runs the appliance over the SFU workers until SIGTERM (or SIGINT) has
/// drained it; the workers stop on the way out.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    log: LogReload,
) -> Result<(), RunError> {
    let state = build_state_over_workers(config)?;
    let result = run_state(state.clone(), config_path, log).await;
    state.media().shutdown();
    result
}

/// Runs the appliance over `media` until SIGTERM (or SIGINT) has drained
/// it.
pub async fn run_with(
    config: Config,
    config_path: Option<PathBuf>,
    media: Arc<dyn MediaPlane>,
    log: LogReload,
) -> Result<(), RunError> {
    let state = build_state(config, media)?;
    run_state(state, config_path, log).await
}

async fn run_state(
    state: Arc<AppState>,
    config_path: Option<PathBuf>,
    log: LogReload,
) -> Result<(), RunError> {
    use tokio::signal::unix::{signal, SignalKind};
    let media = state.media().clone();
    let server = Server::start(state.clone()).await?;
    spawn_load_sampler(state.clone(), media);
    let _registration = spawn_pool_registration(&state)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&state, config_path.as_deref(), &log),
        }
    }
    state.begin_drain(Instant::now());
    let remaining = tokio::select! {
        r = drain_until_done(&state) => r,
        // A second SIGTERM cuts the wait short.
        _ = term.recv() => state.open_consults(),
    };
    if remaining == 0 {
        tracing::info!("drained: no consult open, exiting");
    } else {
        tracing::warn!(remaining, "drain timeout: exiting with consults open");
    }
    server.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parsing_and_percent() {
        let a = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n";
        let b = "cpu  200 0 200 1500 100 0 0 0 0 0\n";
        assert_eq!(parse_proc_stat(a), Some((200, 1000)));
        let mut s = CpuSampler::default();
        assert_eq!(s.percent_since(parse_proc_stat(a).unwrap()), None);
        let p = s.percent_since(parse_proc_stat(b).unwrap()).unwrap();
        assert!((p - 20.0).abs() < 1e-9, "{p}");
        assert_eq!(parse_proc_stat("intr 1 2\n"), None);
    }
}
