//! Filters by level, so that a topic finds the filters that match it by walking only the
//! branches that can: when a topic comes into being (open mode, a pattern on the list, a topic
//! added), its subscribers are found without looking at every session; and a name is checked
//! against the list's patterns the same way.
//!
//! The reverse of `topic_trie` (topics found from a filter); it answers exactly as
//! `topics::matches` does, which a property test holds it to.

use std::collections::HashMap;

#[derive(Debug)]
struct Node<V> {
    /// Boxed: most nodes are leaves (a device's own filter), and a parent's table holds a whole
    /// node per child; a boxed map is one word there instead of six (measured: 0.1 kB less per
    /// idle connection with a subscription of its own).
    #[allow(clippy::box_collection)]
    children: Option<Box<HashMap<Box<str>, Node<V>>>>,
    /// What was put in under the filter whose last level this is.
    values: Vec<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            children: None,
            values: Vec::new(),
        }
    }
}

impl<V> Node<V> {
    fn child(&self, level: &str) -> Option<&Node<V>> {
        self.children.as_ref()?.get(level)
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<V>> {
        self.children.as_mut()?.get_mut(level)
    }

    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.children.is_none()
    }
}

#[derive(Debug)]
pub(crate) struct FilterTrie<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for FilterTrie<V> {
    fn default() -> Self {
        FilterTrie {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<V: PartialEq> FilterTrie<V> {
    /// Puts `value` under `filter` (a valid filter), once: an equal value there already is
    /// replaced where it stands (a QoS changed keeps its place among the others).
    pub fn insert(&mut self, filter: &str, value: V) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node
                .children
                .get_or_insert_with(Default::default)
                .entry(level.into())
                .or_default();
        }
        match node.values.iter_mut().find(|v| **v == value) {
            Some(old) => *old = value,
            None => {
                // Most filters have one subscriber (a device's own topic): room for one, then
                // doubling.
                if node.values.capacity() == 0 {
                    node.values.reserve_exact(1);
                }
                node.values.push(value);
                self.len += 1;
            }
        }
    }

    /// Takes `value` out from under `filter`; levels left holding nothing go.
    pub fn remove(&mut self, filter: &str, value: &V) {
        fn remove<V: PartialEq>(node: &mut Node<V>, levels: &[&str], value: &V) -> bool {
            let Some((first, rest)) = levels.split_first() else {
                let before = node.values.len();
                node.values.retain(|v| v != value);
                return node.values.len() != before;
            };
            let Some(child) = node.child_mut(first) else {
                return false;
            };
            let removed = remove(child, rest, value);
            if child.is_empty() {
                let children = node.children.as_mut().expect("it had this child");
                children.remove(*first);
                if children.is_empty() {
                    node.children = None;
                }
            }
            removed
        }
        let levels: Vec<&str> = filter.split('/').collect();
        if remove(&mut self.root, &levels, value) {
            self.len -= 1;
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `found` with each value under a filter that matches `name` (a valid topic name).
    pub fn for_each_match(&self, name: &str, mut found: impl FnMut(&V)) {
        let levels: Vec<&str> = name.split('/').collect();
        // Wildcards at the first level do not match a name that starts with `$` (4.7.2).
        walk(&self.root, &levels, !name.starts_with('$'), &mut found);
    }

    /// Whether any filter put in matches `name`.
    pub fn any_match(&self, name: &str) -> bool {
        let mut any = false;
        self.for_each_match(name, |_| any = true);
        any
    }
}

fn walk<V>(node: &Node<V>, levels: &[&str], wild: bool, found: &mut dyn FnMut(&V)) {
    let hash = |node: &Node<V>, found: &mut dyn FnMut(&V)| {
        if let Some(h) = node.child("#") {
            h.values.iter().for_each(&mut *found);
        }
    };
    let Some((first, rest)) = levels.split_first() else {
        node.values.iter().for_each(&mut *found);
        // "a/#" also matches "a".
        if wild {
            hash(node, found);
        }
        return;
    };
    if wild {
        hash(node, found);
        if let Some(plus) = node.child("+") {
            walk(plus, rest, true, found);
        }
    }
    if let Some(child) = node.child(first) {
        walk(child, rest, true, found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::test_inputs::Rng;
    use crate::broker::topics;

    #[test]
    fn agrees_with_matches_on_random_filters_and_names() {
        let seed = std::env::var("TRIE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        let mut rng = Rng(seed);
        for round in 0..200 {
            let mut trie = FilterTrie::default();
            let mut filters = Vec::new();
            for i in 0..30 {
                let f = rng.path(&["a", "b", "", "$SYS", "+", "#"]);
                if topics::validate_filter(&f).is_ok() {
                    trie.insert(&f, i);
                    filters.push((f, i));
                }
            }
            // Some go again, so that removal is checked too.
            for _ in 0..5 {
                if filters.is_empty() {
                    break;
                }
                let (f, i) = filters.swap_remove(rng.below(filters.len()));
                trie.remove(&f, &i);
            }
            for _ in 0..50 {
                let name = rng.path(&["a", "b", "", "$SYS", "c"]);
                let mut got = Vec::new();
                trie.for_each_match(&name, |v| got.push(*v));
                got.sort();
                let mut want: Vec<i32> = filters
                    .iter()
                    .filter(|(f, _)| topics::matches(f, &name))
                    .map(|(_, i)| *i)
                    .collect();
                want.sort();
                assert_eq!(got, want, "seed {seed:#x}, round {round}, name {name:?}");
            }
        }
    }

    #[test]
    fn removal_prunes_and_counts() {
        let mut t = FilterTrie::default();
        t.insert("a/+/c", 1);
        t.insert("a/+/c", 1);
        t.insert("a/#", 2);
        assert!(t.any_match("a/b/c"));
        t.remove("a/+/c", &1);
        t.remove("a/#", &2);
        assert!(t.is_empty());
        assert!(t.root.children.is_none());
        assert!(!t.any_match("a/b/c"));
    }
}
