//! Appliance pools on etcd (`[cluster]`): registration under a lease, and
//! the admission gate that follows it.
//!
//! A single box needs none of this (`cluster.etcd` empty). With etcd
//! endpoints, the appliance registers `<prefix>appliances/<name>` (region,
//! API and media addresses, egress ceiling, load, overload level) bound to a
//! lease of `cluster.lease_ttl_secs`, and refreshes the lease and the record
//! every third of the TTL. If no refresh succeeds for a whole TTL, etcd has
//! let the lease expire and the pool no longer sees this box: it stops
//! admitting new consults (503 `cluster_unreachable`, `/readyz` 503) while
//! the consults it carries go on. When etcd answers again it registers
//! under a new lease and admits again.
//!
//! The client speaks etcd's v3 JSON gateway (`/v3/...`, keys and values in
//! base64) over the HTTP client the appliance already has, which needs no
//! generated gRPC code; every endpoint listed is tried in turn.
//! [`EtcdClient::create`] writes a key only if it does not exist (a
//! transaction comparing its create revision with 0): the primitive that
//! keeps two routers from placing the same consult twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::ClusterConfig;

/// An etcd request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No endpoint answered.
    #[error("etcd: no endpoint answered ({0})")]
    Unreachable(String),
    /// An endpoint answered with an error.
    #[error("etcd: {0}")]
    Refused(String),
    /// The lease is gone (expired or revoked).
    #[error("etcd: lease {0} expired")]
    LeaseExpired(i64),
}

/// A lease's id.
pub type LeaseId = i64;

/// One key of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of its last write.
    pub mod_revision: i64,
    /// Its lease, 0 for none.
    pub lease: LeaseId,
}

/// A client of etcd's v3 JSON gateway.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    http: reqwest::Client,
    endpoints: Vec<String>,
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// etcd's JSON gateway prints 64-bit integers as strings.
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The key just past every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): to the end of the key space.
    vec![0]
}

impl EtcdClient {
    /// A client of `endpoints` (`http://host:port`), each request bounded by
    /// `timeout`.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, ClusterError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ClusterError::Refused(e.to_string()))?;
        Ok(Self {
            http,
            endpoints: endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_owned())
                .collect(),
        })
    }

    async fn call(&self, path: &str, body: Value) -> Result<Value, ClusterError> {
        let mut last = String::from("no endpoints");
        for endpoint in &self.endpoints {
            let sent = self
                .http
                .post(format!("{endpoint}{path}"))
                .json(&body)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{endpoint}: {e}");
                    continue;
                }
            };
            let status = response.status();
            let value: Value = response
                .json()
                .await
                .map_err(|e| ClusterError::Refused(format!("{endpoint}{path}: {e}")))?;
            if !status.is_success() || value.get("error").is_some() {
                return Err(ClusterError::Refused(format!(
                    "{endpoint}{path}: {status} {}",
                    value
                        .get("message")
                        .or(value.get("error"))
                        .unwrap_or(&value)
                )));
            }
            return Ok(value);
        }
        Err(ClusterError::Unreachable(last))
    }

    /// A new lease of `ttl_secs`.
    pub async fn grant(&self, ttl_secs: u64) -> Result<LeaseId, ClusterError> {
        let v = self
            .call("/v3/lease/grant", json!({ "TTL": ttl_secs.to_string() }))
            .await?;
        match int(&v["ID"]) {
            0 => Err(ClusterError::Refused(format!("lease grant: {v}"))),
            id => Ok(id),
        }
    }

    /// Refreshes `lease`; returns its TTL, or [`ClusterError::LeaseExpired`].
    pub async fn keep_alive(&self, lease: LeaseId) -> Result<u64, ClusterError> {
        let v = self
            .call("/v3/lease/keepalive", json!({ "ID": lease.to_string() }))
            .await?;
        let ttl = int(&v["result"]["TTL"]);
        if ttl <= 0 {
            return Err(ClusterError::LeaseExpired(lease));
        }
        Ok(u64::try_from(ttl).unwrap_or(0))
    }

    /// Writes `key`, bound to `lease` if given.
    pub async fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<(), ClusterError> {
        let mut body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        if let Some(lease) = lease {
            body["lease"] = json!(lease.to_string());
        }
        self.call("/v3/kv/put", body).await.map(|_| ())
    }

    /// Writes `key` only if it does not exist; whether it was written.
    pub async fn create(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<bool, ClusterError> {
        let k = b64(key.as_bytes());
        let mut put = json!({ "key": k, "value": b64(value) });
        if let Some(lease) = lease {
            put["lease"] = json!(lease.to_string());
        }
        let v = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{ "key": k, "target": "CREATE", "create_revision": "0" }],
                    "success": [{ "request_put": put }],
                }),
            )
            .await?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }

    /// Every key starting with `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, ClusterError> {
        self.list_at(prefix).await.map(|(kvs, _)| kvs)
    }

    /// Every key starting with `prefix`, and the store's revision the read
    /// saw.
    pub async fn list_at(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), ClusterError> {
        let v = self
            .call(
                "/v3/kv/range",
                json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)) }),
            )
            .await?;
        Ok((key_values(&v), int(&v["header"]["revision"])))
    }

    /// One key, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, ClusterError> {
        let v = self
            .call("/v3/kv/range", json!({ "key": b64(key.as_bytes()) }))
            .await?;
        Ok(key_values(&v).into_iter().find(|kv| kv.key == key))
    }

    /// Writes every `(key, value)` of `puts` in one transaction if, and only
    /// if, each `(key, mod_revision)` of `unchanged` still holds (0: the key
    /// does not exist). The revision written at, or `None` if a compare
    /// failed (someone else wrote first).
    pub async fn put_if_unchanged(
        &self,
        unchanged: &[(&str, i64)],
        puts: &[(&str, &[u8])],
    ) -> Result<Option<i64>, ClusterError> {
        let compare: Vec<Value> = unchanged
            .iter()
            .map(|(k, rev)| {
                json!({ "key": b64(k.as_bytes()), "target": "MOD", "mod_revision": rev.to_string() })
            })
            .collect();
        let success: Vec<Value> = puts
            .iter()
            .map(|(k, v)| json!({ "request_put": { "key": b64(k.as_bytes()), "value": b64(v) } }))
            .collect();
        let v = self
            .call(
                "/v3/kv/txn",
                json!({ "compare": compare, "success": success }),
            )
            .await?;
        Ok(v["succeeded"]
            .as_bool()
            .unwrap_or(false)
            .then(|| int(&v["header"]["revision"])))
    }

    /// Deletes `key` if its last write is still `mod_revision`; whether it
    /// did.
    pub async fn delete_if_unchanged(
        &self,
        key: &str,
        mod_revision: i64,
    ) -> Result<bool, ClusterError> {
        let k = b64(key.as_bytes());
        let v = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{ "key": k, "target": "MOD", "mod_revision": mod_revision.to_string() }],
                    "success": [{ "request_delete_range": { "key": k } }],
                }),
            )
            .await?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }
}

/// The key-values of a range response.
fn key_values(v: &Value) -> Vec<KeyValue> {
    let mut out = Vec::new();
    for kv in v["kvs"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let decode = |f: &str| {
            kv[f]
                .as_str()
                .and_then(|s| B64.decode(s).ok())
                .unwrap_or_default()
        };
        out.push(KeyValue {
            key: String::from_utf8_lossy(&decode("key")).into_owned(),
            value: decode("value"),
            mod_revision: int(&kv["mod_revision"]),
            lease: int(&kv["lease"]),
        });
    }
    out
}

impl EtcdClient {
    /// Deletes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, ClusterError> {
        let v = self
            .call("/v3/kv/deleterange", json!({ "key": b64(key.as_bytes()) }))
            .await?;
        Ok(int(&v["deleted"]) > 0)
    }
}

/// What an appliance publishes about itself in the pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplianceRecord {
    /// Its name in the pool.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Where its HTTP API listens.
    pub api: String,
    /// The media addresses it advertises.
    pub media: Vec<String>,
    /// Its practical egress ceiling, bit/s.
    pub egress_ceiling_bps: u64,
    /// Its load, percent of the practical ceiling.
    pub load_percent: f64,
    /// Its overload level.
    pub overload_level: u8,
}

/// Whether the pool sees this appliance now.
#[derive(Debug)]
pub struct PoolMembership {
    registered: AtomicBool,
}

impl PoolMembership {
    /// Not registered yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            registered: AtomicBool::new(false),
        })
    }

    /// Whether the appliance holds a live lease.
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    fn set(&self, on: bool) {
        let was = self.registered.swap(on, Ordering::Relaxed);
        if was != on {
            if on {
                tracing::info!("registered in the pool: admitting new consults");
            } else {
                tracing::error!(
                    "not registered in the pool (etcd unreachable for a whole lease TTL): new consults refused, current ones continue"
                );
            }
        }
    }
}

/// The key of appliance `name`'s record.
pub fn appliance_key(config: &ClusterConfig, name: &str) -> String {
    format!("{}appliances/{name}", config.prefix)
}

/// Keeps this appliance registered until the runtime stops: grants a
/// lease, writes `record()` under it, and refreshes both every third of the
/// TTL; `membership` follows whether the lease is live.
pub fn spawn_registration(
    config: ClusterConfig,
    membership: Arc<PoolMembership>,
    record: impl Fn() -> ApplianceRecord + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, ClusterError> {
    let ttl = Duration::from_secs(config.lease_ttl_secs);
    let period = ttl / 3;
    let client = EtcdClient::new(&config.etcd, period.max(Duration::from_millis(500)))?;
    Ok(tokio::spawn(async move {
        let mut lease: Option<LeaseId> = None;
        let mut last_ok: Option<Instant> = None;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let rec = record();
            let key = appliance_key(&config, &rec.name);
            let value = serde_json::to_vec(&rec).unwrap_or_default();
            let refreshed = async {
                let id = match lease {
                    Some(id) => match client.keep_alive(id).await {
                        Ok(_) => id,
                        Err(ClusterError::LeaseExpired(_)) => {
                            lease = None;
                            client.grant(config.lease_ttl_secs).await?
                        }
                        Err(e) => return Err(e),
                    },
                    None => client.grant(config.lease_ttl_secs).await?,
                };
                lease = Some(id);
                client.put(&key, &value, Some(id)).await
            }
            .await;
            match refreshed {
                Ok(()) => {
                    last_ok = Some(Instant::now());
                    membership.set(true);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pool registration not refreshed");
                    // Past a whole TTL without a refresh etcd has dropped
                    // the lease: the pool no longer sees this box.
                    if last_ok.is_none_or(|t| t.elapsed() >= ttl) {
                        membership.set(false);
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/sb/"), b"/sb0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn gateway_integers_are_strings_or_numbers() {
        assert_eq!(
            int(&json!("7587899081532107269")),
            7_587_899_081_532_107_269
        );
        assert_eq!(int(&json!(5)), 5);
        assert_eq!(int(&json!(null)), 0);
        assert_eq!(int(&json!("x")), 0);
    }
}
