//! `vault.toml`: the operator's config file, parsed once and checked before anything runs.
//!
//! The file names the vault, the sources a snapshot reads (`[[source]]`), the gate settings
//! (`[gates.sanity]`, top-level `template_only`), the remotes `vault push` copies to
//! (`[[remote]]`), the agent's schedule (`[agent]`) and the retention policy (`[retention]`).
//! [`VaultFile::locate`] finds it (`--config FILE`, then `VAULT_CONFIG`, then `./vault.toml`),
//! [`VaultFile::load`] reads and checks it, and [`example`] is the commented example that
//! `vault config example` prints.
//!
//! Checking is strict, because a config that half-works fails silently at 3 a.m.: an unknown key
//! anywhere is an error (a typo must not disable a source), and so is a secret. Passwords come only
//! from `VAULT_PASSWORD_FILE` / `VAULT_PASSWORD_COMMAND` (the vault), `PGPASSWORD` / `PGPASSFILE`
//! (postgres) and the environment or AWS chain (S3), so a copied or committed `vault.toml` leaks
//! nothing. Every error names the file, and the line and column when it is about a place in it.
//!
//! How: each section has a private wire form (`Wire*`: every key optional, values wrapped in
//! [`toml::Spanned`] so a check can point at them) and a public checked form; `toml` reports
//! shape errors with their span, and each section's `check` turns wire into checked values.
//! The public types are `Serialize` only: [`VaultFile::parse`] is the one way in, so nothing
//! unchecked can be built from text. This module does not act on the config (snapshot, push,
//! agent and prune read it).

mod agent;
mod check;
mod drill;
mod error;
mod example;
mod gates;
mod remote;
mod retention;
mod source;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

pub use agent::{
    Agent, DEFAULT_AGENT_GRACE, DEFAULT_AGENT_INTERVAL, DEFAULT_AGENT_PORT, DEFAULT_AGENT_RPO,
};
pub use drill::{Drill, DEFAULT_HEALTH_TIMEOUT};
pub use error::ConfigError;
pub use example::example;
pub use gates::{Gates, SanitySettings, DEFAULT_DEPENDED_ON};
pub(crate) use remote::percent_decode;
pub use remote::{Remote, RemoteUrl};
pub use retention::{Keep, Retention};
pub use source::{pg_url_problem, PgConnection, PgFormat, PgUrlProblem, Source, SourceKind};

use error::Ctx;

/// The file looked for in the working directory.
pub const CONFIG_FILE_NAME: &str = "vault.toml";
/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "VAULT_CONFIG";
/// Largest config file read; anything larger is not a config.
pub const CONFIG_MAX_BYTES: u64 = 1024 * 1024;

const VAULT_PASSWORD_HINT: &str = "the vault password comes from the environment: \
                                   VAULT_PASSWORD_FILE (a file holding it) or \
                                   VAULT_PASSWORD_COMMAND (a command printing it)";

/// A checked `vault.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VaultFile {
    /// The vault directory (absolute).
    pub vault: PathBuf,
    /// Globs stored only as templates in every tree source, besides each source's own.
    pub template_only: Vec<String>,
    /// `[[source]]` tables, in file order, names unique.
    #[serde(rename = "source")]
    pub sources: Vec<Source>,
    pub gates: Gates,
    /// `[[remote]]` tables, in file order, names unique.
    #[serde(rename = "remote")]
    pub remotes: Vec<Remote>,
    pub agent: Agent,
    pub retention: Retention,
    /// Whether the file has a `[retention]` table (the agent applies retention only then).
    #[serde(skip)]
    pub retention_set: bool,
    /// What `vault drill` checks beyond the files (`[drill]`).
    pub drill: Drill,
}

/// The whole file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a vault.toml document")]
struct WireFile {
    vault: Spanned<PathBuf>,
    #[serde(default)]
    template_only: Vec<Spanned<String>>,
    #[serde(default, rename = "source", deserialize_with = "source_tables")]
    sources: Vec<Spanned<Table<source::WireSource>>>,
    #[serde(default)]
    gates: Table<gates::WireGates>,
    #[serde(default, rename = "remote", deserialize_with = "remote_tables")]
    remotes: Vec<Table<remote::WireRemote>>,
    #[serde(default)]
    agent: Table<agent::WireAgent>,
    retention: Option<Spanned<Table<retention::WireRetention>>>,
    #[serde(default)]
    drill: Table<drill::WireDrill>,
    password: Option<Spanned<toml::Value>>,
    password_command: Option<Spanned<toml::Value>>,
    password_file: Option<Spanned<toml::Value>>,
}

impl VaultFile {
    /// Parses and validates; errors carry `path`, line and column.
    pub fn parse(text: &str, path: &Path) -> Result<VaultFile, ConfigError> {
        let ctx = Ctx { path, text };
        let wire: WireFile = toml::from_str(text).map_err(|e| ctx.syntax(&e))?;
        check::refuse(&ctx, &wire.password, "password", VAULT_PASSWORD_HINT)?;
        check::refuse(
            &ctx,
            &wire.password_command,
            "password_command",
            VAULT_PASSWORD_HINT,
        )?;
        check::refuse(
            &ctx,
            &wire.password_file,
            "password_file",
            VAULT_PASSWORD_HINT,
        )?;
        let vault = check::absolute_path(&ctx, &wire.vault, "vault")?;
        let template_only = check::globs(&ctx, &wire.template_only, "template_only", true)?;

        let mut sources = Vec::with_capacity(wire.sources.len());
        let mut seen = HashMap::new();
        for table in wire.sources {
            let span = table.span();
            let source = table.into_inner().0;
            unique(&ctx, &mut seen, source.name(), "source")?;
            sources.push(source.check(&ctx, span)?);
        }
        let gates = wire.gates.0.check(&ctx)?;
        let mut remotes = Vec::with_capacity(wire.remotes.len());
        let mut seen = HashMap::new();
        for Table(remote) in wire.remotes {
            unique(&ctx, &mut seen, remote.name(), "remote")?;
            let url_at = remote.url_span();
            let remote = remote.check(&ctx)?;
            if remote.url == RemoteUrl::Path(vault.clone()) {
                return Err(ctx.invalid_at(
                    url_at,
                    format!("remote `{}` is the vault itself", remote.name),
                ));
            }
            remotes.push(remote);
        }
        let agent = wire.agent.0.check(&ctx)?;
        let retention_set = wire.retention.is_some();
        let retention = match wire.retention {
            Some(table) => {
                let span = table.span();
                table.into_inner().0.check(&ctx, span)?
            }
            None => Retention::default(),
        };
        let drill = wire.drill.0.check(&ctx, &sources)?;
        Ok(VaultFile {
            vault,
            template_only,
            sources,
            gates,
            remotes,
            agent,
            retention,
            retention_set,
            drill,
        })
    }

    /// Reads and parses the file at `path`; a file over [`CONFIG_MAX_BYTES`] is refused unread.
    pub fn load(path: &Path) -> Result<VaultFile, ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // Read through `take` rather than trusting the size the metadata reports: a FIFO or a
        // device reports 0 and never ends.
        let mut bytes = Vec::new();
        file.take(CONFIG_MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > CONFIG_MAX_BYTES {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line: None,
                column: None,
                message: format!(
                    "larger than {} KiB: not a config file",
                    CONFIG_MAX_BYTES / 1024
                ),
            });
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]);
                let (line, column) = error::line_column(&prefix, valid);
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line: Some(line),
                    column: Some(column),
                    message: "not UTF-8 (TOML files are UTF-8)".into(),
                });
            }
        };
        VaultFile::parse(&text, path)
    }

    /// Where the file is: the explicit flag, then the env var [`CONFIG_ENV`] (ignored when
    /// empty), then `cwd/vault.toml` if something is there; `None` when none. A relative flag or
    /// env path is taken relative to `cwd`. The flag and the env var are returned whether or not
    /// the file exists, so that [`VaultFile::load`] reports a wrong path instead of the tool
    /// running without a config.
    pub fn locate(flag: Option<&Path>, env: Option<&OsStr>, cwd: &Path) -> Option<PathBuf> {
        if let Some(flag) = flag {
            return Some(cwd.join(flag));
        }
        if let Some(env) = env.filter(|e| !e.is_empty()) {
            return Some(cwd.join(env));
        }
        let local = cwd.join(CONFIG_FILE_NAME);
        // symlink_metadata: a dangling link or an unreadable file is still "there", and load
        // then says what is wrong with it.
        std::fs::symlink_metadata(&local).is_ok().then_some(local)
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The remote named `name`.
    pub fn remote(&self, name: &str) -> Option<&Remote> {
        self.remotes.iter().find(|r| r.name == name)
    }

    /// The `template_only` globs of a source: the top-level ones then the source's own, without
    /// repeats. Empty for sources that are not trees. The built-in defaults are added by the
    /// template policy, not here.
    pub fn template_only_for(&self, source: &Source) -> Vec<String> {
        let SourceKind::Tree { template_only, .. } = &source.kind else {
            return Vec::new();
        };
        let mut globs: Vec<String> = Vec::new();
        for g in self.template_only.iter().chain(template_only) {
            if !globs.contains(g) {
                globs.push(g.clone());
            }
        }
        globs
    }
}

fn source_tables<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<Spanned<Table<source::WireSource>>>, D::Error> {
    d.deserialize_seq(ArrayOfTables::new(
        "[[source]] tables (written [[source]], not [source])",
    ))
}

fn remote_tables<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<Table<remote::WireRemote>>, D::Error> {
    d.deserialize_seq(ArrayOfTables::new(
        "[[remote]] tables (written [[remote]], not [remote])",
    ))
}

/// A section of the file, named for the error that refuses it in another shape.
trait Section {
    /// What the file should hold there: "the [agent] table".
    const EXPECTING: &'static str;
}

/// A section that must be written as a table. serde's derived `Deserialize` also takes an array
/// and fills the fields from its elements in declaration order, so that
/// `agent = ["1m", "1h", "5m", "127.0.0.1:1", false]` would pass as an `[agent]` table: values
/// bound to keys by a position the file never shows. Only a table of named keys gets through.
#[derive(Debug, Default)]
struct Table<T>(T);

impl<'de, T: Deserialize<'de> + Section> Deserialize<'de> for Table<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keyed<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Section> Visitor<'de> for Keyed<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Keyed(PhantomData)).map(Table)
    }
}

/// A `Vec` visitor whose error says how to write an array of tables: `[source]` for
/// `[[source]]` is the likely slip, and serde's own "expected a sequence" does not say so.
struct ArrayOfTables<T> {
    expecting: &'static str,
    items: PhantomData<T>,
}

impl<T> ArrayOfTables<T> {
    fn new(expecting: &'static str) -> Self {
        ArrayOfTables {
            expecting,
            items: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ArrayOfTables<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }
}

/// Fails on the second use of a name; the error points at it and names the line of the first.
fn unique(
    ctx: &Ctx<'_>,
    seen: &mut HashMap<String, usize>,
    name: &Spanned<String>,
    what: &str,
) -> Result<(), ConfigError> {
    let start = name.span().start;
    match seen.insert(name.get_ref().clone(), start) {
        Some(first) => {
            let (line, _) = error::line_column(ctx.text, first);
            Err(ctx.invalid(
                name,
                format!(
                    "{what} name `{}` is already used on line {line}; {what} names must be unique",
                    name.get_ref()
                ),
            ))
        }
        None => Ok(()),
    }
}
