//! The audit log: append-only JSON lines of consult and leg events.
//!
//! Each line says who (participant id and role), when, from which address,
//! in which region, and what happened to which consult or leg. Never media,
//! never patient data: the residency tag is a jurisdiction code used for
//! placement, not about the person.
//!
//! # Durability
//!
//! One writer thread owns the file. Callers hand it a line and wait for the
//! acknowledgement, which comes only after the line has been written and
//! `fdatasync`ed:
//!
//! * [`FsyncMode::EveryEvent`]: one `fdatasync` per event.
//! * [`FsyncMode::Group`]: the writer collects events for at most
//!   `group_commit_ms` after the first one, writes them together and syncs
//!   once. An acknowledged event is durable; an event is acknowledged at
//!   most the window plus one sync after it was handed over.
//!
//! # Rotation
//!
//! Before a line would take the file past `rotate_bytes`, the file is synced,
//! renamed to `PATH.<unix-ms>-<seq>`, the directory is synced, and a new file
//! is opened at `PATH`. Rotation happens only between lines and each line is
//! written once, so no line is lost, split or duplicated; sorting the rotated
//! names and appending `PATH` gives the whole log in order.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::FsyncMode;
use crate::token::Role;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A consult was created.
    ConsultCreated,
    /// A consult was ended (by request or at drain).
    ConsultEnded,
    /// A join token was issued.
    TokenIssued,
    /// A publish (WHIP) leg was set up.
    LegPublish,
    /// A subscribe (WHEP) leg was set up.
    LegSubscribe,
    /// A leg ended.
    LegEnded,
    /// A new consult was refused (overload level 4, draining, or its
    /// residency excludes this region).
    ConsultRefused,
    /// The overload level changed.
    OverloadLevel,
    /// The pool re-placed a consult whose appliance left it.
    ConsultMoved,
    /// This appliance took a consult the pool placed on it.
    ConsultAdopted,
    /// A consult was cascaded: a trunk opened from its origin to a
    /// downstream appliance (logged at both ends).
    ConsultCascaded,
}

/// One audit line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// RFC 3339 UTC time with milliseconds.
    pub ts: String,
    /// What happened.
    pub event: EventKind,
    /// This appliance's region.
    pub region: String,
    /// The consult, if the event concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consult: Option<String>,
    /// The participant acting or concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    /// Their role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The leg, for leg events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leg: Option<String>,
    /// The HTTP peer address the request came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// A short machine-readable detail (priority, residency tag, level).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` now, in `region`, with nothing else filled in.
    pub fn now(kind: EventKind, region: &str) -> Self {
        Self {
            ts: rfc3339_utc(SystemTime::now()),
            event: kind,
            region: region.to_owned(),
            consult: None,
            participant: None,
            role: None,
            leg: None,
            remote: None,
            detail: None,
        }
    }
}

/// Formats `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (proleptic Gregorian), valid for every u64 day count
    // this clock can produce.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The audit file with size-based rotation; synchronous, owned by one thread.
#[derive(Debug)]
pub struct AuditFile {
    path: PathBuf,
    file: File,
    size: u64,
    rotate_bytes: u64,
    rotations: u64,
}

impl AuditFile {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: &Path, rotate_bytes: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
            rotate_bytes,
            rotations: 0,
        })
    }

    /// Writes `lines` (each without its newline) and syncs once.
    pub fn write_batch<S: AsRef<str>>(&mut self, lines: &[S]) -> std::io::Result<()> {
        for line in lines {
            let line = line.as_ref();
            let len = line.len() as u64 + 1;
            if self.size > 0 && self.size + len > self.rotate_bytes {
                self.rotate()?;
            }
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            // One write per line: with O_APPEND the line lands whole unless
            // the disk fills or the box dies mid-write, and then only the
            // last line can be torn.
            self.file.write_all(&buf)?;
            self.size += len;
        }
        self.file.sync_data()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let mut target;
        loop {
            let mut name = self.path.as_os_str().to_owned();
            name.push(format!(".{ms:013}-{:06}", self.rotations));
            target = PathBuf::from(name);
            self.rotations += 1;
            if !target.exists() {
                break;
            }
        }
        std::fs::rename(&self.path, &target)?;
        sync_parent(&self.path)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        sync_parent(&self.path)
    }
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// The audit log could not take an event.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Writing or syncing failed.
    #[error("audit log write failed: {0}")]
    Io(String),
    /// The writer thread is gone.
    #[error("audit log writer stopped")]
    Stopped,
}

type Ack = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Handle to the writer thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<(String, Ack)>,
}

impl AuditLog {
    /// Opens the file and starts the writer thread.
    pub fn start(
        path: &Path,
        mode: FsyncMode,
        group_commit: Duration,
        rotate_bytes: u64,
    ) -> std::io::Result<Self> {
        let mut file = AuditFile::open(path, rotate_bytes)?;
        let (tx, rx) = mpsc::channel::<(String, Ack)>();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    if mode == FsyncMode::Group {
                        let deadline = Instant::now() + group_commit;
                        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                            match rx.recv_timeout(left) {
                                Ok(next) => batch.push(next),
                                Err(_) => break,
                            }
                        }
                    }
                    let lines: Vec<&str> = batch.iter().map(|(l, _)| l.as_str()).collect();
                    let result = file.write_batch(&lines).map_err(|e| e.to_string());
                    for (_, ack) in batch {
                        let _ = ack.send(result.clone());
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// Appends `event` and waits until it is durable.
    pub async fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let line = serde_json::to_string(event).map_err(|e| AuditError::Io(e.to_string()))?;
        let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((line, ack_tx))
            .map_err(|_| AuditError::Stopped)?;
        ack_rx
            .await
            .map_err(|_| AuditError::Stopped)?
            .map_err(AuditError::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-audit-{name}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Every line of the log, rotated files first in name order.
    fn all_lines(path: &Path) -> (Vec<String>, usize) {
        let dir = path.parent().unwrap();
        let base = path.file_name().unwrap().to_str().unwrap().to_owned();
        let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_str().unwrap();
                n.starts_with(&format!("{base}.")) && n != base
            })
            .collect();
        rotated.sort();
        let files = rotated.len();
        rotated.push(path.to_owned());
        let mut out = Vec::new();
        for p in rotated {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "{p:?} ends mid-line"
            );
            out.extend(text.lines().map(str::to_owned));
        }
        (out, files)
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // leap day 2000
        assert_eq!(rfc3339_utc(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_599);
        assert_eq!(rfc3339_utc(t), "2025-12-31T23:59:59.000Z");
    }

    #[test]
    fn rotation_keeps_every_line_once_in_order() {
        let dir = temp_dir("rotate");
        let path = dir.join("audit.jsonl");
        let rotate = 4096;
        let mut f = AuditFile::open(&path, rotate).unwrap();
        let expected: Vec<String> = (0..500)
            .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 50)))
            .collect();
        for chunk in expected.chunks(7) {
            f.write_batch(chunk).unwrap();
        }
        drop(f);
        let (lines, files) = all_lines(&path);
        assert!(files >= 5, "only {files} rotations");
        assert_eq!(lines, expected);
        for e in std::fs::read_dir(&dir).unwrap() {
            let len = e.unwrap().metadata().unwrap().len();
            assert!(len <= rotate, "a file grew to {len} bytes");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reopen_appends_and_counts_existing_size() {
        let dir = temp_dir("reopen");
        let path = dir.join("a.jsonl");
        AuditFile::open(&path, 4096)
            .unwrap()
            .write_batch(&["{\"a\":1}"])
            .unwrap();
        let mut f = AuditFile::open(&path, 4096).unwrap();
        assert_eq!(f.size, 8);
        f.write_batch(&["{\"a\":2}"]).unwrap();
        let (lines, files) = all_lines(&path);
        assert_eq!((lines.len(), files), (2, 0));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn writer_thread_acknowledges_durable_lines() {
        for mode in [FsyncMode::EveryEvent, FsyncMode::Group] {
            let dir = temp_dir("writer");
            let path = dir.join("w.jsonl");
            let log = AuditLog::start(&path, mode, Duration::from_millis(5), 4096).unwrap();
            let mut tasks = Vec::new();
            for i in 0..40 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    let mut e = AuditEvent::now(EventKind::LegPublish, "eu-west");
                    e.consult = Some(format!("c{i}"));
                    e.participant = Some("p".into());
                    e.role = Some(Role::Patient);
                    log.record(&e).await
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            // Acknowledged means on disk: read without stopping the writer.
            let (lines, _) = all_lines(&path);
            assert_eq!(lines.len(), 40, "{mode:?}");
            let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
            assert_eq!(v["event"], "leg_publish");
            assert_eq!(v["role"], "patient");
            assert_eq!(v["region"], "eu-west");
            assert!(v.get("leg").is_none());
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}
