//! Fresh temporary directories that remove themselves.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A directory under the system temp dir, unique to this process and call,
/// deleted with its contents on drop (also when a test panics).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/switchboard-e2e-<what>-<pid>-<n>`.
    pub fn new(what: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "switchboard-e2e-{what}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of a crashed run with the same pid is stale.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("cleanup: removing {}: {e}", self.path.display());
        }
    }
}
