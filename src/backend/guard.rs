//! The append-only guard of a remote marked `append_only`: it only creates objects.
//!
//! A delete is refused; a `put` over an existing object is refused unless the object already has
//! the size being written (then the content-addressed name says it is the same object, and nothing
//! is written); `replace` is allowed only for the LKG ref, whose previous values `crate::push`
//! keeps under `refs/history/`. This guards against our own bugs only: a host owned by
//! ransomware holds the same credentials, so the store itself must refuse deletes (README.md,
//! "Append-only remotes", shows the S3 policy and the NTFS ACL).

use super::{Backend, BackendError, BackendErrorKind, BackendResult, ObjectInfo, LKG_REF};

/// Wraps a backend and refuses deletes and overwrites.
pub struct AppendOnly<B> {
    inner: B,
}

impl<B: Backend> AppendOnly<B> {
    pub fn new(inner: B) -> Self {
        AppendOnly { inner }
    }

    fn refuse(&self, op: &'static str, name: &str, what: &str) -> BackendError {
        BackendError::new(
            self.inner.location(),
            op,
            name,
            BackendErrorKind::Refused,
            format!("this remote is append_only: {what}"),
        )
    }
}

impl<B: Backend> Backend for AppendOnly<B> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn stat(&self, name: &str) -> BackendResult<Option<u64>> {
        self.inner.stat(name)
    }
    fn read(&self, name: &str) -> BackendResult<Vec<u8>> {
        self.inner.read(name)
    }
    fn read_range(&self, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        self.inner.read_range(name, offset, len)
    }
    fn put(&self, name: &str, data: &[u8]) -> BackendResult<()> {
        match self.inner.stat(name)? {
            None => self.inner.put(name, data),
            Some(size) if size == data.len() as u64 => Ok(()),
            Some(size) => Err(self.refuse(
                "put",
                name,
                &format!(
                    "the remote holds {size} bytes under this name, not the {} being pushed; \
                     refusing to overwrite (run `vault verify --remote`)",
                    data.len()
                ),
            )),
        }
    }
    fn replace(&self, name: &str, data: &[u8]) -> BackendResult<()> {
        if name == LKG_REF {
            self.inner.replace(name, data)
        } else {
            Err(self.refuse("replace", name, "only the last-known-good ref may change"))
        }
    }
    fn delete(&self, name: &str) -> BackendResult<()> {
        Err(self.refuse("delete", name, "nothing is ever deleted"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;

    #[test]
    fn refuses_deletes_and_overwrites_but_not_the_ref() {
        let tmp = tempfile::tempdir().unwrap();
        let local = LocalBackend::create(tmp.path()).unwrap();
        let g = AppendOnly::new(&local);
        g.put("packs/aa/aa.pack", b"1234").unwrap();
        g.put("packs/aa/aa.pack", b"1234").unwrap();
        let e = g.put("packs/aa/aa.pack", b"123").unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::Refused);
        assert_eq!(
            g.delete("packs/aa/aa.pack").unwrap_err().kind,
            BackendErrorKind::Refused
        );
        assert!(g.replace("config.json", b"{}").is_err());
        g.replace(LKG_REF, b"one").unwrap();
        g.replace(LKG_REF, b"two").unwrap();
        assert_eq!(local.read(LKG_REF).unwrap(), b"two");
        assert_eq!(local.read("packs/aa/aa.pack").unwrap(), b"1234");
    }
}
