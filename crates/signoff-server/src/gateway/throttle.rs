//! Login failure limits: growing delays per client address and per
//! (account, client address), never a lockout of the account as a whole.
//!
//! After `free` failures in a row, the next attempt must wait 1 s, then
//! 2 s, 4 s… up to a cap. An attempt made too early is answered at once
//! with 429 and no password check, so a flood costs no hashing. Each
//! attempt is counted as a failure when it is admitted (and taken back if
//! it succeeds), so parallel attempts cannot slip past the limit together.
//!
//! The account limit is kept per client address (IPv6: per /64): someone
//! hammering `alice` from their addresses slows only those addresses, and
//! alice signs in from hers. Guessing one account from many addresses is
//! bounded by each address's own limit (long cap, default 15 min).
//! Counters are forgotten after an hour without failures; a success clears
//! that account's counter for that address and takes back the attempt from
//! the address's count.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::LoginLimits;

/// Entries kept before old ones are swept.
const MAX_ENTRIES: usize = 100_000;
/// Quiet time after which a counter is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String, IpAddr),
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    wait_until: Instant,
}

/// The failure counters of one gateway.
#[derive(Debug)]
pub struct Throttle {
    limits: LoginLimits,
    entries: Mutex<HashMap<Key, Entry>>,
}

/// IPv6 clients are counted per /64: one host usually holds a whole one.
fn prefix(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Names that cannot exist share one bucket, so junk cannot fill the map.
fn account(name: &str) -> String {
    let name = name.trim();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
    if valid {
        name.to_ascii_lowercase()
    } else {
        "\u{0}invalid".to_owned()
    }
}

fn delay(failures: u32, free: u32, cap: Duration) -> Duration {
    if failures <= free {
        return Duration::ZERO;
    }
    let exp = (failures - free - 1).min(30);
    Duration::from_secs(1u64 << exp).min(cap)
}

impl Throttle {
    /// Counters with these limits.
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // Plain counters stay usable after a panic elsewhere.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keys(&self, ip: IpAddr, name: &str) -> [(Key, u32, Duration); 2] {
        let ip = prefix(ip);
        let l = &self.limits;
        [
            (Key::Addr(ip), l.ip_free_failures, l.ip_max_delay),
            (
                Key::Account(account(name), ip),
                l.account_free_failures,
                l.account_max_delay,
            ),
        ]
    }

    /// Admits an attempt (counting it as a failure until
    /// [`Throttle::succeeded`] says otherwise), or `Err(wait)` if it comes
    /// too early.
    pub fn attempt(&self, ip: IpAddr, name: &str, now: Instant) -> Result<(), Duration> {
        let keys = self.keys(ip, name);
        let mut entries = self.lock();
        let wait = keys
            .iter()
            .filter_map(|(k, _, _)| entries.get(k))
            .map(|e| e.wait_until.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if !wait.is_zero() {
            return Err(wait);
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now.saturating_duration_since(e.last_failure) < FORGET_AFTER);
            if entries.len() >= MAX_ENTRIES {
                // Still full of fresh entries: a flood of addresses. Start
                // over rather than grow without bound.
                tracing::warn!("login throttle table full; forgetting all counters");
                entries.clear();
            }
        }
        for (key, free, cap) in keys {
            let entry = entries.entry(key).or_insert(Entry {
                failures: 0,
                last_failure: now,
                wait_until: now,
            });
            if now.saturating_duration_since(entry.last_failure) > FORGET_AFTER {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure = now;
            entry.wait_until = now + delay(entry.failures, free, cap);
        }
        Ok(())
    }

    /// The admitted attempt succeeded: the account's counter for this
    /// address starts over, and the address gets its attempt back.
    pub fn succeeded(&self, ip: IpAddr, name: &str) {
        let [(addr, free, cap), (acct, _, _)] = self.keys(ip, name);
        let mut entries = self.lock();
        entries.remove(&acct);
        if let Some(e) = entries.get_mut(&addr) {
            e.failures = e.failures.saturating_sub(1);
            e.wait_until = e.last_failure + delay(e.failures, free, cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LoginLimits {
        LoginLimits {
            account_free_failures: 3,
            account_max_delay: Duration::from_secs(8),
            ip_free_failures: 5,
            ip_max_delay: Duration::from_secs(600),
        }
    }

    #[test]
    fn delays_grow_then_stop_at_the_cap() {
        let t = Throttle::new(limits());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..9 {
            // Too early: refused and not counted. Then wait and get in.
            let wait = match t.attempt(ip, "alice", now) {
                Ok(()) => Duration::ZERO,
                Err(w) => {
                    now += w;
                    t.attempt(ip, "alice", now)
                        .unwrap_or_else(|w| panic!("still waiting {w:?}"));
                    w
                }
            };
            waits.push(wait.as_secs());
        }
        // Account: 4 attempts free (the 4th sets the first delay), then
        // 1, 2, 4, 8, 8 (the cap); the address's own delays stay shorter.
        assert_eq!(waits, [0, 0, 0, 0, 1, 2, 4, 8, 8]);
    }

    #[test]
    fn parallel_attempts_cannot_slip_past_the_limit() {
        let t = Throttle::new(limits());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        let admitted = (0..100)
            .filter(|_| t.attempt(ip, "alice", now).is_ok())
            .count();
        assert_eq!(admitted, 4, "3 free failures, then the 4th sets a delay");
    }

    #[test]
    fn an_attacker_cannot_lock_the_owner_out() {
        let t = Throttle::new(limits());
        let attacker: IpAddr = "198.51.100.7".parse().unwrap();
        let owner: IpAddr = "203.0.113.9".parse().unwrap();
        let mut now = Instant::now();
        for _ in 0..1000 {
            if let Err(w) = t.attempt(attacker, "Alice", now) {
                now += w;
            }
        }
        assert!(
            t.attempt(owner, "alice", now).is_ok(),
            "the owner's address is not slowed"
        );
        t.succeeded(owner, "alice");
        let wait = t.attempt(attacker, "bob", now).unwrap_err();
        assert!(
            wait > Duration::from_secs(60),
            "the attacker's address is: {wait:?}"
        );
    }

    #[test]
    fn success_gives_the_attempt_back_and_ipv6_counts_per_64() {
        let t = Throttle::new(limits());
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::ffff".parse().unwrap();
        let now = Instant::now();
        for _ in 0..20 {
            t.attempt(ip, "alice", now).unwrap();
            t.succeeded(ip, "alice");
        }
        assert!(
            t.attempt(same_64, "carol", now).is_ok(),
            "successes cost nothing"
        );
        for name in ["b1", "b2", "b3", "b4", "b5"] {
            let _ = t.attempt(ip, name, now);
        }
        assert!(t.attempt(same_64, "dave", now).is_err(), "counted per /64");
    }

    #[test]
    fn junk_names_share_one_bucket_and_counters_are_forgotten() {
        let t = Throttle::new(limits());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        for i in 0..4 {
            let _ = t.attempt(ip, &format!("<junk {i}>"), now);
        }
        assert!(t.attempt(ip, "<other junk>", now).is_err());
        assert!(t.lock().len() <= 2);
        let later = now + FORGET_AFTER + Duration::from_secs(1);
        assert!(t.attempt(ip, "<other junk>", later).is_ok());
    }
}
