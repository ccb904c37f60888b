//! The broker's RON files: any bytes read as `topics.ron`, `users.ron` and `bridges.ron`, the
//! way the broker loads them (`files::text_from_bytes`, then `topic_list::parse` /
//! `Users::parse` / `bridge::config::parse`).
//!
//! No panic; an error that names a line and column (`FileError::Parse`) names one that is in
//! the text; what parses is valid and writes back to text that parses to the same.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mqtt_lab::broker::bridge::config as bridges;
use mqtt_lab::broker::files::{self, FileError};
use mqtt_lab::broker::topic_list;
use mqtt_lab::broker::topics;
use mqtt_lab::broker::users::Users;

fuzz_target!(|data: &[u8]| {
    let text = match files::text_from_bytes(Path::new("x.ron"), data.to_vec()) {
        Ok(text) => text,
        Err(e) => {
            // The line and column of the first byte that is not UTF-8.
            let at = std::str::from_utf8(data).unwrap_err().valid_up_to();
            let before = std::str::from_utf8(&data[..at]).unwrap();
            check_position(&e, before, "x.ron");
            let (line, col) = position(&e);
            assert_eq!(line, before.matches('\n').count() + 1);
            let last = before.rsplit('\n').next().unwrap_or("");
            assert_eq!(col, last.chars().count() + 1);
            return;
        }
    };
    topics_file(&text);
    users_file(&text);
    bridges_file(&text);
});

fn bridges_file(text: &str) {
    let path = Path::new("bridges.ron");
    match bridges::parse(path, text) {
        Ok(list) => {
            assert_eq!(bridges::check_all(&list), Ok(()));
            let again = bridges::to_ron(path, &list).expect("parsed bridges write");
            let reread = bridges::parse(path, &again)
                .unwrap_or_else(|e| panic!("written bridges do not parse: {e}\n{again}"));
            assert_eq!(reread, list);
        }
        Err(e) => check_error(&e, text, "bridges.ron"),
    }
}

fn topics_file(text: &str) {
    let path = Path::new("topics.ron");
    match topic_list::parse(path, text) {
        Ok(list) => {
            let mut seen = std::collections::HashSet::new();
            for t in &list {
                assert_eq!(topics::check_listable(t), Ok(()), "{t:?}");
                assert!(seen.insert(t), "{t:?} listed twice");
            }
            let again = topic_list::to_ron(path, &list).expect("a parsed list writes");
            let reread = topic_list::parse(path, &again)
                .unwrap_or_else(|e| panic!("written list does not parse: {e}\n{again}"));
            assert_eq!(reread, list);
        }
        Err(e) => check_error(&e, text, "topics.ron"),
    }
}

fn users_file(text: &str) {
    let path = Path::new("users.ron");
    match Users::parse(path, text) {
        Ok(users) => {
            let mut seen = std::collections::HashSet::new();
            for u in &users.users {
                assert!(!u.username.is_empty());
                for key in std::iter::once(&u.username).chain(&u.email) {
                    assert!(seen.insert(key.clone()), "{key:?} names two users");
                }
            }
            let again = users.to_ron().expect("parsed users write");
            let reread = Users::parse(path, &again)
                .unwrap_or_else(|e| panic!("written users do not parse: {e}\n{again}"));
            assert_eq!(reread, users);
        }
        Err(e) => check_error(&e, text, "users.ron"),
    }
}

fn check_error(e: &FileError, text: &str, file: &str) {
    match e {
        FileError::Parse { .. } => check_position(e, text, file),
        FileError::Invalid { message, .. } => {
            assert!(!message.is_empty());
            assert!(e.to_string().starts_with(&format!("{file}: ")), "{e}");
        }
        FileError::Io { .. } => panic!("an I/O error from parsing text: {e}"),
    }
}

fn position(e: &FileError) -> (usize, usize) {
    match e {
        FileError::Parse { line, col, .. } => (*line, *col),
        _ => panic!("not a parse error: {e:?}"),
    }
}

/// A parse error's line and column are in `text` (a column may be one past the line's end:
/// where something was missing), and its message says them. Columns count bytes where the
/// RON parser gives them and characters for bytes that are not UTF-8, so the bound is the
/// line's length in bytes.
fn check_position(e: &FileError, text: &str, file: &str) {
    let (line, col) = position(e);
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        (1..=lines.len()).contains(&line),
        "line {line} of {} in {e}",
        lines.len()
    );
    let len = lines[line - 1].len();
    assert!((1..=len + 1).contains(&col), "column {col} of {len} in {e}");
    assert!(
        e.to_string().starts_with(&format!("{file}:{line}:{col}: ")),
        "{e}"
    );
}
