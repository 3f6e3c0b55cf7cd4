//! Login failure limits: growing delays per account and per client
//! address, never a permanent lockout.
//!
//! After `free` failures in a row, the next attempt must wait 1 s, then
//! 2 s, 4 s… up to a cap. An attempt made too early is answered at once
//! with 429 and no password check, so a flood costs no hashing. The
//! account cap is short (default 30 s): someone hammering `alice` slows
//! her down but cannot lock her out. The address cap is long (15 min).
//! Counters are forgotten after an hour without failures; a success clears
//! the account's counter (not the address's, or one valid account would
//! let an attacker reset their own limit).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::LoginLimits;

/// Entries kept before expired ones are swept.
const MAX_ENTRIES: usize = 100_000;
/// Quiet time after which a counter is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
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
fn addr_key(ip: IpAddr) -> Key {
    match ip {
        IpAddr::V4(_) => Key::Addr(ip),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Key::Addr(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                Key::Addr(IpAddr::V6(std::net::Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
        },
    }
}

fn account_key(name: &str) -> Key {
    Key::Account(name.trim().to_lowercase())
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
        // A panic while holding the lock leaves plain counters behind;
        // they are still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(wait)` if this attempt comes too early.
    pub fn check(&self, ip: IpAddr, account: &str, now: Instant) -> Result<(), Duration> {
        let entries = self.lock();
        let wait = [addr_key(ip), account_key(account)]
            .iter()
            .filter_map(|k| entries.get(k))
            .map(|e| e.wait_until.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Records a failed attempt.
    pub fn failed(&self, ip: IpAddr, account: &str, now: Instant) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.wait_until > now);
        }
        let limits = &self.limits;
        for (key, free, cap) in [
            (addr_key(ip), limits.ip_free_failures, limits.ip_max_delay),
            (
                account_key(account),
                limits.account_free_failures,
                limits.account_max_delay,
            ),
        ] {
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
    }

    /// Records a successful login: the account's counter starts over.
    pub fn succeeded(&self, account: &str) {
        self.lock().remove(&account_key(account));
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
        for _ in 0..8 {
            // Each attempt waits out the previous delay first.
            if let Err(w) = t.check(ip, "alice", now) {
                now += w;
            }
            assert!(t.check(ip, "alice", now).is_ok());
            t.failed(ip, "alice", now);
            waits.push(
                t.check(ip, "alice", now)
                    .err()
                    .unwrap_or_default()
                    .as_secs(),
            );
        }
        // Account: free 3, then 1, 2, 4, 8, 8; address: free 5, then 1, 2, 4.
        assert_eq!(waits, [0, 0, 0, 1, 2, 4, 8, 8]);
    }

    #[test]
    fn an_attacker_cannot_lock_the_owner_out_for_long() {
        let t = Throttle::new(limits());
        let attacker: IpAddr = "198.51.100.7".parse().unwrap();
        let owner: IpAddr = "203.0.113.9".parse().unwrap();
        let now = Instant::now();
        for i in 0..1000 {
            t.failed(attacker, "Alice", now + Duration::from_millis(i));
        }
        let later = now + Duration::from_secs(1);
        let wait = t.check(owner, "alice", later).unwrap_err();
        assert!(wait <= Duration::from_secs(8), "owner waits {wait:?}");
        assert!(t
            .check(owner, "alice", later + Duration::from_secs(8))
            .is_ok());
        // The attacker's own address stays slowed for much longer.
        let wait = t.check(attacker, "bob", later).unwrap_err();
        assert!(wait > Duration::from_secs(60), "{wait:?}");
    }

    #[test]
    fn success_clears_the_account_but_not_the_address() {
        let t = Throttle::new(limits());
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::ffff".parse().unwrap();
        let now = Instant::now();
        for _ in 0..6 {
            t.failed(ip, "alice", now);
        }
        assert!(t.check(same_64, "carol", now).is_err(), "counted per /64");
        t.succeeded("alice");
        assert!(t.check("192.0.2.2".parse().unwrap(), "alice", now).is_ok());
        assert!(t.check(ip, "bob", now).is_err());
    }

    #[test]
    fn counters_are_forgotten_after_a_quiet_hour() {
        let t = Throttle::new(limits());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..4 {
            t.failed(ip, "alice", now);
        }
        let later = now + FORGET_AFTER + Duration::from_secs(1);
        t.failed(ip, "alice", later);
        assert!(
            t.check(ip, "alice", later).is_ok(),
            "one fresh failure is free"
        );
    }
}
