//! [`ConfigError`] and the one place that turns a byte span of `vault.toml` into a line and a
//! column.
//!
//! Every error names the file; every error about a place in the file names its 1-based line and
//! column (columns count characters, not bytes). This module also polishes serde's
//! "unknown field" message: it drops the keys that are parsed only to be refused (a `password`
//! must not be suggested as a valid key) and adds a "did you mean" for a near miss. It does not
//! decide what is valid; the section modules do.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

/// Keys every table that knows them refuses with a message pointing to the environment. They
/// are parsed (so the refusal can say where the secret belongs instead of "unknown field"), and
/// they are left out of the keys an "unknown field" error offers.
pub(super) const REFUSED_KEYS: &[&str] = &[
    "password",
    "password_command",
    "password_file",
    "access_key_id",
    "secret_access_key",
    "session_token",
];

/// Why `vault.toml` could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not TOML, or not TOML of the expected shape (an unknown key, a string where a
    /// number belongs, a missing required key).
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The file is well-formed but a value is not acceptable (a relative path, a duplicate source
    /// name, a password). `line` and `column` are absent only for whole-file problems.
    #[error("{}{}: {message}", path.display(), Position(*line, *column))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
}

impl ConfigError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Io { path, .. }
            | ConfigError::Syntax { path, .. }
            | ConfigError::Invalid { path, .. } => path,
        }
    }

    /// The 1-based line the error points at, when it points at one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Syntax { line, .. } => Some(*line),
            ConfigError::Invalid { line, .. } => *line,
        }
    }

    /// The 1-based column (in characters) the error points at, when it points at one.
    pub fn column(&self) -> Option<usize> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Syntax { column, .. } => Some(*column),
            ConfigError::Invalid { column, .. } => *column,
        }
    }
}

/// `:line:column`, or nothing when the error has no place.
struct Position(Option<usize>, Option<usize>);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(line), Some(column)) => write!(f, ":{line}:{column}"),
            (Some(line), None) => write!(f, ":{line}"),
            _ => Ok(()),
        }
    }
}

/// The file being parsed: what every error needs to name its place.
pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Ctx<'_> {
    /// An [`ConfigError::Invalid`] at the start of `span`.
    pub(super) fn invalid_at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    /// An [`ConfigError::Invalid`] at a spanned value.
    pub(super) fn invalid<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.invalid_at(at.span(), message)
    }

    /// The error for a `toml` parse or deserialize failure.
    pub(super) fn syntax(&self, err: &toml::de::Error) -> ConfigError {
        let raw = err.message().trim_end();
        let mut message = refine_unknown_field(raw).unwrap_or_else(|| raw.to_string());
        match err.span() {
            Some(span) => {
                // serde's type errors ("invalid type: integer `900`, expected a string") say
                // what is wrong but not about which key.
                let typed = ["invalid type", "invalid value", "invalid length"]
                    .iter()
                    .any(|p| message.starts_with(p));
                if let Some(key) = typed.then(|| key_at(self.text, span.start)).flatten() {
                    message = format!("{key}: {message}");
                }
                let (line, column) = line_column(self.text, span.start);
                ConfigError::Syntax {
                    path: self.path.to_path_buf(),
                    line,
                    column,
                    message,
                }
            }
            None => ConfigError::Invalid {
                path: self.path.to_path_buf(),
                line: None,
                column: None,
                message,
            },
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The key whose value starts at byte `offset`, as `table.key` under a `[table]` header: the
/// last `key =` on that line before the value (`command = ["echo", 7]` gives `command`, and
/// `gates = { sanity = [..] }` gives `sanity`). `None` when the value's line holds no `=` before
/// it, as inside a multi-line array.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let line_start = text[..end].rfind('\n').map_or(0, |n| n + 1);
    let before = &text[line_start..end];
    let (lhs, _) = before.rsplit_once('=')?;
    let lhs = lhs.trim_end();
    let start = lhs
        .rfind(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\'')))
        .map_or(0, |i| i + 1);
    let key = lhs[start..].trim_matches(|c| c == '"' || c == '\'');
    if key.is_empty() {
        return None;
    }
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| {
            let l = l.split('#').next().unwrap_or_default().trim();
            l.trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_string()
        });
    Some(match header {
        Some(table) if !table.is_empty() => format!("{table}.{key}"),
        _ => key.to_string(),
    })
}

/// Rewrites serde's "unknown field `x`, expected ..." without the refused keys and with a
/// suggestion; `None` when the message is not of that form.
fn refine_unknown_field(message: &str) -> Option<String> {
    const EXPECTED: &str = ", expected ";
    let rest = message.strip_prefix("unknown field `")?;
    // The unknown key is the user's text and may hold anything; the list of known keys is ours,
    // so split at its start, searching from the right.
    let split = rest.rfind(EXPECTED)?;
    let field = rest[..split].strip_suffix('`')?;
    let known: Vec<&str> = rest[split + EXPECTED.len()..]
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|k| !REFUSED_KEYS.contains(k))
        .collect();
    let quoted: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
    let expected = match quoted.as_slice() {
        [] => return None,
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        many => format!("one of {}", many.join(", ")),
    };
    let mut out = format!("unknown field `{field}`, expected {expected}");
    if let Some(near) = nearest(field, &known) {
        out.push_str(&format!(" (did you mean `{near}`?)"));
    }
    Some(out)
}

/// The known key closest to a typo, when it is close enough to be the intended one.
fn nearest<'k>(typo: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(typo, k), *k))
        .filter(|(d, k)| *d <= 2 && *d * 2 < k.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters_from_one() {
        let text = "a = 1\nbé = 2\r\nc = 3";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // "bé " is 4 bytes, 3 characters.
        assert_eq!(line_column(text, 10), (2, 4));
        assert_eq!(line_column(text, text.find('c').unwrap()), (3, 1));
        // Past the end and inside a character clamp instead of panicking.
        assert_eq!(line_column(text, 8), (2, 2));
        assert_eq!(line_column(text, 999).0, 3);
    }

    #[test]
    fn unknown_field_message_hides_refused_keys_and_suggests() {
        let m = refine_unknown_field(
            "unknown field `pth`, expected one of `name`, `path`, `password`, `url`",
        )
        .unwrap();
        assert_eq!(
            m,
            "unknown field `pth`, expected one of `name`, `path`, `url` (did you mean `path`?)"
        );
        let m = refine_unknown_field("unknown field `zzz`, expected `url` or `password`").unwrap();
        assert_eq!(m, "unknown field `zzz`, expected `url`");
        let m = refine_unknown_field("unknown field `a`b`, expected `ab` or `cd`").unwrap();
        assert!(
            m.starts_with("unknown field `a`b`, expected `ab` or `cd`"),
            "{m}"
        );
        assert_eq!(refine_unknown_field("missing field `vault`"), None);
    }

    #[test]
    fn key_at_names_the_key_of_a_value() {
        let text = "vault = 5\n[agent]\ninterval = 900 # x\n[[source]]\ncommand = [\"a\", 7]\n\
                    gates = { sanity = [1] }\nx = [\n  7\n]\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("5").as_deref(), Some("vault"));
        assert_eq!(at("900").as_deref(), Some("agent.interval"));
        assert_eq!(at("7]").as_deref(), Some("source.command"));
        assert_eq!(at("[1]").as_deref(), Some("source.sanity"));
        assert_eq!(at("  7").as_deref(), None);
    }

    #[test]
    fn edit_distance_is_levenshtein() {
        assert_eq!(edit_distance("pth", "path"), 1);
        assert_eq!(edit_distance("intervall", "interval"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
