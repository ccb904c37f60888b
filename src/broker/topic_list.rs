//! `topics.ron`: the list of topics (and patterns of topics) that exist on the broker.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::files::{self, FileError};
use super::topics;

/// The topic list shipped with the app, written to the config folder on first run.
pub const DEFAULT_TOPICS: &str = include_str!("../../topics.ron");

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicsFile {
    topics: Vec<String>,
}

/// Parses the text of a topic list. Every entry must be a valid topic name, or a pattern (a
/// valid filter: every topic it matches exists); duplicates are dropped, the first one's place
/// kept.
pub fn parse(path: &Path, text: &str) -> Result<Vec<String>, FileError> {
    let file: TopicsFile = files::parse_ron(path, text)?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(file.topics.len());
    for topic in file.topics {
        if let Err(e) = topics::check_listable(&topic) {
            return Err(entry_error(
                path,
                text,
                &topic,
                &format!("topic {topic:?} {e}"),
            ));
        }
        if seen.insert(topic.clone()) {
            out.push(topic);
        }
    }
    Ok(out)
}

/// An error about one entry, with the line and column where it stands in the text.
fn entry_error(path: &Path, text: &str, entry: &str, message: &str) -> FileError {
    let quoted = format!("{entry:?}");
    match text.find(&quoted) {
        Some(at) => {
            let before = &text[..at];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            FileError::Parse {
                path: path.to_owned(),
                line,
                col,
                message: message.to_owned(),
            }
        }
        None => FileError::invalid(path, message),
    }
}

/// Reads a topic list from a file.
pub fn load(path: &Path) -> Result<Vec<String>, FileError> {
    let text = files::read_text(path)?;
    parse(path, &text)
}

/// Writes a topic list atomically.
pub fn save(path: &Path, list: &[String]) -> Result<(), FileError> {
    files::write_atomic(path, to_ron(path, list)?.as_bytes())
}

/// The text of a topic list file.
pub fn to_ron(path: &Path, list: &[String]) -> Result<String, FileError> {
    files::to_ron(
        path,
        &TopicsFile {
            topics: list.to_vec(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list_parses() {
        let list = parse(Path::new("topics.ron"), DEFAULT_TOPICS).unwrap();
        assert!(list.contains(&"lab/temperature".to_string()));
    }

    #[test]
    fn duplicates_are_dropped_in_order() {
        let list = parse(Path::new("t"), r#"(topics: ["b", "a", "b"])"#).unwrap();
        assert_eq!(list, vec!["b", "a"]);
    }

    #[test]
    fn bad_entries_are_named_with_line_and_column() {
        let text = "(\n  topics: [\n    \"ok\",\n    \"lab/+x\",\n  ],\n)";
        let err = parse(Path::new("t.ron"), text).unwrap_err().to_string();
        assert_eq!(
            err,
            "t.ron:4:5: topic \"lab/+x\" is not a topic name or pattern: it has '+' that is not alone in its level"
        );
        let err = parse(Path::new("t.ron"), r#"(topics: ["$SYS/x"])"#).unwrap_err();
        assert!(err.to_string().contains("kept for the broker"));
        let err = parse(Path::new("t.ron"), r#"(topics: [""])"#).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[test]
    fn patterns_are_entries() {
        let list = parse(
            Path::new("t"),
            r#"(topics: ["devices/+/temperature", "lab/#"])"#,
        )
        .unwrap();
        assert_eq!(list, vec!["devices/+/temperature", "lab/#"]);
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = parse(Path::new("t.ron"), "(topic: [])").unwrap_err();
        assert!(matches!(err, FileError::Parse { line: 1, .. }), "{err}");
    }

    #[test]
    fn save_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topics.ron");
        let list = vec!["x/y".to_string(), "z".to_string()];
        save(&path, &list).unwrap();
        assert_eq!(load(&path).unwrap(), list);
    }
}
