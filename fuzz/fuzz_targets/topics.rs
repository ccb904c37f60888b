//! Topic names and filters: any text through the broker's validation and matching
//! (`broker::topics`), checked against what MQTT 3.1.1 section 4.7 says must hold.
//!
//! The input is read as lines (bytes that are not UTF-8 become U+FFFD): each line alone, the
//! first few as every filter/name pair, and as every pair of filters (overlap, and one rule
//! covering another filter, `acl::covers`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_lab::broker::acl::covers;
use mqtt_lab::broker::topics::{
    MAX_LEVELS, MAX_TOPIC_LEN, TopicError, check_listable, has_wildcards, matches, overlaps, validate_filter,
    validate_name,
};

/// Lines taken pairwise: enough for a filter against several names, few enough to stay fast.
const PAIRED_LINES: usize = 12;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    for line in &lines {
        one(line);
    }
    let paired = &lines[..lines.len().min(PAIRED_LINES)];
    for filter in paired {
        for name in paired {
            pair(filter, name);
        }
    }
    for a in paired {
        for b in paired {
            filters(a, b, paired);
        }
    }
});

/// Two filters against the names among `names`: a name both match means they overlap (a
/// pattern on the list serves such a SUBSCRIBE), and a rule that covers a filter matches
/// every name the filter does (what a user's rules let it subscribe to).
fn filters(a: &str, b: &str, names: &[&str]) {
    if validate_filter(a).is_err() || validate_filter(b).is_err() {
        return;
    }
    let overlap = overlaps(a, b);
    assert_eq!(overlap, overlaps(b, a), "{a:?} and {b:?}");
    let cover = covers(a, b);
    for n in names.iter().filter(|n| validate_name(n).is_ok()) {
        if matches(a, n) && matches(b, n) {
            assert!(overlap, "{a:?} and {b:?} both match {n:?}");
        }
        if cover && matches(b, n) {
            assert!(matches(a, n), "{a:?} covers {b:?}, which matches {n:?}");
        }
    }
    if a == b {
        assert!(cover, "{a:?} covers itself");
    }
}

/// What must hold of one string, whatever it is.
fn one(s: &str) {
    let name = validate_name(s);
    let filter = validate_filter(s);
    // The faults every string is checked for, in this order, by both.
    let common = if s.is_empty() {
        Some(TopicError::Empty)
    } else if s.len() > MAX_TOPIC_LEN {
        Some(TopicError::TooLong)
    } else if s.contains('\0') {
        Some(TopicError::Null)
    } else if s.split('/').count() > MAX_LEVELS {
        Some(TopicError::TooDeep)
    } else {
        None
    };
    if let Some(e) = common {
        assert_eq!(name, Err(e), "{s:?}");
        assert_eq!(filter, Err(e), "{s:?}");
    }
    assert_eq!(has_wildcards(s), s.contains(['+', '#']));
    if name.is_ok() {
        // A valid name has no wildcard, and is a filter that matches itself alone.
        assert!(!s.contains('+') && !s.contains('#'), "{s:?}");
        assert_eq!(filter, Ok(()), "a valid name is a valid filter: {s:?}");
        assert!(matches(s, s), "{s:?} does not match itself");
        assert_eq!(
            matches("#", s),
            !s.starts_with('$'),
            "'#' and {s:?} (4.7.2: wildcards do not match $ topics)"
        );
        name_properties(s);
    } else if common.is_none() {
        assert_eq!(name, Err(TopicError::Wildcard), "{s:?}");
    }
    // The list takes names and patterns (filters), nothing under `$`.
    assert_eq!(
        check_listable(s).is_ok(),
        filter.is_ok() && !s.starts_with('$'),
        "{s:?}"
    );
    if filter.is_ok() {
        // Every level with a wildcard is the wildcard alone, and '#' only last.
        let levels: Vec<&str> = s.split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            if level.contains('+') {
                assert_eq!(*level, "+", "{s:?}");
            }
            if level.contains('#') {
                assert!(*level == "#" && i == levels.len() - 1, "{s:?}");
            }
        }
    } else if common.is_none() {
        assert!(
            matches!(
                filter,
                Err(TopicError::BadMultiLevel | TopicError::BadSingleLevel)
            ),
            "{s:?}: {filter:?}"
        );
    }
}

/// Filters made from a valid name `n` that must match it: one level made `+`, and every
/// parent followed by `/#` (`a/#` matches `a` too).
fn name_properties(n: &str) {
    let levels: Vec<&str> = n.split('/').collect();
    // Filters a few times longer than the name are enough; long names would make this slow.
    for i in 0..levels.len().min(16) {
        let mut f = levels.clone();
        f[i] = "+";
        let f = f.join("/");
        assert_eq!(validate_filter(&f), Ok(()), "{f:?}");
        let expected = !(i == 0 && n.starts_with('$'));
        assert_eq!(matches(&f, n), expected, "{f:?} against {n:?}");
        let parent = levels[..=i].join("/") + "/#";
        assert!(matches(&parent, n), "{parent:?} against {n:?}");
    }
}

/// A filter against a name, when both are valid: the broker's answer must be the one worked
/// out here another way, level lists compared as section 4.7 words it.
fn pair(filter: &str, name: &str) {
    // Any strings at all: no panic.
    let got = matches(filter, name);
    if validate_filter(filter).is_err() || validate_name(name).is_err() {
        return;
    }
    assert_eq!(
        got,
        reference(filter, name),
        "filter {filter:?}, name {name:?}"
    );
    if filter == name {
        assert!(got, "{filter:?} equals the name but does not match it");
    }
    if !has_wildcards(filter) {
        assert_eq!(got, filter == name, "{filter:?} against {name:?}");
    }
}

fn reference(filter: &str, name: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    // 4.7.2: a filter that starts with a wildcard does not see the broker's $ topics.
    if name.starts_with('$') && (f[0] == "+" || f[0] == "#") {
        return false;
    }
    let level_matches = |(fl, nl): (&&str, &&str)| *fl == "+" || fl == nl;
    match f.split_last() {
        // `#` matches its parent level and any number of levels below.
        Some((&"#", parents)) => {
            n.len() >= parents.len() && parents.iter().zip(&n).all(level_matches)
        }
        _ => f.len() == n.len() && f.iter().zip(&n).all(level_matches),
    }
}
