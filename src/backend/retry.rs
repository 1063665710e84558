//! Retries transient backend errors with exponential backoff and full jitter.
//!
//! Only [`BackendErrorKind::Transient`] is retried: a missing object, a refusal or a bad
//! configuration fails at once. Every operation of the [`Backend`] contract may be repeated
//! safely (puts are idempotent, the ref replacement writes the same bytes), so no call needs
//! special treatment. After the last attempt the error says how many were made.

use std::time::Duration;

use super::{Backend, BackendError, BackendErrorKind, BackendResult, ObjectInfo};

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The cap of the first pause; each later one doubles, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts over at most ~30 s: long enough to ride out a restarting S3 server or a flaky
    /// link, short enough that a dead remote fails the push within a cycle.
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// Environment variable overriding [`RetryPolicy::attempts`].
pub const RETRIES_ENV: &str = "VAULT_REMOTE_RETRIES";

impl RetryPolicy {
    /// The default policy, with the attempts from `VAULT_REMOTE_RETRIES` when set (1 to 20).
    pub fn from_env() -> crate::Result<Self> {
        let mut p = RetryPolicy::default();
        if let Ok(v) = std::env::var(RETRIES_ENV) {
            p.attempts = v
                .parse()
                .ok()
                .filter(|n| (1..=20).contains(n))
                .ok_or_else(|| {
                    crate::Error::Usage(format!("{RETRIES_ENV}={v:?}: use a number from 1 to 20"))
                })?;
        }
        Ok(p)
    }

    /// Pauses of a few milliseconds, for tests.
    pub fn fast(attempts: u32) -> Self {
        RetryPolicy {
            attempts,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(20),
        }
    }

    /// The pause before retry number `n` (1-based): uniform in [0, min(max, base * 2^(n-1))].
    fn pause(&self, n: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << (n - 1).min(20))
            .min(self.max_delay);
        let mut b = [0u8; 8];
        // Without randomness the pause is the cap: still a backoff, only without jitter.
        let frac = match getrandom::fill(&mut b) {
            Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
            Err(_) => 1.0,
        };
        cap.mul_f64(frac)
    }
}

/// A backend whose transient failures are retried.
pub struct Retrying<B> {
    inner: B,
    policy: RetryPolicy,
}

impl<B: Backend> Retrying<B> {
    pub fn new(inner: B, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }

    fn run<T>(&self, mut f: impl FnMut() -> BackendResult<T>) -> BackendResult<T> {
        let attempts = self.policy.attempts.max(1);
        let mut n = 1;
        loop {
            match f() {
                Err(e) if e.kind == BackendErrorKind::Transient && n < attempts => {
                    std::thread::sleep(self.policy.pause(n));
                    n += 1;
                }
                Err(e) if n > 1 => {
                    return Err(BackendError {
                        message: format!("{} (after {n} attempts)", e.message),
                        ..e
                    })
                }
                other => return other,
            }
        }
    }
}

impl<B: Backend> Backend for Retrying<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.run(|| self.inner.list(prefix))
    }
    fn stat(&self, name: &str) -> BackendResult<Option<u64>> {
        self.run(|| self.inner.stat(name))
    }
    fn read(&self, name: &str) -> BackendResult<Vec<u8>> {
        self.run(|| self.inner.read(name))
    }
    fn read_range(&self, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.run(|| self.inner.read_range(name, offset, len))
    }
    fn put(&self, name: &str, data: &[u8]) -> BackendResult<()> {
        self.run(|| self.inner.put(name, data))
    }
    fn replace(&self, name: &str, data: &[u8]) -> BackendResult<()> {
        self.run(|| self.inner.replace(name, data))
    }
    fn delete(&self, name: &str) -> BackendResult<()> {
        self.run(|| self.inner.delete(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fault::{Faults, Faulty};
    use crate::backend::local::LocalBackend;

    #[test]
    fn retries_transient_failures_until_success_and_gives_up_after_the_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalBackend::create(tmp.path()).unwrap();
        // Calls 1 and 2 fail: the third attempt of the first put succeeds.
        let b = Retrying::new(
            Faulty::new(&local, Faults::calls([1, 2])),
            RetryPolicy::fast(3),
        );
        b.put("a.json", b"x").unwrap();
        assert_eq!(local.read("a.json").unwrap(), b"x");
        // Every call fails: two attempts, then the error, which says so.
        let b = Retrying::new(
            Faulty::new(&local, Faults::share(1.0, 7)),
            RetryPolicy::fast(2),
        );
        let e = b.read("a.json").unwrap_err();
        assert!(
            e.is_transient() && e.message.contains("after 2 attempts"),
            "{e}"
        );
        // A missing object is not retried.
        let calls = Faulty::new(&local, Faults::none());
        let b = Retrying::new(&calls, RetryPolicy::fast(5));
        assert!(b.read("missing.json").unwrap_err().is_not_found());
        assert_eq!(calls.calls(), 1);
    }

    #[test]
    fn pauses_grow_and_stay_under_the_cap() {
        let p = RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
        };
        for _ in 0..50 {
            assert!(p.pause(1) <= Duration::from_millis(100));
            assert!(p.pause(3) <= Duration::from_millis(400));
            assert!(p.pause(30) <= Duration::from_millis(400));
        }
    }
}
