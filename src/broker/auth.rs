//! Checking passwords without letting a login storm hurt anyone else.
//!
//! Verifying an argon2 hash is slow and memory-hungry on purpose (19 MiB and tens of
//! milliseconds at the default parameters). Done on tokio's blocking pool, 200 clients looping on
//! a wrong password meant 200 threads, both cores busy, and gigabytes held by the allocator long
//! after the storm. So:
//!
//! - a small fixed pool of threads checks passwords, each with one argon2 work area it reuses:
//!   the memory a storm can cost is the pool's, allocated once;
//! - logins wait for the pool in a bounded queue; when it is full the login is refused at once
//!   (CONNACK 0x03, server unavailable) instead of piling up;
//! - the pool's threads run at a lower scheduling priority than the broker's, so routing goes
//!   first when the machine is short of CPU;
//! - an address whose logins keep failing gets its refusals later and later (up to a few
//!   seconds): a client that waits for its CONNACK, as every MQTT client does, cannot loop fast.
//!   A correct password is never slowed down, so a student on the same address as a storm still
//!   gets in;
//! - the same wrong user name and password again within a minute is refused without hashing
//!   again: a storm that repeats one wrong password costs one hash, not thousands. What is
//!   remembered is a keyed hash (random key, never stored) of the pair, and the stored hash it
//!   failed against, so a password changed since is checked afresh.
//!
//! Unknown users are checked against a dummy hash, so the time taken does not tell who exists.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

use super::stats::{self, Stats};
use super::users::{LoginCheck, Users};

/// Memory one check may use (in 1 KiB argon2 blocks): a hash that asks for more is refused
/// rather than letting a users file make every login allocate gigabytes.
const MAX_BLOCKS: u32 = 256 * 1024;
/// Failures from one address within `FAILURE_MEMORY` that are answered at once.
const FREE_FAILURES: u32 = 3;
const FIRST_PENALTY: Duration = Duration::from_millis(250);
/// How long an address's failures are remembered after the last one.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Addresses remembered at most; beyond that new ones are not slowed (rather than growing).
const MAX_ADDRESSES: usize = 10_000;
/// Failed user name and password pairs remembered at most, and for how long.
const MAX_FAILED_PAIRS: usize = 10_000;
const FAILED_PAIR_MEMORY: Duration = Duration::from_secs(60);

/// Sizes of the password-checking pool.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Threads that check passwords.
    pub workers: usize,
    /// Logins waiting for a thread, beyond which new ones are refused.
    pub queue: usize,
    /// The longest an address with many recent failures waits for its next refusal.
    pub max_penalty: Duration,
}

impl Default for LoginLimits {
    /// Half the cores (at least one): the other half stays with the broker.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = (cores / 2).clamp(1, 4);
        LoginLimits {
            workers,
            queue: 32 * workers,
            max_penalty: Duration::from_secs(10),
        }
    }
}

/// The login could not be checked now: too many are waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub waiting: usize,
}

/// Checks passwords on a fixed pool of threads; shared by every connection task.
pub(crate) struct LoginGate {
    jobs: std_mpsc::SyncSender<Job>,
    queue: usize,
    max_penalty: Duration,
    failures: Mutex<Failures>,
}

/// What a user name and password pair is known by: keyed hashes of the pair and of the stored
/// hash it is checked against (so a password changed since is checked afresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PairKey {
    pair: u64,
    against: u64,
}

struct Job {
    users: Arc<Users>,
    login: String,
    password: Bytes,
    reply: oneshot::Sender<LoginCheck>,
}

impl LoginGate {
    /// Starts the pool. Its threads end when the gate is dropped.
    pub fn start(limits: LoginLimits, stats: Arc<Stats>) -> Arc<LoginGate> {
        let (jobs, rx) = std_mpsc::sync_channel::<Job>(limits.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..limits.workers.max(1) {
            let (rx, stats) = (rx.clone(), stats.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("mqtt-lab-login-{i}"))
                .spawn(move || worker(&rx, &stats));
            if let Err(e) = spawned {
                warn!(error = %e, "cannot start a password-checking thread");
            }
        }
        Arc::new(LoginGate {
            jobs,
            queue: limits.queue.max(1),
            max_penalty: limits.max_penalty,
            failures: Mutex::new(Failures::default()),
        })
    }

    /// Checks a user name (or e-mail) and password. A failure is answered after the penalty
    /// that the address has earned; `Err(Busy)` when the queue is full.
    pub async fn check(
        &self,
        users: Arc<Users>,
        login: String,
        password: Bytes,
        from: IpAddr,
    ) -> Result<LoginCheck, Busy> {
        let stored = users.find(&login).map_or("", |u| u.password_hash.as_str());
        let now = Instant::now();
        let (key, failed_before, already) = {
            let f = self.lock_failures();
            let key = f.keys(&login, &password, stored);
            (
                key,
                f.failed_before(key, now),
                f.checking.get(&key).cloned(),
            )
        };
        if failed_before {
            debug!(%from, "the same wrong password again: refused without hashing");
            self.refuse_later(from).await;
            return Ok(LoginCheck::BadCredentials);
        }
        // The same pair is being checked for another connection: its answer is ours.
        let shared = match already {
            Some(mut rx) => rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|a| a.clone()),
            None => None,
        };
        // (None: nobody was checking it, or they left before the answer: check it here.)
        if let Some(check) = shared {
            if check == LoginCheck::BadCredentials {
                self.refuse_later(from).await;
            }
            return Ok(check);
        }
        let (tell, told) = watch::channel(None);
        self.lock_failures().checking.insert(key, told);
        let (reply, answer) = oneshot::channel();
        let job = Job {
            users,
            login,
            password,
            reply,
        };
        let sent = self.jobs.try_send(job);
        if sent.is_err() {
            self.lock_failures().checking.remove(&key);
        }
        match sent {
            Ok(()) => {}
            Err(std_mpsc::TrySendError::Full(_)) => {
                // Counted like a failure, so a storm's client refused here cannot come
                // straight back either.
                self.refuse_later(from).await;
                return Err(Busy {
                    waiting: self.queue,
                });
            }
            // No thread left (none could be started): nobody can be checked.
            Err(std_mpsc::TrySendError::Disconnected(_)) => return Err(Busy { waiting: 0 }),
        }
        let check = answer.await.unwrap_or(LoginCheck::BadCredentials);
        {
            let mut f = self.lock_failures();
            if f.checking
                .get(&key)
                .is_some_and(|rx| rx.same_channel(&tell.subscribe()))
            {
                f.checking.remove(&key);
            }
            if check == LoginCheck::BadCredentials {
                f.remember_failed(key, Instant::now());
            }
        }
        let _ = tell.send(Some(check.clone()));
        if check == LoginCheck::BadCredentials {
            self.refuse_later(from).await;
        }
        Ok(check)
    }

    /// Counts a failure from `from` and waits out the penalty it has earned.
    async fn refuse_later(&self, from: IpAddr) {
        let strikes = self.lock_failures().strike(from, Instant::now());
        // Spread over the upper half of the penalty: clients that failed together must not
        // all come back together, in waves that fill the queue.
        let spread = RandomState::new().hash_one(strikes) as f64 / u64::MAX as f64;
        let delay = penalty(strikes)
            .min(self.max_penalty)
            .mul_f64(0.5 + spread / 2.0);
        if !delay.is_zero() {
            debug!(%from, ?delay, "repeated login failures: answering later");
            tokio::time::sleep(delay).await;
        }
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        // A panic while holding it cannot leave the map inconsistent: keep using it.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn worker(rx: &Mutex<std_mpsc::Receiver<Job>>, stats: &Stats) {
    lower_priority();
    let mut verifier = Verifier::default();
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(job) = job else {
            return; // the gate is gone
        };
        // A client that left while waiting needs no answer.
        if job.reply.is_closed() {
            continue;
        }
        let check = job
            .users
            .check_login(Some(&job.login), Some(&job.password), &mut verifier);
        stats::add(&stats.password_checks, 1);
        let _ = job.reply.send(check);
    }
}

/// Lets the broker's own threads go first when both cores are busy.
#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux a nice value belongs to the thread: setpriority with the thread's id.
    // SAFETY: plain system calls on this thread's own id, no memory is passed.
    let ok = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10) == 0
    };
    if !ok {
        debug!("could not lower the login thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// Verifies PHC argon2 hashes with one work area, reused from one check to the next.
#[derive(Default)]
pub struct Verifier {
    blocks: Vec<Block>,
}

impl Verifier {
    /// True if `password` matches the PHC `hash`.
    pub fn verify(&mut self, hash: &str, password: &[u8]) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
            return false;
        };
        let version = match parsed.version.map(Version::try_from).transpose() {
            Ok(v) => v.unwrap_or_default(),
            Err(_) => return false,
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        // argon2 uses at least 8 blocks per lane, and at most what m asks for beyond that.
        let needed = params.m_cost().max(8 * params.p_cost());
        if needed > MAX_BLOCKS {
            return false;
        }
        let needed = needed as usize;
        if self.blocks.len() < needed {
            self.blocks.resize(needed, Block::default());
        }
        let mut salt_buf = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = &mut out[..expected.len()];
        let argon = Argon2::new(algorithm, version, params);
        if argon
            .hash_password_into_with_memory(password, salt, out, &mut self.blocks[..needed])
            .is_err()
        {
            return false;
        }
        // Output's equality is constant-time.
        Output::new(out).is_ok_and(|computed| computed == expected)
    }
}

/// Recent login failures: per address, and the failed user name and password pairs; and the
/// pairs being checked now.
#[derive(Default)]
struct Failures {
    by_addr: HashMap<IpAddr, Strikes>,
    /// Failed pairs, and when they failed.
    failed: HashMap<PairKey, Instant>,
    /// Pairs on their way through the pool (at most the queue's worth), with the channel that
    /// will carry the answer to others who sent the same pair meanwhile.
    checking: HashMap<PairKey, watch::Receiver<Option<LoginCheck>>>,
    /// The key of those hashes: random per process, never stored.
    key: RandomState,
}

#[derive(Clone, Copy)]
struct Strikes {
    count: u32,
    last: Instant,
}

impl Failures {
    /// What the pair of a login and password is known by, checked against `stored` (the
    /// user's hash, empty for an unknown user).
    fn keys(&self, login: &str, password: &[u8], stored: &str) -> PairKey {
        PairKey {
            pair: self.key.hash_one((login, password)),
            against: self.key.hash_one(stored),
        }
    }

    /// Whether this pair failed within the last minute.
    fn failed_before(&self, key: PairKey, now: Instant) -> bool {
        self.failed
            .get(&key)
            .is_some_and(|&at| now.duration_since(at) < FAILED_PAIR_MEMORY)
    }

    fn remember_failed(&mut self, key: PairKey, now: Instant) {
        if self.failed.len() >= MAX_FAILED_PAIRS && !self.failed.contains_key(&key) {
            self.failed
                .retain(|_, at| now.duration_since(*at) < FAILED_PAIR_MEMORY);
            if self.failed.len() >= MAX_FAILED_PAIRS {
                return;
            }
        }
        self.failed.insert(key, now);
    }

    /// Records a failure from `addr`; returns the address's recent failures, this one included
    /// (0 when the address could not be remembered).
    fn strike(&mut self, addr: IpAddr, now: Instant) -> u32 {
        if self.by_addr.len() >= MAX_ADDRESSES && !self.by_addr.contains_key(&addr) {
            self.by_addr
                .retain(|_, s| now.duration_since(s.last) < FAILURE_MEMORY);
            if self.by_addr.len() >= MAX_ADDRESSES {
                return 0;
            }
        }
        let s = self.by_addr.entry(addr).or_insert(Strikes {
            count: 0,
            last: now,
        });
        if now.duration_since(s.last) >= FAILURE_MEMORY {
            s.count = 0;
        }
        s.count = s.count.saturating_add(1);
        s.last = now;
        s.count
    }
}

/// The wait before refusing the `n`th recent failure from one address: none for the first few
/// (a typo), then doubling (capped by the caller).
fn penalty(n: u32) -> Duration {
    if n <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (n - FREE_FAILURES - 1).min(16);
    FIRST_PENALTY * 2u32.pow(doublings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::users::hash_password;

    #[test]
    fn verifier_agrees_with_the_hasher_and_reuses_its_memory() {
        let hash = hash_password(b"s3cret");
        let mut v = Verifier::default();
        assert!(v.verify(&hash, b"s3cret"));
        let area = v.blocks.as_ptr();
        assert!(!v.verify(&hash, b"s3cres"));
        assert!(!v.verify(&hash, b""));
        assert!(v.verify(&hash, b"s3cret"));
        assert_eq!(v.blocks.as_ptr(), area, "one work area, allocated once");
        assert!(!v.verify("not a hash", b"s3cret"));
        // Parameters other than the defaults are read from the hash.
        let small = Params::new(1024, 1, 1, Some(16)).unwrap();
        let salt = argon2::password_hash::SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
        let other = argon2::password_hash::PasswordHasher::hash_password(
            &Argon2::new(Algorithm::Argon2i, Version::V0x13, small),
            b"pw",
            &salt,
        )
        .unwrap()
        .to_string();
        assert!(v.verify(&other, b"pw"));
        assert!(!v.verify(&other, b"pW"));
    }

    #[test]
    fn a_hash_asking_for_too_much_memory_is_refused() {
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(PasswordHash::new(huge).is_ok(), "a well-formed hash");
        assert!(!Verifier::default().verify(huge, b"pw"));
    }

    #[test]
    fn failures_from_one_address_are_answered_later_and_later_then_forgotten() {
        let mut f = Failures::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t = Instant::now();
        let waits: Vec<Duration> = (0..8).map(|_| penalty(f.strike(a, t))).collect();
        assert_eq!(waits[..3], [Duration::ZERO; 3], "a few typos cost nothing");
        assert_eq!(waits[3], FIRST_PENALTY);
        assert_eq!(waits[4], FIRST_PENALTY * 2);
        assert!(waits[3..].windows(2).all(|w| w[0] < w[1]), "then doubling");
        assert_eq!(f.strike(b, t), 1, "other addresses are counted apart");
        for _ in 0..100 {
            f.strike(a, t);
        }
        assert!(
            penalty(f.strike(a, t)) > Duration::from_secs(60),
            "capped by the gate"
        );
        assert_eq!(
            f.strike(a, t + FAILURE_MEMORY),
            1,
            "forgotten after a quiet minute"
        );
    }

    #[test]
    fn a_failed_pair_is_remembered_against_the_hash_it_failed_with() {
        let mut f = Failures::default();
        let t = Instant::now();
        let key = f.keys("alice", b"wrong", "$argon2id$old");
        assert!(!f.failed_before(key, t));
        f.remember_failed(key, t);
        assert!(f.failed_before(key, t));
        assert_eq!(f.keys("alice", b"wrong", "$argon2id$old"), key);
        // Another password, another user, or a password changed since: checked afresh.
        assert!(!f.failed_before(f.keys("alice", b"wrong2", "$argon2id$old"), t));
        assert!(!f.failed_before(f.keys("bob", b"wrong", "$argon2id$old"), t));
        assert!(!f.failed_before(f.keys("alice", b"wrong", "$argon2id$new"), t));
        assert!(!f.failed_before(key, t + FAILED_PAIR_MEMORY));
        // Login and password are kept apart: ("ab", "c") is not ("a", "bc").
        assert_ne!(f.keys("ab", b"c", ""), f.keys("a", b"bc", ""));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        // A gate with no worker: what is queued stays queued.
        let (jobs, _rx) = std_mpsc::sync_channel::<Job>(1);
        let gate = LoginGate {
            jobs,
            queue: 1,
            max_penalty: Duration::ZERO,
            failures: Mutex::new(Failures::default()),
        };
        let users = Arc::new(Users::default());
        let from: IpAddr = "127.0.0.1".parse().unwrap();
        // The first waits in the queue (nobody takes it), the second finds it full.
        let first = gate.check(users.clone(), "a".into(), Bytes::from_static(b"x"), from);
        tokio::pin!(first);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut first)
                .await
                .is_err()
        );
        let second = gate
            .check(users, "b".into(), Bytes::from_static(b"x"), from)
            .await;
        assert_eq!(second, Err(Busy { waiting: 1 }));
    }
}
