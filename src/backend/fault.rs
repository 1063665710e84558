//! A backend that fails on purpose, for tests: the Nth calls, every call after the Nth, or a
//! given share of calls chosen by a seeded generator (so a failing run can be replayed).
//!
//! Failures are [`BackendErrorKind::Transient`] (or the kind [`Faults::kind`] names) and happen
//! *before* the inner call, so the store is never touched by a failed call; `fail_after_write`
//! instead fails *after* a write went through, which is what a connection dropped before the
//! response looks like. [`Faults::denied`] names objects every call on which is refused, as a
//! store refuses one object it may not serve.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::{Backend, BackendError, BackendErrorKind, BackendResult, ObjectInfo};

/// Which calls fail.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// 1-based call numbers that fail.
    pub calls: BTreeSet<u64>,
    /// Every call after this many succeeded calls fails (a server that died).
    pub after: Option<u64>,
    /// Share of calls that fail, 0.0..=1.0, drawn from `seed`.
    pub share: f64,
    pub seed: u64,
    /// Writes are performed, then reported as failed.
    pub fail_after_write: bool,
    /// The kind of the failures above; `None`: transient.
    pub kind: Option<BackendErrorKind>,
    /// Objects every call on which fails as [`BackendErrorKind::Denied`] (counted as calls)...
    pub denied: BTreeSet<String>,
    /// ...once this many calls were made (0: from the first): a store that starts refusing.
    pub denied_after: u64,
}

impl Faults {
    pub fn none() -> Self {
        Faults::default()
    }
    pub fn calls(calls: impl IntoIterator<Item = u64>) -> Self {
        Faults {
            calls: calls.into_iter().collect(),
            ..Faults::default()
        }
    }
    pub fn after(n: u64) -> Self {
        Faults {
            after: Some(n),
            ..Faults::default()
        }
    }
    pub fn share(share: f64, seed: u64) -> Self {
        Faults {
            share,
            seed,
            ..Faults::default()
        }
    }
}

/// Wraps a backend and fails calls as [`Faults`] says.
pub struct Faulty<B> {
    inner: B,
    faults: Faults,
    count: AtomicU64,
    rng: Mutex<u64>,
    failed: AtomicU64,
    /// Calls per object name (or list prefix).
    per_name: Mutex<std::collections::HashMap<String, u64>>,
}

impl<B: Backend> Faulty<B> {
    pub fn new(inner: B, faults: Faults) -> Self {
        let seed = faults.seed;
        Faulty {
            inner,
            faults,
            count: AtomicU64::new(0),
            rng: Mutex::new(seed ^ 0x9e37_79b9_7f4a_7c15),
            failed: AtomicU64::new(0),
            per_name: Mutex::default(),
        }
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Calls made so far about the object `name`, failed or not.
    pub fn calls_to(&self, name: &str) -> u64 {
        let per_name = self.per_name.lock().expect("invariant: per-name lock");
        per_name.get(name).copied().unwrap_or(0)
    }

    /// Calls failed so far.
    pub fn failures(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// splitmix64: small, seedable, good enough to pick failures.
    fn next_unit(&self) -> f64 {
        let mut s = self.rng.lock().expect("invariant: rng lock");
        *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn should_fail(&self) -> bool {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = self.faults.calls.contains(&n)
            || self.faults.after.is_some_and(|a| n > a)
            || (self.faults.share > 0.0 && self.next_unit() < self.faults.share);
        if fail {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        fail
    }

    fn injected(&self, op: &'static str, name: &str) -> BackendError {
        BackendError::new(
            self.inner.location(),
            op,
            name,
            self.faults.kind.unwrap_or(BackendErrorKind::Transient),
            "injected fault",
        )
    }

    fn call<T>(
        &self,
        op: &'static str,
        name: &str,
        write: bool,
        f: impl FnOnce() -> BackendResult<T>,
    ) -> BackendResult<T> {
        *self
            .per_name
            .lock()
            .expect("invariant: per-name lock")
            .entry(name.to_string())
            .or_default() += 1;
        if self.faults.denied.contains(name)
            && self.count.load(Ordering::SeqCst) >= self.faults.denied_after
        {
            self.count.fetch_add(1, Ordering::SeqCst);
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(BackendError::new(
                self.inner.location(),
                op,
                name,
                BackendErrorKind::Denied,
                "injected refusal",
            ));
        }
        if !self.should_fail() {
            return f();
        }
        if write && self.faults.fail_after_write {
            f()?;
        }
        Err(self.injected(op, name))
    }
}

impl<B: Backend> Backend for Faulty<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.call("list", prefix, false, || self.inner.list(prefix))
    }
    fn stat(&self, name: &str) -> BackendResult<Option<u64>> {
        self.call("stat", name, false, || self.inner.stat(name))
    }
    fn read(&self, name: &str) -> BackendResult<Vec<u8>> {
        self.call("read", name, false, || self.inner.read(name))
    }
    fn read_range(&self, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.call("read", name, false, || {
            self.inner.read_range(name, offset, len)
        })
    }
    fn put(&self, name: &str, data: &[u8]) -> BackendResult<()> {
        self.call("put", name, true, || self.inner.put(name, data))
    }
    fn replace(&self, name: &str, data: &[u8]) -> BackendResult<()> {
        self.call("replace", name, true, || self.inner.replace(name, data))
    }
    fn delete(&self, name: &str) -> BackendResult<()> {
        self.call("delete", name, true, || self.inner.delete(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;

    #[test]
    fn fails_the_chosen_calls_and_a_seeded_share() {
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalBackend::create(tmp.path()).unwrap();
        let f = Faulty::new(&local, Faults::calls([2]));
        assert!(f.put("a.json", b"1").is_ok());
        assert!(f.put("a.json", b"1").unwrap_err().is_transient());
        assert!(f.stat("a.json").is_ok());
        let f = Faulty::new(&local, Faults::after(1));
        assert!(f.stat("a.json").is_ok());
        assert!(f.stat("a.json").is_err() && f.stat("a.json").is_err());
        let run = |seed| {
            let f = Faulty::new(&local, Faults::share(0.3, seed));
            (0..1000)
                .map(|_| f.stat("a.json").is_err())
                .collect::<Vec<_>>()
        };
        let a = run(1);
        assert_eq!(a, run(1), "a seed replays the same failures");
        let failed = a.iter().filter(|x| **x).count();
        assert!((200..400).contains(&failed), "{failed} of 1000 at 30%");
        // A write reported failed after it went through.
        let f = Faulty::new(
            &local,
            Faults {
                fail_after_write: true,
                ..Faults::calls([1])
            },
        );
        assert!(f.put("b.json", b"2").is_err());
        assert_eq!(local.read("b.json").unwrap(), b"2");
    }
}
