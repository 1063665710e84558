//! `vault config check` and `vault config example`.

use std::path::Path;

use serde_json::json;

use super::{exit, say, ConfigCommand, Ctx};
use crate::error::{Error, Result};
use crate::vaultfile::{self, SourceKind};

pub(super) fn run(ctx: &mut Ctx, c: ConfigCommand, found: Option<&Path>) -> Result<i32> {
    match c {
        ConfigCommand::Example => {
            ctx.out
                .line(format_args!("{}", vaultfile::example().trim_end()))?;
        }
        ConfigCommand::Check => {
            let (Some(path), Some(file)) = (found, &ctx.config) else {
                return Err(Error::Invalid(
                    "no config file: pass --config FILE, set VAULT_CONFIG, or create ./vault.toml \
                     (`vault config example` prints one)"
                        .into(),
                ));
            };
            if ctx.json {
                let value = json!({"config": path, "valid": true, "file": file});
                ctx.out.json(value)?;
            } else {
                say!(ctx.out, "{}: valid", path.display());
                say!(ctx.out, "vault    {}", file.vault.display());
                for s in &file.sources {
                    say!(ctx.out, "source   {:<16} {}", s.name, describe(&s.kind));
                }
                for r in &file.remotes {
                    say!(ctx.out, "remote   {:<16} {}", r.name, r.url);
                }
            }
        }
    }
    Ok(exit::OK)
}

/// One line about a source, without anything secret (a postgres URL never holds a password:
/// the config check refuses one).
fn describe(kind: &SourceKind) -> String {
    match kind {
        SourceKind::Tree { path, .. } => format!("tree {}", path.display()),
        SourceKind::Postgres { .. } => "postgres".into(),
        SourceKind::Sqlite { path } => format!("sqlite {}", path.display()),
        SourceKind::Command { command, .. } => format!("command {}", command.join(" ")),
    }
}
