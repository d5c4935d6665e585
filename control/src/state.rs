//! Runtime state persistence: the last acknowledged split of every service,
//! written atomically (temp file, fsync, rename, fsync dir) before the admin
//! API answers, and read back at start.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ControlError;

pub type SplitMap = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PersistedState {
    pub version: u32,
    pub generation: u64,
    pub services: Vec<PersistedService>,
    /// Older state files kept the audit here; it is moved to the audit
    /// log at start ([`crate::audit::AuditLog::migrate`]) and no longer
    /// written.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub audit: VecDeque<AuditEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PersistedService {
    pub name: String,
    /// The split in force, pool name -> weight.
    pub split: Vec<(String, u32)>,
    /// The split before the last change (what rollback returns to).
    pub previous: Option<Vec<(String, u32)>>,
    /// The config file's split when this was written: a reload or restart
    /// overrides the runtime split only when the file's split changed.
    pub file_split: Vec<(String, u32)>,
}

/// An audit entry as older state files kept it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    pub generation: u64,
    pub at: String,
    pub service: String,
    pub action: String,
    pub split: Vec<(String, u32)>,
    pub previous: Vec<(String, u32)>,
    pub who: String,
    pub reason: Option<String>,
    /// Applied with `force` although it gave weight to a pool with no
    /// backend up. Absent (false) in older state files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

pub const STATE_VERSION: u32 = 1;

pub fn load(path: &Path) -> Result<Option<PersistedState>, ControlError> {
    let bad = |message: String| ControlError::BadStateFile {
        path: path.display().to_string(),
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let state: PersistedState = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if state.version != STATE_VERSION {
        return Err(bad(format!(
            "version {} is not supported (expected {STATE_VERSION})",
            state.version
        )));
    }
    Ok(Some(state))
}

/// Writes `state` to `path` so that a crash at any point leaves either the
/// old file or the new one, never a torn one.
pub fn save(path: &Path, state: &PersistedState) -> Result<(), ControlError> {
    let err = |source: std::io::Error| ControlError::Persist {
        path: path.display().to_string(),
        source,
    };
    let json = serde_json::to_vec_pretty(state).map_err(|e| err(std::io::Error::other(e)))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(load(&path).unwrap(), None);
        let mut s = PersistedState {
            version: STATE_VERSION,
            generation: 3,
            services: vec![PersistedService {
                name: "web".into(),
                split: vec![("blue".into(), 0), ("green".into(), 100)],
                previous: Some(vec![("blue".into(), 100), ("green".into(), 0)]),
                file_split: vec![("blue".into(), 100), ("green".into(), 0)],
            }],
            audit: VecDeque::new(),
        };
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), Some(s.clone()));
        s.generation = 4;
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().generation, 4);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_a_silent_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{ not json").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.contains("state.json") && e.contains("fix or remove it"),
            "{e}"
        );
    }

    #[test]
    fn an_unwritable_location_is_reported_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("state.json");
        let e = save(&path, &PersistedState::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nothing was changed"), "{e}");
    }
}
