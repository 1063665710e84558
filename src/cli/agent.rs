//! `vault agent` and `vault cycle`: the cycle on a timer, or once. Both need the config file
//! (its sources, remotes and `[agent]` table). The work is [`crate::agent`]'s and
//! [`crate::cycle`]'s.

use serde_json::json;

use super::{exit, say, AgentArgs, Ctx};
use crate::cycle::{self, CycleContext, CYCLE_LOCK_WAIT};
use crate::error::{Error, Result};
use crate::vaultfile::VaultFile;

/// The config file, with the vault `--vault` may have overridden.
fn config(ctx: &Ctx, command: &str) -> Result<VaultFile> {
    let mut file = ctx.config.clone().ok_or_else(|| {
        Error::Usage(format!(
            "`vault {command}` needs a config file naming the sources (--config FILE, \
             VAULT_CONFIG, or ./vault.toml; `vault config example` prints one)"
        ))
    })?;
    file.vault = ctx.root.clone();
    Ok(file)
}

/// `vault agent [--log-json]`.
#[cfg(feature = "agent")]
pub(super) fn agent(ctx: &mut Ctx, a: &AgentArgs) -> Result<i32> {
    use crate::agent::{self, AgentOptions, SHUTDOWN_GRACE};

    let file = config(ctx, "agent")?;
    agent::init_logging(a.log_json);
    agent::run(AgentOptions {
        file,
        secrets: ctx.secrets.clone(),
        log_json: a.log_json,
        shutdown_grace: SHUTDOWN_GRACE,
    })
}

/// `vault agent` in a build without the `agent` feature.
#[cfg(not(feature = "agent"))]
pub(super) fn agent(_: &mut Ctx, _: &AgentArgs) -> Result<i32> {
    Err(Error::Usage(
        "this vault was built without the agent (cargo feature `agent`); use `vault cycle` from \
         a timer"
            .into(),
    ))
}

/// `vault cycle`: one cycle, for a systemd timer or cron. Exits 0 when every step succeeded, 5
/// when the snapshot was rejected by a gate, 13 when a push failed, 1 otherwise.
pub(super) fn cycle(ctx: &mut Ctx) -> Result<i32> {
    let file = config(ctx, "cycle")?;
    let r = cycle::run(&CycleContext {
        file: &file,
        secrets: &ctx.secrets,
        wait: CYCLE_LOCK_WAIT,
    });
    if ctx.json {
        ctx.out.json(json!(r))?;
    } else {
        say!(ctx.out, "{}", r.summary());
        for p in r.pushes.iter().filter(|p| !p.ok) {
            eprintln!(
                "error: push to {}: {}",
                p.remote,
                p.error.as_deref().unwrap_or("")
            );
        }
        if let Some(e) = &r.snapshot_error {
            eprintln!("error: snapshot: {e}");
        }
        if r.retention.starts_with("failed") {
            eprintln!("error: retention {}", r.retention);
        }
    }
    Ok(if r.ok {
        exit::OK
    } else if r.snapshot_error.is_some() {
        exit::ERROR
    } else if !r.promoted {
        exit::REJECTED
    } else if r.pushes.iter().any(|p| !p.ok) {
        exit::REMOTE
    } else {
        exit::PARTIAL
    })
}
