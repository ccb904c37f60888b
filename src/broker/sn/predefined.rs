//! The predefined topic ids file: ids that gateway and clients agree on beforehand, so that a
//! node can publish (QoS -1 too) without registering a topic.
//!
//! ```ron
//! (topics: {1: "lab/temperature", 2: "lab/humidity"})
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::broker::files::{self, FileError};
use crate::broker::topics;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredefinedFile {
    topics: BTreeMap<u16, String>,
}

/// Parses the file's text: every id 1 to 65534 (0 and 0xFFFF are reserved), every name a
/// valid topic name.
pub fn parse(path: &Path, text: &str) -> Result<HashMap<u16, String>, FileError> {
    let file: PredefinedFile = files::parse_ron(path, text)?;
    for (id, name) in &file.topics {
        if *id == 0 || *id == 0xFFFF {
            return Err(FileError::invalid(
                path,
                format!("topic id {id} is reserved (1 to 65534)"),
            ));
        }
        if let Err(e) = topics::validate_name(name) {
            return Err(FileError::invalid(
                path,
                format!("topic {name:?} (id {id}): {e}"),
            ));
        }
    }
    Ok(file.topics.into_iter().collect())
}

pub fn load(path: &Path) -> Result<HashMap<u16, String>, FileError> {
    parse(path, &files::read_text(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_checked() {
        let p = Path::new("sn-topics.ron");
        let ok = parse(p, r#"(topics: {1: "lab/temperature", 7: "lab/door"})"#).unwrap();
        assert_eq!(ok[&7], "lab/door");
        assert!(parse(p, r#"(topics: {0: "a"})"#).is_err());
        assert!(parse(p, r#"(topics: {1: "a/#"})"#).is_err());
        let e = parse(p, "(topics: {1: })").unwrap_err().to_string();
        assert!(e.starts_with("sn-topics.ron:1:"), "{e}");
    }
}
