//! A class's accounts at once: names from a pattern (`student{n}` gives student01,
//! student02...), a random password each, shown once and exported as a CSV for the teacher.

use argon2::password_hash::rand_core::{OsRng, RngCore};

/// Letters and digits that cannot be mistaken for each other when read off a sheet of paper
/// (no 0/O, 1/l/I).
const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Length of a generated password: 10 characters of 56, about 58 bits.
const PASSWORD_LEN: usize = 10;

/// At most this many accounts in one go.
pub const MAX_BATCH: usize = 500;

/// The names a pattern gives for `count` accounts numbered from `first`: `{n}` becomes the
/// number, zero-padded to the width of the largest one (at least two digits).
pub fn names(pattern: &str, first: u32, count: usize) -> Result<Vec<String>, String> {
    if !pattern.contains("{n}") {
        return Err("the name pattern needs {n} where the number goes, e.g. student{n}".into());
    }
    if count == 0 || count > MAX_BATCH {
        return Err(format!("between 1 and {MAX_BATCH} accounts at once"));
    }
    let last = u64::from(first) + count as u64 - 1;
    let width = last.to_string().len().max(2);
    Ok((0..count as u64)
        .map(|i| pattern.replace("{n}", &format!("{:0width$}", u64::from(first) + i)))
        .collect())
}

/// A random password from the operating system's generator.
pub fn password() -> String {
    let mut bytes = [0u8; PASSWORD_LEN];
    OsRng.fill_bytes(&mut bytes);
    // 256 is not a multiple of 56: bytes past the last whole multiple are drawn again, so
    // every character is equally likely.
    let limit = 256 - 256 % ALPHABET.len();
    bytes
        .iter()
        .map(|&b| {
            let mut b = b as usize;
            while b >= limit {
                let mut one = [0u8; 1];
                OsRng.fill_bytes(&mut one);
                b = one[0] as usize;
            }
            ALPHABET[b % ALPHABET.len()] as char
        })
        .collect()
}

/// The accounts as CSV (RFC 4180): a header, then user name and password per line.
pub fn csv(accounts: &[(String, String)]) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let mut out = String::from("username,password\r\n");
    for (name, password) in accounts {
        out.push_str(&format!("{},{}\r\n", field(name), field(password)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_a_pattern() {
        assert_eq!(
            names("student{n}", 1, 3).unwrap(),
            ["student01", "student02", "student03"]
        );
        assert_eq!(names("g{n}-lab", 99, 2).unwrap(), ["g099-lab", "g100-lab"]);
        assert!(names("student", 1, 3).is_err());
        assert!(names("s{n}", 1, 0).is_err());
        assert!(names("s{n}", 1, MAX_BATCH + 1).is_err());
    }

    #[test]
    fn passwords_are_random_and_readable() {
        let a = password();
        let b = password();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let text = csv(&[("ada".into(), "x\"y".into()), ("b,c".into(), "p".into())]);
        assert_eq!(text, "username,password\r\nada,\"x\"\"y\"\r\n\"b,c\",p\r\n");
    }
}
