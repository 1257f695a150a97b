//! Sign-in throttling: growing delays after failed logins, per account and
//! per source address, and a cap on concurrent password hashing.
//!
//! * Each key (tenant + e-mail, and the client address) counts consecutive
//!   failures. From the `free`-th on, the next attempt must wait
//!   `base * 2^(failures - free)` (capped at `max_delay`); an attempt during
//!   the wait is refused with its `Retry-After` *without* checking the
//!   password, so guessing gets no faster by trying harder.
//! * Keys of unknown accounts count exactly like known ones: throttling
//!   reveals nothing about which e-mails exist.
//! * A success clears the account's count (not the address's: one right
//!   password does not unlock guessing other accounts from there).
//! * At most `concurrent_hashes` Argon2 verifications run at once (each uses
//!   about 19 MiB): a login flood queues instead of exhausting memory or the
//!   blocking thread pool the rest of the API needs.
//!
//! The state is per replica and in memory; several replicas each throttle
//! what reaches them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Throttling settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures per account allowed without delay.
    pub account_free: u32,
    /// Failures per source address allowed without delay.
    pub source_free: u32,
    /// First delay once the free failures are used up.
    pub base_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
    /// Password verifications running at once.
    pub concurrent_hashes: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            account_free: 5,
            source_free: 20,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            concurrent_hashes: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Source(IpAddr),
}

#[derive(Debug, Default, Clone, Copy)]
struct Failures {
    count: u32,
    blocked_until: Option<Instant>,
}

/// Most keys remembered; older entries are dropped first when full.
const MAX_KEYS: usize = 100_000;

/// The throttle of one replica.
#[derive(Debug)]
pub struct LoginThrottle {
    settings: ThrottleSettings,
    failures: Mutex<HashMap<Key, Failures>>,
    hashing: Semaphore,
}

impl LoginThrottle {
    /// A throttle with `settings`.
    pub fn new(settings: ThrottleSettings) -> Self {
        Self {
            hashing: Semaphore::new(settings.concurrent_hashes.max(1)),
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(account: &str, source: Option<IpAddr>) -> Vec<Key> {
        let mut keys = vec![Key::Account(account.to_ascii_lowercase())];
        keys.extend(source.map(Key::Source));
        keys
    }

    /// `Err(wait)` while `account` or `source` must wait before the next attempt.
    pub fn check(&self, account: &str, source: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let wait = Self::keys(account, source)
            .iter()
            .filter_map(|k| failures.get(k)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match wait {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Records a failed attempt.
    pub fn failed(&self, account: &str, source: Option<IpAddr>) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_KEYS {
            failures.retain(|_, f| f.blocked_until.is_some_and(|u| u > now));
        }
        for key in Self::keys(account, source) {
            let free = match key {
                Key::Account(_) => self.settings.account_free,
                Key::Source(_) => self.settings.source_free,
            };
            let entry = failures.entry(key).or_default();
            entry.count = entry.count.saturating_add(1);
            if entry.count >= free {
                let doublings = (entry.count - free).min(20);
                let delay = self
                    .settings
                    .base_delay
                    .saturating_mul(1 << doublings)
                    .min(self.settings.max_delay);
                entry.blocked_until = Some(now + delay);
            }
        }
    }

    /// Records a successful sign-in: the account starts over.
    pub fn succeeded(&self, account: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&Key::Account(account.to_ascii_lowercase()));
    }

    /// A permit to run one password verification (waits while the cap is reached).
    pub async fn hashing_permit(&self) -> Option<SemaphorePermit<'_>> {
        self.hashing.acquire().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottleSettings {
            account_free: 3,
            source_free: 5,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            concurrent_hashes: 1,
        })
    }

    #[test]
    fn delays_start_after_the_free_failures_and_grow() {
        let t = throttle();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..2 {
            t.failed("acme/a@x", Some(ip));
            assert!(t.check("acme/a@x", Some(ip)).is_ok());
        }
        t.failed("acme/a@x", Some(ip));
        let first = t.check("acme/a@x", Some(ip)).unwrap_err();
        assert!(first <= Duration::from_secs(2) && first > Duration::from_secs(1));
        t.failed("acme/a@x", Some(ip));
        let second = t.check("acme/a@x", None).unwrap_err();
        assert!(second > Duration::from_secs(3), "{second:?}");
        for _ in 0..20 {
            t.failed("acme/a@x", None);
        }
        assert!(t.check("acme/a@x", None).unwrap_err() <= Duration::from_secs(60));
    }

    #[test]
    fn the_source_address_is_throttled_across_accounts() {
        let t = throttle();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        for n in 0..5 {
            t.failed(&format!("acme/u{n}@x"), Some(ip));
        }
        assert!(t.check("acme/fresh@x", Some(ip)).is_err());
        assert!(t.check("acme/fresh@x", None).is_ok());
    }

    #[test]
    fn a_success_clears_the_account_but_not_the_address() {
        let t = throttle();
        let ip: IpAddr = "192.0.2.5".parse().unwrap();
        for _ in 0..5 {
            t.failed("acme/a@x", Some(ip));
        }
        t.succeeded("acme/a@x");
        assert!(t.check("acme/a@x", None).is_ok());
        assert!(t.check("acme/a@x", Some(ip)).is_err());
    }
}
