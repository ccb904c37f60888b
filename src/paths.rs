//! Where the app's files live when no path is given: the platform's config folder
//! (`~/.config/mqtt-lab/` on Linux), filled with the shipped defaults on first run.

use std::path::{Path, PathBuf};

use crate::broker::bridge::config::DEFAULT_BRIDGES;
use crate::broker::files::{self, FileError};
use crate::broker::topic_list::DEFAULT_TOPICS;
use crate::broker::users::DEFAULT_USERS;

/// The config folder, or None where the platform has no home folder.
pub fn config_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "mqtt-lab").map(|d| d.config_dir().to_owned())
}

/// Which file: the one given on the command line, or the default one in the config folder,
/// created from the shipped default the first time.
/// `private`: only the user may read it (the users file).
pub fn resolve(
    given: Option<&Path>,
    name: &str,
    default_text: &str,
    private: bool,
) -> Result<PathBuf, FileError> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    let dir = config_dir().ok_or_else(|| {
        FileError::invalid(
            Path::new(name),
            "no home folder to keep it in; pass its path",
        )
    })?;
    let path = dir.join(name);
    if !path.exists() {
        std::fs::create_dir_all(&dir).map_err(|e| FileError::io(&dir, e))?;
        if private {
            files::write_atomic_private(&path, default_text.as_bytes())?;
        } else {
            files::write_atomic(&path, default_text.as_bytes())?;
        }
    }
    Ok(path)
}

/// The topic list to use.
pub fn topics_file(given: Option<&Path>) -> Result<PathBuf, FileError> {
    resolve(given, "topics.ron", DEFAULT_TOPICS, false)
}

/// The users file to use.
pub fn users_file(given: Option<&Path>) -> Result<PathBuf, FileError> {
    resolve(given, "users.ron", DEFAULT_USERS, true)
}

/// The bridges file to use (private: it holds the passwords of remote brokers).
pub fn bridges_file(given: Option<&Path>) -> Result<PathBuf, FileError> {
    resolve(given, "bridges.ron", DEFAULT_BRIDGES, true)
}
