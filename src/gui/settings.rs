//! What the window remembers between runs (`gui.ron` in the config folder): the topic list
//! opened last, and the name the broker is advertised under on the network.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::broker::files::{self, FileError};

/// The window's own settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The topic list file opened or saved last; used at start when `--topics` is not given.
    pub last_topics_file: Option<PathBuf>,
    /// The mDNS name a teacher gave the broker in the window; used when `--mdns-name` is not.
    pub mdns_name: Option<String>,
}

/// One change to the settings, as the window makes it.
#[derive(Debug, Clone)]
pub enum Change {
    TopicsFile(PathBuf),
    MdnsName(String),
}

impl Settings {
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::TopicsFile(path) => self.last_topics_file = Some(path),
            Change::MdnsName(name) => self.mdns_name = Some(name),
        }
    }
}

impl Settings {
    /// Reads the settings; a missing or unreadable file gives the defaults (and says why in the
    /// log), because nothing in it is worth refusing to start for.
    pub fn load(path: &Path) -> Settings {
        if !path.exists() {
            return Settings::default();
        }
        files::read_ron(path).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "window settings ignored");
            Settings::default()
        })
    }

    /// Writes the settings atomically, making the config folder if this is its first file (the
    /// topic list and users may live elsewhere, given on the command line).
    pub fn save(&self, path: &Path) -> Result<(), FileError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|error| FileError::Io {
                path: dir.to_owned(),
                error,
            })?;
        }
        files::write_ron(path, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        // In a folder that does not exist yet: saving makes it.
        let path = dir.path().join("config").join("gui.ron");
        assert_eq!(Settings::load(&path), Settings::default());
        let s = Settings {
            last_topics_file: Some("/tmp/x.ron".into()),
            mdns_name: Some("Room 2.14".into()),
        };
        s.save(&path).unwrap();
        assert_eq!(Settings::load(&path), s);
        std::fs::write(&path, "(((").unwrap();
        assert_eq!(Settings::load(&path), Settings::default());
    }
}
