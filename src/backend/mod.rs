//! Remote storage: one small trait, shaped by what an object store can do, and what sits behind it.
//!
//! A remote holds the same bytes as the local vault, under the same names (`config.json`,
//! `keys/<id>.json`, `packs/<2 hex>/<id>.pack`, `snapshots/<id>.json`, `refs/...`): the vault
//! format is the wire format. Implementations: [`local::LocalBackend`] (a directory, often an
//! NTFS drive under WSL) and [`s3::S3Backend`] (any S3-compatible store, through OpenDAL).
//! Behaviour is added by wrapping, never by flags: [`retry::Retrying`] retries transient errors
//! with backoff and jitter, [`guard::AppendOnly`] refuses to delete or overwrite, and
//! [`fault::Faulty`] fails calls on purpose for tests. What is pushed and in which order is
//! `crate::push`'s business; reading a vault back from a remote is `crate::remote`'s.

use std::fmt;
use std::sync::Arc;

use crate::vaultfile::{Remote, RemoteUrl};

pub mod fault;
pub mod guard;
pub mod local;
pub mod retry;
#[cfg(feature = "s3")]
pub mod s3;

/// The one mutable object of a vault.
pub const LKG_REF: &str = "refs/last-known-good.json";
/// Where an append-only remote keeps every value the ref has had.
pub const REF_HISTORY_DIR: &str = "refs/history/";

/// An object's name (relative to the remote's root, `/`-separated) and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
}

/// Why a backend call failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The object does not exist.
    NotFound,
    /// Worth retrying: a timeout, a dropped connection, a 5xx, throttling.
    Transient,
    /// The store refused (credentials, policy, ACL): retrying will not help.
    Denied,
    /// The guard refused an operation this remote must never do (delete, overwrite).
    Refused,
    /// Anything else: a bad configuration, a full disk, an invalid name.
    Permanent,
}

/// A failed backend call. Messages never hold credentials: implementations redact them.
#[derive(Debug, Clone, thiserror::Error)]
#[error("remote {remote}: {op} {object}: {message}")]
pub struct BackendError {
    /// The remote, as [`Backend::location`] names it.
    pub remote: String,
    /// `list`, `read`, `put`, ...
    pub op: &'static str,
    /// The object name (or prefix).
    pub object: String,
    pub kind: BackendErrorKind,
    pub message: String,
}

impl BackendError {
    pub fn new(
        remote: impl Into<String>,
        op: &'static str,
        object: &str,
        kind: BackendErrorKind,
        message: impl Into<String>,
    ) -> Self {
        BackendError {
            remote: remote.into(),
            op,
            object: object.to_string(),
            kind,
            message: message.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.kind == BackendErrorKind::Transient
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == BackendErrorKind::NotFound
    }
}

/// Result of a backend call.
pub type BackendResult<T> = std::result::Result<T, BackendError>;

/// Remote object storage.
///
/// Contract, which every implementation and wrapper keeps:
/// - **Atomic writes.** After `put` or `replace` returns, readers see the whole new object; before
///   it, they see the old one or none. A failed or interrupted write leaves no partial object
///   under the final name (temporary names, if any, are invisible to `list`).
/// - **Durable on return.** A write that returned `Ok` survives a crash of this machine (a local
///   directory is fsynced, file and directory; an object store acknowledges only stored data).
/// - **Immutable objects.** `put` is only used for content-addressed names, so writing the same
///   name twice writes the same bytes: a repeated `put` is harmless, which is what makes an
///   interrupted push resumable. `replace` is reserved for the single mutable ref.
/// - **Idempotent delete.** Deleting a missing object succeeds.
/// - **Thread safety.** Every method may be called from several threads at once.
/// - **Names** are relative, `/`-separated, lowercase hex plus fixed extensions (valid on NTFS,
///   S3 and ext4 alike); `list` returns only objects, never the prefix itself nor directories.
pub trait Backend: Send + Sync {
    /// Where this is, for messages: a path or `s3://bucket/prefix` (never a credential).
    fn location(&self) -> String;
    /// Every object whose name starts with `prefix` (recursively), with its size.
    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>>;
    /// The size of one object, `None` when it does not exist.
    fn stat(&self, name: &str) -> BackendResult<Option<u64>>;
    /// A whole object.
    fn read(&self, name: &str) -> BackendResult<Vec<u8>>;
    /// `len` bytes at `offset`; an object shorter than that is an error, not a short read.
    fn read_range(&self, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>>;
    /// Writes an immutable, content-addressed object (see the contract).
    fn put(&self, name: &str, data: &[u8]) -> BackendResult<()>;
    /// Replaces the mutable ref atomically.
    fn replace(&self, name: &str, data: &[u8]) -> BackendResult<()>;
    /// Deletes an object; a missing one is not an error.
    fn delete(&self, name: &str) -> BackendResult<()>;
}

/// `Arc<B>` and `&B` are backends too, so wrappers can hold either.
macro_rules! forward_backend {
    ($($ty:ty),*) => {$(
        impl<B: Backend + ?Sized> Backend for $ty {
            fn location(&self) -> String {
                (**self).location()
            }
            fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
                (**self).list(prefix)
            }
            fn stat(&self, name: &str) -> BackendResult<Option<u64>> {
                (**self).stat(name)
            }
            fn read(&self, name: &str) -> BackendResult<Vec<u8>> {
                (**self).read(name)
            }
            fn read_range(&self, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
                (**self).read_range(name, offset, len)
            }
            fn put(&self, name: &str, data: &[u8]) -> BackendResult<()> {
                (**self).put(name, data)
            }
            fn replace(&self, name: &str, data: &[u8]) -> BackendResult<()> {
                (**self).replace(name, data)
            }
            fn delete(&self, name: &str) -> BackendResult<()> {
                (**self).delete(name)
            }
        }
    )*};
}
forward_backend!(Arc<B>, &B);

impl fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Backend({})", self.location())
    }
}

/// A shared backend.
pub type DynBackend = Arc<dyn Backend>;

/// Where a remote is and how to reach it: a `[[remote]]` table, or what a `--from URL` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    pub name: String,
    pub url: RemoteUrl,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub append_only: bool,
}

impl From<&Remote> for RemoteSpec {
    fn from(r: &Remote) -> Self {
        RemoteSpec {
            name: r.name.clone(),
            url: r.url.clone(),
            endpoint: r.endpoint.clone(),
            region: r.region.clone(),
            path_style: r.path_style,
            append_only: r.append_only,
        }
    }
}

impl RemoteSpec {
    /// Parses a `--from` URL: `file:///path`, `/path`, or
    /// `s3://bucket/prefix?endpoint=http://host:port&region=R&path_style=true`.
    pub fn from_url(url: &str) -> std::result::Result<RemoteSpec, String> {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) if url.starts_with("s3://") => (b, Some(q)),
            _ => (url, None),
        };
        let parsed = RemoteUrl::parse(base)?;
        let mut spec = RemoteSpec {
            name: "from".into(),
            url: parsed,
            endpoint: None,
            region: None,
            path_style: false,
            append_only: false,
        };
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = crate::vaultfile::percent_decode(v)
                .ok_or_else(|| format!("{k}: bad %-escape in the URL"))?;
            match k {
                "endpoint" => {
                    if !(v.starts_with("http://") || v.starts_with("https://")) {
                        return Err(format!("endpoint {v:?} must be an http:// or https:// URL"));
                    }
                    spec.endpoint = Some(v);
                }
                "region" => spec.region = Some(v),
                "path_style" => {
                    spec.path_style = match v.as_str() {
                        "true" | "1" | "" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("path_style={v:?}: use true or false")),
                    }
                }
                _ if k.contains("key") || k.contains("secret") || k.contains("token") => {
                    return Err(format!(
                        "the URL must not carry credentials ({k}); set AWS_ACCESS_KEY_ID and \
                         AWS_SECRET_ACCESS_KEY in the environment"
                    ))
                }
                _ => {
                    return Err(format!(
                        "unknown URL parameter {k:?} (known: endpoint, region, path_style)"
                    ))
                }
            }
        }
        Ok(spec)
    }
}

/// Opens the backend a spec names: local or S3, wrapped in retries, and in the append-only guard
/// when the remote is marked so.
pub fn open(spec: &RemoteSpec) -> crate::Result<DynBackend> {
    open_with(spec, retry::RetryPolicy::from_env()?)
}

/// [`open`] with a chosen retry policy.
pub fn open_with(spec: &RemoteSpec, policy: retry::RetryPolicy) -> crate::Result<DynBackend> {
    let raw: DynBackend = match &spec.url {
        RemoteUrl::Path(p) => Arc::new(local::LocalBackend::open(p)?),
        #[cfg(feature = "s3")]
        RemoteUrl::S3 { bucket, prefix } => Arc::new(s3::S3Backend::open(
            &s3::S3Options {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                endpoint: spec.endpoint.clone(),
                region: spec.region.clone(),
                path_style: spec.path_style,
            },
            &s3::Credentials::from_env(),
        )?),
        #[cfg(not(feature = "s3"))]
        RemoteUrl::S3 { .. } => {
            return Err(crate::Error::Invalid(
                "this vault was built without S3 support (cargo feature `s3`)".into(),
            ))
        }
    };
    let retried: DynBackend = Arc::new(retry::Retrying::new(raw, policy));
    Ok(if spec.append_only {
        Arc::new(guard::AppendOnly::new(retried))
    } else {
        retried
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_url_parses_s3_query_and_refuses_credentials() {
        let s = RemoteSpec::from_url(
            "s3://my-bucket/av/prod?endpoint=http://127.0.0.1:9000&region=eu-west-1&path_style=true",
        )
        .unwrap();
        assert_eq!(
            s.url,
            RemoteUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "av/prod".into()
            }
        );
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert!(s.path_style);
        let f = RemoteSpec::from_url("file:///mnt/d/AtlasVault").unwrap();
        assert_eq!(f.url, RemoteUrl::Path("/mnt/d/AtlasVault".into()));
        for bad in [
            "s3://b/p?secret_access_key=x",
            "s3://bkt/p?access_key_id=x",
            "s3://bkt/p?endpoint=ftp://x",
            "s3://bkt/p?colour=blue",
            "relative/path",
            "s3://B/p",
        ] {
            let e = RemoteSpec::from_url(bad).unwrap_err();
            assert!(!e.contains("=x"), "{bad}: the value is not echoed: {e}");
        }
    }
}
