//! `users.ron`: who may log in, with salted argon2id password hashes (PHC strings).
//!
//! A plain password only ever lives in memory for as long as it takes to hash or verify it.

use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use serde::{Deserialize, Serialize};

use super::acl::{Grant, Rules};
use super::auth::Verifier;
use super::files::{self, FileError};

/// The users file shipped with the app, written to the config folder on first run.
pub const DEFAULT_USERS: &str = include_str!("../../users.ron");

/// The contents of a users file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    /// Clients may connect without a user name.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// What clients without a user name may publish and subscribe to (see `acl`).
    #[serde(default, skip_serializing_if = "Rules::is_open")]
    pub anonymous: Rules,
    #[serde(default)]
    pub users: Vec<User>,
}

impl Default for Users {
    /// An empty list that lets anyone in, as the shipped file does.
    fn default() -> Self {
        Users {
            allow_anonymous: true,
            anonymous: Rules::default(),
            users: Vec::new(),
        }
    }
}

/// One user who may log in by user name or e-mail.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: String,
    #[serde(default)]
    pub email: Option<String>,
    /// PHC string, e.g. `$argon2id$v=19$m=19456,t=2,p=1$...`.
    pub password_hash: String,
    /// What it may publish and subscribe to (see `acl`); none: what the topic list allows.
    #[serde(default, skip_serializing_if = "Rules::is_open")]
    pub rules: Rules,
}

impl std::fmt::Debug for User {
    // The hash stays out of logs too.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("email", &self.email)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// Why a user cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the user name must not be empty")]
    EmptyName,
    #[error("the password must not be empty")]
    EmptyPassword,
    #[error("{0:?} is already a user name or e-mail of another user")]
    Taken(String),
    #[error("there is no user {0:?}")]
    NoSuchUser(String),
    #[error("{0:?} is not an e-mail address")]
    BadEmail(String),
}

/// What a CONNECT's credentials amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginCheck {
    /// Logged in as this user (or anonymously, with `None`).
    Accepted(Option<String>),
    /// Unknown user or wrong password: CONNACK 0x04.
    BadCredentials,
    /// No user name while anonymous logins are off: CONNACK 0x05.
    NotAuthorized,
}

impl Users {
    /// Parses a users file's text; every hash must be a PHC string and names must be unique.
    pub fn parse(path: &Path, text: &str) -> Result<Users, FileError> {
        let users: Users = files::parse_ron(path, text)?;
        users
            .anonymous
            .check()
            .map_err(|e| FileError::invalid(path, format!("anonymous: {e}")))?;
        let mut seen = std::collections::HashSet::new();
        for u in &users.users {
            if u.username.is_empty() {
                return Err(FileError::invalid(path, "a user has an empty user name"));
            }
            if PasswordHash::new(&u.password_hash).is_err() {
                return Err(FileError::invalid(
                    path,
                    format!(
                        "user {:?}: password_hash is not a PHC hash string; set the password with `mqtt-lab user add`",
                        u.username
                    ),
                ));
            }
            u.rules
                .check()
                .map_err(|e| FileError::invalid(path, format!("user {:?}: {e}", u.username)))?;
            for key in std::iter::once(&u.username).chain(u.email.iter()) {
                if !seen.insert(key.as_str()) {
                    return Err(FileError::invalid(
                        path,
                        format!("{key:?} names more than one user"),
                    ));
                }
            }
        }
        Ok(users)
    }

    /// Reads a users file.
    pub fn load(path: &Path) -> Result<Users, FileError> {
        let text = files::read_text(path)?;
        Users::parse(path, &text)
    }

    /// Writes the users file atomically, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), FileError> {
        files::write_atomic_private(path, self.to_ron()?.as_bytes())
    }

    /// The rules of the client logged in as `username` (`None`: anonymously), with its client
    /// id put in; `None` when it may do anything the topic list allows. A user who is no longer
    /// there (removed while connected) may do nothing.
    pub fn grant(&self, username: Option<&str>, client_id: &str) -> Option<Grant> {
        let rules = match username {
            None => &self.anonymous,
            Some(name) => match self.users.iter().find(|u| u.username == name) {
                Some(u) => &u.rules,
                None => return Some(Grant::nothing()),
            },
        };
        Grant::of(rules, username, client_id)
    }

    /// The user whose name or e-mail is `login`.
    pub fn find(&self, login: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.username == login || u.email.as_deref() == Some(login))
    }

    /// Adds a user, or replaces the password and e-mail of the user of that name.
    pub fn upsert(
        &mut self,
        username: &str,
        email: Option<&str>,
        password: &str,
    ) -> Result<(), UserError> {
        self.check_new(username, email, password)?;
        let rules = self
            .users
            .iter()
            .find(|u| u.username == username)
            .map(|u| u.rules.clone())
            .unwrap_or_default();
        self.upsert_user(User {
            username: username.to_owned(),
            email: email.map(str::to_owned),
            password_hash: hash_password(password.as_bytes()),
            rules,
        })
    }

    /// Checks a user about to be added or changed, before its password is hashed: a name, a
    /// password, an e-mail that looks like one, and no clash with another user.
    pub fn check_new(
        &self,
        username: &str,
        email: Option<&str>,
        password: &str,
    ) -> Result<(), UserError> {
        if username.is_empty() {
            return Err(UserError::EmptyName);
        }
        if password.is_empty() {
            return Err(UserError::EmptyPassword);
        }
        if let Some(e) = email
            && (!e.contains('@') || e.chars().any(char::is_whitespace))
        {
            return Err(UserError::BadEmail(e.to_owned()));
        }
        self.check_unique(username, email)
    }

    /// Adds a user whose password is already hashed, or replaces the user of that name.
    pub fn upsert_user(&mut self, user: User) -> Result<(), UserError> {
        if user.username.is_empty() {
            return Err(UserError::EmptyName);
        }
        self.check_unique(&user.username, user.email.as_deref())?;
        match self.users.iter_mut().find(|u| u.username == user.username) {
            Some(existing) => *existing = user,
            None => self.users.push(user),
        }
        Ok(())
    }

    /// Checks that no other user has this name or e-mail as its name or e-mail.
    pub fn check_unique(&self, username: &str, email: Option<&str>) -> Result<(), UserError> {
        for key in std::iter::once(username).chain(email) {
            if let Some(other) = self.find(key)
                && other.username != username
            {
                return Err(UserError::Taken(key.to_owned()));
            }
        }
        Ok(())
    }

    /// The text of the users file.
    pub fn to_ron(&self) -> Result<String, FileError> {
        files::to_ron(Path::new("users.ron"), self)
    }

    /// Removes the user of that name.
    pub fn remove(&mut self, username: &str) -> Result<(), UserError> {
        let before = self.users.len();
        self.users.retain(|u| u.username != username);
        if self.users.len() == before {
            return Err(UserError::NoSuchUser(username.to_owned()));
        }
        Ok(())
    }

    /// Checks CONNECT credentials. Slow on purpose (argon2): the broker calls it on its login
    /// threads (`auth`), never on the async workers.
    pub fn check_login(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        verifier: &mut Verifier,
    ) -> LoginCheck {
        let Some(login) = username else {
            return if self.allow_anonymous {
                LoginCheck::Accepted(None)
            } else {
                LoginCheck::NotAuthorized
            };
        };
        let password = password.unwrap_or_default();
        match self.find(login) {
            Some(user) if verifier.verify(&user.password_hash, password) => {
                LoginCheck::Accepted(Some(user.username.clone()))
            }
            Some(_) => LoginCheck::BadCredentials,
            None => {
                // Spend the same time as for a known user, so timing does not tell who exists.
                let _ = verifier.verify(dummy_hash(), password);
                LoginCheck::BadCredentials
            }
        }
    }
}

/// Hashes a password with argon2id and a fresh random salt, as a PHC string.
pub fn hash_password(password: &[u8]) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password, &salt)
        .expect("argon2 with default parameters accepts any password and a generated salt")
        .to_string()
}

fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(b"not a password anyone has"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses() {
        let users = Users::parse(Path::new("users.ron"), DEFAULT_USERS).unwrap();
        assert_eq!(users, Users::default());
    }

    #[test]
    fn login_by_name_or_email() {
        let mut users = Users {
            allow_anonymous: false,
            ..Users::default()
        };
        users
            .upsert("alice", Some("alice@lab.example"), "s3cret")
            .unwrap();
        assert!(users.users[0].password_hash.starts_with("$argon2id$"));
        assert!(!users.users[0].password_hash.contains("s3cret"));
        let ok = LoginCheck::Accepted(Some("alice".into()));
        let v = &mut Verifier::default();
        assert_eq!(users.check_login(Some("alice"), Some(b"s3cret"), v), ok);
        assert_eq!(
            users.check_login(Some("alice@lab.example"), Some(b"s3cret"), v),
            ok
        );
        assert_eq!(
            users.check_login(Some("alice"), Some(b"nope"), v),
            LoginCheck::BadCredentials
        );
        assert_eq!(
            users.check_login(Some("bob"), Some(b"s3cret"), v),
            LoginCheck::BadCredentials
        );
        assert_eq!(
            users.check_login(Some("alice"), None, v),
            LoginCheck::BadCredentials
        );
        assert_eq!(users.check_login(None, None, v), LoginCheck::NotAuthorized);
        users.allow_anonymous = true;
        assert_eq!(users.check_login(None, None, v), LoginCheck::Accepted(None));
    }

    #[test]
    fn names_and_emails_are_unique() {
        let mut users = Users::default();
        users.upsert("alice", Some("a@x"), "pw").unwrap();
        assert_eq!(
            users.upsert("bob", Some("a@x"), "pw"),
            Err(UserError::Taken("a@x".into()))
        );
        assert_eq!(
            users.upsert("a@x", None, "pw"),
            Err(UserError::Taken("a@x".into()))
        );
        users.upsert("alice", None, "pw2").unwrap();
        assert_eq!(users.users.len(), 1);
        assert_eq!(users.upsert("", None, "pw"), Err(UserError::EmptyName));
        assert_eq!(users.upsert("c", None, ""), Err(UserError::EmptyPassword));
        assert_eq!(
            users.remove("zed"),
            Err(UserError::NoSuchUser("zed".into()))
        );
        users.remove("alice").unwrap();
        assert!(users.users.is_empty());
    }

    #[test]
    fn rules_are_read_written_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.ron");
        let mut users = Users::default();
        users.upsert("ada", None, "pw").unwrap();
        users.users[0].rules.publish = Some(vec!["students/%u/#".into()]);
        users.anonymous.subscribe = Some(vec!["public/#".into()]);
        users.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // Plain lists, without RON's Some(...).
        assert!(text.contains(r#"publish: ["students/%u/#"]"#), "{text}");
        assert!(!text.contains("Some"), "{text}");
        assert_eq!(Users::load(&path).unwrap(), users);
        // A new password keeps the rules.
        users.upsert("ada", None, "pw2").unwrap();
        assert!(users.users[0].rules.publish.is_some());
        let g = users.grant(Some("ada"), "c1").unwrap();
        assert!(g.may_publish("students/ada/x"));
        assert!(!g.may_publish("students/bob/x"));
        assert!(users.grant(None, "c").unwrap().may_subscribe("public/a"));
        assert!(!users.grant(None, "c").unwrap().may_subscribe("#"));
        // Files written before rules existed spell options out; they still read.
        let old = r#"(allow_anonymous: false, users: [(username: "x", email: Some("x@lab"), password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")])"#;
        let users = Users::parse(&path, old).unwrap();
        assert_eq!(users.users[0].email.as_deref(), Some("x@lab"));
        let bad = r#"(users: [(username: "x", password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", rules: (publish: ["a/#/b"]))])"#;
        let err = Users::parse(&path, bad).unwrap_err().to_string();
        assert!(err.contains(r#"user "x": publish rule "a/#/b""#), "{err}");
    }

    #[test]
    fn file_round_trips_and_rejects_plain_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.ron");
        let mut users = Users::default();
        users
            .upsert("alice", Some("alice@lab.example"), "pw")
            .unwrap();
        users.save(&path).unwrap();
        assert_eq!(Users::load(&path).unwrap(), users);
        let text =
            r#"(allow_anonymous: false, users: [(username: "x", password_hash: "hunter2")])"#;
        let err = Users::parse(&path, text).unwrap_err().to_string();
        assert!(err.contains("not a PHC hash string"), "{err}");
    }
}
