//! What the window remembers between runs (`gui.ron` in the config folder): the topic list
//! opened last.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::broker::files::{self, FileError};

/// The window's own settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The topic list file opened or saved last; used at start when `--topics` is not given.
    pub last_topics_file: Option<PathBuf>,
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

    pub fn save(&self, path: &Path) -> Result<(), FileError> {
        files::write_ron(path, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gui.ron");
        assert_eq!(Settings::load(&path), Settings::default());
        let s = Settings {
            last_topics_file: Some("/tmp/x.ron".into()),
        };
        s.save(&path).unwrap();
        assert_eq!(Settings::load(&path), s);
        std::fs::write(&path, "(((").unwrap();
        assert_eq!(Settings::load(&path), Settings::default());
    }
}
