//! `vault agent`: the cycle on a timer, unattended, with its state on loopback HTTP.
//!
//! It runs on tokio: [`schedule`] decides when a [`crate::cycle`] runs (on a blocking thread:
//! the vault code is synchronous), [`http`] serves `/health`, `/metrics` and `/manifest` from
//! [`state`], and SIGTERM or SIGINT ends it within a bounded time (`daemon.rs`). One agent per
//! vault: a second one fails at once on `VAULT/agent.lock` (exit 11). Logs go to stderr through
//! `tracing`, human readable or JSON lines. Everything but [`persisted`] (the state file
//! `vault status` reads) needs the `agent` feature, on by default.

pub mod persisted;

#[cfg(feature = "agent")]
mod daemon;
#[cfg(feature = "agent")]
pub mod http;
#[cfg(feature = "agent")]
pub mod schedule;
#[cfg(feature = "agent")]
pub mod state;

#[cfg(feature = "agent")]
pub use daemon::{init_logging, run, AgentOptions, AGENT_LOCK_FILE, SHUTDOWN_GRACE};
