//! A small metrics registry with Prometheus text exposition (format 0.0.4).
//!
//! Hand-written rather than a client crate: the appliance exports a few dozen
//! series, and the handles are plain atomics ([`Counter`], [`Gauge`]) that the
//! media core can hold and bump on its hot path without taking a lock or
//! depending on a metrics library. Families are created on first use by name;
//! a series is a family plus a label set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; reset only by a restart.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
        }
    }
}

type Labels = Vec<(String, String)>;

#[derive(Debug)]
struct Family {
    help: String,
    kind: Kind,
    series: BTreeMap<Labels, Arc<AtomicU64>>,
}

/// A monotonically increasing counter.
#[derive(Debug, Clone)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (stored as `f64` bits).
#[derive(Debug, Clone)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// The registry; cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Registry {
    families: RwLock<BTreeMap<String, Family>>,
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn series(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[(&str, &str)],
    ) -> Arc<AtomicU64> {
        assert!(valid_name(name), "invalid metric name {name:?}");
        assert!(
            labels
                .iter()
                .all(|(k, _)| valid_name(k) && !k.contains(':')),
            "invalid label name in {labels:?}"
        );
        let key: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if let Some(found) = self
            .families
            .read()
            .expect("metrics lock")
            .get(name)
            .and_then(|f| {
                (f.kind == kind)
                    .then(|| f.series.get(&key).cloned())
                    .flatten()
            })
        {
            return found;
        }
        let mut families = self.families.write().expect("metrics lock");
        let family = families.entry(name.to_owned()).or_insert_with(|| Family {
            help: help.to_owned(),
            kind,
            series: BTreeMap::new(),
        });
        assert_eq!(family.kind, kind, "metric {name} registered with two kinds");
        let initial = match kind {
            Kind::Counter => 0,
            Kind::Gauge => 0f64.to_bits(),
        };
        family
            .series
            .entry(key)
            .or_insert_with(|| Arc::new(AtomicU64::new(initial)))
            .clone()
    }

    /// The counter `name{labels}`, created at 0 on first use.
    ///
    /// # Panics
    /// If `name` or a label name is not a valid Prometheus name, or `name`
    /// is already a gauge: both are mistakes in the code, not in input.
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        Counter(self.series(name, help, Kind::Counter, labels))
    }

    /// The gauge `name{labels}`, created at 0 on first use.
    ///
    /// # Panics
    /// As [`Self::counter`].
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        Gauge(self.series(name, help, Kind::Gauge, labels))
    }

    /// Every series in the text exposition format.
    pub fn render(&self) -> String {
        let families = self.families.read().expect("metrics lock");
        let mut out = String::with_capacity(4096);
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.as_str());
            for (labels, value) in &family.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                    }
                    out.push('}');
                }
                let raw = value.load(Ordering::Relaxed);
                match family.kind {
                    Kind::Counter => {
                        let _ = writeln!(out, " {raw}");
                    }
                    Kind::Gauge => {
                        let _ = writeln!(out, " {}", format_f64(f64::from_bits(raw)));
                    }
                }
            }
        }
        out
    }
}

fn format_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

/// The control plane's own series, created up front so they read 0 before
/// the first event instead of being absent.
#[derive(Debug, Clone)]
pub struct ControlMetrics {
    /// The registry everything is in.
    pub registry: Arc<Registry>,
    /// Consults currently open.
    pub consults_open: Gauge,
    /// Legs currently open, by direction.
    pub legs_publish: Gauge,
    /// Subscribe legs currently open.
    pub legs_subscribe: Gauge,
    /// Effective overload level.
    pub overload_level: Gauge,
    /// Load in percent of the practical ceiling.
    pub overload_load_percent: Gauge,
    /// 1 while draining.
    pub draining: Gauge,
}

impl ControlMetrics {
    /// Registers the control plane's series in `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        let legs = "switchboard_legs";
        let legs_help = "WebRTC legs open, by direction";
        Self {
            consults_open: registry.gauge("switchboard_consults", "Consults open", &[]),
            legs_publish: registry.gauge(legs, legs_help, &[("direction", "publish")]),
            legs_subscribe: registry.gauge(legs, legs_help, &[("direction", "subscribe")]),
            overload_level: registry.gauge(
                "switchboard_overload_level",
                "Effective overload level (0 none .. 4 refusing new consults)",
                &[],
            ),
            overload_load_percent: registry.gauge(
                "switchboard_overload_load_percent",
                "Load in percent of the practical ceiling (max of egress and CPU)",
                &[],
            ),
            draining: registry.gauge("switchboard_draining", "1 while draining for shutdown", &[]),
            registry,
        }
    }

    /// Counts an HTTP request by route and status.
    pub fn http_request(&self, route: &str, status: u16) {
        let status = status.to_string();
        self.registry
            .counter(
                "switchboard_http_requests_total",
                "HTTP requests answered, by route and status",
                &[("route", route), ("status", &status)],
            )
            .inc();
    }

    /// Counts an overload level change.
    pub fn overload_change(&self, from: u8, to: u8, reason: &str) {
        let (from, to) = (from.to_string(), to.to_string());
        self.registry
            .counter(
                "switchboard_overload_level_changes_total",
                "Overload level changes, by from/to level and reason",
                &[("from", &from), ("to", &to), ("reason", reason)],
            )
            .inc();
    }

    /// The counter of STUN messages that failed checks, by reason (fed by
    /// whoever drives the ICE agents).
    pub fn stun_failure(&self, reason: &str) -> Counter {
        self.registry.counter(
            "switchboard_stun_failures_total",
            "STUN messages rejected or dropped, by reason",
            &[("reason", reason)],
        )
    }

    /// The counter of DTLS handshakes that failed, by reason.
    pub fn dtls_failure(&self, reason: &str) -> Counter {
        self.registry.counter(
            "switchboard_dtls_failures_total",
            "DTLS handshakes failed, by reason",
            &[("reason", reason)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_and_labels() {
        let r = Registry::new();
        let c = r.counter("x_total", "An \"x\"\ncount", &[("route", "a\"b")]);
        c.inc();
        c.add(2);
        r.gauge("g", "A gauge", &[]).set(1.5);
        let text = r.render();
        assert!(text.contains("# HELP x_total An \"x\"\\ncount\n"), "{text}");
        assert!(text.contains("# TYPE x_total counter\n"));
        assert!(text.contains("x_total{route=\"a\\\"b\"} 3\n"), "{text}");
        assert!(text.contains("# TYPE g gauge\ng 1.5\n"), "{text}");
    }

    #[test]
    fn same_series_shares_the_value() {
        let r = Registry::new();
        r.counter("a_total", "h", &[("k", "v")]).inc();
        r.counter("a_total", "h", &[("k", "v")]).inc();
        r.counter("a_total", "h", &[("k", "w")]).inc();
        assert_eq!(r.counter("a_total", "h", &[("k", "v")]).get(), 2);
        assert_eq!(r.counter("a_total", "h", &[("k", "w")]).get(), 1);
    }

    #[test]
    #[should_panic(expected = "two kinds")]
    fn kind_conflict_is_a_bug() {
        let r = Registry::new();
        r.counter("a", "h", &[]);
        r.gauge("a", "h", &[("x", "y")]);
    }

    #[test]
    fn control_metrics_start_at_zero() {
        let m = ControlMetrics::new(Arc::new(Registry::new()));
        let text = m.registry.render();
        assert!(text.contains("switchboard_consults 0\n"));
        assert!(text.contains("switchboard_legs{direction=\"publish\"} 0\n"));
        assert!(text.contains("switchboard_overload_level 0\n"));
        m.http_request("/v1/consults", 201);
        assert!(m.registry.render().contains(
            "switchboard_http_requests_total{route=\"/v1/consults\",status=\"201\"} 1\n"
        ));
    }
}
