//! MQTT topic names and topic filters: validation and matching (MQTT 3.1.1 section 4.7).
//!
//! mqttbytes has helpers for this, but they get the edge cases wrong (`$SYS` matching, `a/b+`
//! accepted as a filter, the empty topic accepted as a name), so the broker uses these instead.

/// Longest topic name or filter a 16-bit length prefix can carry.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Most levels a topic name or filter may have (EMQX's default too). Names and filters are
/// kept by level (tries, the retained order), and a name of 65,535 slashes would otherwise be
/// 65,536 levels deep.
pub const MAX_LEVELS: usize = 128;

/// Why a topic name or filter is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("is empty")]
    Empty,
    #[error("is longer than 65535 bytes")]
    TooLong,
    #[error("contains the null character U+0000")]
    Null,
    #[error("has more than 128 levels")]
    TooDeep,
    #[error("contains a wildcard (+ or #), which only filters may have")]
    Wildcard,
    #[error("has '#' somewhere other than alone in the last level")]
    BadMultiLevel,
    #[error("has '+' that is not alone in its level")]
    BadSingleLevel,
    #[error("is not a shared subscription ($share/GROUP/FILTER, a group without wildcards)")]
    BadShare,
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::Null);
    }
    if s.bytes().filter(|&b| b == b'/').count() >= MAX_LEVELS {
        return Err(TopicError::TooDeep);
    }
    Ok(())
}

/// Checks a topic name, as used in PUBLISH, wills and the topic list.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    check_common(name)?;
    if name.contains(['+', '#']) {
        return Err(TopicError::Wildcard);
    }
    Ok(())
}

/// Why an entry cannot go on the topic list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("is not a topic name or pattern: it {0}")]
    NotAName(TopicError),
    #[error("starts with '$', which is kept for the broker")]
    Reserved,
}

/// Checks an entry of the topic list: a topic name, or a pattern (a filter with `+` or `#`,
/// meaning every topic it matches exists), not under `$` (the broker's own, and `$share/`).
/// The one place this rule lives: the file, the broker's commands and the window all ask here.
pub fn check_listable(entry: &str) -> Result<(), ListError> {
    validate_filter(entry).map_err(ListError::NotAName)?;
    if entry.starts_with('$') {
        return Err(ListError::Reserved);
    }
    Ok(())
}

/// Checks a name a client may bring into being in open mode (or through a pattern): a topic
/// name not under `$`.
pub fn check_creatable(name: &str) -> bool {
    validate_name(name).is_ok() && !name.starts_with('$')
}

/// Checks a topic filter, as used in SUBSCRIBE and UNSUBSCRIBE.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::BadMultiLevel);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::BadSingleLevel);
        }
    }
    Ok(())
}

/// A shared subscription's filter, `$share/GROUP/FILTER`: the group and the filter, or `None`
/// for an ordinary filter. `Some(Err)` when it says `$share/` but is not a valid one (an empty
/// group, a wildcard in the group, no filter after it).
pub fn shared(filter: &str) -> Option<Result<(&str, &str), TopicError>> {
    let rest = filter.strip_prefix("$share/")?;
    let Some((group, inner)) = rest.split_once('/') else {
        return Some(Err(TopicError::BadShare));
    };
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Some(Err(TopicError::BadShare));
    }
    Some(validate_filter(inner).map(|()| (group, inner)))
}

/// The filter that says which topics a subscription matches: FILTER of `$share/GROUP/FILTER`,
/// the filter itself otherwise.
pub fn target(filter: &str) -> &str {
    match shared(filter) {
        Some(Ok((_, inner))) => inner,
        _ => filter,
    }
}

/// True if the filter has `+` or `#` in it (it may match more than one topic).
pub fn has_wildcards(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// True if some topic name matches both valid filters: a pattern on the list serves a
/// SUBSCRIBE whose filter overlaps it (`devices/+/temperature` serves `devices/7/#`).
pub fn overlaps(a: &str, b: &str) -> bool {
    // A filter that starts with a wildcard matches no `$` topic; one that starts with `$`
    // matches nothing else.
    let dollar = |f: &str| f.starts_with('$');
    let wild = |f: &str| f.starts_with(['+', '#']);
    if (dollar(a) && wild(b)) || (dollar(b) && wild(a)) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(l), Some(m)) if l == m => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True if a valid `filter` matches the valid topic `name`.
///
/// A filter that starts with a wildcard does not match a name that starts with `$` (4.7.2), so
/// `#` does not see `$SYS/...`, while `$SYS/#` does.
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut n = name.split('/');
    loop {
        match (f.next(), n.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(nl)) if fl == nl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::test_inputs::every_path;

    #[test]
    fn names() {
        assert!(validate_name("lab/temperature").is_ok());
        assert!(validate_name("/").is_ok());
        assert!(validate_name("a//b").is_ok());
        assert!(validate_name("$SYS/broker/uptime").is_ok());
        assert_eq!(validate_name(""), Err(TopicError::Empty));
        assert_eq!(validate_name("a/+"), Err(TopicError::Wildcard));
        assert_eq!(validate_name("a/#"), Err(TopicError::Wildcard));
        assert_eq!(validate_name("a\0b"), Err(TopicError::Null));
        assert!(validate_name(&("a/".repeat(127) + "a")).is_ok());
        assert_eq!(validate_name(&"/".repeat(128)), Err(TopicError::TooDeep));
        assert_eq!(
            validate_filter(&"$SYS/".repeat(128)),
            Err(TopicError::TooDeep)
        );
        assert_eq!(validate_name(&"x".repeat(65_536)), Err(TopicError::TooLong));
        assert!(validate_name(&"x".repeat(65_535)).is_ok());
    }

    #[test]
    fn filters() {
        for ok in ["#", "+", "a/+/b", "a/#", "+/+", "/#", "a//+", "$SYS/#"] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        assert_eq!(validate_filter("a/b+"), Err(TopicError::BadSingleLevel));
        assert_eq!(validate_filter("a/#/b"), Err(TopicError::BadMultiLevel));
        assert_eq!(validate_filter("a#"), Err(TopicError::BadMultiLevel));
        assert_eq!(validate_filter(""), Err(TopicError::Empty));
        assert_eq!(validate_filter("a/\0"), Err(TopicError::Null));
    }

    #[test]
    fn list_entries() {
        assert!(check_listable("lab/temperature").is_ok());
        assert!(check_listable("devices/+/temperature").is_ok());
        assert!(check_listable("lab/#").is_ok());
        assert_eq!(check_listable("$SYS/x"), Err(ListError::Reserved));
        assert_eq!(check_listable("$share/g/x"), Err(ListError::Reserved));
        assert_eq!(
            check_listable("lab/+x"),
            Err(ListError::NotAName(TopicError::BadSingleLevel))
        );
        assert!(check_creatable("a/b"));
        assert!(!check_creatable("a/+"));
        assert!(!check_creatable("$x"));
    }

    #[test]
    fn overlapping() {
        assert!(overlaps("devices/+/temperature", "devices/7/temperature"));
        assert!(overlaps("devices/+/temperature", "devices/7/#"));
        assert!(overlaps("devices/+/temperature", "+/+/+"));
        assert!(overlaps("lab/#", "lab"));
        assert!(overlaps("a/+", "+/b"));
        assert!(!overlaps("devices/+/temperature", "devices/7"));
        assert!(!overlaps("devices/+/temperature", "devices/7/humidity"));
        assert!(!overlaps("a/+", "a/b/c"));
        assert!(!overlaps("#", "$SYS/x"));
        assert!(overlaps("$SYS/#", "$SYS/x"));
    }

    /// `overlaps` against brute force: some name from a small alphabet matches both.
    #[test]
    fn overlapping_agrees_with_matching() {
        let filters: Vec<String> = every_path(&["a", "b", "", "$x", "+", "#"], 3)
            .into_iter()
            .filter(|f| validate_filter(f).is_ok())
            .collect();
        // Two filters of at most three levels that overlap share a name of at most three.
        let names = every_path(&["a", "b", "", "$x", "c"], 3);
        for a in &filters {
            for b in &filters {
                let brute = names.iter().any(|n| matches(a, n) && matches(b, n));
                assert_eq!(overlaps(a, b), brute, "{a:?} and {b:?}");
            }
        }
    }

    #[test]
    fn matching() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("a/+", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("a/+", "a/"));
        assert!(matches("a/#", "a"), "# also matches the parent level");
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a/b"));
        assert!(matches("+/+", "/x"));
        assert!(!matches("+", "/x"));
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(!matches("+/broker/uptime", "$SYS/broker/uptime"));
        assert!(matches("$SYS/#", "$SYS/broker/uptime"));
        assert!(matches("$SYS/broker/+", "$SYS/broker/uptime"));
    }
}
