//! `agent-state.json`: what a running agent leaves in the vault for `vault status` (last and
//! next cycle, each remote's last push). Always built, so `vault status` reads it even in a
//! build without the agent.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The file the agent keeps in the vault directory for `vault status`.
pub const STATE_FILE: &str = "agent-state.json";

/// The last-known-good as the agent last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LkgInfo {
    pub snapshot: String,
    /// When the snapshot was taken (its data's age is what the RPO bounds).
    pub time: SystemTime,
}

/// One remote's push history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteState {
    #[serde(with = "rfc3339_opt")]
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
}

/// Times in the state file are RFC 3339, readable by people and by `vault status`.
mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_seconds(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        v.map(|t| humantime::parse_rfc3339(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// What `agent-state.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Persisted {
    pub pid: u32,
    #[serde(with = "rfc3339_opt")]
    pub started_at: Option<SystemTime>,
    pub interval_secs: u64,
    pub cycles: u64,
    #[serde(with = "rfc3339_opt")]
    pub last_cycle_at: Option<SystemTime>,
    pub last_cycle_ok: Option<bool>,
    pub last_cycle_summary: Option<String>,
    #[serde(with = "rfc3339_opt")]
    pub next_cycle_at: Option<SystemTime>,
    pub remotes: BTreeMap<String, RemoteState>,
}

impl Persisted {
    /// Reads the state file of the vault at `root`, if an agent ever wrote one.
    pub fn load(root: &Path) -> Option<Persisted> {
        let bytes = std::fs::read(root.join(STATE_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
