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
    redact_url_passwords(value)
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
// ---------------------------------------------------------------------------------------------

mod json {
    //! JSON edited in place: only the spans of replaced values change.

    use super::{KeyPath, ParseFail, Redactor};

    pub(super) fn process(text: &str, redactor: &mut Redactor) -> Result<String, ParseFail> {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
            return Err(ParseFail {
                line: Some(e.line()),
                column: Some(e.column()),
            });
        }
        let mut scan = Scanner {
            text,
            pos: 0,
            edits: Vec::new(),
        };
        let mut path = KeyPath::default();
        scan.value(&mut path, redactor)?;
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        for (start, end, new) in scan.edits {
            out.push_str(&text[copied..start]);
            out.push_str(&new);
            copied = end;
        }
        out.push_str(&text[copied..]);
        Ok(out)
    }

    /// Walks a document already validated by `serde_json` (which also bounds its depth).
    struct Scanner<'a> {
        text: &'a str,
        pos: usize,
        /// Byte ranges to replace, in order, with the JSON literal that replaces them.
        edits: Vec<(usize, usize, String)>,
    }

    impl Scanner<'_> {
        fn fail(&self) -> ParseFail {
            ParseFail::at_offset(self.text, self.pos)
        }

        fn peek(&self) -> Result<u8, ParseFail> {
            self.text
                .as_bytes()
                .get(self.pos)
                .copied()
                .ok_or_else(|| self.fail())
        }

        fn skip_ws(&mut self) {
            while let Some(b) = self.text.as_bytes().get(self.pos) {
                if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                self.pos += 1;
            }
        }

        fn expect(&mut self, b: u8) -> Result<(), ParseFail> {
            self.skip_ws();
            if self.peek()? != b {
                return Err(self.fail());
            }
            self.pos += 1;
            Ok(())
        }

        /// The span of a string literal starting at `pos`, quotes included, and its value.
        fn string(&mut self) -> Result<(usize, usize, String), ParseFail> {
            let start = self.pos;
            let bytes = self.text.as_bytes();
            self.pos += 1;
            loop {
                match bytes.get(self.pos) {
                    Some(b'"') => break,
                    Some(b'\\') => self.pos += 2,
                    Some(_) => self.pos += 1,
                    None => return Err(self.fail()),
                }
            }
            self.pos += 1;
            let literal = self.text.get(start..self.pos).ok_or_else(|| self.fail())?;
            let value = serde_json::from_str::<String>(literal).map_err(|_| self.fail())?;
            Ok((start, self.pos, value))
        }

        fn value(&mut self, path: &mut KeyPath, r: &mut Redactor) -> Result<(), ParseFail> {
            self.skip_ws();
            match self.peek()? {
                b'{' => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek()? == b'}' {
                        self.pos += 1;
                        return Ok(());
                    }
                    loop {
                        self.skip_ws();
                        let (_, _, key) = self.string()?;
                        self.expect(b':')?;
                        path.push_key(&key);
                        self.value(path, r)?;
                        path.pop();
                        self.skip_ws();
                        let b = self.peek()?;
                        self.pos += 1;
                        match b {
                            b',' => continue,
                            b'}' => return Ok(()),
                            _ => return Err(self.fail()),
                        }
                    }
                }
                b'[' => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek()? == b']' {
                        self.pos += 1;
                        return Ok(());
                    }
                    let mut i = 0;
                    loop {
                        path.push_index(i);
                        self.value(path, r)?;
                        path.pop();
                        i += 1;
                        self.skip_ws();
                        let b = self.peek()?;
                        self.pos += 1;
                        match b {
                            b',' => continue,
                            b']' => return Ok(()),
                            _ => return Err(self.fail()),
                        }
                    }
                }
                b'"' => {
                    let (start, end, value) = self.string()?;
                    if let Some(new) = r.string(path, &value) {
                        self.edits.push((start, end, quote(&new)));
                    }
                    Ok(())
                }
                b't' | b'f' | b'n' => {
                    while self
                        .text
                        .as_bytes()
                        .get(self.pos)
                        .is_some_and(u8::is_ascii_lowercase)
                    {
                        self.pos += 1;
                    }
                    Ok(())
                }
                _ => {
                    let start = self.pos;
                    while self.text.as_bytes().get(self.pos).is_some_and(|b| {
                        b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
                    }) {
                        self.pos += 1;
                    }
                    if start == self.pos {
                        return Err(self.fail());
                    }
                    if let Some(new) = r.number(path, &self.text[start..self.pos]) {
                        self.edits.push((start, self.pos, quote(&new)));
                    }
                    Ok(())
                }
            }
        }
    }

    fn quote(s: &str) -> String {
        serde_json::Value::String(s.to_owned()).to_string()
    }
}

mod toml {
    //! TOML through `toml_edit`, which keeps comments, order and layout.

    use toml_edit::{DocumentMut, Item, Table, Value};

    use super::{KeyPath, ParseFail, Redactor};

    pub(super) fn process(text: &str, redactor: &mut Redactor) -> Result<String, ParseFail> {
        let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
            e.span()
                .map(|s| ParseFail::at_offset(text, s.start))
                .unwrap_or_default()
        })?;
        let mut path = KeyPath::default();
        table(doc.as_table_mut(), &mut path, redactor);
        Ok(doc.to_string())
    }

    fn table(t: &mut Table, path: &mut KeyPath, r: &mut Redactor) {
        for (key, it) in t.iter_mut() {
            path.push_key(key.get());
            item(it, path, r);
            path.pop();
        }
    }

    fn item(it: &mut Item, path: &mut KeyPath, r: &mut Redactor) {
        match it {
            Item::None => {}
            Item::Value(v) => value(v, path, r),
            Item::Table(t) => table(t, path, r),
            Item::ArrayOfTables(a) => {
                for (i, t) in a.iter_mut().enumerate() {
                    path.push_index(i);
                    table(t, path, r);
                    path.pop();
                }
            }
        }
    }

    fn value(v: &mut Value, path: &mut KeyPath, r: &mut Redactor) {
        let new = match v {
            Value::String(s) => r.string(path, s.value()),
            Value::Integer(i) => r.number(path, &i.value().to_string()),
            Value::Float(f) => r.number(path, &f.value().to_string()),
            Value::Boolean(_) | Value::Datetime(_) => None,
            Value::Array(a) => {
                for (i, v) in a.iter_mut().enumerate() {
                    path.push_index(i);
                    value(v, path, r);
                    path.pop();
                }
                None
            }
            Value::InlineTable(t) => {
                for (key, v) in t.iter_mut() {
                    path.push_key(key.get());
                    value(v, path, r);
                    path.pop();
                }
                None
            }
        };
        if let Some(new) = new {
            let decor = v.decor().clone();
            *v = Value::from(new);
            *v.decor_mut() = decor;
        }
    }
}

mod yaml {
    //! YAML parsed and re-emitted through `yaml-rust2`: keys, order and values survive, comments
    //! and anchors do not.

    use super::{KeyPath, ParseFail, Redactor, Yaml, YamlEmitter, YamlLoader};

    pub(super) fn process(text: &str, redactor: &mut Redactor) -> Result<String, ParseFail> {
        let mut docs = YamlLoader::load_from_str(text).map_err(|e| ParseFail {
            line: Some(e.marker().line()),
            column: Some(e.marker().col() + 1),
        })?;
        let mut out = String::new();
        // Multi-document streams get the document number in their key paths.
        let multi = docs.len() > 1;
        for (i, doc) in docs.iter_mut().enumerate() {
            let mut path = KeyPath::default();
            if multi {
                path.push_index(i);
            }
            node(doc, &mut path, redactor);
            YamlEmitter::new(&mut out)
                .dump(doc)
                .map_err(|_| ParseFail::default())?;
            out.push('\n');
        }
        Ok(out)
    }

    fn key_name(k: &Yaml) -> String {
        match k {
            Yaml::String(s) | Yaml::Real(s) => s.clone(),
            Yaml::Integer(i) => i.to_string(),
            Yaml::Boolean(b) => b.to_string(),
            _ => "?".to_owned(),
        }
    }

    fn node(n: &mut Yaml, path: &mut KeyPath, r: &mut Redactor) {
        let new = match n {
            Yaml::String(s) => r.string(path, s),
            Yaml::Integer(i) => r.number(path, &i.to_string()),
            Yaml::Real(s) => r.number(path, s),
            Yaml::Hash(h) => {
                for (k, v) in h.iter_mut() {
                    path.push_key(&key_name(k));
                    node(v, path, r);
                    path.pop();
                }
                None
            }
            Yaml::Array(a) => {
                for (i, v) in a.iter_mut().enumerate() {
                    path.push_index(i);
                    node(v, path, r);
                    path.pop();
                }
                None
            }
            Yaml::Boolean(_) | Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => None,
        };
        if let Some(new) = new {
            *n = Yaml::String(new);
        }
    }
}

mod env {
    //! `.env` files edited line by line: comments, blank lines and `export` survive verbatim.

    use super::{placeholder, KeyPath, ParseFail, Redactor};

    pub(super) fn process(text: &str, redactor: &mut Redactor) -> Result<String, ParseFail> {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < lines.len() {
            let line_no = i + 1;
            let line = lines[i];
            let body = line.trim_end_matches(['\n', '\r']);
            let trimmed = body.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                out.push_str(line);
                i += 1;
                continue;
            }
            let entry = parse_entry(&lines, i).ok_or(ParseFail::at_line(line_no))?;
            let mut path = KeyPath::default();
            path.push_key(entry.key);
            match redactor.string(&path, &entry.value) {
                Some(new) => {
                    // Single quotes are literal in dotenv and in a shell that sources the file.
                    let new = if new.contains('\'') {
                        placeholder(&entry.value)
                    } else {
                        new
                    };
                    out.push_str(&body[..entry.value_start]);
                    out.push('\'');
                    out.push_str(&new);
                    out.push('\'');
                    out.push_str(entry.suffix);
                    out.push_str(entry.ending);
                }
                None => {
                    for l in &lines[i..entry.next_line] {
                        out.push_str(l);
                    }
                }
            }
            i = entry.next_line;
        }
        Ok(out)
    }

    struct Entry<'a> {
        key: &'a str,
        /// The value, quotes removed and `\n` escapes of double quotes decoded.
        value: String,
        /// Byte offset of the value (its opening quote) in the first line.
        value_start: usize,
        /// What follows the value on its last line: spaces and a `#` comment.
        suffix: &'a str,
        /// The line ending of the last line.
        ending: &'a str,
        /// Index of the first line after the entry.
        next_line: usize,
    }

    fn parse_entry<'a>(lines: &[&'a str], first: usize) -> Option<Entry<'a>> {
        let body = lines[first].trim_end_matches(['\n', '\r']);
        let rest = body.trim_start();
        let rest = rest
            .strip_prefix("export")
            .filter(|r| r.starts_with([' ', '\t']))
            .map_or(rest, str::trim_start);
        let key_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .unwrap_or(rest.len());
        let key = &rest[..key_len];
        if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        let after_key = rest[key_len..].trim_start_matches([' ', '\t']);
        let after_eq = after_key.strip_prefix('=')?;
        let value_part = after_eq.trim_start_matches([' ', '\t']);
        let value_start = body.len() - value_part.len();

        let Some(quote) = value_part
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '\''))
        else {
            // Unquoted: the value runs to a ` #` comment or the end of the line.
            let end = value_part
                .char_indices()
                .find(|&(i, c)| c == '#' && value_part[..i].ends_with([' ', '\t']))
                .map_or(value_part.len(), |(i, _)| i);
            let value = value_part[..end].trim_end();
            return Some(Entry {
                key,
                value: value.to_owned(),
                value_start,
                suffix: &value_part[value.len()..],
                ending: &lines[first][body.len()..],
                next_line: first + 1,
            });
        };

        // Quoted, possibly over several lines.
        let mut raw = String::new();
        let mut segment = &value_part[1..];
        let mut line = first;
        loop {
            if let Some(close) = find_close(segment, quote) {
                raw.push_str(&segment[..close]);
                let tail = &segment[close + 1..];
                let suffix_ok = {
                    let t = tail.trim_start_matches([' ', '\t']);
                    t.is_empty() || t.starts_with('#')
                };
                if !suffix_ok {
                    return None;
                }
                let last = lines[line];
                let last_body = last.trim_end_matches(['\n', '\r']);
                let value = if quote == '"' {
                    unescape_double(&raw)
                } else {
                    raw
                };
                return Some(Entry {
                    key,
                    value,
                    value_start,
                    suffix: tail,
                    ending: &last[last_body.len()..],
                    next_line: line + 1,
                });
            }
            // No closing quote on this line: the value goes on, line break included.
            raw.push_str(segment);
            raw.push_str(&lines[line][lines[line].trim_end_matches(['\n', '\r']).len()..]);
            line += 1;
            segment = lines.get(line)?.trim_end_matches(['\n', '\r']);
        }
    }

    fn find_close(s: &str, quote: char) -> Option<usize> {
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            if quote == '"' && escaped {
                escaped = false;
                continue;
            }
            if quote == '"' && c == '\\' {
                escaped = true;
                continue;
            }
            if c == quote {
                return Some(i);
            }
        }
        None
    }

    fn unescape_double(raw: &str) -> String {
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    const SK: &str = "sk-proj-4fG7hK2mQ9xZ1vB8nL3pR6tY0wE5uI7o";
    const GHP: &str = "ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6";
    const ENTROPY: &str = "q8Zx4hTbW2mK9pLr7VnC3sYd";
    const PASSWORD: &str = "hunter2-correct-horse";
    const DB_PASS: &str = "s3cr3tDbPa55";
    const PEM: &str =
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";

    /// Values that must never survive a render.
    fn secrets() -> Vec<&'static str> {
        vec![
            JWT,
            SK,
            GHP,
            ENTROPY,
            PASSWORD,
            DB_PASS,
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        ]
    }

    /// Values that must survive a render untouched.
    const KEPT: &[&str] = &[
        "https://api.example.com/v1/chat",
        "/var/lib/atlasvault/data/backups",
        "anthropic/claude-opus-4-5-20251101",
        "production-database-primary-cluster",
        "gpt-4o-mini-2024-07-18",
        "jane.doe@example.com",
        "${OPENAI_API_KEY}",
    ];

    fn json_fixture(password: &str) -> String {
        let pem = serde_json::Value::String(PEM.to_owned());
        format!(
            r#"{{
  "gateway": {{ "port": 18789, "auth": {{ "mode": "token", "token": "abc" }} }},
  "password": "{password}",
  "maxTokens": 8192,
  "pin_token": 1234,
  "enabled": true,
  "notes": null,
  "models": {{ "session": "{JWT}", "openai": "{SK}", "gh": "{GHP}", "blob": "{ENTROPY}", "key": {pem} }},
  "db": "postgres://app:{DB_PASS}@db.internal:5432/app",
  "kept": ["{}", "{}", "{}", "{}", "{}", "{}", "{}"],
  "emptyPassword": ""
}}
"#,
            KEPT[0], KEPT[1], KEPT[2], KEPT[3], KEPT[4], KEPT[5], KEPT[6]
        )
    }

    fn toml_fixture(password: &str) -> String {
        format!(
            r#"# top comment
name = "vault"  # trailing comment
[gateway]
port = 18789
password = "{password}"
[models]
session = "{JWT}"
openai = '{SK}'
gh = "{GHP}"
blob = "{ENTROPY}"
key = """
{PEM}"""
db = "postgres://app:{DB_PASS}@db.internal:5432/app"
kept = ["{}", "{}", "{}", "{}", "{}", "{}", "{}"]
[[servers]]
api_key = "{SK}"
host = "a.example.com"
"#,
            KEPT[0], KEPT[1], KEPT[2], KEPT[3], KEPT[4], KEPT[5], KEPT[6]
        )
    }

    fn yaml_fixture(password: &str) -> String {
        format!(
            r#"# a comment
name: vault
gateway:
  port: 18789
  password: "{password}"
models:
  session: {JWT}
  openai: {SK}
  gh: {GHP}
  blob: {ENTROPY}
  key: |
    -----BEGIN PRIVATE KEY-----
    MIIEvQIBADANBgkqhkiG9w0BAQEFAASC
    -----END PRIVATE KEY-----
  db: postgres://app:{DB_PASS}@db.internal:5432/app
kept: ["{}", "{}", "{}", "{}", "{}", "{}", "{}"]
secrets:
  - api_key: {SK}
"#,
            KEPT[0], KEPT[1], KEPT[2], KEPT[3], KEPT[4], KEPT[5], KEPT[6]
        )
    }

    fn env_fixture(password: &str) -> String {
        format!(
            "# comment line\n\nexport DB_PASSWORD={password}\nSESSION=\"{JWT}\" # inline comment\n\
             OPENAI='{SK}'\nGH={GHP}\nBLOB={ENTROPY}\nKEY=\"-----BEGIN PRIVATE KEY-----\n\
             MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\"\n\
             DATABASE_URL=postgres://app:{DB_PASS}@db.internal:5432/app\n\
             URL={}\nDATA_DIR={}\nMODEL={}\nNAME={}\nOTHER_MODEL={}\nEMAIL={}\nREF={}\n\
             EMPTY_TOKEN=\n   \n# trailing comment\n",
            KEPT[0], KEPT[1], KEPT[2], KEPT[3], KEPT[4], KEPT[5], KEPT[6]
        )
    }

    fn fixtures(password: &str) -> Vec<(&'static str, String)> {
        vec![
            ("openclaw.json", json_fixture(password)),
            ("config.toml", toml_fixture(password)),
            ("compose.yaml", yaml_fixture(password)),
            (".env", env_fixture(password)),
        ]
    }

    fn text(t: &Template) -> &str {
        std::str::from_utf8(&t.bytes).unwrap()
    }

    #[test]
    fn every_format_redacts_by_key_and_by_shape_and_keeps_the_rest() {
        for (name, input) in fixtures(PASSWORD) {
            let t = render(Path::new(name), input.as_bytes()).unwrap();
            let out = text(&t);
            for s in secrets() {
                assert!(!out.contains(s), "{name}: secret survived:\n{out}");
            }
            for k in KEPT {
                assert!(out.contains(k), "{name}: lost {k}:\n{out}");
            }
            assert!(out.contains("<redacted:sha256:"), "{name}");
            assert!(t.redacted >= 7, "{name}: only {} redacted", t.redacted);
            // The password of a URL goes, the rest of it stays.
            assert!(
                out.contains("postgres://app:<redacted:sha256:"),
                "{name}:\n{out}"
            );
            assert!(out.contains("@db.internal:5432/app"), "{name}");
        }
    }

    #[test]
    fn every_key_is_kept() {
        let json = render(
            Path::new("openclaw.json"),
            json_fixture(PASSWORD).as_bytes(),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json.bytes).unwrap();
        assert_eq!(v["gateway"]["auth"]["mode"], "token");
        assert_eq!(v["gateway"]["port"], 18789);
        assert_eq!(v["maxTokens"], 8192);
        assert_eq!(v["enabled"], true);
        assert!(v["notes"].is_null());
        assert_eq!(v["emptyPassword"], "");
        assert!(is_placeholder(v["pin_token"].as_str().unwrap()));
        assert!(is_placeholder(
            v["gateway"]["auth"]["token"].as_str().unwrap()
        ));
        for key in ["session", "openai", "gh", "blob", "key"] {
            assert!(is_placeholder(v["models"][key].as_str().unwrap()), "{key}");
        }

        let env = render(Path::new(".env"), env_fixture(PASSWORD).as_bytes()).unwrap();
        let out = text(&env);
        for key in [
            "export DB_PASSWORD=",
            "SESSION=",
            "OPENAI=",
            "KEY=",
            "EMPTY_TOKEN=\n",
        ] {
            assert!(out.contains(key), "{key}");
        }
    }

    #[test]
    fn outputs_parse_in_their_own_format_and_keep_comments() {
        let f = fixtures(PASSWORD);
        let json = render(Path::new(f[0].0), f[0].1.as_bytes()).unwrap();
        assert_eq!(json.format, Format::Json);
        serde_json::from_slice::<serde_json::Value>(&json.bytes).unwrap();

        let toml = render(Path::new(f[1].0), f[1].1.as_bytes()).unwrap();
        assert_eq!(toml.format, Format::Toml);
        let doc: toml_edit::DocumentMut = text(&toml).parse().unwrap();
        assert_eq!(doc["gateway"]["port"].as_integer(), Some(18789));
        assert!(
            text(&toml).contains("# top comment") && text(&toml).contains("# trailing comment")
        );

        let yaml = render(Path::new(f[2].0), f[2].1.as_bytes()).unwrap();
        assert_eq!(yaml.format, Format::Yaml);
        let docs = YamlLoader::load_from_str(text(&yaml)).unwrap();
        assert_eq!(docs[0]["gateway"]["port"].as_i64(), Some(18789));
        assert_eq!(docs[0]["name"].as_str(), Some("vault"));

        let env = render(Path::new(f[3].0), f[3].1.as_bytes()).unwrap();
        assert_eq!(env.format, Format::Env);
        let out = text(&env);
        assert!(out.starts_with("# comment line\n\n"));
        assert!(out.contains("# inline comment\n"));
        assert!(out.ends_with("EMPTY_TOKEN=\n   \n# trailing comment\n"));
    }

    #[test]
    fn render_is_idempotent() {
        for (name, input) in fixtures(PASSWORD) {
            let once = render(Path::new(name), input.as_bytes()).unwrap();
            let twice = render(Path::new(name), &once.bytes).unwrap();
            assert_eq!(text(&once), text(&twice), "{name}");
            assert_eq!(twice.redacted, 0, "{name}");
        }
    }

    #[test]
    fn placeholder_changes_only_when_the_secret_changes() {
        for ((name, a), ((_, b), (_, c))) in fixtures(PASSWORD).into_iter().zip(
            fixtures("another-pass-word")
                .into_iter()
                .zip(fixtures(PASSWORD)),
        ) {
            let ra = render(Path::new(name), a.as_bytes()).unwrap();
            let rb = render(Path::new(name), b.as_bytes()).unwrap();
            let rc = render(Path::new(name), c.as_bytes()).unwrap();
            assert_ne!(ra.bytes, rb.bytes, "{name}");
            assert_eq!(ra.bytes, rc.bytes, "{name}");
        }
        assert_eq!(placeholder("x"), placeholder("x"));
        assert_ne!(placeholder("x"), placeholder("y"));
        assert!(is_placeholder(&placeholder("x")));
    }

    #[test]
    fn find_secrets_is_empty_on_templates_and_names_keys_on_raw_files() {
        for (name, input) in fixtures(PASSWORD) {
            let raw = find_secrets(Path::new(name), input.as_bytes());
            assert!(raw.len() >= 7, "{name}: {raw:?}");
            for found in &raw {
                for s in secrets() {
                    assert!(!found.contains(s), "{name}: {found}");
                }
            }
            let t = render(Path::new(name), input.as_bytes()).unwrap();
            assert_eq!(
                find_secrets(Path::new(name), &t.bytes),
                Vec::<String>::new(),
                "{name}"
            );
        }
        let env = find_secrets(Path::new(".env"), env_fixture(PASSWORD).as_bytes());
        assert!(env.contains(&"DB_PASSWORD".to_owned()), "{env:?}");
        let json = find_secrets(Path::new("a.json"), br#"{"a": [{"b": {"apiKey": "x"}}]}"#);
        assert_eq!(json, vec!["a[0].b.apiKey".to_owned()]);
        assert_eq!(
            find_secrets(Path::new("a.json"), b"{"),
            vec!["<not valid JSON>"]
        );
    }

    #[test]
    fn unknown_extension_tries_json_then_env() {
        let t = render(
            Path::new("settings"),
            format!(r#"{{"token": "{SK}"}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(t.format, Format::Json);
        let t = render(Path::new("settings"), format!("TOKEN={SK}\n").as_bytes()).unwrap();
        assert_eq!(t.format, Format::Env);
        assert!(!text(&t).contains(SK));
        let t = render(Path::new("prod.env"), b"A=1\n").unwrap();
        assert_eq!(t.format, Format::Env);
        assert!(render(Path::new("settings"), b"just some words\n").is_err());
    }

    #[test]
    fn unparsable_files_fail_without_echoing_the_secret() {
        let cases = [
            ("openclaw.json", format!(r#"{{"token": "{SK}", oops}}"#)),
            ("a.toml", format!("token = \"{SK}\"\n= {SK} {SK}\n")),
            ("a.yaml", format!("token: \"{SK}\n  - : {SK}: [\n")),
            (".env", format!("TOKEN={SK}\n{SK}\n")),
            (".env", format!("TOKEN=\"{SK}\n")),
            (
                "a.json",
                format!("{{\"token\": \"{SK}\"}}\u{0}").replace('\u{0}', "\u{1}"),
            ),
        ];
        for (name, input) in cases {
            let err = render(Path::new(name), input.as_bytes()).unwrap_err();
            let msg = format!("{err} {err:?}");
            assert!(!msg.contains(SK) && !msg.contains("sk-"), "{name}: {msg}");
            assert!(msg.contains(name), "{msg}");
        }
        let err = render(Path::new("a.json"), &[b'{', 0xff]).unwrap_err();
        assert!(err.to_string().contains("JSON"));
    }

    #[test]
    fn heuristics_flag_credentials_and_spare_ordinary_values() {
        for v in [
            JWT,
            SK,
            GHP,
            ENTROPY,
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
            "xoxb-1234567890-abcdefghij",
            "AKIAIOSFODNN7EXAMPLE",
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----",
            "https://api.example.com/v1?api_key=abc123",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(redact_string(Some("value"), v).is_some(), "missed {v}");
        }
        for v in [
            "task-management-service-for-production",
            "disk-usage-monitoring-dashboard",
            "/home/user/.ssh/id_ed25519",
            "C:\\Users\\someone\\AppData\\Roaming\\config",
            "https://user@example.com/path/to/resource?page=2",
            "This is an ordinary sentence about configuration values.",
            "MyServiceProductionCluster",
            "550e8400-e29b-41d4-a716-446655440000",
            "2024-01-01T00:00:00Z",
        ] {
            assert_eq!(redact_string(Some("value"), v), None, "flagged {v}");
        }
        for v in KEPT {
            assert_eq!(redact_string(Some("value"), v), None, "flagged {v}");
        }
        assert_eq!(
            redact_string(None, "redis://:pw123@cache:6379/0"),
            Some(format!("redis://:{}@cache:6379/0", placeholder("pw123")))
        );
        assert!(redact_string(Some("GitHub-Token"), "short").is_some());
        assert!(redact_string(Some("privateKey"), "x").is_some());
        assert_eq!(redact_string(Some("token"), ""), None);
        assert_eq!(redact_string(Some("token"), "${GATEWAY_TOKEN}"), None);
    }

    #[test]
    fn policy_matches_base_names_at_any_depth() {
        let p = TemplatePolicy::default();
        for yes in [
            "openclaw.json",
            ".env",
            ".env.local",
            "a/b/.env",
            "home/.openclaw/openclaw.json",
        ] {
            assert!(p.matches(Path::new(yes)), "{yes}");
        }
        for no in ["env", "config.json", "a/.envrc", "openclaw.json.bak"] {
            assert!(!p.matches(Path::new(no)), "{no}");
        }
        let p = TemplatePolicy::new(&["*.yaml".to_owned(), "config/*.toml".to_owned()]).unwrap();
        assert!(p.matches(Path::new("deep/dir/x.yaml")));
        assert!(p.matches(Path::new("config/app.toml")));
        assert!(!p.matches(Path::new("other/config/sub/app.toml")));
        assert!(!p.matches(Path::new("app.toml")));
        assert!(TemplatePolicy::new(&["a[".to_owned()]).is_err());
    }

    proptest! {
        #[test]
        fn planted_secrets_never_survive(
            key in "[A-Za-z_][A-Za-z0-9_]{0,15}",
            tail in "[A-Za-z0-9]{40}",
            filler in "[a-z]{1,10}",
        ) {
            let secret = format!("sk-{tail}");
            let json = format!(r#"{{"name": "{filler}", "{key}": "{secret}", "list": [1, "{secret}"]}}"#);
            let env = format!("# c\nNAME={filler}\n{key}={secret}\nexport {key}_2=\"{secret}\"\n");
            for (name, input) in [("openclaw.json", json), (".env", env)] {
                let t = render(Path::new(name), input.as_bytes()).unwrap();
                let out = String::from_utf8(t.bytes.clone()).unwrap();
                prop_assert!(!out.contains(&secret), "{}: {}", name, out);
                prop_assert!(!out.contains(&tail));
                prop_assert!(out.contains(&filler));
                prop_assert!(find_secrets(Path::new(name), &t.bytes).is_empty());
                prop_assert!(!find_secrets(Path::new(name), input.as_bytes()).is_empty());
            }
        }
    }
}
