//! The running agent: its lock, its runtime, the wiring of schedule, cycle, state and HTTP, and
//! its shutdown on SIGTERM or SIGINT.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fs2::FileExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cycle::{self, CycleContext, CYCLE_LOCK_WAIT};
use crate::error::{Error, Result};
use crate::keys::SecretSource;
use crate::lock::LockMode;
use crate::vault::Vault;
use crate::vaultfile::VaultFile;

use super::state::{AgentState, LkgInfo};
use super::{http, schedule};

/// The file a running agent holds locked.
pub const AGENT_LOCK_FILE: &str = "agent.lock";
/// How long a cycle in progress may take to finish after SIGTERM before it is abandoned.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// How to run the agent.
pub struct AgentOptions {
    pub file: VaultFile,
    pub secrets: SecretSource,
    /// Logs as JSON lines instead of human-readable text.
    pub log_json: bool,
    pub shutdown_grace: Duration,
}

/// Sets up `tracing` on stderr (once per process).
pub fn init_logging(json: bool) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_max_level(tracing::Level::INFO);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
}

/// Holds `VAULT/agent.lock` for the agent's life.
struct AgentLock {
    _file: File,
}

impl AgentLock {
    fn acquire(root: &Path) -> Result<AgentLock> {
        if !root.join("config.json").exists() {
            return Err(Error::NoVault { path: root.into() });
        }
        let path = root.join(AGENT_LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if file.try_lock_exclusive().is_err() {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(Error::Locked {
                holder: format!(
                    "another `vault agent` ({}); one agent per vault",
                    holder.trim()
                ),
            });
        }
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        let _ = write!(
            file,
            "pid {} on {} since {}",
            std::process::id(),
            crate::util::hostname(),
            crate::util::now_rfc3339()
        );
        Ok(AgentLock { _file: file })
    }
}

/// Runs the agent until SIGTERM or SIGINT; returns the exit code.
pub fn run(opts: AgentOptions) -> Result<i32> {
    let _lock = AgentLock::acquire(&opts.file.vault)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("atlasvault-agent")
        .enable_all()
        .build()
        .map_err(|e| Error::io("tokio runtime", e))?;
    let code = rt.block_on(main(opts));
    // A cycle abandoned after the grace still holds a blocking thread: do not wait for it. Every
    // vault write is atomic, so exiting under it leaves a vault that verifies.
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn main(opts: AgentOptions) -> Result<i32> {
    let AgentOptions {
        file,
        secrets,
        shutdown_grace,
        ..
    } = opts;
    let a = file.agent.clone();
    let state = Arc::new(AgentState::new(&file.vault, a.rpo, a.grace, a.interval));
    let file = Arc::new(file);
    let secrets = Arc::new(secrets);
    // Fail at start, not every 15 minutes, on what no cycle can fix: no vault, a wrong password.
    let (f, s) = (file.clone(), secrets.clone());
    tokio::task::spawn_blocking(move || {
        Vault::open(&f.vault, LockMode::Shared, Some(CYCLE_LOCK_WAIT), &s).map(drop)
    })
    .await
    .map_err(|e| Error::Invalid(format!("opening the vault panicked: {e}")))??;
    refresh_lkg(&state, &file, &secrets).await;
    let listener = TcpListener::bind(a.listen)
        .await
        .map_err(|e| Error::Invalid(format!("cannot listen on {}: {e}", a.listen)))?;
    tracing::info!(
        vault = %file.vault.display(),
        listen = %a.listen,
        interval_s = a.interval.as_secs(),
        rpo_s = a.rpo.as_secs(),
        remotes = file.remotes.len(),
        "agent started; serving /health, /metrics and /manifest"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let http = tokio::spawn(http::serve(listener, state.clone(), stop_rx.clone()));
    let started = tokio::time::Instant::now();
    let interval = a.interval;
    let cycle = {
        let (state, file, secrets) = (state.clone(), file.clone(), secrets.clone());
        move || {
            let (state, file, secrets) = (state.clone(), file.clone(), secrets.clone());
            async move {
                let next = next_tick(started, interval);
                state.set_next(Some(next));
                let f = file.clone();
                let s = secrets.clone();
                let report = tokio::task::spawn_blocking(move || {
                    cycle::run(&CycleContext {
                        file: &f,
                        secrets: &s,
                        wait: CYCLE_LOCK_WAIT,
                    })
                })
                .await;
                match report {
                    Ok(r) => {
                        if r.ok {
                            tracing::info!(ok = true, summary = %r.summary(), "cycle done");
                        } else {
                            tracing::warn!(ok = false, summary = %r.summary(), "cycle done with failures");
                        }
                        for p in r.pushes.iter().filter(|p| !p.ok) {
                            tracing::warn!(remote = %p.remote, error = p.error.as_deref().unwrap_or(""), "push failed");
                        }
                        if let Err(e) = state.record_cycle(&r, Some(next_tick(started, interval))) {
                            tracing::warn!(error = %e, "cannot write the agent state file");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cycle panicked"),
                }
                refresh_lkg(&state, &file, &secrets).await;
            }
        }
    };
    let overrun = move |took: Duration| {
        tracing::warn!(
            took_s = took.as_secs(),
            interval_s = interval.as_secs(),
            "the cycle took longer than the interval; the missed tick was skipped"
        );
    };
    let schedule = tokio::spawn(schedule::run(
        interval,
        shutdown_grace,
        stop_rx,
        cycle,
        overrun,
    ));
    let signal = wait_for_signal().await;
    tracing::info!(
        signal,
        "stopping: the cycle in progress, if any, may finish"
    );
    let _ = stop_tx.send(true);
    let stats = schedule.await.unwrap_or_default();
    let _ = http.await;
    tracing::info!(
        cycles = stats.cycles,
        overruns = stats.overruns,
        abandoned = stats.abandoned,
        "agent stopped"
    );
    Ok(0)
}

/// When the schedule ticks next after now, as wall-clock time.
fn next_tick(started: tokio::time::Instant, interval: Duration) -> SystemTime {
    let step = interval.as_nanos().max(1);
    let elapsed = started.elapsed().as_nanos();
    let wait = step - elapsed % step;
    SystemTime::now() + Duration::from_nanos(wait.min(u128::from(u64::MAX)) as u64)
}

/// Waits for SIGTERM or SIGINT; returns which.
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// Reads the LKG and its manifest into the state (on a blocking thread: it opens the vault).
async fn refresh_lkg(state: &Arc<AgentState>, file: &Arc<VaultFile>, secrets: &Arc<SecretSource>) {
    let (f, s) = (file.clone(), secrets.clone());
    let read = tokio::task::spawn_blocking(move || -> Result<Option<(LkgInfo, Vec<u8>)>> {
        let vault = Vault::open(&f.vault, LockMode::Shared, Some(CYCLE_LOCK_WAIT), &s)?;
        let Some(r) = crate::lkg::read(&vault)? else {
            return Ok(None);
        };
        let m = vault.manifest(&r.snapshot)?;
        let bytes = vault.manifest_bytes(&r.snapshot)?.unwrap_or_default();
        Ok(Some((
            LkgInfo {
                snapshot: r.snapshot.to_hex(),
                time: m.system_time().unwrap_or(SystemTime::UNIX_EPOCH),
            },
            bytes,
        )))
    })
    .await;
    match read {
        Ok(Ok(Some((info, bytes)))) => state.set_lkg(Some(info), Some(bytes)),
        Ok(Ok(None)) => state.set_lkg(None, None),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the last-known-good"),
        Err(e) => tracing::error!(error = %e, "reading the last-known-good panicked"),
    }
}
