//! `[gates.sanity]`: the settings of the sanity gate, as operators write them in `vault.toml`.
//!
//! The values are [`crate::config::SanitySettings`], the same struct the vault's `config.json`
//! keeps. Every key has a default, so the tables may be absent or partial. This module checks
//! values with their positions in the file; the gate itself lives in `gates/sanity`.

use serde::Deserialize;
use toml::Spanned;

pub use crate::config::{GateSettings as Gates, SanitySettings, DEFAULT_DEPENDED_ON};

use super::check;
use super::error::{ConfigError, Ctx};

/// The `[gates]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireGates {
    sanity: Option<super::Table<WireSanity>>,
}

impl super::Section for WireGates {
    const EXPECTING: &'static str = "the [gates] table";
}

/// The `[gates.sanity]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSanity {
    git: Option<bool>,
    lockfiles: Option<bool>,
    mass_change_percent: Option<Spanned<i64>>,
    high_entropy_percent: Option<Spanned<i64>>,
    mass_loss_percent: Option<Spanned<i64>>,
    min_files: Option<u64>,
    depended_on: Option<Vec<Spanned<String>>>,
}

impl super::Section for WireSanity {
    const EXPECTING: &'static str = "the [gates.sanity] table";
}

impl WireGates {
    pub(super) fn check(self, ctx: &Ctx<'_>) -> Result<Gates, ConfigError> {
        let Some(super::Table(wire)) = self.sanity else {
            return Ok(Gates::default());
        };
        let defaults = SanitySettings::default();
        let percent = |v: Option<Spanned<i64>>, key: &str, default: u8| match v {
            Some(v) => u8::try_from(*v.get_ref())
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| {
                    ctx.invalid(
                        &v,
                        format!(
                            "gates.sanity.{key} {} must be a percentage from 0 to 100",
                            v.get_ref()
                        ),
                    )
                }),
            None => Ok(default),
        };
        Ok(Gates {
            sanity: SanitySettings {
                git: wire.git.unwrap_or(defaults.git),
                lockfiles: wire.lockfiles.unwrap_or(defaults.lockfiles),
                mass_change_percent: percent(
                    wire.mass_change_percent,
                    "mass_change_percent",
                    defaults.mass_change_percent,
                )?,
                high_entropy_percent: percent(
                    wire.high_entropy_percent,
                    "high_entropy_percent",
                    defaults.high_entropy_percent,
                )?,
                mass_loss_percent: percent(
                    wire.mass_loss_percent,
                    "mass_loss_percent",
                    defaults.mass_loss_percent,
                )?,
                min_files: wire.min_files.unwrap_or(defaults.min_files),
                depended_on: match wire.depended_on {
                    Some(globs) => check::globs(ctx, &globs, "gates.sanity.depended_on", false)?,
                    None => defaults.depended_on,
                },
            },
        })
    }
}
