//! `[agent]`: how `vault agent` schedules its cycle and where it serves `/health`.
//!
//! Every key has a default, so the table may be absent or partial. This module checks the values
//! (durations parse and are positive, the interval fits the RPO, the listen address is loopback
//! unless `allow_remote_listen = true`); it does not run anything.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::check;
use super::error::{ConfigError, Ctx};

/// Default time between two cycle starts.
pub const DEFAULT_AGENT_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// Default recovery point objective: `/health` turns 503 once the last-known-good is older.
pub const DEFAULT_AGENT_RPO: Duration = Duration::from_secs(15 * 60);
/// Default slack added to the RPO before `/health` fails, so a cycle in progress does not alert.
pub const DEFAULT_AGENT_GRACE: Duration = Duration::from_secs(5 * 60);
/// Default port of the agent's HTTP endpoint (on loopback).
pub const DEFAULT_AGENT_PORT: u16 = 28789;

/// The `[agent]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Agent {
    /// Time between two cycle starts (`interval = "15m"`).
    #[serde(serialize_with = "check::serialize_duration")]
    pub interval: Duration,
    /// Recovery point objective (`rpo = "15m"`).
    #[serde(serialize_with = "check::serialize_duration")]
    pub rpo: Duration,
    /// Slack past the RPO before `/health` reports stale (`grace = "5m"`).
    #[serde(serialize_with = "check::serialize_duration")]
    pub grace: Duration,
    /// Address of `/health`, `/metrics` and `/manifest` (`listen = "127.0.0.1:28789"`).
    pub listen: SocketAddr,
    /// Allows a non-loopback `listen`; the endpoints have no authentication. Default false.
    pub allow_remote_listen: bool,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            interval: DEFAULT_AGENT_INTERVAL,
            rpo: DEFAULT_AGENT_RPO,
            grace: DEFAULT_AGENT_GRACE,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_AGENT_PORT)),
            allow_remote_listen: false,
        }
    }
}

/// The `[agent]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WireAgent {
    interval: Option<Spanned<String>>,
    rpo: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    listen: Option<Spanned<String>>,
    allow_remote_listen: Option<bool>,
}

impl super::Section for WireAgent {
    const EXPECTING: &'static str = "the [agent] table";
}

impl WireAgent {
    pub(super) fn check(self, ctx: &Ctx<'_>) -> Result<Agent, ConfigError> {
        let defaults = Agent::default();
        let positive = |v: &Option<Spanned<String>>, key: &str, default: Duration| {
            let Some(v) = v else { return Ok(default) };
            let d = check::duration(ctx, v, &format!("agent.{key}"))?;
            if d.is_zero() {
                return Err(ctx.invalid(v, format!("agent.{key} must be longer than zero")));
            }
            Ok(d)
        };
        let interval = positive(&self.interval, "interval", defaults.interval)?;
        let rpo = positive(&self.rpo, "rpo", defaults.rpo)?;
        let grace = match &self.grace {
            Some(v) => check::duration(ctx, v, "agent.grace")?,
            None => defaults.grace,
        };
        if interval > rpo {
            // Then every cycle would leave a stretch where the last-known-good is older than the
            // RPO: /health would alert on a schedule working as configured.
            let at = self.interval.as_ref().or(self.rpo.as_ref());
            let message = format!(
                "agent.interval {} is longer than agent.rpo {}: no snapshot schedule this slow \
                 can meet that recovery point objective",
                humantime::format_duration(interval),
                humantime::format_duration(rpo)
            );
            return Err(match at {
                Some(at) => ctx.invalid(at, message),
                None => ctx.invalid_at(0..0, message),
            });
        }
        let allow_remote_listen = self.allow_remote_listen.unwrap_or(false);
        let listen = match &self.listen {
            Some(v) => {
                let addr: SocketAddr = v.get_ref().parse().map_err(|_| {
                    ctx.invalid(
                        v,
                        format!(
                            "agent.listen {:?} is not an address:port such as \"127.0.0.1:28789\" \
                             or \"[::1]:28789\"",
                            v.get_ref()
                        ),
                    )
                })?;
                if addr.port() == 0 {
                    // The system would pick a port and nobody could find /health on it.
                    return Err(ctx.invalid(
                        v,
                        format!("agent.listen {addr}: port 0 is not a port to serve on"),
                    ));
                }
                if !addr.ip().is_loopback() && !allow_remote_listen {
                    return Err(ctx.invalid(
                        v,
                        format!(
                            "agent.listen {addr} is not a loopback address; the agent's endpoints \
                             have no authentication, so set allow_remote_listen = true in [agent] \
                             to serve them beyond this machine"
                        ),
                    ));
                }
                addr
            }
            None => defaults.listen,
        };
        Ok(Agent {
            interval,
            rpo,
            grace,
            listen,
            allow_remote_listen,
        })
    }
}
