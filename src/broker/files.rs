//! Reading and writing the broker's RON files: atomic writes, and errors that name the file,
//! line and column.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A file that could not be read, parsed or written. The message names the file and, for a
/// parse error, the line and column, so it can be shown to a user as it is.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{col}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl FileError {
    pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Self {
        FileError::Invalid {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// Parses RON text that came from `path` (used only to name the file in errors).
pub fn parse_ron<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, FileError> {
    ron::from_str(text).map_err(|e| FileError::Parse {
        path: path.to_owned(),
        line: e.position.line,
        col: e.position.col,
        message: e.code.to_string(),
    })
}

/// Reads and parses a RON file.
pub fn read_ron<T: DeserializeOwned>(path: &Path) -> Result<T, FileError> {
    let text = fs::read_to_string(path).map_err(|source| FileError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_ron(path, &text)
}

/// Serialises `value` as pretty RON (`path` names the file in errors).
pub fn to_ron<T: Serialize>(path: &Path, value: &T) -> Result<String, FileError> {
    let config = ron::ser::PrettyConfig::new()
        .depth_limit(3)
        .separate_tuple_members(false);
    let mut text = ron::ser::to_string_pretty(value, config)
        .map_err(|e| FileError::invalid(path, e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// Serialises `value` as pretty RON and writes it atomically to `path`.
pub fn write_ron<T: Serialize>(path: &Path, value: &T) -> Result<(), FileError> {
    write_atomic(path, to_ron(path, value)?.as_bytes())
}

/// Writes `bytes` to `path` so that a reader (or a crash) sees either the old file or the new
/// one, never half of one: a temporary file in the same folder, fsync, rename, fsync the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let io = |source| FileError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| FileError::invalid(path, "is not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable; folders cannot be opened for this on every platform.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, serde::Serialize, PartialEq)]
    struct Doc {
        names: Vec<String>,
    }

    #[test]
    fn parse_errors_name_file_line_and_column() {
        let err =
            parse_ron::<Doc>(Path::new("x.ron"), "(\n  names: [\"a\",\n   3],\n)").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("x.ron:3:4: "), "{text}");
    }

    #[test]
    fn write_is_atomic_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.ron");
        fs::write(&path, "old").unwrap();
        let doc = Doc {
            names: vec!["a".into(), "b/c".into()],
        };
        write_ron(&path, &doc).unwrap();
        assert_eq!(read_ron::<Doc>(&path).unwrap(), doc);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder").join("doc.ron");
        assert!(matches!(
            write_atomic(&path, b"x"),
            Err(FileError::Io { .. })
        ));
    }
}
