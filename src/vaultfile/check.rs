//! Value checks shared by the sections: names, absolute paths, durations, globs and refused keys.
//!
//! Each takes the value as parsed with its span and returns the checked value or an error at that
//! span, so every section reports a bad value the same way. The sections decide which check a key
//! gets; this module knows nothing about keys.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serializer;
use toml::Spanned;

use super::error::{ConfigError, Ctx};

/// Longest source or remote name, in bytes.
pub(super) const NAME_MAX_BYTES: usize = 64;
/// Longest duration any key takes (humantime's 100 years). Far past any schedule, and far enough
/// from the limits of `Instant` and `Duration` that adding two never overflows (an RPO plus its
/// grace, a drill's deadline).
pub(super) const MAX_DURATION: Duration = Duration::from_secs(100 * YEAR_SECS);
/// humantime's year: 365.25 days.
const YEAR_SECS: u64 = 31_557_600;

/// A source or remote name: `[a-z0-9_-]+`, at most [`NAME_MAX_BYTES`]. Source names become root
/// names in snapshots and `--source NAME` filters, so they must be the same on every filesystem.
pub(super) fn name(
    ctx: &Ctx<'_>,
    value: &Spanned<String>,
    what: &str,
) -> Result<String, ConfigError> {
    let name = value.get_ref();
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if name.is_empty() || !valid_chars || name.len() > NAME_MAX_BYTES {
        return Err(ctx.invalid(
            value,
            format!(
                "{what} name {name:?} must be 1 to {NAME_MAX_BYTES} characters of lowercase a-z, \
                 0-9, `_` and `-`"
            ),
        ));
    }
    Ok(name.clone())
}

/// An absolute path. Relative paths are refused rather than resolved: the agent runs with another
/// working directory than the operator who wrote the file.
pub(super) fn absolute_path(
    ctx: &Ctx<'_>,
    value: &Spanned<PathBuf>,
    what: &str,
) -> Result<PathBuf, ConfigError> {
    let path = value.get_ref();
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        // No system call takes it: refused here, at its place, rather than at the first open.
        return Err(ctx.invalid(value, format!("{what} holds a NUL byte")));
    }
    if !path.is_absolute() {
        return Err(ctx.invalid(
            value,
            format!(
                "{what} {:?} must be an absolute path",
                path.display().to_string()
            ),
        ));
    }
    Ok(path.clone())
}

/// A humantime duration such as `"15m"` or `"1h 30m"`, at most [`MAX_DURATION`].
pub(super) fn duration(
    ctx: &Ctx<'_>,
    value: &Spanned<String>,
    what: &str,
) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value.get_ref()).map_err(|e| {
        ctx.invalid(
            value,
            format!(
                "{what} {:?} is not a duration ({e}); write it like \"15m\", \"2h\" or \"7days\"",
                value.get_ref()
            ),
        )
    })?;
    if d > MAX_DURATION {
        return Err(ctx.invalid(
            value,
            format!(
                "{what} {:?} is longer than the longest duration taken, {}",
                value.get_ref(),
                humantime::format_duration(MAX_DURATION)
            ),
        ));
    }
    Ok(d)
}

/// Globs that must compile with globset. `literal_separator` is how `template_only` globs are
/// matched (`*` stops at `/`); excludes and `depended_on` use globset's default.
pub(super) fn globs(
    ctx: &Ctx<'_>,
    values: &[Spanned<String>],
    what: &str,
    literal_separator: bool,
) -> Result<Vec<String>, ConfigError> {
    values
        .iter()
        .map(|value| {
            globset::GlobBuilder::new(value.get_ref())
                .literal_separator(literal_separator)
                .build()
                .map(|_| value.get_ref().clone())
                .map_err(|e| {
                    let reason = e.kind().to_string();
                    ctx.invalid(
                        value,
                        format!("{what} glob {:?}: {reason}", value.get_ref()),
                    )
                })
        })
        .collect()
}

/// Fails when a refused key (a secret) is present; `why` says where the secret comes from instead.
pub(super) fn refuse(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<toml::Value>>,
    key: &str,
    why: &str,
) -> Result<(), ConfigError> {
    match value {
        Some(v) => Err(ctx.invalid(v, format!("`{key}` is not allowed in vault.toml: {why}"))),
        None => Ok(()),
    }
}

/// Serializes a duration the way the file writes it (`"15m"`).
pub(super) fn serialize_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}
