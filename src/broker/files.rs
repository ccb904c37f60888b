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
    // Not `source`: the message already says it, and a chain printer would say it twice.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
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

    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        FileError::Io {
            path: path.to_owned(),
            error,
        }
    }
}

/// What tells one version of a file from another without reading it: its time, size and (on
/// Unix) inode, which every atomic write changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub modified: std::time::SystemTime,
    pub len: u64,
    pub inode: u64,
}

/// The stamp of the file at `path`, if it is there.
pub fn stamp(path: &Path) -> Option<FileStamp> {
    let m = fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp {
        modified: m.modified().ok()?,
        len: m.len(),
        inode,
    })
}

/// Reads a text file; bytes that are not UTF-8 are a parse error at their line and column.
pub fn read_text(path: &Path) -> Result<String, FileError> {
    let bytes = fs::read(path).map_err(|e| FileError::io(path, e))?;
    text_from_bytes(path, bytes)
}

/// What `read_text` does once the file is read: the bytes as text, or a parse error at the
/// line and column of the first byte that is not UTF-8 (`path` only names the file in it).
/// Apart from `read_text` so that any bytes can be checked without a file (the fuzz targets).
pub fn text_from_bytes(path: &Path, bytes: Vec<u8>) -> Result<String, FileError> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let before = &bytes[..at];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        // Valid up to `at`, so the line so far decodes.
        let col = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        FileError::Parse {
            path: path.to_owned(),
            line,
            col,
            message: format!("not UTF-8 text (byte {:#04x})", bytes[at]),
        }
    })
}

/// Held while a file is read, changed and written back, so that two programs changing it at
/// once (two `mqtt-lab user add`, or one beside a running broker) cannot lose each other's
/// change. The lock is on a `.NAME.lock` file beside it: the file itself is replaced by each
/// atomic write, so a lock on it would not outlive the first write.
pub struct FileLock {
    _file: fs::File,
}

/// Waits for, and takes, the lock of `path`.
pub fn lock(path: &Path) -> Result<FileLock, FileError> {
    let (dir, name) = dir_and_name(path)?;
    let mut lock_name = std::ffi::OsString::from(".");
    lock_name.push(name);
    lock_name.push(".lock");
    let lock_path = dir.join(lock_name);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| FileError::io(&lock_path, e))?;
    file.lock().map_err(|e| FileError::io(&lock_path, e))?;
    Ok(FileLock { _file: file })
}

fn dir_and_name(path: &Path) -> Result<(PathBuf, &std::ffi::OsStr), FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| FileError::invalid(path, "is not a file name"))?;
    Ok((dir, name))
}

/// Parses RON text that came from `path` (used only to name the file in errors).
pub fn parse_ron<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, FileError> {
    ron_options().from_str(text).map_err(|e| FileError::Parse {
        path: path.to_owned(),
        line: e.position.line,
        col: e.position.col,
        message: e.code.to_string(),
    })
}

/// Optional fields are written and read as plain values (`publish: ["a/#"]`, not
/// `Some(["a/#"])`): the files are for people to read and edit.
fn ron_options() -> ron::Options {
    ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
}

/// Reads and parses a RON file.
pub fn read_ron<T: DeserializeOwned>(path: &Path) -> Result<T, FileError> {
    parse_ron(path, &read_text(path)?)
}

/// Serialises `value` as pretty RON (`path` names the file in errors).
pub fn to_ron<T: Serialize>(path: &Path, value: &T) -> Result<String, FileError> {
    let config = ron::ser::PrettyConfig::new()
        .depth_limit(3)
        .separate_tuple_members(false);
    let mut text = ron_options()
        .to_string_pretty(value, config)
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
    write_atomic_mode(path, bytes, false)
}

/// Like `write_atomic`, for a file only its owner may read (mode 0600 where there are modes):
/// the users file, whose hashes are nobody else's business.
pub fn write_atomic_private(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomic_mode(path, bytes, true)
}

fn write_atomic_mode(path: &Path, bytes: &[u8], private: bool) -> Result<(), FileError> {
    let (dir, name) = dir_and_name(path)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut f = options.open(&tmp)?;
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
    result.map_err(|e| FileError::io(path, e))
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
    fn text_that_is_not_utf8_is_refused_at_its_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ron");
        fs::write(&path, b"(\n  names: [\"\xc3\xa9t\xe9\"],\n)").unwrap();
        let err = read_text(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}:2:14: not UTF-8 text (byte 0xe9)", path.display())
        );
    }

    #[test]
    fn a_missing_file_is_named_once() {
        let path = Path::new("/nonexistent/folder/x.ron");
        let err = read_text(path).unwrap_err();
        let chain = format!("{:#}", anyhow_like(&err));
        assert_eq!(chain.matches("No such file").count(), 1, "{chain}");
        assert!(chain.starts_with("/nonexistent/folder/x.ron: "), "{chain}");
    }

    /// What `anyhow`'s `{:#}` prints: the error and each of its sources.
    fn anyhow_like(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            out += &format!(": {s}");
            source = s.source();
        }
        out
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_for_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.ron");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic_private(&path, b"new").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
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
