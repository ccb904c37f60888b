//! Inputs for the property tests of the topic matchers (`topics`, `acl`, the two tries): a
//! small replayable generator, and every path of a few levels from an alphabet.

/// A small deterministic generator (xorshift), so a failing case can be replayed.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    pub fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    /// One to four levels from `from`, joined: a topic name or filter, valid or not.
    pub fn path(&mut self, from: &[&str]) -> String {
        let n = 1 + self.below(4);
        (0..n)
            .map(|_| self.pick(from))
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Every path of one to `max` levels from `alphabet` ("a", "a/a", "a/b", ...), valid or not.
pub(crate) fn every_path(alphabet: &[&str], max: u32) -> Vec<String> {
    let mut out = Vec::new();
    for n in 1..=max {
        for code in 0..alphabet.len().pow(n) {
            let mut c = code;
            let path: Vec<&str> = (0..n)
                .map(|_| {
                    let level = alphabet[c % alphabet.len()];
                    c /= alphabet.len();
                    level
                })
                .collect();
            out.push(path.join("/"));
        }
    }
    out
}
