//! Rate limits for sign-in and registration, per account (e-mail) and per client address.
//!
//! Each limit is a rate with a burst: `burst` attempts at once, then one more every
//! `period / burst` (the generic cell rate algorithm, GCRA). A key's whole state is one
//! instant, its "theoretical arrival time", so a limiter holds a hash of the key and an
//! instant per recently seen key, and nothing else.
//!
//! Memory is bounded: keys live in two generations of at most `max_keys / 2` entries each.
//! When the current generation fills it becomes the previous one and the oldest is dropped
//! whole. A key dropped that way starts afresh, which only a client sending `max_keys / 2`
//! distinct keys between two of its own attempts could cause: the per-client limit caps
//! how many keys one address can send.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::http::StatusCode;
use tokio::time::Instant;

use crate::problem::ApiError;

/// `burst` attempts at once, refilled evenly over `period`: `5/1m` allows five at once
/// and then one every twelve seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub period: Duration,
}

impl Rate {
    pub const fn new(burst: u32, period: Duration) -> Self {
        Rate { burst, period }
    }

    /// Parses `N/PERIOD`, such as `5/1m`, `30/60s` or `100/1h` (units `s`, `m`, `h`).
    pub fn parse(raw: &str) -> Result<Rate, String> {
        let bad = || format!("{raw:?}: expected attempts/period, such as 5/1m or 30/60s");
        let (n, period) = raw.trim().split_once('/').ok_or_else(bad)?;
        let burst: u32 = n.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        let split = period
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(period.len());
        let (digits, unit) = period.split_at(split);
        let count: u64 = digits.parse().map_err(|_| bad())?;
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(bad()),
        };
        if burst == 0 || count == 0 {
            return Err(format!("{raw:?}: attempts and period must be positive"));
        }
        let period = count
            .checked_mul(scale)
            .map(Duration::from_secs)
            .ok_or_else(bad)?;
        Ok(Rate { burst, period })
    }

    /// The time one attempt refills in.
    fn interval(&self) -> Duration {
        self.period / self.burst.max(1)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}s", self.burst, self.period.as_secs())
    }
}

/// The limits on `POST /auth/login` and `POST /auth/register`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    /// Attempts per e-mail address, sign-ins and registrations together.
    pub per_account: Rate,
    /// Attempts per client address (per /64 for IPv6).
    pub per_client: Rate,
    /// Keys each limiter remembers at most.
    pub max_keys: usize,
}

impl AuthLimits {
    /// Five attempts per account at once, then one every 12 s (5 a minute).
    pub const DEFAULT_PER_ACCOUNT: Rate = Rate::new(5, Duration::from_secs(60));
    /// Thirty attempts per client address at once, then one every 2 s (30 a minute).
    pub const DEFAULT_PER_CLIENT: Rate = Rate::new(30, Duration::from_secs(60));
    /// 100,000 keys per limiter: a few MiB at most.
    pub const DEFAULT_MAX_KEYS: usize = 100_000;
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            per_account: Self::DEFAULT_PER_ACCOUNT,
            per_client: Self::DEFAULT_PER_CLIENT,
            max_keys: Self::DEFAULT_MAX_KEYS,
        }
    }
}

/// One rate over many keys, in bounded memory.
#[derive(Debug)]
struct Limiter {
    rate: Rate,
    generation_size: usize,
    hasher: RandomState,
    state: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<u64, Instant>,
    previous: HashMap<u64, Instant>,
}

impl Limiter {
    fn new(rate: Rate, max_keys: usize) -> Self {
        Limiter {
            rate,
            generation_size: (max_keys / 2).max(1),
            hasher: RandomState::new(),
            state: Mutex::new(Generations::default()),
        }
    }

    /// Counts an attempt for `key` at `now`: `Ok` when it is allowed, else how long until
    /// the next one would be.
    fn attempt(&self, key: &[u8], now: Instant) -> Result<(), Duration> {
        let key = self.hasher.hash_one(key);
        let interval = self.rate.interval();
        let tolerance = interval * self.rate.burst.saturating_sub(1);
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let stored = g
            .current
            .get(&key)
            .or_else(|| g.previous.get(&key))
            .copied();
        let tat = stored.map_or(now, |t| t.max(now));
        let ahead = tat - now;
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        if g.current.len() >= self.generation_size && !g.current.contains_key(&key) {
            g.previous = std::mem::take(&mut g.current);
        }
        g.previous.remove(&key);
        g.current.insert(key, tat + interval);
        Ok(())
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        let g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.current.len() + g.previous.len()
    }
}

/// The sign-in and registration limiter the API consults before any password work.
#[derive(Debug, Clone)]
pub struct AuthLimiter {
    accounts: Arc<Limiter>,
    clients: Arc<Limiter>,
}

impl AuthLimiter {
    pub fn new(limits: AuthLimits) -> Self {
        AuthLimiter {
            accounts: Arc::new(Limiter::new(limits.per_account, limits.max_keys)),
            clients: Arc::new(Limiter::new(limits.per_client, limits.max_keys)),
        }
    }

    /// Counts an attempt by `client` for `email`; a 429 problem with `Retry-After` when
    /// either limit is reached. The client's limit is checked first, so a client refused
    /// for flooding spends nothing of the accounts it names.
    pub fn check(&self, email: &str, client: Option<IpAddr>) -> Result<(), ApiError> {
        self.check_at(email, client, Instant::now())
    }

    fn check_at(&self, email: &str, client: Option<IpAddr>, now: Instant) -> Result<(), ApiError> {
        if let Some(ip) = client {
            self.clients
                .attempt(&client_key(ip), now)
                .map_err(|wait| refused("from this address", wait))?;
        }
        let account = email.trim().to_lowercase();
        self.accounts
            .attempt(account.as_bytes(), now)
            .map_err(|wait| refused("for this account", wait))
    }
}

/// An IPv4 address, or an IPv6 address's /64: one host usually holds a whole /64.
fn client_key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets()[..8].to_vec(),
        },
    }
}

fn refused(whom: &str, wait: Duration) -> ApiError {
    // Whole seconds, rounded up: a client that waits Retry-After is let in.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        format!("too many sign-in or registration attempts {whom}; retry in {secs} s"),
    )
    .with_retry_after(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn rates_parse() {
        assert_eq!(Rate::parse("5/1m"), Ok(Rate::new(5, secs(60))));
        assert_eq!(Rate::parse(" 30 / 60s "), Ok(Rate::new(30, secs(60))));
        assert_eq!(Rate::parse("100/2h"), Ok(Rate::new(100, secs(7200))));
        for bad in ["", "5", "5/", "/1m", "0/1m", "5/0s", "5/1d", "x/1m", "5/m"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_burst_then_one_per_interval() {
        let l = Limiter::new(Rate::new(3, secs(30)), 100);
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.attempt(b"k", t), Ok(()));
        }
        assert_eq!(l.attempt(b"k", t), Err(secs(10)));
        assert_eq!(l.attempt(b"k", t + secs(4)), Err(secs(6)));
        assert_eq!(l.attempt(b"k", t + secs(10)), Ok(()));
        assert_eq!(l.attempt(b"k", t + secs(10)), Err(secs(10)));
        // Other keys are not affected; after a full period the key is fresh.
        assert_eq!(l.attempt(b"other", t), Ok(()));
        for _ in 0..3 {
            assert_eq!(l.attempt(b"k", t + secs(60)), Ok(()));
        }
    }

    #[test]
    fn memory_is_bounded_whatever_the_keys() {
        let l = Limiter::new(Rate::new(1, secs(3600)), 1000);
        let t = Instant::now();
        for i in 0u32..100_000 {
            assert_eq!(l.attempt(&i.to_le_bytes(), t), Ok(()));
            assert!(l.keys() <= 1000);
        }
        // The most recent keys are still remembered.
        assert!(l.attempt(&99_999u32.to_le_bytes(), t).is_err());
    }

    #[test]
    fn accounts_ignore_case_and_clients_share_a_v6_slash_64() {
        let limits = AuthLimits {
            per_account: Rate::new(1, secs(60)),
            per_client: Rate::new(2, secs(60)),
            max_keys: 100,
        };
        let l = AuthLimiter::new(limits);
        let t = Instant::now();
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let b: IpAddr = "2001:db8::2".parse().expect("ip");
        let c: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!(l.check_at("Ann@x.org", Some(a), t).is_ok());
        let e = l
            .check_at("ann@X.org ", Some(c), t)
            .expect_err("same account");
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after(), Some(60));
        assert!(e.detail().contains("for this account"), "{}", e.detail());
        assert!(l.check_at("bob@x.org", Some(b), t).is_ok());
        let e = l.check_at("cy@x.org", Some(a), t).expect_err("same /64");
        assert!(e.detail().contains("from this address"), "{}", e.detail());
        assert_eq!(e.retry_after(), Some(30));
    }
}
