//! A measured per-box ceiling, from the SFU benchmark's report
//! (`target/bench/sfu.json`, written by `sfu_bench`) or given directly.
//!
//! The benchmark pins the forwarder to one core and raises the number of
//! two-party consults until loss passes 1 %; `rooms_under_1pct_loss` is the
//! most consults one core carried under 1 % loss. A box runs one worker per
//! core, so its ceiling is that figure × the worker cores. When the
//! benchmark's top step was still under 1 % loss it never found the limit,
//! and the figure is only a lower bound (said so in the plan).

use serde::Serialize;

/// A measured ceiling of one box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasuredCapacity {
    /// Consults one box carried at its measured limit (before the practical
    /// utilisation is applied).
    pub consults_per_box: f64,
    /// The benchmark did not reach the limit: the box carries at least this.
    pub lower_bound: bool,
    /// Where the figure came from.
    pub source: String,
}

/// A benchmark report that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MeasuredError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not JSON.
    #[error("{path} is not JSON: {source}")]
    Json {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
    /// A field is missing or has the wrong type.
    #[error("{path}: `{field}` {reason}")]
    Field {
        /// The file.
        path: String,
        /// Dotted path of the field.
        field: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl MeasuredCapacity {
    /// From the benchmark report's JSON text: the two-party figure of
    /// `engine` (`io_uring` or `tokio`) × `worker_cores`.
    pub fn from_sfu_report(
        text: &str,
        path: &str,
        engine: &str,
        worker_cores: u32,
    ) -> Result<Self, MeasuredError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|source| MeasuredError::Json {
                path: path.to_owned(),
                source,
            })?;
        let field = |name: &str, reason| MeasuredError::Field {
            path: path.to_owned(),
            field: format!("two_party.{engine}.{name}"),
            reason,
        };
        let entry = value
            .get("two_party")
            .and_then(|t| t.get(engine))
            .ok_or_else(|| field("", "is missing (was the benchmark run with this engine?)"))?;
        let rooms = entry
            .get("rooms_under_1pct_loss")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| field("rooms_under_1pct_loss", "is missing or not a number"))?;
        if !(rooms > 0.0 && rooms.is_finite()) {
            return Err(field(
                "rooms_under_1pct_loss",
                "is 0: no step stayed under 1 % loss",
            ));
        }
        let lower_bound = entry
            .get("top_step_reached")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Ok(Self {
            consults_per_box: rooms * f64::from(worker_cores),
            lower_bound,
            source: format!("{path}: {rooms} per core on {engine} × {worker_cores} cores"),
        })
    }

    /// Reads and parses a benchmark report file.
    pub fn from_sfu_report_file(
        path: &std::path::Path,
        engine: &str,
        worker_cores: u32,
    ) -> Result<Self, MeasuredError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| MeasuredError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_sfu_report(&text, &shown, engine, worker_cores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"{
        "two_party": {
            "io_uring": {"max_egress_pps": 96910.0, "rooms_under_1pct_loss": 250, "top_step_reached": true},
            "tokio": {"max_egress_pps": 85000.0, "rooms_under_1pct_loss": 180, "top_step_reached": false}
        }
    }"#;

    #[test]
    fn reads_the_two_party_figure_per_core() {
        let m = MeasuredCapacity::from_sfu_report(REPORT, "sfu.json", "io_uring", 8).unwrap();
        assert_eq!(m.consults_per_box, 2000.0);
        assert!(m.lower_bound);
        let m = MeasuredCapacity::from_sfu_report(REPORT, "sfu.json", "tokio", 2).unwrap();
        assert_eq!(m.consults_per_box, 360.0);
        assert!(!m.lower_bound);
    }

    #[test]
    fn missing_fields_are_named() {
        let e = MeasuredCapacity::from_sfu_report(REPORT, "sfu.json", "epoll", 1).unwrap_err();
        assert!(e.to_string().contains("two_party.epoll"), "{e}");
        let e = MeasuredCapacity::from_sfu_report(
            r#"{"two_party": {"io_uring": {"rooms_under_1pct_loss": 0}}}"#,
            "sfu.json",
            "io_uring",
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no step"), "{e}");
        let e = MeasuredCapacity::from_sfu_report("{", "sfu.json", "io_uring", 1).unwrap_err();
        assert!(matches!(e, MeasuredError::Json { .. }));
    }
}
