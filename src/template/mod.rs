//! Config templates: the `template_only` import policy.
//!
//! Files matched by a [`TemplatePolicy`] (by default `openclaw.json`, `.env` and `.env.*`) are
//! never stored raw. [`render`] turns such a file into a [`Template`]: the same document in the
//! same format, every key kept and every non-secret value kept as written, but every
//! secret-looking value replaced by a placeholder `<redacted:sha256:1a2b3c4d>` that records only a
//! short hash, so two templates show *that* a secret changed without showing it. [`find_secrets`]
//! is the gate's check: it names, by key path and never by value, every secret-looking value still
//! in a file, and is empty for every output of [`render`].
//!
//! This module owns the format handling (JSON, TOML through `toml_edit`, YAML through
//! `yaml-rust2`, `.env`) and the secret heuristics. It does not walk sources, store anything or
//! decide what the caller does with a file that cannot be parsed (the caller refuses to store it).
//!
//! What stays as written: JSON and `.env` are edited in place, so formatting, key order, comments
//! and blank lines (`.env`) survive; TOML keeps comments and layout (`toml_edit`); YAML is parsed
//! and re-emitted, so it keeps keys, order and values but loses comments, anchors (aliases are
//! expanded) and quoting style.
//!
//! Placeholder hash: the first 8 hex digits (32 bits) of `sha256("atlasvault.template.v1\0" ||
//! value)`. It is unkeyed so that templates made on different machines or at different times
//! compare equal; the domain prefix keeps it out of generic sha256 look-up tables and the
//! truncation leaves many candidate preimages for a strong secret. A weak password can still be
//! confirmed by guessing, which is why the templates are stored in the vault and not published.

use std::fmt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

/// The `template_only` globs used when the config names none.
pub const DEFAULT_TEMPLATE_ONLY_GLOBS: &[&str] = &["openclaw.json", ".env", ".env.*"];

/// Largest file the policy templates; a bigger matching file is refused (not stored at all).
pub const TEMPLATE_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Domain-separation prefix of the placeholder hash; changing it changes every placeholder.
const PLACEHOLDER_HASH_DOMAIN: &[u8] = b"atlasvault.template.v1\0";
const PLACEHOLDER_PREFIX: &str = "<redacted:sha256:";
const PLACEHOLDER_HEX_CHARS: usize = 8;

/// Which files are stored only as templates.
///
/// A glob without `/` matches the file's base name at any depth; a glob with `/` matches the
/// relative path as a whole.
#[derive(Debug, Clone)]
pub struct TemplatePolicy {
    /// Globs matched against the base name.
    globs: GlobSet,
    /// Globs matched against the whole relative path.
    path_globs: GlobSet,
}

impl TemplatePolicy {
    /// Compiles the `template_only` globs; an invalid glob is a config error naming it.
    pub fn new(globs: &[String]) -> Result<Self, crate::Error> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for pattern in globs {
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    crate::Error::Invalid(format!("template_only glob {pattern:?}: {e}"))
                })?;
            if pattern.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| crate::Error::Invalid(format!("template_only globs: {e}")))
        };
        Ok(TemplatePolicy {
            globs: build(names)?,
            path_globs: build(paths)?,
        })
    }

    /// Whether a file (a base name or a path relative to the source root) is template-only.
    pub fn matches(&self, file_name_or_relative_path: &Path) -> bool {
        let by_name = file_name_or_relative_path
            .file_name()
            .is_some_and(|name| self.globs.is_match(Path::new(name)));
        by_name || self.path_globs.is_match(file_name_or_relative_path)
    }
}

impl Default for TemplatePolicy {
    fn default() -> Self {
        let mut names = GlobSetBuilder::new();
        for pattern in DEFAULT_TEMPLATE_ONLY_GLOBS {
            names.add(Glob::new(pattern).expect("invariant: default globs are valid"));
        }
        TemplatePolicy {
            globs: names.build().expect("invariant: default globs build"),
            path_globs: GlobSet::empty(),
        }
    }
}

/// The format a template was rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    Json,
    Toml,
    Yaml,
    /// `KEY=VALUE` lines with `#` comments.
    Env,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "JSON",
            Format::Toml => "TOML",
            Format::Yaml => "YAML",
            Format::Env => ".env",
        })
    }
}

/// A rendered template: safe to store, same format as the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The template document.
    pub bytes: Vec<u8>,
    /// The format it was parsed and written in.
    pub format: Format,
    /// How many values this render replaced (0 when the input was already a template).
    pub redacted: usize,
}

/// A file that cannot be templated; the caller must not store it raw either.
///
/// The message names the file, the format and where parsing stopped, never the file's content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The bytes are not valid in the format chosen for the file.
    #[error("cannot template {}: not valid {format}{}", path.display(), location(*line, *column))]
    Parse {
        path: PathBuf,
        format: Format,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// The rendered template did not read back as a clean, unchanged template (a corner of the
    /// format this module cannot write faithfully); storing it could leak, so it is refused.
    #[error("cannot template {}: its {format} template does not read back clean", path.display())]
    Unstable { path: PathBuf, format: Format },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        (Some(l), None) => format!(" (line {l})"),
        _ => String::new(),
    }
}

/// Where parsing failed; deliberately carries no text from the input.
#[derive(Debug, Default)]
struct ParseFail {
    line: Option<usize>,
    column: Option<usize>,
}

impl ParseFail {
    fn at_line(line: usize) -> Self {
        ParseFail {
            line: Some(line),
            column: None,
        }
    }

    fn at_offset(text: &str, offset: usize) -> Self {
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ParseFail {
            line: Some(line),
            column: Some(column),
        }
    }
}

/// Renders `bytes` (the content of the file at `path`) as a template.
///
/// The format comes from the file name: `.json`, `.toml`, `.yaml`/`.yml`, `.env`/`.env.*`/`*.env`;
/// any other name is tried as JSON, then as `.env` lines. Rendering a template again returns it
/// unchanged.
pub fn render(path: &Path, bytes: &[u8]) -> Result<Template, TemplateError> {
    let mut redactor = Redactor::default();
    let (format, out) =
        process(path, bytes, &mut redactor).map_err(|(format, fail)| TemplateError::Parse {
            path: path.to_path_buf(),
            format,
            line: fail.line,
            column: fail.column,
        })?;
    // The guarantee, checked on every render rather than trusted: the template parses in its
    // format, holds nothing secret-looking, and renders to itself.
    let mut check = Redactor::default();
    match process(path, out.as_bytes(), &mut check) {
        Ok((f, again)) if f == format && check.findings.is_empty() && again == out => {}
        _ => {
            return Err(TemplateError::Unstable {
                path: path.to_path_buf(),
                format,
            })
        }
    }
    Ok(Template {
        bytes: out.into_bytes(),
        format,
        redacted: redactor.findings.len(),
    })
}

/// Key paths (`gateway.auth.token`, `servers[0].password`, `API_KEY`) of every secret-looking
/// value in the file; never the values themselves.
///
/// Empty for every output of [`render`]. A file that cannot be parsed cannot be shown to be
/// clean, so it yields the single entry `<not valid FORMAT>`.
pub fn find_secrets(path: &Path, bytes: &[u8]) -> Vec<String> {
    let mut redactor = Redactor::default();
    match process(path, bytes, &mut redactor) {
        Ok(_) => redactor.findings,
        Err((format, _)) => vec![format!("<not valid {format}>")],
    }
}

fn format_for(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let ext = name.rsplit_once('.').map(|(_, e)| e);
    match ext {
        Some("json") => Some(Format::Json),
        Some("toml") => Some(Format::Toml),
        Some("yaml" | "yml") => Some(Format::Yaml),
        _ if name == ".env" || name.starts_with(".env.") || name.ends_with(".env") => {
            Some(Format::Env)
        }
        _ => None,
    }
}

/// Parses, walks and re-writes the file, letting `redactor` judge every scalar.
fn process(
    path: &Path,
    bytes: &[u8],
    redactor: &mut Redactor,
) -> Result<(Format, String), (Format, ParseFail)> {
    let chosen = format_for(path);
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let format = chosen.unwrap_or(Format::Env);
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            return Err((format, ParseFail::at_offset(valid, valid.len())));
        }
    };
    let format = match chosen {
        Some(f) => f,
        None if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => Format::Json,
        None => Format::Env,
    };
    let out = match format {
        Format::Json => json::process(text, redactor),
        Format::Toml => toml::process(text, redactor),
        Format::Yaml => yaml::process(text, redactor),
        Format::Env => env::process(text, redactor),
    };
    out.map(|o| (format, o)).map_err(|fail| (format, fail))
}

/// One step of a key path.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The position of a value in its document, for reports and for the key-name rule.
#[derive(Debug, Default)]
struct KeyPath(Vec<Seg>);

impl KeyPath {
    fn push_key(&mut self, key: &str) {
        self.0.push(Seg::Key(key.to_owned()));
    }

    fn push_index(&mut self, i: usize) {
        self.0.push(Seg::Index(i));
    }

    fn pop(&mut self) {
        self.0.pop();
    }

    /// The nearest key name: an array element is judged by the key that holds the array.
    fn leaf_key(&self) -> Option<&str> {
        self.0.iter().rev().find_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<root>");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Judges scalars and remembers where it found secrets.
#[derive(Default)]
struct Redactor {
    findings: Vec<String>,
}

impl Redactor {
    /// The replacement for a string value, if it is secret-looking.
    fn string(&mut self, path: &KeyPath, value: &str) -> Option<String> {
        let new = redact_string(path.leaf_key(), value)?;
        self.findings.push(path.to_string());
        Some(new)
    }

    /// The replacement for a number (given as written), if it sits under a secret key.
    fn number(&mut self, path: &KeyPath, repr: &str) -> Option<String> {
        let key = path.leaf_key()?;
        // `maxTokens`, `contextTokens`: counts, not tokens.
        let counts = normalize_key(key).ends_with("tokens");
        if !is_secret_key(key) || counts {
            return None;
        }
        self.findings.push(path.to_string());
        Some(placeholder(repr))
    }
}

// ---------------------------------------------------------------------------------------------
// Heuristics
// ---------------------------------------------------------------------------------------------

/// Key-name fragments (matched case-insensitively, `-` read as `_`) that make a value secret.
const SECRET_KEY_PARTS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "api_key",
    "apikey",
    "private",
    "credential",
    "auth",
];

/// Token prefixes of well-known credentials, with the minimum length of what follows.
const CREDENTIAL_PREFIXES: &[(&str, usize)] = &[
    ("sk-", 20),
    ("ghp_", 20),
    ("gho_", 20),
    ("ghu_", 20),
    ("ghs_", 20),
    ("ghr_", 20),
    ("github_pat_", 20),
    ("glpat-", 20),
    ("xoxb-", 10),
    ("xoxp-", 10),
    ("xoxa-", 10),
    ("xoxr-", 10),
    ("xoxs-", 10),
    ("AKIA", 16),
    ("ASIA", 16),
    ("AIza", 30),
    ("hf_", 30),
];

const HIGH_ENTROPY_MIN_CHARS: usize = 20;
const HIGH_ENTROPY_MIN_BITS_PER_CHAR: f64 = 3.5;

fn normalize_key(key: &str) -> String {
    key.to_ascii_lowercase().replace('-', "_")
}

fn is_secret_key(key: &str) -> bool {
    let k = normalize_key(key);
    SECRET_KEY_PARTS.iter().any(|part| k.contains(part))
}

fn placeholder(value: &str) -> String {
    let mut h = Sha256::new();
    h.update(PLACEHOLDER_HASH_DOMAIN);
    h.update(value.as_bytes());
    let digest = hex::encode(h.finalize());
    format!("{PLACEHOLDER_PREFIX}{}>", &digest[..PLACEHOLDER_HEX_CHARS])
}

fn is_placeholder(value: &str) -> bool {
    value
        .strip_prefix(PLACEHOLDER_PREFIX)
        .and_then(|rest| rest.strip_suffix('>'))
        .is_some_and(|hex| {
            hex.len() == PLACEHOLDER_HEX_CHARS
                && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// `${NAME}`: a reference to the environment, not a secret.
fn is_env_reference(value: &str) -> bool {
    value
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .is_some_and(|name| {
            name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// What a string value becomes in a template, or `None` to keep it.
fn redact_string(key: Option<&str>, value: &str) -> Option<String> {
    if value.is_empty() || is_placeholder(value) || is_env_reference(value) {
        return None;
    }
    if key.is_some_and(is_secret_key) || looks_like_credential(value) {
        return Some(placeholder(value));
    }
    let redacted = redact_url_passwords(value)?;
    // Judged again as it will be stored, so that a template is a fixed point of rendering: the
    // placeholder's hex digits can tip a long token over the entropy bar.
    Some(if looks_like_credential(&redacted) {
        placeholder(value)
    } else {
        redacted
    })
}

/// Whether the value holds something shaped like a credential anywhere in it.
fn looks_like_credential(value: &str) -> bool {
    if value.contains("-----BEGIN ") {
        return true;
    }
    value.split_whitespace().any(|token| {
        has_credential_prefix(token)
            || has_jwt(token)
            || if token.contains("://") {
                url_query_has_secret(token)
            } else {
                is_high_entropy(token)
            }
    })
}

fn is_boundary_before(s: &str, i: usize) -> bool {
    s[..i]
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_ascii_alphanumeric())
}

fn has_credential_prefix(token: &str) -> bool {
    CREDENTIAL_PREFIXES.iter().any(|&(prefix, min_tail)| {
        token.match_indices(prefix).any(|(i, _)| {
            if !is_boundary_before(token, i) {
                return false;
            }
            let rest = &token[i + prefix.len()..];
            let tail_len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            let tail = &rest[..tail_len];
            // `sk-` also starts ordinary hyphenated words; the others are specific enough.
            tail.len() >= min_tail && (prefix != "sk-" || !is_structured(tail))
        })
    })
}

fn has_jwt(token: &str) -> bool {
    token.match_indices("eyJ").any(|(i, _)| {
        if !is_boundary_before(token, i) {
            return false;
        }
        let rest = &token[i..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '=')))
            .unwrap_or(rest.len());
        let parts: Vec<&str> = rest[..len].split('.').collect();
        parts.len() >= 3 && parts[0].len() >= 10 && parts[1].len() >= 2
    })
}

/// A query parameter named like a secret, or whose value looks like one.
fn url_query_has_secret(url: &str) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or(("", pair));
        !v.is_empty() && !is_placeholder(v) && (is_secret_key(k) || is_high_entropy(v))
    })
}

/// Replaces the password of every `scheme://user:password@host` in the value.
fn redact_url_passwords(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut changed = false;
    let mut rest = value;
    while let Some(i) = rest.find("://") {
        let authority_start = i + 3;
        out.push_str(&rest[..authority_start]);
        let after = &rest[authority_start..];
        let authority_len = after
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..authority_len];
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, password)) if !password.is_empty() && !is_placeholder(password) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(&placeholder(password));
                    out.push('@');
                    out.push_str(host);
                    changed = true;
                }
                _ => out.push_str(authority),
            },
            None => out.push_str(authority),
        }
        rest = &after[authority_len..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

fn shannon_bits_per_char(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut total = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        total += 1;
    }
    if total == 0 {
        return 0.0;
    }
    let n = total as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// A long random-looking token: not made of words, numbers and short pieces, and dense in bits.
fn is_high_entropy(token: &str) -> bool {
    token.chars().count() >= HIGH_ENTROPY_MIN_CHARS
        && !is_structured(token)
        && shannon_bits_per_char(token) >= HIGH_ENTROPY_MIN_BITS_PER_CHAR
}

/// Whether every piece between punctuation reads like a word, a number, a short tag (`v2`, `4o`)
/// or a word-and-number (`sha256`, `ed25519`). Paths, host names, model names, dates and
/// identifiers are structured; hex digests, base64 and random keys are not.
fn is_structured(token: &str) -> bool {
    token
        .split(|c: char| !c.is_ascii_alphanumeric())
        .all(is_word_like)
}

fn is_word_like(seg: &str) -> bool {
    if seg.len() <= 3 {
        return true;
    }
    let bytes = seg.as_bytes();
    let transitions = bytes
        .windows(2)
        .filter(|w| w[0].is_ascii_digit() != w[1].is_ascii_digit())
        .count();
    let upper = bytes.iter().filter(|b| b.is_ascii_uppercase()).count();
    let letters = bytes.iter().filter(|b| b.is_ascii_alphabetic()).count();
    // Words are lower case, upper case or CamelCase; random text is about half upper case.
    let case_like_words = upper == 0 || upper == letters || upper * 3 <= letters;
    transitions <= 2 && case_like_words
}

// ---------------------------------------------------------------------------------------------
// Formats

mod env;
mod json;
mod toml;
mod yaml;

pub(crate) use yaml::too_deep as yaml_too_deep;

#[cfg(test)]
mod tests;
