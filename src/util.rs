//! Small helpers shared by several stages: clocks, host identity, byte formatting, raw paths.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::SystemTime;

/// Test hook: when `VAULT_FAKE_NOW` holds an RFC 3339 time, the stamps below (manifest, audit,
/// lock and promotion times) use it instead of the wall clock, so that a test can take a
/// snapshot whose clock went backwards. Inert unless set, like `VAULT_CRASH_AT`
/// ([`crate::crashpoint`]); a value that does not parse is ignored.
pub fn now() -> SystemTime {
    std::env::var("VAULT_FAKE_NOW")
        .ok()
        .and_then(|v| humantime::parse_rfc3339_weak(&v).ok())
        .unwrap_or_else(SystemTime::now)
}

/// Now ([`now`]), as RFC 3339 in UTC with seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(now()).to_string()
}

/// Now ([`now`]), as RFC 3339 in UTC with nanoseconds (manifests sort by it).
pub fn now_rfc3339_nanos() -> String {
    humantime::format_rfc3339_nanos(now()).to_string()
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The user running this process.
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions and cannot fail.
            format!("uid{}", unsafe { libc::getuid() })
        })
}

/// `1.5 MiB` style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Shows raw name bytes to a human: UTF-8 as is, anything else escaped.
pub fn display_name(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(s) => s.to_string(),
        Err(_) => name.escape_ascii().to_string(),
    }
}

/// Raw bytes to an `OsStr` (Unix: names are bytes).
pub fn os_str(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(display_name(b"a\xffb"), "a\\xffb");
    }
}
