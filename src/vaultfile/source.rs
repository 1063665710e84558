//! `[[source]]`: what a snapshot reads, one named source per table.
//!
//! The file says `kind = "tree" | "postgres" | "sqlite" | "command"` and the keys of that kind;
//! [`Source`] is the checked result. The wire form is one flat table of every key any kind takes,
//! because a table that serde has to buffer to find its tag (an internally tagged enum) loses the
//! position of each key; flat, an unknown key is reported at its own line and column, and a key
//! of another kind (`dbname` in a tree source) gets its own message. This module checks each
//! source alone; unique names are checked by the caller. It does not read the sources.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::check;
use super::error::{ConfigError, Ctx};

/// Where passwords for a postgres source come from, for the error that refuses one in the file.
const PG_PASSWORD_HINT: &str = "pg_dump reads the password from the environment (PGPASSWORD) or \
                                from the password file (PGPASSFILE, default ~/.pgpass)";

/// One named source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// `[a-z0-9_-]+`, unique in the file: the source's root name in snapshots and the value of
    /// `--source NAME`.
    pub name: String,
    #[serde(flatten)]
    pub kind: SourceKind,
}

/// What a source is, by its `kind` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceKind {
    /// A directory walked recursively.
    Tree {
        /// Absolute path of the directory.
        path: PathBuf,
        /// Globs left out of the walk (gitignore style, like `--exclude`).
        excludes: Vec<String>,
        /// Globs stored only as templates, in addition to the top-level `template_only` and the
        /// built-in defaults.
        template_only: Vec<String>,
    },
    /// A PostgreSQL database dumped with `pg_dump`. The password never comes from the file.
    Postgres {
        #[serde(flatten)]
        connection: PgConnection,
        format: PgFormat,
    },
    /// An SQLite database copied through SQLite's backup API.
    Sqlite {
        /// Absolute path of the database file.
        path: PathBuf,
    },
    /// Any program whose standard output is the dump (`mysqldump`, `redis-cli --rdb -`, ...).
    Command {
        /// The argv, run without a shell; the first element is the program.
        command: Vec<String>,
        /// File name of the stream in the snapshot; absent, the snapshot code names it after the
        /// source. (The file key is `stream_name`: `name` is the source's name.)
        #[serde(skip_serializing_if = "Option::is_none")]
        stream_name: Option<String>,
    },
}

/// How `pg_dump` reaches the database: a libpq URL, or separate keys. Either way, the password
/// comes from `PGPASSWORD` or `PGPASSFILE`, and anything not given falls back to libpq's
/// environment variables and defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PgConnection {
    /// `postgresql://user@host:port/dbname?sslmode=require`, without a password.
    Url { url: String },
    /// Separate keys; `dbname` is required so a source never dumps whatever database happens to
    /// be the default.
    Params {
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        dbname: String,
    },
}

/// `pg_dump --format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PgFormat {
    /// Plain SQL (the default): dedups well between snapshots and restores with `psql`.
    #[default]
    Plain,
    /// `pg_dump`'s custom archive: compressed, restores selectively with `pg_restore`.
    Custom,
}

/// The `kind` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Tree,
    Postgres,
    Sqlite,
    Command,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Tree => "tree",
            Kind::Postgres => "postgres",
            Kind::Sqlite => "sqlite",
            Kind::Command => "command",
        }
    }

    /// The keys this kind takes besides `name` and `kind`.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::Tree => &["path", "excludes", "template_only"],
            Kind::Postgres => &["host", "port", "user", "dbname", "url", "format"],
            Kind::Sqlite => &["path"],
            Kind::Command => &["command", "stream_name"],
        }
    }
}

type Strings = Spanned<Vec<Spanned<String>>>;

/// A `[[source]]` table as written: every key of every kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireSource {
    name: Spanned<String>,
    kind: Spanned<Kind>,
    path: Option<Spanned<PathBuf>>,
    excludes: Option<Strings>,
    template_only: Option<Strings>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    user: Option<Spanned<String>>,
    dbname: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    format: Option<Spanned<PgFormat>>,
    command: Option<Spanned<Vec<String>>>,
    stream_name: Option<Spanned<String>>,
    password: Option<Spanned<toml::Value>>,
}

impl super::Section for WireSource {
    const EXPECTING: &'static str = "a [[source]] table";
}

impl WireSource {
    /// The source's name as written, for duplicate checks by the caller.
    pub(super) fn name(&self) -> &Spanned<String> {
        &self.name
    }

    /// Every optional key present, with where its value starts.
    fn present(&self) -> Vec<(&'static str, usize)> {
        fn at<T>(key: &'static str, v: &Option<Spanned<T>>) -> Option<(&'static str, usize)> {
            v.as_ref().map(|v| (key, v.span().start))
        }
        [
            at("path", &self.path),
            at("excludes", &self.excludes),
            at("template_only", &self.template_only),
            at("host", &self.host),
            at("port", &self.port),
            at("user", &self.user),
            at("dbname", &self.dbname),
            at("url", &self.url),
            at("format", &self.format),
            at("command", &self.command),
            at("stream_name", &self.stream_name),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Checks one source alone. `table` is the span of its `[[source]]` table, for missing keys.
    pub(super) fn check(
        self,
        ctx: &Ctx<'_>,
        table: std::ops::Range<usize>,
    ) -> Result<Source, ConfigError> {
        let name = check::name(ctx, &self.name, "source")?;
        let kind = *self.kind.get_ref();
        let what = format!("{} source `{name}`", kind.as_str());
        check::refuse(ctx, &self.password, "password", PG_PASSWORD_HINT)?;
        for (key, start) in self.present() {
            if !kind.keys().contains(&key) {
                let takes: Vec<String> = kind.keys().iter().map(|k| format!("`{k}`")).collect();
                return Err(ctx.invalid_at(
                    start..start,
                    format!(
                        "{what}: `{key}` does not apply to kind {:?}, which takes {}",
                        kind.as_str(),
                        takes.join(", ")
                    ),
                ));
            }
        }
        let missing = |key: &str| ctx.invalid_at(table.clone(), format!("{what} needs `{key}`"));
        let kind = match kind {
            Kind::Tree => SourceKind::Tree {
                path: check::absolute_path(
                    ctx,
                    self.path.as_ref().ok_or_else(|| missing("path"))?,
                    &format!("{what}: path"),
                )?,
                excludes: globs(ctx, self.excludes, &format!("{what}: excludes"), false)?,
                template_only: globs(
                    ctx,
                    self.template_only,
                    &format!("{what}: template_only"),
                    true,
                )?,
            },
            Kind::Sqlite => SourceKind::Sqlite {
                path: check::absolute_path(
                    ctx,
                    self.path.as_ref().ok_or_else(|| missing("path"))?,
                    &format!("{what}: path"),
                )?,
            },
            Kind::Postgres => SourceKind::Postgres {
                connection: pg_connection(ctx, &self, &what, table.clone())?,
                format: self.format.map(Spanned::into_inner).unwrap_or_default(),
            },
            Kind::Command => {
                let command = self.command.ok_or_else(|| missing("command"))?;
                let program_ok = command.get_ref().first().is_some_and(|p| !p.is_empty());
                if !program_ok {
                    return Err(ctx.invalid(
                        &command,
                        format!("{what}: command must start with the program to run"),
                    ));
                }
                if command.get_ref().iter().any(|a| a.contains('\0')) {
                    return Err(ctx.invalid(&command, format!("{what}: command holds a NUL byte")));
                }
                let stream_name = match self.stream_name {
                    Some(s) => Some(stream_name(ctx, &s, &what)?),
                    None => None,
                };
                SourceKind::Command {
                    command: command.into_inner(),
                    stream_name,
                }
            }
        };
        Ok(Source { name, kind })
    }
}

fn globs(
    ctx: &Ctx<'_>,
    list: Option<Strings>,
    what: &str,
    literal_separator: bool,
) -> Result<Vec<String>, ConfigError> {
    match list {
        Some(list) => check::globs(ctx, list.get_ref(), what, literal_separator),
        None => Ok(Vec::new()),
    }
}

fn pg_connection(
    ctx: &Ctx<'_>,
    wire: &WireSource,
    what: &str,
    table: std::ops::Range<usize>,
) -> Result<PgConnection, ConfigError> {
    let text = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<String>, ConfigError> {
        match v {
            Some(s) if s.get_ref().is_empty() => Err(ctx.invalid(
                s,
                format!("{what}: `{key}` is empty; leave it out for libpq's default"),
            )),
            Some(s) => Ok(Some(s.get_ref().clone())),
            None => Ok(None),
        }
    };
    if let Some(url) = &wire.url {
        let params = [
            ("host", wire.host.as_ref().map(|s| s.span())),
            ("port", wire.port.as_ref().map(|s| s.span())),
            ("user", wire.user.as_ref().map(|s| s.span())),
            ("dbname", wire.dbname.as_ref().map(|s| s.span())),
        ];
        if let Some((key, Some(span))) = params.into_iter().find(|(_, s)| s.is_some()) {
            return Err(ctx.invalid_at(
                span,
                format!(
                    "{what}: give either `url` or `{key}` and the other separate keys, not both"
                ),
            ));
        }
        check_pg_url(ctx, url, what)?;
        return Ok(PgConnection::Url {
            url: url.get_ref().clone(),
        });
    }
    if let Some(port) = wire.port.as_ref().filter(|p| *p.get_ref() == 0) {
        return Err(ctx.invalid(port, format!("{what}: port 0 is not a port")));
    }
    // libpq reads a dbname holding `=`, or starting like a URL, as a whole connection string,
    // which could carry a password past the checks below.
    if let Some(db) = wire.dbname.as_ref().filter(|d| {
        let d = d.get_ref();
        d.contains('=') || d.starts_with("postgres://") || d.starts_with("postgresql://")
    }) {
        return Err(ctx.invalid(
            db,
            format!("{what}: dbname must be a database name, not a connection string; use `url`"),
        ));
    }
    Ok(PgConnection::Params {
        host: text(&wire.host, "host")?,
        port: wire.port.as_ref().map(|p| *p.get_ref()),
        user: text(&wire.user, "user")?,
        dbname: text(&wire.dbname, "dbname")?
            .ok_or_else(|| ctx.invalid_at(table, format!("{what} needs `dbname` or `url`")))?,
    })
}

/// A libpq connection URI without a password in it.
pub(super) fn check_pg_url(
    ctx: &Ctx<'_>,
    url: &Spanned<String>,
    what: &str,
) -> Result<(), ConfigError> {
    match pg_url_problem(url.get_ref()) {
        Some(PgUrlProblem::NotPg) => Err(ctx.invalid(
            url,
            format!("{what}: url must start with postgresql:// or postgres://"),
        )),
        Some(PgUrlProblem::Password) => Err(ctx.invalid(
            url,
            format!("{what}: url holds a password; {PG_PASSWORD_HINT}"),
        )),
        None => Ok(()),
    }
}

/// What is wrong with a libpq URL given to AtlasVault, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgUrlProblem {
    /// It does not start with `postgresql://` or `postgres://`.
    NotPg,
    /// It holds a password (in the user info, or a `password`/`sslpassword` parameter).
    Password,
}

/// Checks a libpq connection URI: the right scheme, and no password in it (passwords come from
/// `PGPASSWORD` or `PGPASSFILE`, never from a file or a command line).
pub fn pg_url_problem(text: &str) -> Option<PgUrlProblem> {
    let Some(rest) = text
        .strip_prefix("postgresql://")
        .or_else(|| text.strip_prefix("postgres://"))
    else {
        return Some(PgUrlProblem::NotPg);
    };
    // libpq ends the authority at the first `/` only, and its user info at the last `@` in it.
    let authority = rest.split('/').next().unwrap_or_default();
    let has_password = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    // Parameter names are percent-decoded by libpq (`%70assword`).
    let password_param = query.split('&').any(|p| {
        let key = percent_decode(p.split('=').next().unwrap_or_default()).to_ascii_lowercase();
        key == "password" || key == "sslpassword"
    });
    (has_password || password_param).then_some(PgUrlProblem::Password)
}

/// `%XX` escapes decoded (invalid ones kept as written).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A stream file name: one component, valid on NTFS as on ext4 (restores may land on either).
fn stream_name(ctx: &Ctx<'_>, value: &Spanned<String>, what: &str) -> Result<String, ConfigError> {
    const NTFS_FORBIDDEN: &[char] = &['<', '>', ':', '"', '/', '\\', '|', '?', '*'];
    let s = value.get_ref();
    let bad = s.is_empty()
        || s == "."
        || s == ".."
        || s.len() > 255
        || s.ends_with(['.', ' '])
        || s.chars()
            .any(|c| c.is_control() || NTFS_FORBIDDEN.contains(&c));
    if bad {
        return Err(ctx.invalid(
            value,
            format!(
                "{what}: stream_name {s:?} must be one file name, without / \\ : * ? \" < > | or \
                 control characters, not ending in '.' or ' '"
            ),
        ));
    }
    Ok(s.clone())
}
