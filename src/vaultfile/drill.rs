//! `[drill]`: what `vault drill` does beyond restoring files: restore each PostgreSQL dump into a
//! scratch server and run check queries there, and run a health command against the restored
//! data.
//!
//! ```toml
//! [drill]
//! pg_scratch = "postgresql://postgres@127.0.0.1:5433/postgres"   # a throwaway server
//! health_command = ["sh", "-c", "test -s workspace/openclaw.json"]
//! health_timeout = "5m"
//!
//! [drill.checks]
//! erp = ["SELECT count(*) > 0 FROM res_partner"]
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::check;
use super::error::{ConfigError, Ctx};
use super::source::{check_pg_url, Source, SourceKind};

/// How long a health command may run by default.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The `[drill]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drill {
    /// A PostgreSQL server (URL of its maintenance database, no password) where each postgres
    /// dump is restored into a fresh database; `--pg-scratch` overrides it.
    pub pg_scratch: Option<String>,
    /// Queries per postgres source, run in its scratch database; each must return a first value
    /// that is true, a non-zero number or non-empty text.
    pub checks: BTreeMap<String, Vec<String>>,
    /// A program (argv, no shell) run in the restored tree once everything is restored; exit 0
    /// passes.
    pub health_command: Option<Vec<String>>,
    #[serde(serialize_with = "check::serialize_duration")]
    pub health_timeout: Duration,
}

impl Default for Drill {
    fn default() -> Self {
        Drill {
            pg_scratch: None,
            checks: BTreeMap::new(),
            health_command: None,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
        }
    }
}

/// The `[drill]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireDrill {
    pg_scratch: Option<Spanned<String>>,
    #[serde(default)]
    checks: BTreeMap<String, Spanned<Vec<String>>>,
    health_command: Option<Spanned<Vec<String>>>,
    health_timeout: Option<Spanned<String>>,
}

impl super::Section for WireDrill {
    const EXPECTING: &'static str = "the [drill] table";
}

impl WireDrill {
    pub(super) fn check(self, ctx: &Ctx<'_>, sources: &[Source]) -> Result<Drill, ConfigError> {
        if let Some(url) = &self.pg_scratch {
            check_pg_url(ctx, url, "drill.pg_scratch")?;
        }
        let mut checks = BTreeMap::new();
        for (name, queries) in self.checks {
            let is_pg = sources
                .iter()
                .any(|s| s.name == name && matches!(s.kind, SourceKind::Postgres { .. }));
            if !is_pg {
                return Err(ctx.invalid(
                    &queries,
                    format!("drill.checks.{name}: there is no postgres source named `{name}`"),
                ));
            }
            if queries.get_ref().iter().any(|q| q.trim().is_empty()) {
                return Err(ctx.invalid(
                    &queries,
                    format!("drill.checks.{name}: a check query is empty"),
                ));
            }
            checks.insert(name, queries.into_inner());
        }
        let health_command = match self.health_command {
            Some(c) if c.get_ref().first().is_none_or(|p| p.is_empty()) => {
                return Err(ctx.invalid(
                    &c,
                    "drill.health_command must start with the program to run",
                ))
            }
            c => c.map(Spanned::into_inner),
        };
        let health_timeout = match &self.health_timeout {
            Some(v) => {
                let d = check::duration(ctx, v, "drill.health_timeout")?;
                if d.is_zero() {
                    return Err(ctx.invalid(v, "drill.health_timeout must be longer than zero"));
                }
                d
            }
            None => DEFAULT_HEALTH_TIMEOUT,
        };
        Ok(Drill {
            pg_scratch: self.pg_scratch.map(Spanned::into_inner),
            checks,
            health_command,
            health_timeout,
        })
    }
}
