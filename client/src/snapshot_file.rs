//! The snapshot on disk: the client's own saved copy (rewritten atomically on every change) and
//! the explicit bootstrap file, in one format, the same JSON the server's `GET /v1/snapshot`
//! returns, so `curl -H "Authorization: Bearer …" $SERVER/v1/snapshot > bootstrap.json` makes a
//! bootstrap file.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use switchyard_domain::{InvalidInput, Migration};
use switchyard_proto::json;

/// Read and written as [`json::Snapshot`]: a file is checked like an answer of the server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "json::Snapshot", into = "json::Snapshot")]
pub struct SnapshotFile {
    pub version: u64,
    pub migrations: Vec<Migration>,
}

impl TryFrom<json::Snapshot> for SnapshotFile {
    type Error = InvalidInput;

    fn try_from(s: json::Snapshot) -> Result<Self, InvalidInput> {
        Ok(Self {
            version: s.version,
            migrations: s
                .migrations
                .into_iter()
                .map(Migration::try_from)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<SnapshotFile> for json::Snapshot {
    fn from(s: SnapshotFile) -> Self {
        Self {
            version: s.version,
            migrations: s.migrations.iter().map(json::Migration::from).collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a Switchyard snapshot: {source}")]
    Format {
        path: String,
        source: serde_json::Error,
    },
}

/// Reads a snapshot file; `Ok(None)` if it does not exist.
pub fn load(path: &Path) -> Result<Option<SnapshotFile>, SnapshotFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotFileError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| SnapshotFileError::Format {
            path: path.display().to_string(),
            source,
        })
}

/// Writes the snapshot so that a crash at any moment leaves either the old file or the new one:
/// write a temporary file beside it, flush it to disk, rename it over the old one, then flush
/// the directory entry.
pub fn save(path: &Path, snapshot: &SnapshotFile) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(snapshot).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_atomically() {
        let dir =
            std::env::temp_dir().join(format!("switchyard-client-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("snapshot.json");
        assert_eq!(load(&path).unwrap(), None);
        let snapshot = SnapshotFile {
            version: 7,
            migrations: vec![],
        };
        save(&path, &snapshot).unwrap();
        assert_eq!(load(&path).unwrap(), Some(snapshot));
        std::fs::write(&path, r#"{"version":1,"migrations":[{"key":"Bad"}]}"#).unwrap();
        assert!(matches!(load(&path), Err(SnapshotFileError::Format { .. })));
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(load(&path), Err(SnapshotFileError::Format { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_files_written_before_the_typed_bodies() {
        let dir =
            std::env::temp_dir().join(format!("switchyard-client-old-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("snapshot.json");
        std::fs::write(&path, OLD_FILE).unwrap();
        let file = load(&path).unwrap().unwrap();
        let m = &file.migrations[0];
        assert_eq!(
            (file.version, m.key.as_str(), m.rollout_bp.get()),
            (4, "users.handle", 2500)
        );
        save(&path, &file).unwrap();
        assert_eq!(load(&path).unwrap(), Some(file));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A saved snapshot as clients wrote it from the domain record, without
    /// `applicable_events`.
    const OLD_FILE: &str = r#"{"version":4,"migrations":[{"key":"users.handle","description":"","owner":"","entity_kind":"user_id","soak_seconds":604800,"expected_services":[],"has_backfill":true,"salt":7,"shadow_sample_bp":10000,"stage":"dual_write","rollout_bp":2500,"version":4,"created_at_ms":1,"updated_at_ms":2,"expand_applied":true,"backfill":{"status":"not_started","rows_done":0,"rows_total_estimate":0,"started_version":null,"completed_version":null,"paused":false},"old_shape_stale":false,"full_since":{"off":3},"old_writes_resumed_since":null,"soak_started_at_ms":null,"live_window":null}]}"#;
}
