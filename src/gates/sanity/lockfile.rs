//! Lockfile sanity checks for the snapshot gate.
//!
//! The gate hands every lockfile in a snapshot to [`check`], which answers whether the bytes still
//! parse as that lockfile format: the syntax, plus the few fields the owning tool cannot do without.
//! A truncated or garbled lockfile must fail here so that the snapshot holding it is not promoted
//! to last-known-good. This module does not resolve dependencies or compare a lockfile with its
//! manifest; a lockfile cut exactly at an entry boundary can still be valid and pass.
//!
//! Every file must be non-empty UTF-8 (a leading byte-order mark is ignored). Then:
//!
//! - `Cargo.lock`: TOML; `version`, if present, is an integer; every `[[package]]` has string
//!   `name` and `version`.
//! - `poetry.lock`: TOML; every `[[package]]` has string `name` and `version` (no packages is fine);
//!   `metadata`, if present, is a table.
//! - `package-lock.json`, `npm-shrinkwrap.json`: a JSON object with a numeric `lockfileVersion`;
//!   `packages` and `dependencies`, if present, are objects.
//! - `Pipfile.lock`: a JSON object with a `_meta` object; `default` and `develop`, if present, are
//!   objects.
//! - `composer.lock`: a JSON object whose `packages` (and `packages-dev`, unless absent or null) is
//!   an array of objects with string `name` and `version`.
//! - `pnpm-lock.yaml`: YAML in which every document (newer pnpm writes an env document first) is a
//!   mapping with a string or number `lockfileVersion`, whose `importers`, `packages` and
//!   `snapshots`, if present, map keys to mappings.
//! - `yarn.lock`: berry (v2+) files, recognised by a `__metadata:` line, are YAML with a
//!   `__metadata` mapping, and every other entry has a `version`, a `resolution` and a `linkType`.
//!   Classic v1 files are checked line by line: indentation in steps of two spaces, one level at
//!   a time, only under an open entry or block; strings terminated; one value per field; no empty
//!   blocks; a `version` in every entry.
//! - `Gemfile.lock`: Bundler sections at column 0 (at least one, no unknown ones); source options
//!   and `specs:` indented by 2, gems `name (version)` by 4, their dependencies `name` or
//!   `name (constraints)` by 6; `BUNDLED WITH` followed by exactly one version line.
//!
//! Errors are one line and carry the line (and column where known) of the problem. They quote at
//! most `MAX_QUOTE_CHARS` characters of anything that may come from the file.

use std::ops::Range;

use serde_json::{Map, Value as Json};
use toml_edit::{Item, TableLike};
use yaml_rust2::{ScanError, Yaml, YamlLoader};

/// Longest excerpt of file-derived text (including parser messages, which can embed keys) that an
/// error message may carry; lockfile lines can be megabytes long.
const MAX_QUOTE_CHARS: usize = 60;

/// Deepest YAML nesting accepted. yaml-rust2's loader recurses once per level, so an untrusted
/// `- - - - …` line would otherwise overflow the stack.
const MAX_YAML_DEPTH: usize = 128;

/// Bundler's column-0 section headers.
const GEMFILE_SECTIONS: [&str; 9] = [
    "GEM",
    "PATH",
    "GIT",
    "PLUGIN SOURCE",
    "PLATFORMS",
    "DEPENDENCIES",
    "RUBY VERSION",
    "BUNDLED WITH",
    "CHECKSUMS",
];

/// Bumped whenever [`check`] accepts less than before: passes remembered under an older version
/// (see `gates::sanity::lockfile_pass_key`) are then checked again.
pub const CHECK_VERSION: u32 = 1;

/// A lockfile format, identified by its exact file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Cargo,
    NpmPackageLock,
    NpmShrinkwrap,
    Yarn,
    Pnpm,
    Poetry,
    Pipfile,
    Composer,
    Gemfile,
}

impl LockKind {
    /// Every kind.
    pub const ALL: [LockKind; 9] = [
        LockKind::Cargo,
        LockKind::NpmPackageLock,
        LockKind::NpmShrinkwrap,
        LockKind::Yarn,
        LockKind::Pnpm,
        LockKind::Poetry,
        LockKind::Pipfile,
        LockKind::Composer,
        LockKind::Gemfile,
    ];

    /// The file name the owning tool writes.
    pub fn file_name(self) -> &'static str {
        match self {
            LockKind::Cargo => "Cargo.lock",
            LockKind::NpmPackageLock => "package-lock.json",
            LockKind::NpmShrinkwrap => "npm-shrinkwrap.json",
            LockKind::Yarn => "yarn.lock",
            LockKind::Pnpm => "pnpm-lock.yaml",
            LockKind::Poetry => "poetry.lock",
            LockKind::Pipfile => "Pipfile.lock",
            LockKind::Composer => "composer.lock",
            LockKind::Gemfile => "Gemfile.lock",
        }
    }
}

/// The lockfile kind of a file name (the last path component as raw bytes), or None.
pub fn kind_of(file_name: &[u8]) -> Option<LockKind> {
    LockKind::ALL
        .into_iter()
        .find(|kind| kind.file_name().as_bytes() == file_name)
}

/// Ok when `bytes` parse as a lockfile of `kind`; Err with a one-line human-readable reason otherwise.
pub fn check(kind: LockKind, bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("empty".to_owned());
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        let (line, column) = position(bytes, offset);
        format!("not UTF-8: invalid byte at offset {offset} (line {line}, column {column})")
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match kind {
        LockKind::Cargo => check_cargo(text),
        LockKind::Poetry => check_poetry(text),
        LockKind::NpmPackageLock | LockKind::NpmShrinkwrap => check_npm(text),
        LockKind::Pipfile => check_pipfile(text),
        LockKind::Composer => check_composer(text),
        LockKind::Pnpm => check_pnpm(text),
        LockKind::Yarn if text.lines().any(|l| l.starts_with("__metadata:")) => {
            check_yarn_berry(text)
        }
        LockKind::Yarn => check_yarn_classic(text),
        LockKind::Gemfile => check_gemfile(text),
    }
}

// ---------------------------------------------------------------------------------------------
// TOML: Cargo.lock, poetry.lock

fn check_cargo(text: &str) -> Result<(), String> {
    let doc = parse_toml(text)?;
    let version = doc.get("version");
    if let Some(version) = version.filter(|v| !v.as_value().is_some_and(|v| v.is_integer())) {
        return Err(at(text, version.span(), "`version` is not an integer"));
    }
    check_toml_packages(text, &doc)
}

fn check_poetry(text: &str) -> Result<(), String> {
    let doc = parse_toml(text)?;
    if let Some(metadata) = doc.get("metadata").filter(|m| !m.is_table_like()) {
        return Err(at(text, metadata.span(), "`metadata` is not a table"));
    }
    check_toml_packages(text, &doc)
}

fn parse_toml(text: &str) -> Result<toml_edit::Document<&str>, String> {
    let doc = toml_edit::Document::parse(text).map_err(|e| {
        // Not `Display`: it renders the whole offending source line.
        let msg = format!("TOML syntax error: {}", clip(e.message()));
        at(text, e.span(), msg)
    })?;
    if doc.is_empty() {
        return Err("no TOML keys or tables (only comments or whitespace)".to_owned());
    }
    Ok(doc)
}

/// Checks that `package`, if present, is an array of tables each with string `name` and `version`.
fn check_toml_packages(text: &str, doc: &toml_edit::Table) -> Result<(), String> {
    let Some(item) = doc.get("package") else {
        return Ok(());
    };
    let not_tables = || at(text, item.span(), "`package` is not an array of tables");
    let tables: Vec<(&dyn TableLike, Option<Range<usize>>)> = match item {
        Item::ArrayOfTables(array) => array
            .iter()
            .map(|t| (t as &dyn TableLike, t.span()))
            .collect(),
        Item::Value(toml_edit::Value::Array(array)) => array
            .iter()
            .map(|v| v.as_inline_table().map(|t| (t as &dyn TableLike, t.span())))
            .collect::<Option<_>>()
            .ok_or_else(not_tables)?,
        _ => return Err(not_tables()),
    };
    for (index, (table, span)) in tables.into_iter().enumerate() {
        for field in ["name", "version"] {
            if table.get(field).and_then(Item::as_str).is_none() {
                let msg = format!("package #{} has no string `{field}`", index + 1);
                return Err(at(text, span, msg));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JSON: package-lock.json, npm-shrinkwrap.json, Pipfile.lock, composer.lock

fn check_npm(text: &str) -> Result<(), String> {
    let root = parse_json_object(text)?;
    json_field(&root, "lockfileVersion", true, "a number", Json::is_number)?;
    json_field(&root, "packages", false, "an object", Json::is_object)?;
    json_field(&root, "dependencies", false, "an object", Json::is_object)
}

fn check_pipfile(text: &str) -> Result<(), String> {
    let root = parse_json_object(text)?;
    json_field(&root, "_meta", true, "an object", Json::is_object)?;
    json_field(&root, "default", false, "an object", Json::is_object)?;
    json_field(&root, "develop", false, "an object", Json::is_object)
}

fn check_composer(text: &str) -> Result<(), String> {
    let root = parse_json_object(text)?;
    json_field(&root, "packages", true, "an array", Json::is_array)?;
    // Composer writes `"packages-dev": null` when installing without dev requirements.
    json_field(&root, "packages-dev", false, "an array", |v| {
        v.is_array() || v.is_null()
    })?;
    for key in ["packages", "packages-dev"] {
        let packages = root.get(key).and_then(Json::as_array).into_iter().flatten();
        for (index, package) in packages.enumerate() {
            for field in ["name", "version"] {
                if !package.get(field).is_some_and(Json::is_string) {
                    return Err(format!("`{key}`[{index}] has no string `{field}`"));
                }
            }
        }
    }
    Ok(())
}

fn parse_json_object(text: &str) -> Result<Map<String, Json>, String> {
    match serde_json::from_str(text) {
        Ok(Json::Object(root)) => Ok(root),
        Ok(_) => Err("top level is not a JSON object".to_owned()),
        Err(e) => {
            // serde_json appends " at line L column C"; we print the position first instead.
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let msg = full.strip_suffix(&suffix).unwrap_or(&full);
            Err(format!(
                "line {}, column {}: JSON syntax error: {}",
                e.line(),
                e.column(),
                clip(msg)
            ))
        }
    }
}

/// Checks that `key` is present (when `required`) and, if present, is `what` according to `ok`.
fn json_field(
    root: &Map<String, Json>,
    key: &str,
    required: bool,
    what: &str,
    ok: fn(&Json) -> bool,
) -> Result<(), String> {
    match root.get(key) {
        None if required => Err(format!("missing `{key}` (must be {what})")),
        Some(value) if !ok(value) => Err(format!("`{key}` is not {what}")),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// YAML: pnpm-lock.yaml, yarn.lock (berry)

fn check_pnpm(text: &str) -> Result<(), String> {
    let docs = load_yaml(text)?;
    if docs.is_empty() {
        return Err("no YAML document".to_owned());
    }
    for (index, doc) in docs.iter().enumerate() {
        let n = index + 1;
        if !is_yaml_scalar(&doc["lockfileVersion"]) {
            return Err(format!(
                "YAML document {n} has no string or number `lockfileVersion`"
            ));
        }
        // pnpm reads every importer, package and snapshot entry as a mapping.
        for section in ["importers", "packages", "snapshots"] {
            let entries = match &doc[section] {
                Yaml::BadValue => continue,
                Yaml::Hash(entries) => entries,
                _ => return Err(format!("YAML document {n}: `{section}` is not a mapping")),
            };
            for (key, entry) in entries {
                if !matches!(entry, Yaml::Hash(_)) {
                    let key = clip(key.as_str().unwrap_or("?"));
                    return Err(format!(
                        "YAML document {n}: `{section}` entry `{key}` is not a mapping"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_yarn_berry(text: &str) -> Result<(), String> {
    let docs = load_yaml(text)?;
    let Some(Yaml::Hash(entries)) = docs.first() else {
        return Err("yarn berry lockfile is not a YAML mapping".to_owned());
    };
    for (key, entry) in entries {
        let name = key.as_str().unwrap_or("<non-string key>");
        if name == "__metadata" {
            if !matches!(entry, Yaml::Hash(_)) {
                return Err("`__metadata` is not a mapping".to_owned());
            }
        } else if !is_yaml_scalar(&entry["version"]) {
            return Err(format!("entry `{}` has no `version`", clip(name)));
        } else if !matches!(
            (&entry["resolution"], &entry["linkType"]),
            (Yaml::String(_), Yaml::String(_))
        ) {
            // Yarn parses `resolution` and reads `linkType` for every entry.
            return Err(format!(
                "entry `{}` lacks `resolution` or `linkType`",
                clip(name)
            ));
        }
    }
    if !entries.contains_key(&Yaml::String("__metadata".to_owned())) {
        return Err("no top-level `__metadata` mapping".to_owned());
    }
    Ok(())
}

/// Whether `value` is a YAML string or number (a version).
fn is_yaml_scalar(value: &Yaml) -> bool {
    matches!(value, Yaml::String(_) | Yaml::Integer(_) | Yaml::Real(_))
}

/// Loads every YAML document in `text`, refusing nesting deeper than `MAX_YAML_DEPTH`.
fn load_yaml(text: &str) -> Result<Vec<Yaml>, String> {
    let syntax = |e: ScanError| {
        let mark = e.marker();
        let (line, column) = (mark.line(), mark.col() + 1);
        format!(
            "line {line}, column {column}: YAML syntax error: {}",
            clip(e.info())
        )
    };
    if let Some(line) = crate::template::yaml_too_deep(text, MAX_YAML_DEPTH).map_err(syntax)? {
        return Err(format!(
            "line {line}: YAML nested deeper than {MAX_YAML_DEPTH}"
        ));
    }
    YamlLoader::load_from_str(text).map_err(syntax)
}

// ---------------------------------------------------------------------------------------------
// yarn.lock (classic v1)

fn check_yarn_classic(text: &str) -> Result<(), String> {
    // Deepest indent level the next line may use.
    let mut open = 0;
    // Line of a `key:` whose block has no lines yet.
    let mut pending_block: Option<usize> = None;
    // Header line of the current top-level entry, and whether it has a `version` field.
    let mut entry: Option<(usize, bool)> = None;
    let finish = |entry: Option<(usize, bool)>| match entry {
        Some((line, false)) => Err(format!("line {line}: entry has no `version`")),
        _ => Ok(()),
    };
    for (index, raw) in text.lines().enumerate() {
        let n = index + 1;
        let line = raw.trim_end();
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if body.starts_with('\t') || indent % 2 != 0 {
            return Err(format!(
                "line {n}: indentation is not a multiple of two spaces"
            ));
        }
        let depth = indent / 2;
        if let Some(block) = pending_block.take().filter(|_| depth < open) {
            return Err(format!("line {block}: block has no fields (truncated?)"));
        }
        if depth > open {
            return Err(match open {
                0 => format!("line {n}: indented line outside an entry"),
                _ => format!("line {n}: indentation jumps more than one level"),
            });
        }
        let quote_error = |at: usize| {
            format!(
                "line {n}, column {}: unterminated string",
                indent + body[..at].chars().count() + 1
            )
        };
        let first_space = unquoted_space(body).map_err(quote_error)?;
        if let Some(key) = body.strip_suffix(':') {
            if key.is_empty() || (depth > 0 && first_space.is_some()) {
                return Err(format!("line {n}: malformed key before `:`"));
            }
            if depth == 0 {
                finish(entry.take())?;
                entry = Some((n, false));
            }
            open = depth + 1;
            pending_block = Some(n);
            continue;
        }
        if depth == 0 {
            return Err(format!(
                "line {n}: top-level line is not an entry header ending in `:`"
            ));
        }
        let Some(space) = first_space else {
            return Err(format!("line {n}: field has no value"));
        };
        let (key, value) = (&body[..space], body[space..].trim_start());
        if key.ends_with(':') {
            return Err(format!("line {n}: `key: value` is not yarn v1 syntax"));
        }
        // The whole line's quotes balance, so only a second value can show up here.
        if !matches!(unquoted_space(value), Ok(None)) {
            return Err(format!("line {n}: field has more than one value"));
        }
        let is_version = depth == 1 && (key == "version" || key == "\"version\"");
        if let Some(entry) = entry.as_mut().filter(|_| is_version) {
            entry.1 = true;
        }
        open = depth;
    }
    if let Some(block) = pending_block {
        return Err(format!("line {block}: block has no fields (truncated?)"));
    }
    finish(entry)
}

/// Byte offset of the first space or tab outside double quotes, or Err(byte offset of an
/// unterminated quote).
fn unquoted_space(s: &str) -> Result<Option<usize>, usize> {
    let (mut quote, mut escaped, mut space) = (None, false, None);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(_), _) if escaped => escaped = false,
            (Some(_), '\\') => escaped = true,
            (Some(_), '"') => quote = None,
            (None, '"') => quote = Some(i),
            (None, ' ' | '\t') if space.is_none() => space = Some(i),
            _ => {}
        }
    }
    match quote {
        Some(start) => Err(start),
        None => Ok(space),
    }
}

// ---------------------------------------------------------------------------------------------
// Gemfile.lock

/// What a gem line may look like, by where it appears.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GemLine {
    /// `    name (version)` under `specs:`.
    Spec,
    /// `      name` or `      name (constraints)` under a spec.
    Dependency,
    /// `  name`, `  name (constraints)`, either optionally ending in `!`, under DEPENDENCIES.
    Requirement,
    /// `  name (version)` optionally followed by ` algo=digest`, under CHECKSUMS.
    Checksum,
}

fn check_gemfile(text: &str) -> Result<(), String> {
    let mut section: Option<&str> = None;
    let (mut in_specs, mut spec_open) = (false, false);
    // Line of a `BUNDLED WITH` header still waiting for its version.
    let mut bundled_with: Option<usize> = None;
    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        if indent == 0 {
            if let Some(header) = bundled_with {
                return Err(format!("line {header}: BUNDLED WITH has no version"));
            }
            let Some(&name) = GEMFILE_SECTIONS.iter().find(|s| **s == body) else {
                return Err(format!("line {n}: unknown section `{}`", clip(body)));
            };
            section = Some(name);
            (in_specs, spec_open) = (false, false);
            if name == "BUNDLED WITH" {
                bundled_with = Some(n);
            }
            continue;
        }
        let Some(name) = section else {
            return Err(format!("line {n}: content before the first section"));
        };
        let gem = |kind| gem_line(body, kind).map_err(|msg| format!("line {n}: {msg}"));
        match (name, indent) {
            ("GEM" | "PATH" | "GIT" | "PLUGIN SOURCE", 2) => {
                in_specs = body == "specs:";
                spec_open = false;
                let option = body.split_once(": ").is_some_and(|(key, value)| {
                    !key.is_empty()
                        && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        && !value.trim().is_empty()
                });
                if !in_specs && !option {
                    return Err(format!("line {n}: expected `specs:` or `key: value`"));
                }
            }
            ("GEM" | "PATH" | "GIT" | "PLUGIN SOURCE", 4) if in_specs => {
                gem(GemLine::Spec)?;
                spec_open = true;
            }
            ("GEM" | "PATH" | "GIT" | "PLUGIN SOURCE", 6) if spec_open => gem(GemLine::Dependency)?,
            ("DEPENDENCIES", 2) => gem(GemLine::Requirement)?,
            ("CHECKSUMS", 2) => gem(GemLine::Checksum)?,
            ("PLATFORMS", 2) if !body.contains(char::is_whitespace) => {}
            // Bundler writes single-value sections with three spaces.
            ("RUBY VERSION", 2 | 3) => {}
            ("BUNDLED WITH", 2 | 3) => {
                if bundled_with.take().is_none() {
                    return Err(format!("line {n}: more than one BUNDLED WITH version"));
                }
                let version = body.trim_end();
                let valid = version.starts_with(|c: char| c.is_ascii_digit())
                    && version
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.');
                if !valid {
                    return Err(format!(
                        "line {n}: BUNDLED WITH is not followed by a version"
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "line {n}: unexpected line in {name} (indent {indent})"
                ))
            }
        }
    }
    if let Some(header) = bundled_with {
        return Err(format!("line {header}: BUNDLED WITH has no version"));
    }
    if section.is_none() {
        return Err("no Bundler section (GEM, DEPENDENCIES, ...)".to_owned());
    }
    Ok(())
}

/// Checks one gem line (without its indentation) of the given kind.
fn gem_line(body: &str, kind: GemLine) -> Result<(), &'static str> {
    let body = match kind {
        GemLine::Requirement => body.strip_suffix('!').unwrap_or(body),
        _ => body,
    };
    let (name, rest) = body.split_once(' ').unwrap_or((body, ""));
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if !name_ok(name) {
        return Err("malformed gem name");
    }
    if rest.is_empty() {
        return match kind {
            GemLine::Spec | GemLine::Checksum => Err("gem has no `(version)`"),
            GemLine::Dependency | GemLine::Requirement => Ok(()),
        };
    }
    let Some((inner, tail)) = rest.strip_prefix('(').and_then(|r| r.split_once(')')) else {
        return Err("unbalanced parentheses after gem name");
    };
    let inner_ok = match kind {
        GemLine::Spec | GemLine::Checksum => name_ok(inner),
        // Constraints like `>= 1.2, < 2`.
        GemLine::Dependency | GemLine::Requirement => inner.split(", ").all(|c| {
            let version = c.trim_start_matches(['=', '!', '>', '<', '~']).trim_start();
            name_ok(version)
        }),
    };
    if !inner_ok {
        return Err("malformed version inside parentheses");
    }
    let tail_ok = match kind {
        GemLine::Checksum => {
            tail.is_empty()
                || tail
                    .strip_prefix(' ')
                    .is_some_and(|sums| sums.split(',').all(|s| s.contains('=')))
        }
        _ => tail.is_empty(),
    };
    if !tail_ok {
        return Err("unexpected text after `)`");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Messages

/// `msg` prefixed with the 1-based line and column of the start of `span`, when known.
fn at(text: &str, span: Option<Range<usize>>, msg: impl std::fmt::Display) -> String {
    match span {
        Some(span) => {
            let (line, column) = position(text.as_bytes(), span.start);
            format!("line {line}, column {column}: {msg}")
        }
        None => msg.to_string(),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `bytes`.
fn position(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    // Count every byte that starts a UTF-8 character.
    let column = before[line_start..]
        .iter()
        .filter(|&&b| b & 0xC0 != 0x80)
        .count();
    (line, column + 1)
}

/// The first line of `s`, cut to `MAX_QUOTE_CHARS` characters.
fn clip(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    match line.char_indices().nth(MAX_QUOTE_CHARS) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn ok(kind: LockKind, text: &str) {
        if let Err(e) = check(kind, text.as_bytes()) {
            panic!("{} rejected: {e}", kind.file_name());
        }
    }

    #[track_caller]
    fn err(kind: LockKind, text: &str) -> String {
        let e = check(kind, text.as_bytes()).expect_err("broken lockfile accepted");
        assert!(!e.contains('\n'), "multi-line error: {e}");
        e
    }

    #[track_caller]
    fn assert_has(error: String, needle: &str) {
        assert!(error.contains(needle), "{error:?} lacks {needle:?}");
    }

    fn half(text: &str) -> &str {
        &text[..text.len() / 2]
    }

    const CARGO: &str = r#"# This file is automatically @generated by Cargo.
# It is not intended for manual editing.
version = 4

[[package]]
name = "atlasvault"
version = "0.1.0"
dependencies = [
 "blake3",
 "serde_json",
]

[[package]]
name = "blake3"
version = "1.8.2"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "3888aaa89e4b2a40fca9848e400f6a658a5a3978de7be858e209cafa8be9a4a0"
dependencies = [
 "arrayref",
]

[[package]]
name = "serde_json"
version = "1.0.140"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "20068b6e96dc6c9bd23e01df8827e6c7e1f2fddd43c21810382803c136b99373"
"#;

    const NPM: &str = r#"{
  "name": "web",
  "version": "1.0.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {
    "": {
      "name": "web",
      "version": "1.0.0",
      "dependencies": {
        "left-pad": "^1.3.0"
      }
    },
    "node_modules/left-pad": {
      "version": "1.3.0",
      "resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",
      "integrity": "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQEG0EsWtlM2Sl/E8Cf5x6SCFEIZ/AIx3xZNfMZ79QwmTk4g==",
      "deprecated": "use String.prototype.padStart()",
      "license": "WTFPL"
    }
  }
}
"#;

    const SHRINKWRAP_V1: &str = r#"{
  "name": "cli",
  "version": "2.0.0",
  "lockfileVersion": 1,
  "requires": true,
  "dependencies": {
    "ms": {
      "version": "2.1.3",
      "resolved": "https://registry.npmjs.org/ms/-/ms-2.1.3.tgz",
      "integrity": "sha512-6FlzubTLZG3J2a/NVCAleEhjzq5oxgHyaCU9yYXvcLsvoVaHJq/s5xXI6/XXP6tz7R9xAOtHnSO/tXtF3WRTlA=="
    }
  }
}
"#;

    const YARN_V1: &str = r#"# THIS IS AN AUTOGENERATED FILE. DO NOT EDIT THIS FILE DIRECTLY.
# yarn lockfile v1


"@babel/code-frame@^7.0.0", "@babel/code-frame@^7.22.13":
  version "7.22.13"
  resolved "https://registry.yarnpkg.com/@babel/code-frame/-/code-frame-7.22.13.tgz#e3c1c099402598483b7a8c46a721d1038803755e"
  integrity sha512-XktuhWlJ5g+3TJXc5upd9Ks1HutSArik6jf2eAjYFyIOf4ej3RN+184cZbzDvbPnuTJIUhPKKJE3cIsYTiAT3w==
  dependencies:
    "@babel/highlight" "^7.22.13"
    chalk "^2.4.2"

chalk@^2.4.2:
  version "2.4.2"
  resolved "https://registry.yarnpkg.com/chalk/-/chalk-2.4.2.tgz#cd42541677a54333cf541a49108c1432b44c9424"
  integrity sha512-Mti+f9lpJNcwF4tWV8/OrTTtF1gZi+f8FqlyAdouralcFWFQWF2+NgCHShjkCb+IFBLq9buZwE1xckQU4peSuw==
  dependencies:
    ansi-styles "^3.2.1"
    escape-string-regexp "^1.0.5"

left-pad@^1.3.0:
  version "1.3.0"
  resolved "https://registry.yarnpkg.com/left-pad/-/left-pad-1.3.0.tgz#5b8a3a7765dfe001261dde915589e782f8c94d1e"
  integrity sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQEG0EsWtlM2Sl/E8Cf5x6SCFEIZ/AIx3xZNfMZ79QwmTk4g==
"#;

    const YARN_BERRY: &str = r#"# This file is generated by running "yarn install" inside your project.
# Manual changes might be lost - proceed with caution!

__metadata:
  version: 8
  cacheKey: 10c0

"left-pad@npm:^1.3.0":
  version: 1.3.0
  resolution: "left-pad@npm:1.3.0"
  checksum: 10c0/3fb59c76e281d5f5a1e5d1e2ff3e6a2c4d9e1bf1ffd4b8a0a8d2e2c7e9c3b1f0e2d1c0b9a8f7e6d5c4b3a2
  languageName: node
  linkType: hard

"web@workspace:.":
  version: 0.0.0-use.local
  resolution: "web@workspace:."
  dependencies:
    left-pad: "npm:^1.3.0"
  languageName: unknown
  linkType: soft
"#;

    const PNPM: &str = r#"lockfileVersion: '9.0'

settings:
  autoInstallPeers: true
  excludeLinksFromLockfile: false

importers:

  .:
    dependencies:
      left-pad:
        specifier: ^1.3.0
        version: 1.3.0

packages:

  left-pad@1.3.0:
    resolution: {integrity: sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQEG0EsWtlM2Sl/E8Cf5x6SCFEIZ/AIx3xZNfMZ79QwmTk4g==}
    deprecated: use String.prototype.padStart()

snapshots:

  left-pad@1.3.0: {}
"#;

    const PNPM_ENV_DOC: &str = r#"---
lockfileVersion: '9.0'

importers:

  .:
    configDependencies: {}
    packageManagerDependencies:
      pnpm:
        specifier: 12.3.4
        version: 12.3.4

packages:

  pnpm@12.3.4:
    resolution: {integrity: sha512-abc==}
    hasBin: true

snapshots:

  pnpm@12.3.4: {}

---
"#;

    const POETRY: &str = r#"# This file is automatically @generated by Poetry 1.8.3 and should not be changed by hand.

[[package]]
name = "certifi"
version = "2024.7.4"
description = "Python package for providing Mozilla's CA Bundle."
optional = false
python-versions = ">=3.6"
files = [
    {file = "certifi-2024.7.4-py3-none-any.whl", hash = "sha256:c198e21b1289c2ab85ee4e67bb4b4ef3ead0892059901a8d5b622f24a1101e90"},
    {file = "certifi-2024.7.4.tar.gz", hash = "sha256:5a1e7645bc0ec61a09e26c36f6106dd4cf40c6db3a1fb6352b0244e7fb057c7b"},
]

[[package]]
name = "requests"
version = "2.32.3"
description = "Python HTTP for Humans."
optional = false
python-versions = ">=3.8"
files = [
    {file = "requests-2.32.3-py3-none-any.whl", hash = "sha256:70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6"},
]

[package.dependencies]
certifi = ">=2017.4.17"
charset-normalizer = ">=2,<4"

[package.extras]
socks = ["PySocks (>=1.5.6,!=1.5.7)"]

[metadata]
lock-version = "2.0"
python-versions = "^3.11"
content-hash = "8e4b5c7e1d2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b"
"#;

    const PIPFILE: &str = r#"{
    "_meta": {
        "hash": {
            "sha256": "b8c3a4f1e2d5c6b7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6f7e8d9c0b1"
        },
        "pipfile-spec": 6,
        "requires": {
            "python_version": "3.11"
        },
        "sources": [
            {
                "name": "pypi",
                "url": "https://pypi.org/simple",
                "verify_ssl": true
            }
        ]
    },
    "default": {
        "requests": {
            "hashes": [
                "sha256:70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6"
            ],
            "index": "pypi",
            "markers": "python_version >= '3.8'",
            "version": "==2.32.3"
        }
    },
    "develop": {}
}
"#;

    const COMPOSER: &str = r#"{
    "_readme": [
        "This file locks the dependencies of your project to a known state",
        "Read more about it at https://getcomposer.org/doc/01-basic-usage.md#installing-dependencies",
        "This file is @generated automatically"
    ],
    "content-hash": "d41d8cd98f00b204e9800998ecf8427e",
    "packages": [
        {
            "name": "monolog/monolog",
            "version": "3.7.0",
            "source": {
                "type": "git",
                "url": "https://github.com/Seldaek/monolog.git",
                "reference": "f4393b648b78a5408747de94fca38beb5f7e9ef8"
            },
            "require": {
                "php": ">=8.1",
                "psr/log": "^2.0 || ^3.0"
            },
            "type": "library"
        },
        {
            "name": "psr/log",
            "version": "3.0.0",
            "type": "library"
        }
    ],
    "packages-dev": [],
    "aliases": [],
    "minimum-stability": "stable",
    "stability-flags": [],
    "prefer-stable": false,
    "prefer-lowest": false,
    "platform": {
        "php": "^8.2"
    },
    "platform-dev": [],
    "plugin-api-version": "2.6.0"
}
"#;

    const GEMFILE: &str = r#"GIT
  remote: https://github.com/rails/rails.git
  revision: 4a1b2c3d4e5f60718293a4b5c6d7e8f901234567
  branch: main
  specs:
    rails (8.1.0.alpha)
      actionpack (= 8.1.0.alpha)
      bundler (>= 1.15.0)

PATH
  remote: .
  specs:
    blog (0.1.0)
      rake

GEM
  remote: https://rubygems.org/
  specs:
    actionpack (8.1.0.alpha)
      rack (>= 2.2.4, < 4)
    nokogiri (1.16.7-x86_64-linux)
      racc (~> 1.4)
    racc (1.8.1)
    rack (3.1.7)
    rake (13.2.1)

PLATFORMS
  ruby
  x86_64-linux

DEPENDENCIES
  blog!
  nokogiri (~> 1.16)
  rails!

CHECKSUMS
  nokogiri (1.16.7-x86_64-linux) sha256=9b3a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70819
  racc (1.8.1)

RUBY VERSION
   ruby 3.3.4p94

BUNDLED WITH
   2.5.16
"#;

    #[test]
    fn kind_of_matches_exact_names_only() {
        for kind in LockKind::ALL {
            assert_eq!(kind_of(kind.file_name().as_bytes()), Some(kind));
        }
        assert_eq!(kind_of(b"Cargo.lock"), Some(LockKind::Cargo));
        assert_eq!(kind_of(b"Pipfile.lock"), Some(LockKind::Pipfile));
        assert_eq!(kind_of(b"cargo.lock"), None);
        assert_eq!(kind_of(b"Cargo.toml"), None);
        assert_eq!(kind_of(b"yarn.lock.bak"), None);
        assert_eq!(kind_of(b"sub/yarn.lock"), None);
        assert_eq!(kind_of(b""), None);
        assert_eq!(kind_of(b"\xffyarn.lock"), None);
    }

    #[test]
    fn empty_and_non_utf8_fail_for_every_kind() {
        for kind in LockKind::ALL {
            assert_eq!(check(kind, b""), Err("empty".to_owned()));
            let e = check(kind, b"{\n  \"a\": \"\xff\"\n}").unwrap_err();
            assert_has(e, "offset 10 (line 2, column 9)");
        }
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        ok(LockKind::NpmPackageLock, &format!("\u{feff}{NPM}"));
        ok(LockKind::Cargo, &format!("\u{feff}{CARGO}"));
    }

    #[test]
    fn cargo_lock() {
        ok(LockKind::Cargo, CARGO);
        ok(LockKind::Cargo, &CARGO.replace("version = 4\n", ""));
        let e = err(LockKind::Cargo, half(CARGO));
        assert_has(e, "line 16, column 63: TOML syntax error");
        let garbled = CARGO.replace("name = \"blake3\"", "name = \"blake3");
        assert_has(err(LockKind::Cargo, &garbled), "line 14, column 15");
        let no_version = CARGO.replace("version = \"1.8.2\"\n", "");
        assert_has(
            err(LockKind::Cargo, &no_version),
            "line 13, column 1: package #2 has no string `version`",
        );
        let string_version = CARGO.replace("version = 4", "version = \"4\"");
        assert_has(
            err(LockKind::Cargo, &string_version),
            "line 3, column 11: `version` is not an integer",
        );
        assert_has(
            err(LockKind::Cargo, "package = \"x\"\n"),
            "not an array of tables",
        );
        assert_has(
            err(LockKind::Cargo, "# @generated by Cargo\n\n"),
            "no TOML keys",
        );
    }

    #[test]
    fn npm_lockfiles() {
        ok(LockKind::NpmPackageLock, NPM);
        ok(LockKind::NpmShrinkwrap, SHRINKWRAP_V1);
        assert_has(
            err(LockKind::NpmPackageLock, half(NPM)),
            "line 16, column 2: ",
        );
        assert_has(
            err(LockKind::NpmPackageLock, half(NPM)),
            "EOF while parsing",
        );
        let garbled = NPM.replace("\"version\": \"1.3.0\",", "\"version\" \"1.3.0\",");
        assert_has(
            err(LockKind::NpmPackageLock, &garbled),
            "line 15, column 17: JSON syntax error: expected `:`",
        );
        let string_version = NPM.replace("\"lockfileVersion\": 3", "\"lockfileVersion\": \"3\"");
        assert_has(
            err(LockKind::NpmPackageLock, &string_version),
            "`lockfileVersion` is not a number",
        );
        let no_version = SHRINKWRAP_V1.replace("\"lockfileVersion\": 1,", "");
        assert_has(
            err(LockKind::NpmShrinkwrap, &no_version),
            "missing `lockfileVersion`",
        );
        let array_deps = r#"{"lockfileVersion": 1, "dependencies": ["ms"]}"#;
        assert_has(
            err(LockKind::NpmShrinkwrap, array_deps),
            "`dependencies` is not an object",
        );
        let null_packages = r#"{"lockfileVersion": 3, "packages": null}"#;
        assert_has(
            err(LockKind::NpmPackageLock, null_packages),
            "`packages` is not an object",
        );
        assert_has(err(LockKind::NpmShrinkwrap, "[1, 2]"), "not a JSON object");
    }

    #[test]
    fn yarn_classic() {
        ok(LockKind::Yarn, YARN_V1);
        ok(LockKind::Yarn, &YARN_V1.replace('\n', "\r\n"));
        ok(LockKind::Yarn, "# yarn lockfile v1\n\n\n");
        // Cut inside the `resolved` string of `chalk`.
        assert_has(
            err(LockKind::Yarn, half(YARN_V1)),
            "line 15, column 12: unterminated string",
        );
        // Cut right after a block opener.
        let cut = &YARN_V1[..YARN_V1.find("    ansi-styles").unwrap()];
        assert_has(err(LockKind::Yarn, cut), "line 17: block has no fields");
        let odd_indent = YARN_V1.replace("  version \"2.4.2\"", "   version \"2.4.2\"");
        assert_has(err(LockKind::Yarn, &odd_indent), "line 14: indentation");
        let jump = YARN_V1.replace("    chalk \"^2.4.2\"", "      chalk \"^2.4.2\"");
        assert_has(err(LockKind::Yarn, &jump), "line 11: indentation jumps");
        let no_value = YARN_V1.replace("  version \"1.3.0\"", "  version");
        assert_has(
            err(LockKind::Yarn, &no_value),
            "line 22: field has no value",
        );
        let no_version = YARN_V1.replace("  version \"1.3.0\"\n", "");
        assert_has(
            err(LockKind::Yarn, &no_version),
            "line 21: entry has no `version`",
        );
        let no_colon = YARN_V1.replace("chalk@^2.4.2:", "chalk@^2.4.2");
        assert_has(err(LockKind::Yarn, &no_colon), "line 13: top-level line");
        let stray = YARN_V1.replace(
            "# yarn lockfile v1\n",
            "# yarn lockfile v1\n  version \"1\"\n",
        );
        assert_has(
            err(LockKind::Yarn, &stray),
            "line 3: indented line outside an entry",
        );
        let two_values = YARN_V1.replace("  version \"2.4.2\"", "  version \"2.4.2\" \"2.4.3\"");
        assert_has(
            err(LockKind::Yarn, &two_values),
            "line 14: field has more than one value",
        );
    }

    #[test]
    fn yarn_berry() {
        ok(LockKind::Yarn, YARN_BERRY);
        let e = err(LockKind::Yarn, half(YARN_BERRY));
        assert_has(
            e,
            "entry `left-pad@npm:^1.3.0` lacks `resolution` or `linkType`",
        );
        let garbled = YARN_BERRY.replacen("  linkType: hard", "  linkType: hard: soft", 1);
        assert_has(
            err(LockKind::Yarn, &garbled),
            "line 13, column 17: YAML syntax error: mapping values",
        );
        let no_version = YARN_BERRY.replace("  version: 1.3.0\n", "");
        assert_has(
            err(LockKind::Yarn, &no_version),
            "entry `left-pad@npm:^1.3.0` has no `version`",
        );
        let scalar_metadata = YARN_BERRY.replace(
            "__metadata:\n  version: 8\n  cacheKey: 10c0",
            "__metadata: 8",
        );
        assert_has(
            err(LockKind::Yarn, &scalar_metadata),
            "`__metadata` is not a mapping",
        );
    }

    #[test]
    fn pnpm_lock() {
        ok(LockKind::Pnpm, PNPM);
        ok(LockKind::Pnpm, &PNPM.replace("'9.0'", "5.4"));
        ok(LockKind::Pnpm, &format!("{PNPM_ENV_DOC}{PNPM}"));
        assert_has(
            err(LockKind::Pnpm, half(PNPM)),
            "document 1: `packages` is not a mapping",
        );
        let cut = &PNPM[..PNPM.find("    resolution").unwrap()];
        assert_has(
            err(LockKind::Pnpm, cut),
            "`packages` entry `left-pad@1.3.0` is not a mapping",
        );
        let garbled = PNPM.replace("4g==}", "4g==");
        assert_has(
            err(LockKind::Pnpm, &garbled),
            "line 19, column 15: YAML syntax error",
        );
        let no_version = PNPM.replace("lockfileVersion: '9.0'\n", "");
        assert_has(
            err(LockKind::Pnpm, &no_version),
            "document 1 has no string or number `lockfileVersion`",
        );
        let env_only_first = format!(
            "{PNPM_ENV_DOC}{}",
            PNPM.replace("lockfileVersion: '9.0'\n", "")
        );
        assert_has(err(LockKind::Pnpm, &env_only_first), "document 2");
        assert_has(err(LockKind::Pnpm, "- a\n- b\n"), "document 1");
    }

    #[test]
    fn poetry_lock() {
        ok(LockKind::Poetry, POETRY);
        ok(
            LockKind::Poetry,
            "package = []\n\n[metadata]\nlock-version = \"2.0\"\n",
        );
        assert_has(
            err(LockKind::Poetry, half(POETRY)),
            "line 15, column 5: TOML syntax error: key with no value",
        );
        let garbled = POETRY.replace("[package.extras]", "[package.extras");
        assert_has(
            err(LockKind::Poetry, &garbled),
            "line 28, column 16: TOML syntax error: unclosed table",
        );
        let no_name = POETRY.replace("name = \"requests\"\n", "");
        assert_has(
            err(LockKind::Poetry, &no_name),
            "line 14, column 1: package #2 has no string `name`",
        );
        let bad_metadata = "metadata = \"2.0\"\n";
        assert_has(
            err(LockKind::Poetry, bad_metadata),
            "line 1, column 12: `metadata` is not a table",
        );
    }

    #[test]
    fn pipfile_lock() {
        ok(LockKind::Pipfile, PIPFILE);
        assert_has(err(LockKind::Pipfile, half(PIPFILE)), "EOF while parsing");
        let garbled = PIPFILE.replace("\"index\": \"pypi\",", "\"index\": \"pypi\",,");
        assert_has(
            err(LockKind::Pipfile, &garbled),
            "line 23, column 29: JSON syntax error: key must be a string",
        );
        let no_meta = PIPFILE.replace("\"_meta\"", "\"meta\"");
        assert_has(err(LockKind::Pipfile, &no_meta), "missing `_meta`");
        let list_default = r#"{"_meta": {}, "default": []}"#;
        assert_has(
            err(LockKind::Pipfile, list_default),
            "`default` is not an object",
        );
    }

    #[test]
    fn composer_lock() {
        ok(LockKind::Composer, COMPOSER);
        ok(
            LockKind::Composer,
            &COMPOSER.replace("\"packages-dev\": []", "\"packages-dev\": null"),
        );
        assert_has(
            err(LockKind::Composer, half(COMPOSER)),
            "line 15, column 50: JSON syntax error: EOF while parsing a string",
        );
        let garbled = COMPOSER.replace("\"type\": \"git\",", "\"type\": git\",");
        assert_has(
            err(LockKind::Composer, &garbled),
            "line 13, column 25: JSON syntax error: expected value",
        );
        let object_packages = r#"{"packages": {}, "packages-dev": []}"#;
        assert_has(
            err(LockKind::Composer, object_packages),
            "`packages` is not an array",
        );
        let nameless = COMPOSER.replace("\"name\": \"psr/log\",", "");
        assert_has(
            err(LockKind::Composer, &nameless),
            "`packages`[1] has no string `name`",
        );
        let dev_object = COMPOSER.replace("\"packages-dev\": []", "\"packages-dev\": {}");
        assert_has(
            err(LockKind::Composer, &dev_object),
            "`packages-dev` is not an array",
        );
    }

    #[test]
    fn gemfile_lock() {
        ok(LockKind::Gemfile, GEMFILE);
        ok(LockKind::Gemfile, "DEPENDENCIES\n  rake\n");
        // Cut inside `    nokogiri (1.16.7-x86_64-linux)`.
        assert_has(
            err(LockKind::Gemfile, half(GEMFILE)),
            "line 21: gem has no `(version)`",
        );
        let cut = &GEMFILE[..GEMFILE.find("   2.5.16").unwrap()];
        assert_has(
            err(LockKind::Gemfile, cut),
            "line 43: BUNDLED WITH has no version",
        );
        let unknown = GEMFILE.replace("PLATFORMS", "PLATFROMS");
        assert_has(
            err(LockKind::Gemfile, &unknown),
            "line 27: unknown section `PLATFROMS`",
        );
        let no_version = GEMFILE.replace("    rack (3.1.7)", "    rack");
        assert_has(
            err(LockKind::Gemfile, &no_version),
            "line 24: gem has no `(version)`",
        );
        let bad_constraint = GEMFILE.replace("(>= 2.2.4, < 4)", "(>= 2.2.4, < 4");
        assert_has(
            err(LockKind::Gemfile, &bad_constraint),
            "line 20: unbalanced",
        );
        let orphan = GEMFILE.replace("    racc (1.8.1)\n", "");
        ok(LockKind::Gemfile, &orphan);
        let deep = GEMFILE.replace("      rake\n", "        rake\n");
        assert_has(
            err(LockKind::Gemfile, &deep),
            "line 14: unexpected line in PATH (indent 8)",
        );
        let two_versions = GEMFILE.replace("   2.5.16\n", "   2.5.16\n   2.5.17\n");
        assert_has(
            err(LockKind::Gemfile, &two_versions),
            "line 45: more than one",
        );
        assert_has(
            err(LockKind::Gemfile, "  rake (13.2.1)\n"),
            "line 1: content before",
        );
        assert_has(err(LockKind::Gemfile, "\n\n"), "no Bundler section");
    }

    #[test]
    fn errors_do_not_echo_long_content() {
        let long = "x".repeat(10_000);
        let cases = [
            (LockKind::Gemfile, format!("{long}\n")),
            (LockKind::Cargo, format!("{long} = = 1\n")),
            (
                LockKind::Cargo,
                format!("[[package]]\nname = \"{long}\"\nname = \"b\"\n"),
            ),
            (
                LockKind::Pnpm,
                format!("lockfileVersion: 9\n{long}: 1\n{long}: 2\n"),
            ),
            (
                LockKind::Yarn,
                format!("__metadata:\n  version: 8\n\"{long}\":\n  x: 1\n"),
            ),
            (LockKind::NpmPackageLock, format!("{{\"{long}\": tru}}")),
        ];
        for (kind, text) in cases {
            let e = err(kind, &text);
            assert!(
                e.len() < 200,
                "{} error too long: {} bytes",
                kind.file_name(),
                e.len()
            );
        }
    }

    #[test]
    fn deeply_nested_yaml_fails_without_overflowing() {
        let block = format!("lockfileVersion: 9\nx:\n{}1\n", "- ".repeat(100_000));
        assert_has(err(LockKind::Pnpm, &block), "nested deeper than 128");
        let flow = format!("lockfileVersion: 9\nx: {}\n", "[".repeat(100_000));
        assert_has(
            err(LockKind::Pnpm, &flow),
            "line 2, column 259: YAML syntax error: recursion limit",
        );
    }
}
