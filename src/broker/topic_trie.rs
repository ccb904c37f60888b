//! The topics by level, so that a wildcard filter finds its topics by walking only the branches
//! that can match, not by trying every topic: a SUBSCRIBE, or the removal of a session with its
//! subscriptions, costs what matches, whatever the length of the list.
//!
//! It answers exactly as `topics::matches` does (a property test holds the two together): `#`
//! also matches its parent level, `+` any one level (an empty one too), and a filter that starts
//! with a wildcard does not see the topics that start with `$`.

use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// The topic whose last level this is, if one is.
    topic: Option<Arc<str>>,
}

#[derive(Debug, Default)]
pub(crate) struct TopicTrie {
    root: Node,
}

impl TopicTrie {
    pub fn insert(&mut self, name: &Arc<str>) {
        let mut node = &mut self.root;
        for level in name.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        node.topic = Some(name.clone());
    }

    pub fn remove(&mut self, name: &str) {
        fn remove(node: &mut Node, levels: &[&str]) {
            let Some((first, rest)) = levels.split_first() else {
                node.topic = None;
                return;
            };
            if let Some(child) = node.children.get_mut(*first) {
                remove(child, rest);
                // Levels nothing ends at or under go.
                if child.topic.is_none() && child.children.is_empty() {
                    node.children.remove(*first);
                }
            }
        }
        let levels: Vec<&str> = name.split('/').collect();
        remove(&mut self.root, &levels);
    }

    /// Every topic `filter` (a valid filter) matches.
    pub fn matching(&self, filter: &str) -> Vec<Arc<str>> {
        let levels: Vec<&str> = filter.split('/').collect();
        let mut out = Vec::new();
        walk(&self.root, &levels, true, &mut |t| {
            out.push(t.clone());
            false
        });
        out
    }

    /// Whether `filter` matches at least one topic.
    pub fn any_match(&self, filter: &str) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        walk(&self.root, &levels, true, &mut |_| true)
    }
}

/// Calls `found` for each topic under `node` that `levels` match, until it returns true (then
/// returns true). `top`: `node` is the root, where wildcards skip `$` topics.
fn walk(node: &Node, levels: &[&str], top: bool, found: &mut dyn FnMut(&Arc<str>) -> bool) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return node.topic.as_ref().is_some_and(&mut *found);
    };
    let visible = |key: &str| !(top && key.starts_with('$'));
    match *first {
        "#" => {
            // The parent level too ("a/#" matches "a"), then everything under it.
            if node.topic.as_ref().is_some_and(&mut *found) {
                return true;
            }
            node.children
                .iter()
                .filter(|(k, _)| visible(k))
                .any(|(_, child)| everything(child, found))
        }
        "+" => node
            .children
            .iter()
            .filter(|(k, _)| visible(k))
            .any(|(_, child)| walk(child, rest, false, found)),
        level => node
            .children
            .get(level)
            .is_some_and(|child| walk(child, rest, false, found)),
    }
}

fn everything(node: &Node, found: &mut dyn FnMut(&Arc<str>) -> bool) -> bool {
    if node.topic.as_ref().is_some_and(&mut *found) {
        return true;
    }
    node.children.values().any(|child| everything(child, found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::test_inputs::Rng;
    use crate::broker::topics;

    fn topic(rng: &mut Rng) -> String {
        let n = 1 + rng.below(4);
        (0..n)
            .map(|i| {
                if i == 0 {
                    rng.pick(&["a", "b", "", "$SYS", "$x", "c"])
                } else {
                    rng.pick(&["a", "b", "", "c"])
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn filter(rng: &mut Rng) -> String {
        let n = 1 + rng.below(4);
        let mut levels: Vec<&str> = (0..n)
            .map(|i| {
                if i == 0 {
                    rng.pick(&["a", "b", "", "+", "$SYS", "$x"])
                } else {
                    rng.pick(&["a", "b", "", "+", "c"])
                }
            })
            .collect();
        if rng.below(3) == 0 {
            levels.push("#");
        }
        if rng.below(10) == 0 {
            levels = vec!["#"];
        }
        levels.join("/")
    }

    /// The trie answers as `topics::matches` does, over every topic, for random lists and
    /// filters (also after removing some topics).
    #[test]
    fn agrees_with_matching_every_topic_one_by_one() {
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut trie = TopicTrie::default();
            let mut list: Vec<Arc<str>> = Vec::new();
            for _ in 0..rng.below(40) {
                let t: Arc<str> = Arc::from(topic(&mut rng));
                if !t.is_empty() && !list.contains(&t) {
                    trie.insert(&t);
                    list.push(t);
                }
            }
            for _ in 0..rng.below(8) {
                if list.is_empty() {
                    break;
                }
                let gone = list.swap_remove(rng.below(list.len()));
                trie.remove(&gone);
            }
            for _ in 0..30 {
                let f = filter(&mut rng);
                if topics::validate_filter(&f).is_err() {
                    continue; // "" (one empty level) is not a filter
                }
                let mut expected: Vec<&str> = list
                    .iter()
                    .filter(|t| topics::matches(&f, t))
                    .map(|t| &**t)
                    .collect();
                let found = trie.matching(&f);
                let mut got: Vec<&str> = found.iter().map(|t| &**t).collect();
                expected.sort();
                got.sort();
                assert_eq!(got, expected, "seed {seed}, filter {f:?}, topics {list:?}");
                assert_eq!(
                    trie.any_match(&f),
                    !expected.is_empty(),
                    "seed {seed}, {f:?}"
                );
            }
        }
    }

    #[test]
    fn removing_a_topic_keeps_the_levels_others_need() {
        let mut trie = TopicTrie::default();
        for t in ["a", "a/b", "a/b/c"] {
            trie.insert(&Arc::from(t));
        }
        trie.remove("a/b");
        let mut all: Vec<String> = trie.matching("#").iter().map(|t| t.to_string()).collect();
        all.sort();
        assert_eq!(all, ["a", "a/b/c"]);
        trie.remove("a/b/c");
        trie.remove("a");
        assert!(trie.root.children.is_empty(), "empty levels are pruned");
    }
}
