//! `[[remote]]`: where `vault push` copies the vault (a directory, often an NTFS drive under
//! WSL, or an S3 bucket).
//!
//! This module parses and checks the table: the URL, the S3-only keys, and the refusal of
//! credentials, which come from the environment or the AWS chain so that a copied or committed
//! `vault.toml` never leaks one. Unique names are checked by the caller. It does not connect.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::check;
use super::error::{ConfigError, Ctx};

const CREDENTIALS_HINT: &str = "credentials come from the environment or the AWS chain \
                                (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, \
                                AWS_PROFILE, ~/.aws/credentials)";

/// One named remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Remote {
    /// `[a-z0-9_-]+`, unique among remotes.
    pub name: String,
    pub url: RemoteUrl,
    /// S3 only: the service endpoint, `http://` or `https://` (absent: AWS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 only: the region (absent: the AWS chain's, else `us-east-1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// S3 only: address buckets as `endpoint/bucket` rather than `bucket.endpoint`, as most
    /// self-hosted stores need. Default false.
    #[serde(skip_serializing_if = "is_false")]
    pub path_style: bool,
    /// Ransomware protection: pushes only create objects (and replace the LKG ref, keeping its
    /// history under `refs/history/`); nothing on the remote is ever deleted or overwritten.
    #[serde(skip_serializing_if = "is_false")]
    pub append_only: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where a remote is. The file writes `file:///mnt/d/AtlasVault`, `/mnt/d/AtlasVault` or
/// `s3://bucket/prefix`; it serializes back as a plain path or an `s3://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteUrl {
    /// A directory (absolute).
    Path(PathBuf),
    /// A bucket and a key prefix without leading or trailing `/` (empty: the bucket's root).
    S3 { bucket: String, prefix: String },
}

impl RemoteUrl {
    /// Parses a remote URL; the error says what is wrong, without the position.
    pub fn parse(url: &str) -> Result<RemoteUrl, String> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket)?;
            let prefix = prefix.trim_matches('/');
            let empty_segment = !prefix.is_empty() && prefix.split('/').any(str::is_empty);
            if empty_segment || prefix.contains(['?', '#']) {
                return Err(format!(
                    "{url:?}: the prefix must be plain /-separated names"
                ));
            }
            return Ok(RemoteUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        let path = match url.strip_prefix("file://") {
            Some(rest) => {
                let path = rest.strip_prefix("localhost").unwrap_or(rest);
                if !path.starts_with('/') {
                    return Err(format!(
                        "{url:?}: a file URL names a local absolute path, as in file:///mnt/d/AtlasVault"
                    ));
                }
                percent_decode(path).ok_or_else(|| format!("{url:?}: bad %-escape"))?
            }
            None if url.contains("://") => {
                return Err(format!(
                    "{url:?}: unsupported scheme; use file:///path, an absolute path or s3://bucket/prefix"
                ))
            }
            None => url.to_string(),
        };
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(format!("{url:?} must be an absolute path"));
        }
        Ok(RemoteUrl::Path(path))
    }
}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteUrl::Path(p) => write!(f, "{}", p.display()),
            RemoteUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RemoteUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl Serialize for RemoteUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// S3 bucket naming rules: 3 to 63 of `a-z 0-9 . -`, starting and ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), String> {
    let b = bucket.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bucket {bucket:?} must be 3 to 63 of a-z, 0-9, '.' and '-', starting and ending with a \
             letter or digit"
        ))
    }
}

/// Decodes `%XX` escapes of a file URL path; `None` on a bad escape or non-UTF-8 result.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A `[[remote]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireRemote {
    name: Spanned<String>,
    url: Spanned<String>,
    endpoint: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    path_style: Option<Spanned<bool>>,
    append_only: Option<Spanned<bool>>,
    access_key_id: Option<Spanned<toml::Value>>,
    secret_access_key: Option<Spanned<toml::Value>>,
    session_token: Option<Spanned<toml::Value>>,
}

impl super::Section for WireRemote {
    const EXPECTING: &'static str = "a [[remote]] table";
}

impl WireRemote {
    /// The remote's name as written, for duplicate checks by the caller.
    pub(super) fn name(&self) -> &Spanned<String> {
        &self.name
    }

    /// Where the url's value starts.
    pub(super) fn url_span(&self) -> std::ops::Range<usize> {
        self.url.span()
    }

    /// Checks one remote alone.
    pub(super) fn check(self, ctx: &Ctx<'_>) -> Result<Remote, ConfigError> {
        let name = check::name(ctx, &self.name, "remote")?;
        let what = format!("remote `{name}`");
        check::refuse(ctx, &self.access_key_id, "access_key_id", CREDENTIALS_HINT)?;
        check::refuse(
            ctx,
            &self.secret_access_key,
            "secret_access_key",
            CREDENTIALS_HINT,
        )?;
        check::refuse(ctx, &self.session_token, "session_token", CREDENTIALS_HINT)?;
        let url = RemoteUrl::parse(self.url.get_ref())
            .map_err(|e| ctx.invalid(&self.url, format!("{what}: url {e}")))?;
        if let RemoteUrl::Path(_) = url {
            let s3_only = [
                ("endpoint", self.endpoint.as_ref().map(Spanned::span)),
                ("region", self.region.as_ref().map(Spanned::span)),
                ("path_style", self.path_style.as_ref().map(Spanned::span)),
            ];
            if let Some((key, Some(span))) = s3_only.into_iter().find(|(_, s)| s.is_some()) {
                return Err(ctx.invalid_at(
                    span,
                    format!("{what}: `{key}` applies only to s3:// remotes, and the url is a path"),
                ));
            }
        }
        if let Some(endpoint) = &self.endpoint {
            let e = endpoint.get_ref();
            let scheme_ok = e.starts_with("http://") || e.starts_with("https://");
            if !scheme_ok || e.contains(char::is_whitespace) {
                return Err(ctx.invalid(
                    endpoint,
                    format!("{what}: endpoint {e:?} must be an http:// or https:// URL"),
                ));
            }
        }
        if let Some(region) = &self.region {
            let r = region.get_ref();
            if r.is_empty() || r.contains(char::is_whitespace) {
                return Err(
                    ctx.invalid(region, format!("{what}: region {r:?} is not a region name"))
                );
            }
        }
        Ok(Remote {
            name,
            url,
            endpoint: self.endpoint.map(Spanned::into_inner),
            region: self.region.map(Spanned::into_inner),
            path_style: self.path_style.is_some_and(|p| *p.get_ref()),
            append_only: self.append_only.is_some_and(|p| *p.get_ref()),
        })
    }
}
