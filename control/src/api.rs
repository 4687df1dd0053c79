//! The HTTP API: consults, join tokens, WHIP/WHEP, admin, health, metrics.
//!
//! | route | auth | answers |
//! |---|---|---|
//! | `GET /healthz` | none | 200 |
//! | `GET /readyz` | none | 200, 503 while draining |
//! | `GET /metrics` | none | 200 Prometheus text |
//! | `POST /v1/consults` | admin | 201, 400, 401, 422, 503 (+Retry-After) at level 4, draining, out of the pool or without room in it |
//! | `GET /v1/consults` | admin | 200, 401 |
//! | `GET /v1/consults/{id}` | admin or join token of the consult | 200, 401, 403, 404 |
//! | `DELETE /v1/consults/{id}` | admin or clinician | 200, 401, 403, 404 |
//! | `POST /v1/consults/{id}/tokens` | admin | 201, 400, 401, 404 |
//! | `POST /v1/consults/{id}/whip` | patient or clinician | 201 SDP answer, 400, 401, 403, 404, 409 (another box of the pool carries it), 415 |
//! | `POST /v1/consults/{id}/whep` | any role | 201 SDP answer, 400, 401, 403, 404, 415 |
//! | `DELETE /v1/legs/{id}` | the leg's participant or admin | 200, 401, 403, 404 |
//! | `PATCH /v1/legs/{id}` | — | 405: no trickle ICE, no ICE restart |
//! | `GET /v1/admin/overload` | admin | 200 |
//! | `PUT /v1/admin/overload` | admin | 200, 400 |
//! | `GET /v1/admin/stats` | admin | 200 |
//! | `GET /v1/admin/pool` | admin | 200, 400, 401, 404 (not in a pool), 503 |
//! | `POST /v1/consults/{id}/cascade` | admin | 200, 400, 401, 404, 409, 502 |
//! | `POST /v1/consults/{id}/trunk` | admin (the origin) | 201, 400, 401, 409 |
//! | `POST /v1/consults/{id}/keyframe` | admin | 200, 401, 404 |
//!
//! RFC 9725 §4.3.1: a WHIP session that supports neither trickle ICE nor ICE
//! restarts answers PATCH with 405. This appliance is ICE-lite with public
//! host candidates in its answer; the participant's candidates are learned
//! from its checks, so trickled candidates carry nothing it needs, and an
//! ICE restart is a new WHIP session.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SecureRandom;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditLog, EventKind};
use crate::config::Config;
use crate::drain::Drain;
use crate::dtls::DtlsIdentity;
use crate::media::{LegId, LegSetup, MediaPlane, RoomCap};
use crate::metrics::ControlMetrics;
use crate::overload::{admits_new_consults, Ladder, LadderConfig, LevelChange, Priority, VideoCap};
use crate::sdp::{self, IceCredentials, LegDirection, LocalDescription, NegotiatedLeg};
use crate::token::{self, Claims, Role, TokenError, TokenSigner};

/// Settings SIGHUP may change.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// Join token lifetime.
    pub token_lifetime_secs: u64,
}

/// A consult.
#[derive(Debug, Clone, Serialize)]
pub struct Consult {
    /// Its id.
    pub id: String,
    /// Clinical priority.
    pub priority: Priority,
    /// Residency tag (jurisdiction the patient's data must stay in).
    pub residency: String,
    /// The region it runs in.
    pub region: String,
    /// Creation time.
    pub created_at: String,
    /// Open legs.
    pub legs: Vec<LegId>,
    /// The cap the overload policy applies now.
    pub video_cap: VideoCap,
    /// Where the pool placed it (pools on etcd only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolView>,
    /// On a downstream copy of a cascaded consult: the origin appliance.
    /// Its publishers arrive over a trunk; participants publish at the
    /// origin and subscribe here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// At the origin: the appliances the consult is cascaded to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub downstream: Vec<String>,
    /// The trunks to the downstream appliances.
    #[serde(skip)]
    trunks: Vec<dataplane::xdp::RelayTarget>,
    /// Publisher legs the trunks carry.
    #[serde(skip)]
    trunked: Vec<LegId>,
    #[serde(skip)]
    room: u32,
    /// The pool store's revision when this box took the consult.
    #[serde(skip)]
    pool_revision: i64,
}

/// A consult's place in the pool, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    /// The appliance carrying it (`None`: no allowed region has room now).
    pub appliance: Option<String>,
    /// Its region.
    pub region: Option<String>,
    /// Base URL of that appliance's API: WHIP, WHEP and tokens go there.
    pub api: Option<String>,
    /// Bumped at every move; legs opened for an older one must reconnect.
    pub generation: u64,
    /// Why it is where it is.
    pub reason: String,
    /// Set once it has moved: open new WHIP/WHEP resources at `api`.
    pub reconnect: Option<crate::pool::Reconnect>,
    /// How it was placed (in the response that created it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::placement::Placement>,
}

impl PoolView {
    fn of(record: &crate::pool::ConsultRecord, api: Option<String>) -> Self {
        Self {
            appliance: record.appliance.clone(),
            region: record.region.clone(),
            api: api.map(|a| format!("http://{a}")),
            generation: record.generation,
            reason: record.reason.clone(),
            reconnect: record.reconnect.clone(),
            placement: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Leg {
    consult: String,
    participant: String,
    role: Role,
    direction: LegDirection,
    negotiated: NegotiatedLeg,
}

#[derive(Debug, Default)]
struct Registry {
    consults: BTreeMap<String, Consult>,
    legs: BTreeMap<LegId, Leg>,
    next_room: u32,
    next_leg: LegId,
}

/// Everything the handlers share.
pub struct AppState {
    config: Config,
    live: Mutex<LiveSettings>,
    signer: TokenSigner,
    admin_token: String,
    identity: DtlsIdentity,
    media: Arc<dyn MediaPlane>,
    /// The control plane's metrics.
    pub metrics: ControlMetrics,
    audit: AuditLog,
    registry: Mutex<Registry>,
    ladder: Mutex<Ladder>,
    drain: Mutex<Drain>,
    /// Woken when a consult ends (for the drain).
    pub consult_ended: tokio::sync::Notify,
    workers: u16,
    /// Set when the appliance is in a pool on etcd.
    pool: std::sync::OnceLock<Arc<crate::cluster::PoolMembership>>,
    /// The pool's router, likewise.
    router: std::sync::OnceLock<Arc<crate::pool::Pool>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// An API error as JSON: `{"error": code, "reason": text}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    reason: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            code,
            reason: reason.into(),
            retry_after: None,
        }
    }

    fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        if e.is_unauthenticated() {
            Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
        } else {
            Self::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(serde_json::json!({"error": self.code, "reason": self.reason})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Random string over the ICE character set (RFC 8839 ice-char).
fn random_ice_chars(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("system RNG");
    bytes
        .iter()
        .map(|b| CHARS[usize::from(*b) % 64] as char)
        .collect()
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system RNG");
    u64::from_be_bytes(b)
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system RNG");
    hex::encode(b)
}

/// Checks that ids from clients are short and plain (they go into logs and
/// tokens).
fn valid_participant(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl AppState {
    /// Builds the shared state.
    pub fn new(
        config: Config,
        signer: TokenSigner,
        admin_token: String,
        identity: DtlsIdentity,
        media: Arc<dyn MediaPlane>,
        metrics: ControlMetrics,
        audit: AuditLog,
    ) -> Self {
        let workers = if config.media.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.media.workers
        };
        let ports = usize::from(config.media.port_max - config.media.port_min) + 1;
        let workers = u16::try_from(workers.min(ports)).unwrap_or(u16::MAX).max(1);
        Self {
            live: Mutex::new(LiveSettings {
                token_lifetime_secs: config.tokens.lifetime_secs,
            }),
            ladder: Mutex::new(Ladder::new(LadderConfig::from(&config.overload))),
            drain: Mutex::new(Drain::new(Duration::from_secs(config.drain.timeout_secs))),
            config,
            signer,
            admin_token,
            identity,
            media,
            metrics,
            audit,
            registry: Mutex::new(Registry::default()),
            consult_ended: tokio::sync::Notify::new(),
            workers,
            pool: std::sync::OnceLock::new(),
            router: std::sync::OnceLock::new(),
        }
    }

    /// The configuration the state was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The media plane behind the API.
    pub fn media(&self) -> &Arc<dyn MediaPlane> {
        &self.media
    }

    /// Applies what SIGHUP may change.
    pub fn reload(&self, new: &Config) {
        self.live.lock().expect("lock").token_lifetime_secs = new.tokens.lifetime_secs;
        self.ladder
            .lock()
            .expect("lock")
            .reconfigure(LadderConfig::from(&new.overload));
    }

    /// Open consults.
    pub fn open_consults(&self) -> usize {
        self.registry.lock().expect("lock").consults.len()
    }

    /// The drain state machine.
    pub fn drain(&self) -> std::sync::MutexGuard<'_, Drain> {
        self.drain.lock().expect("lock")
    }

    /// Starts draining at `now`.
    pub fn begin_drain(&self, now: Instant) {
        self.drain().begin(now);
        self.metrics.draining.set(1.0);
        tracing::warn!("draining: new consults refused, readyz reports 503");
    }

    /// Feeds a load sample to the ladder.
    pub async fn observe_load(&self, now: Instant, sample: crate::overload::LoadSample) {
        let change = {
            let mut l = self.ladder.lock().expect("lock");
            let c = l.observe(now, sample);
            self.metrics.overload_load_percent.set(l.load_percent());
            c
        };
        if let Some(c) = change {
            self.level_changed(c).await;
        }
    }

    async fn level_changed(&self, c: LevelChange) {
        tracing::warn!(
            from = c.from,
            to = c.to,
            reason = c.reason.as_str(),
            load_percent = c.load_percent,
            "overload level changed"
        );
        self.metrics
            .overload_change(c.from, c.to, c.reason.as_str());
        self.metrics.overload_level.set(f64::from(c.to));
        self.apply_caps();
        let mut e = AuditEvent::now(EventKind::OverloadLevel, &self.config.regions.name);
        e.detail = Some(format!("{}->{} {}", c.from, c.to, c.reason.as_str()));
        self.record(&e).await;
    }

    fn level(&self) -> u8 {
        self.ladder.lock().expect("lock").level()
    }

    /// Puts the appliance in a pool: new consults are admitted only while
    /// `membership` says the pool sees it.
    pub fn join_pool(&self, membership: Arc<crate::cluster::PoolMembership>) {
        let _ = self.pool.set(membership);
    }

    /// Routes new consults through `pool` and takes the consults it places
    /// here.
    pub fn route_through(&self, pool: Arc<crate::pool::Pool>) {
        let _ = self.router.set(pool);
    }

    fn router(&self) -> Option<&Arc<crate::pool::Pool>> {
        self.router.get()
    }

    /// Takes consult `record` (placed on this appliance by the pool) into
    /// the registry if it is not there yet.
    async fn adopt(&self, record: &crate::pool::ConsultRecord, revision: i64) {
        let level = self.level();
        {
            let mut reg = self.registry.lock().expect("lock");
            if reg.consults.contains_key(&record.id) {
                return;
            }
            reg.next_room = reg.next_room.wrapping_add(1);
            let c = Consult {
                id: record.id.clone(),
                priority: record.priority,
                residency: record.residency.clone(),
                region: self.config.regions.name.clone(),
                created_at: record.created_at.clone(),
                legs: Vec::new(),
                video_cap: VideoCap::for_level(level, record.priority),
                pool: None,
                room: reg.next_room,
                pool_revision: revision,
                origin: None,
                downstream: Vec::new(),
                trunks: Vec::new(),
                trunked: Vec::new(),
            };
            reg.consults.insert(c.id.clone(), c);
        }
        self.apply_caps();
        self.update_gauges();
        let mut e = AuditEvent::now(EventKind::ConsultAdopted, &self.config.regions.name);
        e.consult = Some(record.id.clone());
        e.detail = Some(format!(
            "generation={} from={}",
            record.generation,
            record.reconnect.as_ref().map_or("", |r| r.from.as_str())
        ));
        self.record(&e).await;
        tracing::info!(consult = %record.id, generation = record.generation, "consult taken from the pool");
    }

    /// Makes sure consult `id` is carried here: it is in the registry, or
    /// the pool placed it on this appliance (then it is taken now). A
    /// consult the pool placed elsewhere is a 409 naming where.
    async fn ensure_local(&self, id: &str) -> ApiResult<()> {
        if self
            .registry
            .lock()
            .expect("lock")
            .consults
            .contains_key(id)
        {
            return Ok(());
        }
        let Some(pool) = self.router() else {
            return Err(ApiError::not_found("consult"));
        };
        let (record, revision) = pool
            .record(id)
            .await
            .map_err(|e| cluster_unreachable(self, &e))?
            .ok_or_else(|| ApiError::not_found("consult"))?;
        match &record.appliance {
            Some(a) if a == pool.name() => {
                self.adopt(&record, revision).await;
                Ok(())
            }
            Some(a) => {
                let api = pool.api_of(a).await.ok().flatten().unwrap_or_default();
                Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "other_appliance",
                    format!("consult is carried by appliance {a} (API http://{api}); signal there"),
                ))
            }
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unplaced",
                record.reason,
            )),
        }
    }

    /// Removes consult `id` from this appliance (registry and media plane);
    /// the legs removed.
    fn remove_local(&self, id: &str) -> Option<(Consult, Vec<LegId>)> {
        let (consult, legs) = {
            let mut reg = self.registry.lock().expect("lock");
            let c = reg.consults.remove(id)?;
            let legs: Vec<LegId> = c.legs.clone();
            for l in &legs {
                reg.legs.remove(l);
            }
            (c, legs)
        };
        for l in &legs {
            if let Err(e) = self.media.remove_leg(*l) {
                tracing::warn!(leg = l, error = %e, "media plane did not remove a leg");
            }
        }
        self.update_gauges();
        self.consult_ended.notify_waiters();
        Some((consult, legs))
    }

    /// One pass of the pool's upkeep: re-places consults of appliances that
    /// left, then lets go of local consults the pool now has elsewhere (or
    /// no longer has). Does nothing while this box is out of the pool.
    pub async fn pool_upkeep(
        &self,
    ) -> Result<crate::pool::FailoverReport, crate::cluster::ClusterError> {
        let Some(pool) = self.router().cloned() else {
            return Ok(Default::default());
        };
        if !self.in_pool() {
            return Ok(Default::default());
        }
        let snap = pool.snapshot().await?;
        let report = pool.failover_pass(&snap).await?;
        for (id, from, to) in &report.moved {
            tracing::warn!(consult = %id, from = %from, to = %to, "consult re-placed: its appliance left the pool");
            let mut e = AuditEvent::now(EventKind::ConsultMoved, &self.config.regions.name);
            e.consult = Some(id.clone());
            e.detail = Some(format!("from={from} to={to}"));
            self.record(&e).await;
        }
        for (id, why) in &report.unplaced {
            tracing::error!(consult = %id, why = %why, "consult could not be re-placed");
        }
        // Only consults taken before the read are judged by it.
        let stale: Vec<(String, String)> = {
            let reg = self.registry.lock().expect("lock");
            // A downstream copy lives as long as its consult does.
            let ended_at_origin = reg
                .consults
                .values()
                .filter(|c| c.origin.is_some() && !snap.consults.iter().any(|(r, _)| r.id == c.id));
            let mut stale: Vec<(String, String)> = ended_at_origin
                .map(|c| (c.id.clone(), "ended at its origin".to_owned()))
                .collect();
            let moved = reg
                .consults
                .values()
                .filter(|c| c.pool_revision > 0 && c.pool_revision <= snap.revision)
                .filter_map(|c| {
                    let now = snap.consults.iter().find(|(r, _)| r.id == c.id);
                    match now.and_then(|(r, _)| r.appliance.as_deref()) {
                        Some(a) if a == pool.name() => None,
                        Some(a) => Some((c.id.clone(), format!("moved to {a} by the pool"))),
                        None if now.is_some() => {
                            Some((c.id.clone(), "unplaced by the pool".to_owned()))
                        }
                        None => Some((c.id.clone(), "ended on another appliance".to_owned())),
                    }
                });
            stale.extend(moved);
            stale
        };
        for (id, why) in stale {
            if let Some((_, legs)) = self.remove_local(&id) {
                tracing::warn!(consult = %id, legs = legs.len(), why = %why, "consult let go");
                let mut e = AuditEvent::now(EventKind::ConsultEnded, &self.config.regions.name);
                e.consult = Some(id.clone());
                e.detail = Some(why);
                self.record(&e).await;
            }
        }
        Ok(report)
    }

    /// Whether the pool sees this appliance (always, without a pool).
    pub fn in_pool(&self) -> bool {
        self.pool.get().is_none_or(|m| m.is_registered())
    }

    /// This appliance's record for the pool.
    pub fn pool_record(&self) -> crate::cluster::ApplianceRecord {
        let (level, load_percent) = {
            let l = self.ladder.lock().expect("lock");
            (l.level(), l.load_percent())
        };
        // A draining box takes no new consults: the router sees level 4.
        let level = if self.drain().admits_new_consults() {
            level
        } else {
            4
        };
        crate::cluster::ApplianceRecord {
            name: self.config.cluster.name.clone(),
            region: self.config.regions.name.clone(),
            api: self.config.http.listen.to_string(),
            media: self
                .config
                .media
                .advertised_addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
            egress_ceiling_bps: self.config.overload.egress_ceiling_bps,
            load_percent,
            overload_level: level,
        }
    }

    /// Recomputes every consult's cap and hands it to the media plane.
    fn apply_caps(&self) {
        let level = self.level();
        let mut reg = self.registry.lock().expect("lock");
        let Registry { consults, legs, .. } = &mut *reg;
        for c in consults.values_mut() {
            let video = VideoCap::for_level(level, c.priority);
            let layers = c
                .legs
                .iter()
                .filter_map(|l| legs.get(l))
                .flat_map(|l| l.negotiated.media.iter().map(|m| m.rids.len()))
                .max()
                .unwrap_or(1)
                .clamp(1, usize::from(u8::MAX)) as u8;
            c.video_cap = video;
            if let Err(e) = self.media.set_room_cap(c.room, RoomCap::new(video, layers)) {
                tracing::error!(consult = %c.id, error = %e, "setting a room cap failed");
            }
        }
    }

    /// Writes an audit event; a failure is logged and counted but does not
    /// fail the request: refusing care because the audit disk is full would
    /// break the product's first rule.
    async fn record(&self, event: &AuditEvent) {
        if let Err(e) = self.audit.record(event).await {
            tracing::error!(error = %e, "audit log write failed");
            self.metrics
                .registry
                .counter(
                    "switchboard_audit_failures_total",
                    "Audit events that could not be written",
                    &[],
                )
                .inc();
        }
    }

    fn is_admin(&self, headers: &HeaderMap) -> bool {
        token::bearer(auth_header(headers))
            .is_ok_and(|t| token::admin_token_matches(&self.admin_token, t))
    }

    fn require_admin(&self, headers: &HeaderMap) -> ApiResult<()> {
        let t = token::bearer(auth_header(headers))?;
        if token::admin_token_matches(&self.admin_token, t) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "admin token required",
            ))
        }
    }

    fn require_join(
        &self,
        headers: &HeaderMap,
        consult: &str,
        roles: &[Role],
    ) -> ApiResult<Claims> {
        let t = token::bearer(auth_header(headers))?;
        let claims = self.signer.verify(t, unix_now())?;
        claims.authorize(consult, roles)?;
        Ok(claims)
    }

    fn update_gauges(&self) {
        let reg = self.registry.lock().expect("lock");
        self.metrics.consults_open.set(reg.consults.len() as f64);
        let publish = reg
            .legs
            .values()
            .filter(|l| l.direction == LegDirection::Publish)
            .count();
        self.metrics.legs_publish.set(publish as f64);
        self.metrics
            .legs_subscribe
            .set((reg.legs.len() - publish) as f64);
    }
}

fn auth_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.http.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/consults", post(create_consult).get(list_consults))
        .route("/v1/consults/{id}", get(get_consult).delete(end_consult))
        .route("/v1/consults/{id}/tokens", post(issue_token))
        .route("/v1/consults/{id}/whip", post(whip))
        .route("/v1/consults/{id}/whep", post(whep))
        .route("/v1/consults/{id}/cascade", post(cascade_consult))
        .route("/v1/consults/{id}/trunk", post(accept_trunk))
        .route("/v1/consults/{id}/keyframe", post(request_keyframe))
        .route(
            "/v1/legs/{id}",
            axum::routing::delete(delete_leg).patch(patch_leg),
        )
        .route("/v1/admin/overload", get(get_overload).put(put_overload))
        .route("/v1/admin/stats", get(stats))
        .route("/v1/admin/pool", get(pool_report))
        .merge(crate::web::router())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    state
        .metrics
        .http_request(&route, response.status().as_u16());
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let in_pool = state.in_pool();
    let ready = state.drain().ready() && in_pool;
    let body = Json(serde_json::json!({
        "ready": ready,
        "in_pool": in_pool,
        "overload_level": state.level(),
    }));
    if ready {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let m = state.media.stats();
    let r = &state.metrics.registry;
    r.gauge(
        "switchboard_media_legs",
        "Legs known to the media plane",
        &[],
    )
    .set(m.legs as f64);
    r.gauge(
        "switchboard_media_active_legs",
        "Legs with keys and a nominated 5-tuple",
        &[],
    )
    .set(m.active_legs as f64);
    r.gauge("switchboard_media_egress_bps", "Media egress, bit/s", &[])
        .set(m.egress_bps as f64);
    r.gauge("switchboard_media_ingress_bps", "Media ingress, bit/s", &[])
        .set(m.ingress_bps as f64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        r.render(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateConsult {
    priority: Priority,
    residency: String,
    /// Where the parties are: location names of the region map or client
    /// addresses; the pool's router ranks regions by the latency between
    /// them.
    #[serde(default)]
    parties: Vec<String>,
}

/// A 503 for an etcd that did not answer.
fn cluster_unreachable(state: &AppState, e: &crate::cluster::ClusterError) -> ApiError {
    tracing::warn!(error = %e, "pool store unreachable");
    let mut err = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_unreachable",
        format!("the pool's etcd did not answer: {e}"),
    );
    err.retry_after = Some(state.config.cluster.lease_ttl_secs);
    err
}

/// `POST /v1/consults` in a pool: the router places the consult on any
/// live appliance; this one takes it at once if it is the one chosen.
async fn create_in_pool(
    state: &Arc<AppState>,
    pool: &crate::pool::Pool,
    peer: SocketAddr,
    req: CreateConsult,
) -> ApiResult<Response> {
    use crate::placement::{ConsultRequest, Party, Refusal};
    use crate::pool::{ConsultRecord, PoolError};
    if req.parties.len() > 8 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "at most 8 parties",
        ));
    }
    let parties = req
        .parties
        .iter()
        .map(|p| match p.parse() {
            Ok(addr) => Party::Address(addr),
            Err(_) => Party::Location(p.clone()),
        })
        .collect();
    let request = ConsultRequest {
        residency: req.residency.clone(),
        parties,
        egress_bps: state.config.cluster.consult_egress_bps,
    };
    let record = ConsultRecord {
        id: random_id(),
        priority: req.priority,
        residency: req.residency.clone(),
        created_at: crate::audit::rfc3339_utc(SystemTime::now()),
        appliance: None,
        region: None,
        generation: 0,
        reason: String::new(),
        reconnect: None,
    };
    let refused = |code: &'static str, status: StatusCode, reason: String| async move {
        let mut e = AuditEvent::now(EventKind::ConsultRefused, &state.config.regions.name);
        e.remote = Some(peer.to_string());
        e.detail = Some(format!("residency={} {code}", req.residency));
        state.record(&e).await;
        ApiError::new(status, code, reason)
    };
    let placed = match pool.place_new(record, &request).await {
        Ok(p) => p,
        Err(PoolError::Refused(r @ Refusal::NoRoom { .. })) => {
            let mut err = refused("no_room", StatusCode::SERVICE_UNAVAILABLE, r.to_string()).await;
            err.retry_after = Some(state.config.overload.retry_after_secs);
            return Err(err);
        }
        Err(PoolError::Refused(r)) => {
            return Err(refused("residency", StatusCode::UNPROCESSABLE_ENTITY, r.to_string()).await)
        }
        Err(PoolError::Cluster(e)) => return Err(cluster_unreachable(state, &e)),
        Err(e @ PoolError::Contended(_)) => {
            let mut err =
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "contended", e.to_string());
            err.retry_after = Some(1);
            return Err(err);
        }
    };
    if placed.record.appliance.as_deref() == Some(pool.name()) {
        state.adopt(&placed.record, placed.revision).await;
    }
    let mut view = PoolView::of(&placed.record, Some(placed.api.clone()));
    view.placement = Some(placed.placement.clone());
    let level = placed.placement.level;
    let consult = Consult {
        id: placed.record.id.clone(),
        priority: placed.record.priority,
        residency: placed.record.residency.clone(),
        region: placed.placement.region.clone(),
        created_at: placed.record.created_at.clone(),
        legs: Vec::new(),
        video_cap: VideoCap::for_level(level, placed.record.priority),
        pool: Some(view),
        room: 0,
        pool_revision: placed.revision,
        origin: None,
        downstream: Vec::new(),
        trunks: Vec::new(),
        trunked: Vec::new(),
    };
    let mut e = AuditEvent::now(EventKind::ConsultCreated, &state.config.regions.name);
    e.consult = Some(consult.id.clone());
    e.remote = Some(peer.to_string());
    e.detail = Some(format!(
        "priority={} residency={} appliance={} region={}",
        consult.priority.as_str(),
        consult.residency,
        placed.placement.appliance,
        placed.placement.region
    ));
    state.record(&e).await;
    tracing::info!(consult = %consult.id, appliance = %placed.placement.appliance, "consult placed in the pool");
    Ok((StatusCode::CREATED, Json(consult)).into_response())
}

async fn create_consult(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    state.require_admin(&headers)?;
    let req: CreateConsult = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let residency_ok = !req.residency.is_empty()
        && req.residency.len() <= 32
        && req
            .residency
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !residency_ok {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "residency must be 1-32 letters, digits, '-' or '_'",
        ));
    }
    let router = state.router().cloned();
    if router.is_none() && !req.parties.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "parties are used by a pool's router only (cluster.etcd is not set)",
        ));
    }
    // The region map decides which jurisdictions this box may carry (in a
    // pool, the router decides which box).
    if let (None, Err(refusal)) = (
        &router,
        crate::placement::admit_locally(&state.config.regions, &req.residency),
    ) {
        let mut e = AuditEvent::now(EventKind::ConsultRefused, &state.config.regions.name);
        e.remote = Some(peer.to_string());
        e.detail = Some(format!("residency={}", req.residency));
        state.record(&e).await;
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "residency",
            refusal.to_string(),
        ));
    }
    if !state.in_pool() {
        let mut e = AuditEvent::now(EventKind::ConsultRefused, &state.config.regions.name);
        e.remote = Some(peer.to_string());
        e.detail = Some("not registered in the pool".into());
        state.record(&e).await;
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unreachable",
            "this appliance cannot reach the pool's etcd and admits no new consults; existing consults continue",
        );
        err.retry_after = Some(state.config.cluster.lease_ttl_secs);
        return Err(err);
    }
    // Each box's level and drain state reach the router through its
    // registration.
    if let Some(pool) = router {
        return create_in_pool(&state, &pool, peer, req).await;
    }
    let level = state.level();
    let draining = !state.drain().admits_new_consults();
    if draining || !admits_new_consults(level) {
        let mut e = AuditEvent::now(EventKind::ConsultRefused, &state.config.regions.name);
        e.remote = Some(peer.to_string());
        e.detail = Some(if draining {
            "draining".into()
        } else {
            format!("overload level {level}")
        });
        state.record(&e).await;
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            if draining { "draining" } else { "overloaded" },
            "this appliance admits no new consults now; existing consults continue",
        );
        err.retry_after = Some(state.config.overload.retry_after_secs);
        return Err(err);
    }
    let consult = {
        let mut reg = state.registry.lock().expect("lock");
        reg.next_room = reg.next_room.wrapping_add(1);
        let c = Consult {
            id: random_id(),
            priority: req.priority,
            residency: req.residency,
            region: state.config.regions.name.clone(),
            created_at: crate::audit::rfc3339_utc(SystemTime::now()),
            legs: Vec::new(),
            video_cap: VideoCap::for_level(level, req.priority),
            pool: None,
            room: reg.next_room,
            pool_revision: 0,
            origin: None,
            downstream: Vec::new(),
            trunks: Vec::new(),
            trunked: Vec::new(),
        };
        reg.consults.insert(c.id.clone(), c.clone());
        c
    };
    state.apply_caps();
    state.update_gauges();
    let mut e = AuditEvent::now(EventKind::ConsultCreated, &state.config.regions.name);
    e.consult = Some(consult.id.clone());
    e.remote = Some(peer.to_string());
    e.detail = Some(format!(
        "priority={} residency={}",
        consult.priority.as_str(),
        consult.residency
    ));
    state.record(&e).await;
    tracing::info!(consult = %consult.id, priority = consult.priority.as_str(), "consult created");
    Ok((StatusCode::CREATED, Json(consult)).into_response())
}

async fn list_consults(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<Consult>>> {
    state.require_admin(&headers)?;
    let reg = state.registry.lock().expect("lock");
    Ok(Json(reg.consults.values().cloned().collect()))
}

async fn get_consult(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Consult>> {
    if !state.is_admin(&headers) {
        state.require_join(
            &headers,
            &id,
            &[Role::Patient, Role::Clinician, Role::Observer],
        )?;
    }
    let local = state
        .registry
        .lock()
        .expect("lock")
        .consults
        .get(&id)
        .cloned();
    let Some(pool) = state.router().cloned() else {
        return local
            .map(Json)
            .ok_or_else(|| ApiError::not_found("consult"));
    };
    // In a pool the store says where the consult runs now; this box's copy
    // may be one it is about to let go.
    let (record, _) = match pool.record(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(ApiError::not_found("consult")),
        Err(e) => {
            return local
                .map(Json)
                .ok_or_else(|| cluster_unreachable(&state, &e))
        }
    };
    let api = match &record.appliance {
        Some(a) => pool.api_of(a).await.ok().flatten(),
        None => None,
    };
    let view = PoolView::of(&record, api);
    let consult = match local {
        Some(mut c) if record.appliance.as_deref() == Some(pool.name()) => {
            c.pool = Some(view);
            c
        }
        _ => Consult {
            id: record.id.clone(),
            priority: record.priority,
            residency: record.residency.clone(),
            region: record.region.clone().unwrap_or_default(),
            created_at: record.created_at.clone(),
            legs: Vec::new(),
            video_cap: VideoCap::for_level(0, record.priority),
            pool: Some(view),
            room: 0,
            pool_revision: 0,
            origin: None,
            downstream: Vec::new(),
            trunks: Vec::new(),
            trunked: Vec::new(),
        },
    };
    Ok(Json(consult))
}

async fn end_consult(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let who = if state.is_admin(&headers) {
        None
    } else {
        Some(state.require_join(&headers, &id, &[Role::Clinician])?)
    };
    // In a pool the record goes first: the appliance carrying the consult
    // lets go of it at its next upkeep if that is not this one.
    let in_store = match state.router() {
        Some(pool) => pool
            .remove(&id)
            .await
            .map_err(|e| cluster_unreachable(&state, &e))?,
        None => false,
    };
    let (consult_id, legs) = match state.remove_local(&id) {
        Some((c, legs)) => (c.id, legs),
        None if in_store => (id.clone(), Vec::new()),
        None => return Err(ApiError::not_found("consult")),
    };
    let mut e = AuditEvent::now(EventKind::ConsultEnded, &state.config.regions.name);
    e.consult = Some(consult_id.clone());
    e.remote = Some(peer.to_string());
    if let Some(c) = who {
        e.participant = Some(c.participant);
        e.role = Some(c.role);
    }
    state.record(&e).await;
    tracing::info!(consult = %consult_id, legs = legs.len(), "consult ended");
    Ok(Json(
        serde_json::json!({"id": consult_id, "ended": true, "legs_removed": legs.len()}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueToken {
    participant: String,
    role: Role,
}

async fn issue_token(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    state.require_admin(&headers)?;
    let req: IssueToken = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    if !valid_participant(&req.participant) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "participant must be 1-64 letters, digits, '-', '_' or '.'",
        ));
    }
    let local = state
        .registry
        .lock()
        .expect("lock")
        .consults
        .contains_key(&id);
    // A pool shares its signing key: any appliance issues tokens for any
    // consult of the pool.
    let known = match (local, state.router()) {
        (true, _) => true,
        (false, Some(pool)) => pool
            .record(&id)
            .await
            .map_err(|e| cluster_unreachable(&state, &e))?
            .is_some(),
        (false, None) => false,
    };
    if !known {
        return Err(ApiError::not_found("consult"));
    }
    let lifetime = state.live.lock().expect("lock").token_lifetime_secs;
    let claims = Claims::new(&id, &req.participant, req.role, unix_now(), lifetime);
    let token = state.signer.issue(&claims);
    let mut e = AuditEvent::now(EventKind::TokenIssued, &state.config.regions.name);
    e.consult = Some(id);
    e.participant = Some(claims.participant.clone());
    e.role = Some(claims.role);
    e.remote = Some(peer.to_string());
    state.record(&e).await;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"token": token, "expires_at": claims.exp})),
    )
        .into_response())
}

async fn whip(
    state: State<Arc<AppState>>,
    peer: ConnectInfo<SocketAddr>,
    id: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    signal(state, peer, id, headers, body, LegDirection::Publish).await
}

async fn whep(
    state: State<Arc<AppState>>,
    peer: ConnectInfo<SocketAddr>,
    id: Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    signal(state, peer, id, headers, body, LegDirection::Subscribe).await
}

async fn signal(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
    direction: LegDirection,
) -> ApiResult<Response> {
    let roles: &[Role] = match direction {
        LegDirection::Publish => &[Role::Patient, Role::Clinician],
        LegDirection::Subscribe => &[Role::Patient, Role::Clinician, Role::Observer],
    };
    let claims = state.require_join(&headers, &id, roles)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the offer must be sent as application/sdp",
        ));
    }
    state.ensure_local(&id).await?;
    let (room, origin) = state
        .registry
        .lock()
        .expect("lock")
        .consults
        .get(&id)
        .map(|c| (c.room, c.origin.clone()))
        .ok_or_else(|| ApiError::not_found("consult"))?;
    if let (Some(origin), LegDirection::Publish) = (origin, direction) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "downstream_copy",
            format!("this appliance carries a cascaded copy of the consult; publish at its origin, {origin}"),
        ));
    }
    let offer = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_sdp", "the offer is not UTF-8"))?;
    // The room's worker owns one port; every leg of the room uses it.
    let port = state
        .media
        .media_port(room)
        .unwrap_or_else(|| state.config.media.port_min + (room % u32::from(state.workers)) as u16);
    let local_addr = SocketAddr::new(state.config.media.advertised_addresses[0], port);
    let local = LocalDescription {
        ice: IceCredentials {
            ufrag: random_ice_chars(8),
            pwd: random_ice_chars(24),
        },
        fingerprint_sha256: state.identity.fingerprint_sdp(),
        candidates: state
            .config
            .media
            .advertised_addresses
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect(),
        session_id: random_u64() >> 1,
        cname: random_ice_chars(16).replace(['+', '/'], "x"),
    };
    let mut next_ssrc = || loop {
        let v = random_u64() as u32;
        if v != 0 {
            break v;
        }
    };
    let answer = sdp::answer(offer, direction, &local, &mut next_ssrc).map_err(|e| {
        state
            .metrics
            .registry
            .counter("switchboard_sdp_rejected_total", "SDP offers rejected", &[])
            .inc();
        ApiError::new(StatusCode::BAD_REQUEST, "bad_sdp", e.to_string())
    })?;
    let (leg_id, publishers, subscribers) = {
        let mut reg = state.registry.lock().expect("lock");
        if !reg.consults.contains_key(&id) {
            return Err(ApiError::not_found("consult"));
        }
        reg.next_leg += 1;
        let leg_id = reg.next_leg;
        let others: Vec<(LegId, &Leg)> = reg
            .consults
            .get(&id)
            .map(|c| {
                c.legs
                    .iter()
                    .filter_map(|l| reg.legs.get(l).map(|x| (*l, x)))
                    .collect()
            })
            .unwrap_or_default();
        // Nobody receives their own media back.
        let publishers: Vec<LegId> = others
            .iter()
            .filter(|(_, l)| {
                l.direction == LegDirection::Publish && l.participant != claims.participant
            })
            .map(|(i, _)| *i)
            .collect();
        let subscribers: Vec<LegId> = others
            .iter()
            .filter(|(_, l)| {
                l.direction == LegDirection::Subscribe && l.participant != claims.participant
            })
            .map(|(i, _)| *i)
            .collect();
        reg.legs.insert(
            leg_id,
            Leg {
                consult: id.clone(),
                participant: claims.participant.clone(),
                role: claims.role,
                direction,
                negotiated: answer.leg.clone(),
            },
        );
        if let Some(c) = reg.consults.get_mut(&id) {
            c.legs.push(leg_id);
        }
        (leg_id, publishers, subscribers)
    };
    let setup = LegSetup {
        leg: leg_id,
        room,
        local: local_addr,
        negotiated: answer.leg.clone(),
    };
    if let Err(e) = state.media.add_leg(setup) {
        let mut reg = state.registry.lock().expect("lock");
        reg.legs.remove(&leg_id);
        if let Some(c) = reg.consults.get_mut(&id) {
            c.legs.retain(|l| *l != leg_id);
        }
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "media_unavailable",
            e.to_string(),
        ));
    }
    let pairs: Vec<(LegId, LegId)> = match direction {
        LegDirection::Publish => subscribers.iter().map(|s| (*s, leg_id)).collect(),
        LegDirection::Subscribe => publishers.iter().map(|p| (leg_id, *p)).collect(),
    };
    for (s, p) in pairs {
        if let Err(e) = state.media.subscribe(s, p) {
            tracing::warn!(subscriber = s, publisher = p, error = %e, "subscribe failed");
        }
    }
    state.apply_caps();
    state.update_gauges();
    let mut e = AuditEvent::now(
        match direction {
            LegDirection::Publish => EventKind::LegPublish,
            LegDirection::Subscribe => EventKind::LegSubscribe,
        },
        &state.config.regions.name,
    );
    e.consult = Some(id.clone());
    e.participant = Some(claims.participant.clone());
    e.role = Some(claims.role);
    e.leg = Some(leg_id.to_string());
    e.remote = Some(peer.to_string());
    state.record(&e).await;
    tracing::info!(consult = %id, leg = leg_id, ?direction, "leg signaled");
    let location = format!("/v1/legs/{leg_id}");
    let etag = format!("\"{leg_id}-{}\"", local.ice.ufrag);
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
            (header::LOCATION, location),
            (header::ETAG, etag),
        ],
        answer.sdp,
    )
        .into_response())
}

async fn delete_leg(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<LegId>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let admin = state.is_admin(&headers);
    let t = if admin {
        None
    } else {
        Some(token::bearer(auth_header(&headers)).map(str::to_owned)?)
    };
    let leg = {
        let reg = state.registry.lock().expect("lock");
        reg.legs.get(&id).cloned()
    };
    let claims = match t {
        Some(t) => {
            let claims = state.signer.verify(&t, unix_now())?;
            let Some(leg) = &leg else {
                return Err(ApiError::not_found("leg"));
            };
            claims.authorize(&leg.consult, &[leg.role])?;
            if claims.participant != leg.participant {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "the leg belongs to another participant",
                ));
            }
            Some(claims)
        }
        None => None,
    };
    let leg = leg.ok_or_else(|| ApiError::not_found("leg"))?;
    {
        let mut reg = state.registry.lock().expect("lock");
        reg.legs.remove(&id);
        if let Some(c) = reg.consults.get_mut(&leg.consult) {
            c.legs.retain(|l| *l != id);
        }
    }
    if let Err(e) = state.media.remove_leg(id) {
        tracing::warn!(leg = id, error = %e, "media plane did not remove a leg");
    }
    state.update_gauges();
    let mut e = AuditEvent::now(EventKind::LegEnded, &state.config.regions.name);
    e.consult = Some(leg.consult.clone());
    e.participant = Some(claims.map_or(leg.participant.clone(), |c| c.participant));
    e.role = Some(leg.role);
    e.leg = Some(id.to_string());
    e.remote = Some(peer.to_string());
    state.record(&e).await;
    Ok(StatusCode::OK)
}

async fn patch_leg() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "DELETE")],
        Json(serde_json::json!({
            "error": "method_not_allowed",
            "reason": "ICE-lite endpoint: trickle ICE and ICE restart are not supported; \
                       start a new session to restart"
        })),
    )
        .into_response()
}

#[derive(Debug, Serialize)]
struct OverloadView {
    level: u8,
    measured_level: u8,
    forced: Option<u8>,
    load_percent: f64,
    admits_new_consults: bool,
    consults: BTreeMap<String, VideoCap>,
}

fn overload_view(state: &AppState) -> OverloadView {
    let (level, measured_level, forced, load_percent) = {
        let l = state.ladder.lock().expect("lock");
        (l.level(), l.measured_level(), l.forced(), l.load_percent())
    };
    let consults = state
        .registry
        .lock()
        .expect("lock")
        .consults
        .values()
        .map(|c| (c.id.clone(), c.video_cap))
        .collect();
    OverloadView {
        level,
        measured_level,
        forced,
        load_percent,
        admits_new_consults: admits_new_consults(level),
        consults,
    }
}

async fn get_overload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Json<OverloadView>> {
    state.require_admin(&headers)?;
    Ok(Json(overload_view(&state)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceLevel {
    /// 0..=4, or null to return to the measured level.
    level: Option<u8>,
}

async fn put_overload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<OverloadView>> {
    state.require_admin(&headers)?;
    let req: ForceLevel = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let change = state
        .ladder
        .lock()
        .expect("lock")
        .force(req.level)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    if let Some(c) = change {
        state.level_changed(c).await;
    }
    Ok(Json(overload_view(&state)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CascadeTo {
    appliance: String,
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// `POST /v1/consults/{id}/cascade {"appliance": NAME}` at the origin:
/// opens a trunk to appliance NAME of the pool, which then serves the
/// consult's subscribers there from one copy of each publisher's stream.
async fn cascade_consult(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    state.require_admin(&headers)?;
    let req: CascadeTo = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    cascade_to(&state, &id, &req.appliance, &peer.to_string())
        .await
        .map(Json)
}

/// Opens (or refreshes, with the publishers present now) the trunk of
/// consult `id` to appliance `appliance`; `by` is who asked, for the audit
/// log.
async fn cascade_to(
    state: &Arc<AppState>,
    id: &str,
    appliance: &str,
    by: &str,
) -> ApiResult<serde_json::Value> {
    use crate::cascade::{profile_name, TrunkAccepted, TrunkPublisher, TrunkRequest};
    let (state, id) = (state.clone(), id.to_owned());
    let req = CascadeTo {
        appliance: appliance.to_owned(),
    };
    let Some(pool) = state.router().cloned() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_in_a_pool",
            "cascading spans the appliances of a pool; cluster.etcd is not set",
        ));
    };
    if req.appliance == pool.name() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a consult cannot be cascaded to the appliance carrying it",
        ));
    }
    state.ensure_local(&id).await?;
    let conflict = |reason: String| ApiError::new(StatusCode::CONFLICT, "cannot_cascade", reason);
    let snap = pool
        .snapshot()
        .await
        .map_err(|e| cluster_unreachable(&state, &e))?;
    let target = snap.appliance(&req.appliance).cloned().ok_or_else(|| {
        conflict(format!(
            "appliance {} is not live in the pool",
            req.appliance
        ))
    })?;
    let media_ip: std::net::IpAddr = target
        .media
        .first()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| {
            conflict(format!(
                "appliance {} advertises no media address",
                target.name
            ))
        })?;
    let (room, priority, residency, publisher_legs) = {
        let reg = state.registry.lock().expect("lock");
        let c = reg
            .consults
            .get(&id)
            .ok_or_else(|| ApiError::not_found("consult"))?;
        if let Some(origin) = &c.origin {
            return Err(conflict(format!(
                "this is a downstream copy; cascade at the origin, {origin}"
            )));
        }
        let legs: Vec<(LegId, Leg)> = c
            .legs
            .iter()
            .filter_map(|l| reg.legs.get(l).map(|x| (*l, x.clone())))
            .filter(|(_, l)| l.direction == LegDirection::Publish)
            .collect();
        (c.room, c.priority, c.residency.clone(), legs)
    };
    let port = state
        .media
        .media_port(room)
        .unwrap_or_else(|| state.config.media.port_min + (room % u32::from(state.workers)) as u16);
    let probe = SocketAddr::new(media_ip, port);
    let route =
        tokio::task::spawn_blocking(move || crate::cascade::resolve(probe, Duration::from_secs(1)))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "no_trunk_route", e.to_string()))?;
    let source = SocketAddr::new(route.local_ip.into(), port);
    let mut publishers = Vec::new();
    let mut trunked_legs = Vec::new();
    for (leg, l) in publisher_legs {
        let Some(t) = state.media.leg_transport(leg) else {
            continue;
        };
        trunked_legs.push(leg);
        publishers.push(TrunkPublisher {
            participant: l.participant.clone(),
            role: l.role,
            negotiated: l.negotiated.clone(),
            profile: profile_name(t.keys.profile).to_owned(),
            key: b64(t.keys.remote.key()),
            salt: b64(t.keys.remote.salt()),
            source: SocketAddr::new(source.ip(), crate::cascade::trunk_source_port(leg)),
        });
    }
    if publishers.is_empty() {
        return Err(conflict(
            "no publisher of the consult carries media yet".into(),
        ));
    }
    let request = TrunkRequest {
        origin: pool.name().to_owned(),
        priority,
        residency,
        source,
        publishers,
    };
    let downstream_error =
        |reason: String| ApiError::new(StatusCode::BAD_GATEWAY, "downstream_refused", reason);
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/consults/{id}/trunk", target.api))
        .bearer_auth(&state.admin_token)
        .timeout(Duration::from_secs(5))
        .json(&request)
        .send()
        .await
        .map_err(|e| downstream_error(format!("{}: {e}", target.name)))?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(downstream_error(format!(
            "{}: {status} {text}",
            target.name
        )));
    }
    let accepted: TrunkAccepted = response
        .json()
        .await
        .map_err(|e| downstream_error(format!("{}: {e}", target.name)))?;
    let trunk = dataplane::xdp::RelayTarget {
        ifindex: route.ifindex,
        local: source,
        remote: accepted.media,
        src_mac: route.src_mac,
        next_hop_mac: route.next_hop_mac,
    };
    let targets = {
        let mut reg = state.registry.lock().expect("lock");
        let c = reg
            .consults
            .get_mut(&id)
            .ok_or_else(|| ApiError::not_found("consult"))?;
        c.trunks.retain(|t| t.remote != trunk.remote);
        c.trunks.push(trunk);
        if !c.downstream.contains(&target.name) {
            c.downstream.push(target.name.clone());
        }
        c.trunks.clone()
    };
    for leg in &trunked_legs {
        // Each publisher's copies leave from a port of its own, so the
        // downstream worker tells them apart by address.
        let from = SocketAddr::new(source.ip(), crate::cascade::trunk_source_port(*leg));
        let targets = targets
            .iter()
            .map(|t| dataplane::xdp::RelayTarget { local: from, ..*t })
            .collect();
        state.media.set_trunks(*leg, targets).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "media_unavailable",
                e.to_string(),
            )
        })?;
        // The downstream box starts its subscribers at a key frame.
        if let Err(e) = state.media.request_keyframe(*leg) {
            tracing::warn!(leg, error = %e, "key frame request failed");
        }
    }
    if let Some(c) = state.registry.lock().expect("lock").consults.get_mut(&id) {
        for leg in &trunked_legs {
            if !c.trunked.contains(leg) {
                c.trunked.push(*leg);
            }
        }
    }
    let mut e = AuditEvent::now(EventKind::ConsultCascaded, &state.config.regions.name);
    e.consult = Some(id.clone());
    e.remote = Some(by.to_owned());
    e.detail = Some(format!(
        "to={} trunk={source}->{} publishers={}",
        target.name,
        accepted.media,
        trunked_legs.len()
    ));
    state.record(&e).await;
    tracing::info!(consult = %id, to = %target.name, destination = %accepted.media, via = %route.interface, "consult cascaded");
    Ok(serde_json::json!({
        "appliance": target.name,
        "source": source,
        "destination": accepted.media,
        "interface": route.interface,
        "publishers": trunked_legs.len(),
    }))
}

/// Every quarter second, for cascaded consults: at an origin, trunks the
/// publishers that started sending since the cascade was made; at a
/// downstream copy, passes the key-frame requests its worker made for the
/// trunk's publishers (a viewer joined, or lost a key frame) on to the
/// origin, whose publishers the worker cannot reach itself.
pub async fn cascade_upkeep(state: Arc<AppState>) {
    let mut seen: BTreeMap<LegId, u64> = BTreeMap::new();
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (origins, copies) = {
            let reg = state.registry.lock().expect("lock");
            let mut origins = Vec::new();
            let mut copies = Vec::new();
            for c in reg.consults.values() {
                let publishers = c.legs.iter().filter(|l| {
                    reg.legs
                        .get(l)
                        .is_some_and(|x| x.direction == LegDirection::Publish)
                });
                if let Some(origin) = &c.origin {
                    copies.push((
                        c.id.clone(),
                        origin.clone(),
                        publishers.copied().collect::<Vec<_>>(),
                    ));
                } else if !c.downstream.is_empty() {
                    let untrunked: Vec<LegId> = publishers
                        .filter(|l| !c.trunked.contains(l))
                        .copied()
                        .collect();
                    if !untrunked.is_empty() {
                        origins.push((c.id.clone(), c.downstream.clone(), untrunked));
                    }
                }
            }
            (origins, copies)
        };
        for (id, downstream, untrunked) in origins {
            // Only once a new publisher's keys exist (ICE and DTLS done).
            if !untrunked
                .iter()
                .any(|l| state.media.leg_transport(*l).is_some())
            {
                continue;
            }
            for appliance in downstream {
                // Publishers without keys yet are left for a later pass.
                if let Err(e) = cascade_to(&state, &id, &appliance, "cascade upkeep").await {
                    tracing::warn!(consult = %id, appliance, reason = %e.reason, "trunk not refreshed");
                }
            }
        }
        let live: Vec<LegId> = copies
            .iter()
            .flat_map(|(_, _, legs)| legs.iter().copied())
            .collect();
        seen.retain(|leg, _| live.contains(leg));
        for (id, origin, legs) in copies {
            let mut wanted = false;
            for leg in legs {
                let Some(now) = state.media.keyframe_requests_sent(leg) else {
                    continue;
                };
                let before = seen.insert(leg, now).unwrap_or(0);
                wanted |= now > before;
            }
            if !wanted {
                continue;
            }
            let Some(pool) = state.router().cloned() else {
                continue;
            };
            let Ok(Some(api)) = pool.api_of(&origin).await else {
                tracing::warn!(consult = %id, origin, "origin not live: key frame request dropped");
                continue;
            };
            let sent = client
                .post(format!("http://{api}/v1/consults/{id}/keyframe"))
                .bearer_auth(&state.admin_token)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if let Err(e) = sent {
                tracing::warn!(consult = %id, origin, error = %e, "key frame request to the origin failed");
            }
        }
    }
}

/// `POST /v1/consults/{id}/keyframe` (admin) at the origin of a cascade:
/// asks every publisher of the consult for a key frame, for subscribers
/// joining on a downstream appliance, which the origin's worker does not
/// see.
async fn request_keyframe(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    state.require_admin(&headers)?;
    let publishers: Vec<LegId> = {
        let reg = state.registry.lock().expect("lock");
        let c = reg
            .consults
            .get(&id)
            .ok_or_else(|| ApiError::not_found("consult"))?;
        c.legs
            .iter()
            .filter(|l| {
                reg.legs
                    .get(l)
                    .is_some_and(|x| x.direction == LegDirection::Publish)
            })
            .copied()
            .collect()
    };
    for leg in &publishers {
        if let Err(e) = state.media.request_keyframe(*leg) {
            tracing::warn!(leg, error = %e, "key frame request failed");
        }
    }
    Ok(Json(serde_json::json!({"publishers": publishers.len()})))
}

/// `POST /v1/consults/{id}/trunk` at a downstream appliance (from the
/// origin, with the pool's admin token): takes the trunk's publishers as
/// legs keyed with their SRTP keys; the consult's subscribers here get
/// them as from any publisher.
async fn accept_trunk(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    use crate::cascade::{profile_from_name, TrunkAccepted, TrunkRequest};
    state.require_admin(&headers)?;
    let req: TrunkRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let bad = |reason: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", reason);
    // Check every key before anything is created.
    let mut keyed = Vec::new();
    for p in &req.publishers {
        let profile = profile_from_name(&p.profile)
            .ok_or_else(|| bad(format!("unknown SRTP profile {:?}", p.profile)))?;
        let (Some(key), Some(salt)) = (unb64(&p.key), unb64(&p.salt)) else {
            return Err(bad("key and salt must be base64".into()));
        };
        let remote = dataplane::srtp::MasterKey::new(&key, &salt)
            .map_err(|e| bad(format!("publisher {}: {e}", p.participant)))?;
        // What this box sends on the trunk (its feedback) gets a key of
        // its own.
        let mut fresh = vec![0u8; key.len() + salt.len()];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut fresh)
            .expect("system RNG");
        let local = dataplane::srtp::MasterKey::new(&fresh[..key.len()], &fresh[key.len()..])
            .map_err(|e| bad(e.to_string()))?;
        keyed.push((
            p.clone(),
            crate::dtls::SrtpKeys {
                profile,
                local,
                remote,
            },
        ));
    }
    let level = state.level();
    let (room, new_legs, subscribers) = {
        let mut reg = state.registry.lock().expect("lock");
        match reg.consults.get(&id) {
            Some(c) if c.origin.as_deref() != Some(req.origin.as_str()) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "not_downstream",
                    format!(
                        "consult {id} is carried here, not downstream of {}",
                        req.origin
                    ),
                ))
            }
            Some(_) => {}
            None => {
                reg.next_room = reg.next_room.wrapping_add(1);
                let c = Consult {
                    id: id.clone(),
                    priority: req.priority,
                    residency: req.residency.clone(),
                    region: state.config.regions.name.clone(),
                    created_at: crate::audit::rfc3339_utc(SystemTime::now()),
                    legs: Vec::new(),
                    video_cap: VideoCap::for_level(level, req.priority),
                    pool: None,
                    origin: Some(req.origin.clone()),
                    downstream: Vec::new(),
                    trunks: Vec::new(),
                    trunked: Vec::new(),
                    room: reg.next_room,
                    pool_revision: 0,
                };
                reg.consults.insert(id.clone(), c);
            }
        }
        let existing: Vec<(LegId, Leg)> = reg.consults[&id]
            .legs
            .iter()
            .filter_map(|l| reg.legs.get(l).map(|x| (*l, x.clone())))
            .collect();
        let subscribers: Vec<LegId> = existing
            .iter()
            .filter(|(_, l)| l.direction == LegDirection::Subscribe)
            .map(|(i, _)| *i)
            .collect();
        let mut new_legs = Vec::new();
        for (p, keys) in keyed {
            // A publisher already trunked here keeps its leg.
            let known = existing.iter().any(|(_, l)| {
                l.direction == LegDirection::Publish && l.participant == p.participant
            });
            if known {
                continue;
            }
            reg.next_leg += 1;
            let leg = reg.next_leg;
            reg.legs.insert(
                leg,
                Leg {
                    consult: id.clone(),
                    participant: p.participant.clone(),
                    role: p.role,
                    direction: LegDirection::Publish,
                    negotiated: p.negotiated.clone(),
                },
            );
            if let Some(c) = reg.consults.get_mut(&id) {
                c.legs.push(leg);
            }
            new_legs.push((leg, p, keys));
        }
        (reg.consults[&id].room, new_legs, subscribers)
    };
    let port = state
        .media
        .media_port(room)
        .unwrap_or_else(|| state.config.media.port_min + (room % u32::from(state.workers)) as u16);
    let media = SocketAddr::new(state.config.media.advertised_addresses[0], port);
    let opened = new_legs.len();
    for (leg, p, keys) in new_legs {
        let setup = LegSetup {
            leg,
            room,
            local: media,
            negotiated: p.negotiated,
        };
        let transport = crate::media::LegTransport {
            remote: p.source,
            keys,
        };
        if let Err(e) = state.media.add_keyed_leg(setup, transport) {
            let mut reg = state.registry.lock().expect("lock");
            reg.legs.remove(&leg);
            if let Some(c) = reg.consults.get_mut(&id) {
                c.legs.retain(|l| *l != leg);
            }
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "media_unavailable",
                e.to_string(),
            ));
        }
        for s in &subscribers {
            if let Err(e) = state.media.subscribe(*s, leg) {
                tracing::warn!(subscriber = s, publisher = leg, error = %e, "subscribe failed");
            }
        }
    }
    state.apply_caps();
    state.update_gauges();
    let mut e = AuditEvent::now(EventKind::ConsultCascaded, &state.config.regions.name);
    e.consult = Some(id.clone());
    e.remote = Some(peer.to_string());
    e.detail = Some(format!(
        "from={} trunk={}->{media} legs={opened}",
        req.origin, req.source
    ));
    state.record(&e).await;
    tracing::info!(consult = %id, origin = %req.origin, legs = opened, "trunk accepted");
    Ok((
        StatusCode::CREATED,
        Json(TrunkAccepted {
            media,
            legs: opened,
        }),
    )
        .into_response())
}

/// `GET /v1/admin/pool?surge=1.5&spare=1&forecast=REGION:N,...`: the pool's
/// live appliances, its consults by appliance, and the warm headroom each
/// region needs now, at the forecast peak and at the surge.
async fn pool_report(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<BTreeMap<String, String>>,
) -> ApiResult<Json<serde_json::Value>> {
    state.require_admin(&headers)?;
    let Some(pool) = state.router().cloned() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_in_a_pool",
            "cluster.etcd is not set: this appliance is not in a pool",
        ));
    };
    let bad = |what: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", what.to_owned());
    let number = |key: &str, default: f64| -> ApiResult<f64> {
        match query.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| bad(&format!("{key} must be a number >= 0"))),
        }
    };
    let surge = number("surge", 1.5)?;
    let spare = number("spare", 1.0)?.min(1000.0) as u32;
    let mut forecast = BTreeMap::new();
    for item in query.get("forecast").map_or("", String::as_str).split(',') {
        if item.is_empty() {
            continue;
        }
        let (region, n) = item
            .split_once(':')
            .and_then(|(r, n)| {
                Some((
                    r,
                    n.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite() && *x >= 0.0)?,
                ))
            })
            .ok_or_else(|| bad("forecast is REGION:CONSULTS[,REGION:CONSULTS...]"))?;
        forecast.insert(region.to_owned(), n);
    }
    let snap = pool
        .snapshot()
        .await
        .map_err(|e| cluster_unreachable(&state, &e))?;
    let mut by_appliance: BTreeMap<String, usize> = BTreeMap::new();
    let mut unplaced = 0usize;
    for (c, _) in &snap.consults {
        match &c.appliance {
            Some(a) => *by_appliance.entry(a.clone()).or_default() += 1,
            None => unplaced += 1,
        }
    }
    // Consults a box holds at its practical ceiling.
    let per_box = state.config.overload.egress_ceiling_bps as f64
        / state.config.cluster.consult_egress_bps as f64;
    let headroom = pool
        .map()
        .and_then(|m| crate::pool::headroom(m, &snap, &forecast, per_box, surge, spare));
    Ok(Json(serde_json::json!({
        "appliances": snap.appliances,
        "consults_by_appliance": by_appliance,
        "unplaced": unplaced,
        "consults_per_box": per_box,
        "surge_factor": surge,
        "headroom": headroom,
    })))
}

async fn stats(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    state.require_admin(&headers)?;
    let media = state.media.stats();
    let (consults, legs) = {
        let reg = state.registry.lock().expect("lock");
        (reg.consults.len(), reg.legs.len())
    };
    Ok(Json(serde_json::json!({
        "region": state.config.regions.name,
        "consults": consults,
        "legs": legs,
        "overload_level": state.level(),
        "draining": !state.drain().ready(),
        "media": media,
        "dtls_fingerprint": state.identity.fingerprint_sdp(),
    })))
}
