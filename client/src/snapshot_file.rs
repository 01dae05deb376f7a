//! The snapshot on disk: the client's own saved copy (rewritten atomically on every change) and
//! the explicit bootstrap file, in one format, the same JSON the server's `GET /v1/snapshot`
//! returns, so `curl -H "Authorization: Bearer …" $SERVER/v1/snapshot > bootstrap.json` makes a
//! bootstrap file.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use switchyard_domain::Migration;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub version: u64,
    pub migrations: Vec<Migration>,
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
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(load(&path), Err(SnapshotFileError::Format { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
