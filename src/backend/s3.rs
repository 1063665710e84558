//! An S3-compatible bucket as a remote, through OpenDAL (the client rustic uses): AWS, Backblaze
//! B2, Garage, MinIO, s3s, ...
//!
//! Credentials come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`); only when those are absent does OpenDAL look further along the standard
//! AWS chain (profile files, instance metadata). They are never read from the vault config, and
//! every error message is scrubbed of them before it leaves this file. Objects larger than
//! [`MULTIPART_CHUNK_BYTES`] go up as a multipart upload. OpenDAL is async: calls run on a small
//! private tokio runtime and the caller's thread waits, so this backend can be used from plain
//! threads (never from inside another tokio runtime's worker).

use std::sync::LazyLock;

use opendal::options::{ListOptions, ReadOptions, WriteOptions};
use zeroize::Zeroizing;

use super::{Backend, BackendError, BackendErrorKind, BackendResult, ObjectInfo};

/// Part size of multipart uploads; a pack larger than this is sent in parts.
pub const MULTIPART_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one upload in flight at once.
const MULTIPART_CONCURRENCY: usize = 4;
/// Longest wait for a call without a body (list, stat, delete, start of a write).
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest wait for the next bytes of a body being read or written.
const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Region used when neither the remote nor the environment names one.
const DEFAULT_REGION: &str = "us-east-1";

/// The runtime every S3 call runs on, started on first use.
static RUNTIME: LazyLock<std::io::Result<tokio::runtime::Runtime>> = LazyLock::new(|| {
    opendal::install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("atlasvault-s3")
        .enable_all()
        .build()
});

/// Where the bucket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (empty: the bucket's root).
    pub prefix: String,
    /// `http(s)://host:port`; `None`: AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `endpoint/bucket/key` rather than `bucket.endpoint/key`.
    pub path_style: bool,
}

/// Static credentials, zeroed on drop.
#[derive(Default)]
pub struct Credentials {
    pub access_key_id: Option<Zeroizing<String>>,
    pub secret_access_key: Option<Zeroizing<String>>,
    pub session_token: Option<Zeroizing<String>>,
}

impl Credentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Self {
        let var = |k| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .map(Zeroizing::new)
        };
        Credentials {
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
        }
    }

    /// Every credential string, longest first, for scrubbing messages.
    fn secrets(&self) -> Vec<String> {
        let mut v: Vec<String> = [
            &self.access_key_id,
            &self.secret_access_key,
            &self.session_token,
        ]
        .into_iter()
        .flatten()
        .map(|s| s.to_string())
        .filter(|s| s.len() >= 4)
        .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.len()));
        v
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(redacted)")
    }
}

/// A bucket (and prefix) as a backend.
pub struct S3Backend {
    op: opendal::blocking::Operator,
    location: String,
    /// Credential strings to scrub from messages.
    redact: Vec<Zeroizing<String>>,
}

impl S3Backend {
    /// Builds the client; nothing is sent until the first call.
    pub fn open(o: &S3Options, creds: &Credentials) -> crate::Result<Self> {
        let location = if o.prefix.is_empty() {
            format!("s3://{}", o.bucket)
        } else {
            format!("s3://{}/{}", o.bucket, o.prefix)
        };
        let redact: Vec<Zeroizing<String>> =
            creds.secrets().into_iter().map(Zeroizing::new).collect();
        let fail = |what: String| {
            crate::Error::Invalid(format!("remote {location}: {}", scrub(&redact, &what)))
        };
        let region = o
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| DEFAULT_REGION.into());
        let mut b = opendal::services::S3::default()
            .bucket(&o.bucket)
            .root(&format!("/{}", o.prefix))
            .region(&region);
        if let Some(e) = &o.endpoint {
            b = b.endpoint(e);
        }
        if !o.path_style {
            b = b.enable_virtual_host_style();
        }
        if let (Some(id), Some(secret)) = (&creds.access_key_id, &creds.secret_access_key) {
            // Static keys given: never look at ~/.aws or the instance metadata service.
            b = b
                .access_key_id(id)
                .secret_access_key(secret)
                .disable_config_load()
                .disable_ec2_metadata();
            if let Some(t) = &creds.session_token {
                b = b.session_token(t);
            }
        }
        let rt = RUNTIME
            .as_ref()
            .map_err(|e| fail(format!("cannot start the I/O runtime: {e}")))?;
        let _guard = rt.enter();
        // No call may hang: a server that accepts and never answers would otherwise stall a
        // cycle (and the agent) forever. Timeouts are temporary errors, so they are retried.
        let op = opendal::Operator::new(b)
            .map_err(|e| fail(e.to_string()))?
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(CALL_TIMEOUT)
                    .with_io_timeout(IO_TIMEOUT),
            );
        let op = opendal::blocking::Operator::new(op).map_err(|e| fail(e.to_string()))?;
        Ok(S3Backend {
            op,
            location,
            redact,
        })
    }

    fn err(&self, op: &'static str, name: &str, e: opendal::Error) -> BackendError {
        use opendal::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => BackendErrorKind::NotFound,
            K::PermissionDenied => BackendErrorKind::Denied,
            K::RateLimited => BackendErrorKind::Transient,
            _ if e.is_temporary() => BackendErrorKind::Transient,
            _ => BackendErrorKind::Permanent,
        };
        BackendError::new(
            self.location.clone(),
            op,
            name,
            kind,
            scrub(&self.redact, &e.to_string()),
        )
    }
}

/// Replaces every credential in `s` with `***`.
fn scrub(secrets: &[Zeroizing<String>], s: &str) -> String {
    let mut out = s.to_string();
    for secret in secrets {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list(&self, prefix: &str) -> BackendResult<Vec<ObjectInfo>> {
        let entries = self
            .op
            .list_options(
                prefix,
                ListOptions {
                    recursive: true,
                    ..Default::default()
                },
            )
            .or_else(|e| match e.kind() {
                opendal::ErrorKind::NotFound => Ok(Vec::new()),
                _ => Err(e),
            })
            .map_err(|e| self.err("list", prefix, e))?;
        let mut out: Vec<ObjectInfo> = entries
            .into_iter()
            .filter(|e| {
                e.metadata().is_file() && e.path() != prefix && e.path().starts_with(prefix)
            })
            .map(|e| ObjectInfo {
                name: e.path().to_string(),
                size: e.metadata().content_length(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn stat(&self, name: &str) -> BackendResult<Option<u64>> {
        match self.op.stat(name) {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", name, e)),
        }
    }

    fn read(&self, name: &str) -> BackendResult<Vec<u8>> {
        self.op
            .read(name)
            .map(|b| b.to_vec())
            .map_err(|e| self.err("read", name, e))
    }

    fn read_range(&self, name: &str, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        let end = offset.checked_add(len).ok_or_else(|| {
            BackendError::new(
                self.location.clone(),
                "read",
                name,
                BackendErrorKind::Permanent,
                "range overflows",
            )
        })?;
        let buf = self
            .op
            .read_options(
                name,
                ReadOptions {
                    range: (offset..end).into(),
                    ..Default::default()
                },
            )
            .map_err(|e| self.err("read", name, e))?;
        if buf.len() as u64 != len {
            return Err(BackendError::new(
                self.location.clone(),
                "read",
                name,
                BackendErrorKind::Permanent,
                format!("asked for {len} bytes at {offset}, got {}", buf.len()),
            ));
        }
        Ok(buf.to_vec())
    }

    fn put(&self, name: &str, data: &[u8]) -> BackendResult<()> {
        self.op
            .write_options(
                name,
                data.to_vec(),
                WriteOptions {
                    chunk: Some(MULTIPART_CHUNK_BYTES),
                    concurrent: MULTIPART_CONCURRENCY,
                    ..Default::default()
                },
            )
            .map(|_| ())
            .map_err(|e| self.err("put", name, e))
    }

    fn replace(&self, name: &str, data: &[u8]) -> BackendResult<()> {
        // A single PUT replaces an object atomically.
        self.op
            .write(name, data.to_vec())
            .map(|_| ())
            .map_err(|e| self.err("replace", name, e))
    }

    fn delete(&self, name: &str) -> BackendResult<()> {
        self.op
            .delete(name)
            .map_err(|e| self.err("delete", name, e))
    }
}
