//! The command line: argument structs and the printing of results. No vault logic lives here;
//! each command builds an options struct and calls the library.
//!
//! This file holds the clap definitions, the exit codes and [`run`], which only dispatches: one
//! file per command group does the printing (`keys` for init and key files, `snapshot`, `list`
//! for snapshots/ls/status, `restore`, `check` for verify, reindex, gates, promote and audit).

use std::io::{StdoutLock, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::backend::RemoteSpec;
use crate::error::{Error, Result};
use crate::keys::{KeyError, SecretSource};
use crate::lock::LockMode;
use crate::vault::Vault;
use crate::vaultfile::VaultFile;

// Declared before `say!` so that each file imports the macro by path, not by textual scope.
mod agent;
mod check;
mod config;
mod keys;
mod list;
mod remote;
mod restore;
mod snapshot;

/// Writes one line to [`Out`], formatted like `writeln!`; a failed write returns the
/// `Error::io("stdout", ..)` from the enclosing function.
macro_rules! say {
    ($out:expr, $($t:tt)*) => { $out.line(format_args!($($t)*))? };
}
pub(crate) use say;

/// Printed wherever an unencrypted vault is shown.
const UNENCRYPTED_WARNING: &str = "WARNING: this vault is NOT encrypted (--encryption none): \
     anyone who can read its files can read every snapshot";

/// Standard output, held locked for the whole command. Every result goes through here so that a
/// failed write is always `Error::io("stdout", ..)` (a broken pipe then exits 0 in `main`).
struct Out {
    lock: StdoutLock<'static>,
}

impl Out {
    fn stdout() -> Self {
        Out {
            lock: std::io::stdout().lock(),
        }
    }

    /// One line of human output; use the [`say!`] macro rather than calling this directly.
    fn line(&mut self, args: std::fmt::Arguments<'_>) -> Result<()> {
        writeln!(self.lock, "{args}").map_err(|e| Error::io("stdout", e))
    }

    /// The raw stream under the lines (a restored dump).
    fn raw_writer(&mut self) -> &mut StdoutLock<'static> {
        &mut self.lock
    }

    /// A JSON value, pretty-printed, followed by a newline.
    fn json(&mut self, value: serde_json::Value) -> Result<()> {
        let text = serde_json::to_string_pretty(&value).expect("invariant: JSON value serializes");
        say!(self, "{text}");
        Ok(())
    }
}

/// What every command needs from the global flags, plus stdout.
struct Ctx {
    root: PathBuf,
    /// The config file, when one was found and the command needs it.
    config: Option<VaultFile>,
    json: bool,
    secrets: SecretSource,
    wait: Option<Duration>,
    /// Where remote mirrors live (`--cache-dir`); `None`: one per remote under ~/.cache.
    cache_dir: Option<PathBuf>,
    out: Out,
}

impl Ctx {
    /// Opens the vault at `root` with the global `--wait` and password sources.
    /// The config file's gate settings, when it sets any, replace `config.json`'s for the run.
    fn open(&self, mode: LockMode) -> Result<Vault> {
        let vault = Vault::open(&self.root, mode, self.wait, &self.secrets)?;
        Ok(self.with_file_gates(vault))
    }

    /// Opens the vault on a remote through its local mirror (see [`crate::remote`]).
    fn open_remote(&self, spec: &RemoteSpec) -> Result<Vault> {
        self.open_remote_backend(crate::backend::open(spec)?)
    }

    /// Opens the vault on an opened remote backend through its local mirror.
    fn open_remote_backend(&self, backend: crate::backend::DynBackend) -> Result<Vault> {
        let cache = self
            .cache_dir
            .clone()
            .unwrap_or_else(crate::remote::default_cache_base);
        let vault = crate::remote::open(backend, &cache, self.wait, &self.secrets)?;
        for w in vault.unread_packs() {
            eprintln!("warning: {w}");
        }
        Ok(self.with_file_gates(vault))
    }

    /// The remote named `name` in the config file.
    fn remote_spec(&self, name: &str) -> Result<RemoteSpec> {
        let file = self.config.as_ref().ok_or_else(|| {
            Error::Usage(format!(
                "no config file names remote {name:?} (pass --config FILE, or use --from URL)"
            ))
        })?;
        let remote = file.remotes.iter().find(|r| r.name == name);
        remote.map(RemoteSpec::from).ok_or_else(|| {
            let known: Vec<&str> = file.remotes.iter().map(|r| r.name.as_str()).collect();
            Error::Usage(format!(
                "no remote {name:?} in the config file (it has: {})",
                if known.is_empty() {
                    "none; add one with `vault remote add NAME URL`".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// Appends an audit record to the local vault's log, when there is a local vault.
    fn audit_local(&self, record: &crate::audit::AuditRecord) -> Result<()> {
        if self.root.join("config.json").exists() {
            crate::audit::append(&self.root.join("audit.log"), record)?;
        }
        Ok(())
    }

    fn with_file_gates(&self, mut vault: Vault) -> Vault {
        // Only settings the file actually changes: a vault.toml without [gates.sanity] keeps
        // what config.json holds.
        if let Some(file) = self
            .config
            .as_ref()
            .filter(|f| f.gates != crate::config::GateSettings::default())
        {
            vault.config.gates = file.gates.clone();
        }
        vault
    }
}

/// Exit codes; README.md documents them and scripts rely on them.
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    /// The snapshot completed but some files could not be read.
    pub const PARTIAL: i32 = 3;
    /// `verify` found damage, or `restore` could not restore every entry.
    pub const DAMAGED: i32 = 4;
    /// The snapshot was kept but a gate rejected it: the last-known-good did not move.
    pub const REJECTED: i32 = 5;
    pub const NO_VAULT: i32 = 10;
    pub const LOCKED: i32 = 11;
    /// Wrong password or key file, or no password given, for an encrypted vault.
    pub const KEY: i32 = 12;
    /// A remote failed after its retries (unreachable, refused, or an append-only refusal).
    pub const REMOTE: i32 = 13;
    /// `status`: the last-known-good is older than the RPO plus its grace (or there is none).
    pub const RPO_BREACHED: i32 = 14;
}

/// AtlasVault: deduplicating, verified snapshots of your stack.
#[derive(Debug, Parser)]
#[command(name = "vault", version, about)]
pub struct Cli {
    /// The vault directory.
    #[arg(long, global = true, env = "VAULT_DIR", value_name = "DIR")]
    pub vault: Option<PathBuf>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Wait this long for a locked vault (e.g. `30s`, `5m`) instead of failing at once.
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<Duration>,
    /// Read the vault password from this file (else VAULT_PASSWORD_FILE, VAULT_PASSWORD_COMMAND,
    /// VAULT_KEY_FILE, or a prompt on a terminal).
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Open the vault with this raw key file instead of a password.
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The config file (else VAULT_CONFIG, else ./vault.toml when there is one).
    #[arg(long, global = true, env = "VAULT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where remote reads are cached (restore --from, verify --remote): each remote gets its
    /// own subdirectory here; default ~/.cache/atlasvault/remotes.
    #[arg(long, global = true, env = "VAULT_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new vault (encrypted unless --encryption none).
    Init(InitArgs),
    /// Show the vault: encryption, keys, snapshots, the last-known-good and its age against the
    /// RPO, the agent's last and next cycle, and what each remote lacks. Exits 14 when the RPO
    /// is breached.
    Status(StatusArgs),
    /// Manage the key files that unlock an encrypted vault.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Check the config file, or print a commented example of one.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Snapshot one or more paths.
    Snapshot(SnapshotArgs),
    /// List snapshots.
    Snapshots,
    /// List the entries of a snapshot.
    Ls {
        /// Snapshot id, unique id prefix, or `latest`.
        snapshot: String,
        /// Only entries at or below this snapshot path.
        path: Option<String>,
    },
    /// Restore a snapshot into a directory.
    Restore(RestoreArgs),
    /// Check the vault's integrity.
    Verify(VerifyArgs),
    /// Rebuild index.sqlite from the packs.
    Reindex,
    /// Print the audit log.
    Audit(AuditArgs),
    /// Forget snapshots a retention policy does not keep (flags, else the config's
    /// [retention], else the default policy); never the last-known-good or what is newer.
    Forget(ForgetArgs),
    /// Delete the packs no snapshot uses and repack those mostly unused; runs beside the agent
    /// (it locks the vault exclusively only for its short delete phase).
    Prune(PruneArgs),
    /// Rehearse a disaster recovery: restore the last-known-good into a scratch directory,
    /// check every file against the snapshot, re-run the gates, and report RTO and RPO.
    Drill(DrillArgs),
    /// List past drills with their RTO and RPO.
    Drills,
    /// Upload what a remote lacks (every remote of the config file, or --remote NAME).
    Push(PushArgs),
    /// Add or list the remotes of the config file.
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Run the cycle (snapshot, gates, promote, push, retention) every `[agent] interval`, with
    /// /health, /metrics and /manifest on loopback; stops cleanly on SIGTERM or SIGINT.
    Agent(AgentArgs),
    /// Run one cycle and exit (for a systemd timer or cron).
    Cycle,
    /// Re-run the gates on a snapshot and report.
    Gate {
        /// Snapshot id, unique id prefix, or `latest`.
        snapshot: String,
        /// Also re-read and re-hash every blob the snapshot references.
        #[arg(long)]
        deep: bool,
    },
    /// Re-run the gates and make the snapshot last-known-good only if all pass.
    Promote {
        /// Snapshot id, unique id prefix, or `latest`.
        snapshot: String,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only records at or after this time (RFC 3339, e.g. 2026-11-23T20:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = humantime::parse_rfc3339_weak)]
    pub since: Option<std::time::SystemTime>,
    /// Only records of this action (snapshot, promote, restore, verify, ...).
    #[arg(long, value_name = "A")]
    pub action: Option<String>,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Keep the newest N snapshots (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep every snapshot taken within this duration of the newest (e.g. `2d`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_within: Option<Duration>,
    /// Keep the newest snapshot of each of the last N quarter hours (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_quarter_hourly: Option<i64>,
    /// Keep the newest snapshot of each of the last N hours (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest snapshot of each of the last N days (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<i64>,
    /// Keep the newest snapshot of each of the last N ISO weeks (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest snapshot of each of the last N months (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest snapshot of each of the last N years (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<i64>,
    /// List what would be forgotten and why each survivor is kept; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply the policy to this remote of the config file (its own snapshots and LKG) instead of
    /// the local vault.
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// Allow forgetting on an append-only remote (run it with credentials the storage lets
    /// delete).
    #[arg(long, requires = "remote")]
    pub admin: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Repack a pack once this percentage of its bytes is unused (100: only delete packs that
    /// are wholly unused).
    #[arg(long, value_name = "PERCENT", default_value_t = crate::prune::DEFAULT_REPACK_THRESHOLD)]
    pub repack_threshold: f64,
    /// Report what would be deleted and repacked; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune this remote of the config file instead of the local vault.
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// Allow pruning an append-only remote (run it with credentials the storage lets delete).
    #[arg(long, requires = "remote")]
    pub admin: bool,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Drill this snapshot (id, prefix or `latest`) instead of the last-known-good.
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
    /// Drill from this remote alone (as `restore --from` takes it).
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// Restore into this directory (absent or empty) instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Keep the restored tree (and the scratch databases).
    #[arg(long)]
    pub keep: bool,
    /// Restore each PostgreSQL dump into a fresh database on this server (the URL of its
    /// maintenance database, no password) and run the config's `[drill.checks]` there
    /// (default: the config's `drill.pg_scratch`).
    #[arg(long, value_name = "URL")]
    pub pg_scratch: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Also report RPO coverage over this window (e.g. `24h`): for each RPO-long slot, whether
    /// a snapshot that passed every gate was taken in it.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub coverage: Option<Duration>,
    /// Do not contact the remotes (no lag report).
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Log JSON lines instead of human-readable text (stderr).
    #[arg(long)]
    pub log_json: bool,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Only this remote (repeatable); default: every remote of the config file.
    #[arg(long, value_name = "NAME")]
    pub remote: Vec<String>,
    /// Packs uploaded at once.
    #[arg(long, value_name = "N", default_value_t = crate::push::DEFAULT_PUSH_THREADS)]
    pub threads: usize,
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Add a [[remote]] table to the config file (created when there is none).
    Add(RemoteAddArgs),
    /// List the remotes with what each still lacks.
    List,
}

#[derive(Debug, Args)]
pub struct RemoteAddArgs {
    /// Unique name: a-z, 0-9, `-` and `_`.
    pub name: String,
    /// `file:///mnt/d/AtlasVault`, an absolute path, or `s3://bucket/prefix`.
    pub url: String,
    /// S3: the endpoint, e.g. `https://s3.eu-central-003.backblazeb2.com`.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// S3: the region.
    #[arg(long)]
    pub region: Option<String>,
    /// S3: path-style addressing (endpoint/bucket), as most self-hosted stores need.
    #[arg(long)]
    pub path_style: bool,
    /// Pushes only create objects: nothing on the remote is deleted or overwritten.
    #[arg(long)]
    pub append_only: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file: unknown keys, bad values and secrets in it are errors naming
    /// line and column.
    Check,
    /// Print a commented example that shows every option.
    Example,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Add a key file for a new password (or raw key file), wrapping the same master key.
    Add(NewKeyArgs),
    /// List the key files.
    List,
    /// Remove a key file by id or unique id prefix (not the one in use, not the last one).
    Remove {
        /// Key id or unique prefix, as `vault key list` shows it.
        id: String,
    },
    /// Change the password: add a key file for the new one, then remove the one in use.
    Passwd(NewKeyArgs),
}

/// Where a new secret comes from, and its argon2id cost.
#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// Read the new password from this file (else asked twice on a terminal).
    #[arg(long, value_name = "FILE", conflicts_with = "new_key_file")]
    pub new_password_file: Option<PathBuf>,
    /// Use this raw key file (32 bytes or more of random data) instead of a password.
    #[arg(long, value_name = "FILE")]
    pub new_key_file: Option<PathBuf>,
    /// argon2id memory per password guess, KiB (default 65536: 64 MiB).
    #[arg(long, value_name = "KIB")]
    pub argon2_memory_kib: Option<u32>,
    /// argon2id passes over that memory (default 3).
    #[arg(long, value_name = "N")]
    pub argon2_iterations: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EncryptionArg {
    /// XChaCha20-Poly1305 with argon2id-wrapped keys (the default).
    #[value(name = "xchacha20-poly1305")]
    Xchacha20Poly1305,
    /// No encryption: only for a vault that never leaves a disk you trust.
    None,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// How the vault's objects are sealed.
    #[arg(long, value_enum, default_value = "xchacha20-poly1305")]
    pub encryption: EncryptionArg,
    #[command(flatten)]
    pub key: NewKeyArgs,
    /// FastCDC minimum chunk size in bytes.
    #[arg(long, hide = true)]
    pub chunk_min: Option<u32>,
    /// FastCDC average chunk size in bytes.
    #[arg(long, hide = true)]
    pub chunk_avg: Option<u32>,
    /// FastCDC maximum chunk size in bytes.
    #[arg(long, hide = true)]
    pub chunk_max: Option<u32>,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Files or directories to snapshot; none: every source of the config file.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Only this source of the config file (repeatable).
    #[arg(long, value_name = "NAME", conflicts_with = "paths")]
    pub source: Vec<String>,
    /// Snapshot standard input as one stream (a dump piped in), stored as NAME/stdin.
    #[arg(long, requires = "name", conflicts_with_all = ["paths", "source"])]
    pub stdin: bool,
    /// The source name of the --stdin stream.
    #[arg(long, value_name = "NAME", requires = "stdin")]
    pub name: Option<String>,
    /// Leave out paths matching this gitignore-style glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Read every file, ignoring the parent snapshot.
    #[arg(long)]
    pub no_parent: bool,
    /// Take the snapshot and run the gates, but leave the last-known-good where it is.
    #[arg(long)]
    pub no_promote: bool,
    /// Store files matching this glob only as templates, secrets redacted (repeatable; adds to
    /// the defaults openclaw.json, .env and .env.*). A glob with `/` matches the path below the
    /// snapshotted directory, one without matches the file name.
    #[arg(long, value_name = "GLOB")]
    pub template_only: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id, unique id prefix, or `latest`.
    #[arg(required_unless_present = "lkg", conflicts_with = "lkg")]
    pub snapshot: Option<String>,
    /// Restore the last-known-good snapshot.
    #[arg(long)]
    pub lkg: bool,
    /// Directory to restore into.
    #[arg(long, value_name = "DIR", required_unless_present = "stream_out")]
    pub target: Option<PathBuf>,
    /// Restore only this snapshot path and what is below it (repeatable).
    #[arg(long, value_name = "PATH")]
    pub include: Vec<String>,
    /// Restore into a non-empty target, replacing files.
    #[arg(long)]
    pub overwrite: bool,
    /// The dump stream of this source (with --to-stdout, --to or --into).
    #[arg(long, value_name = "NAME", requires = "stream_out")]
    pub source: Option<String>,
    /// Write the --source stream to standard output (`... | psql`), once its sha256 matches the
    /// manifest.
    #[arg(long, group = "stream_out", requires = "source", conflicts_with_all = ["target", "include", "overwrite"])]
    pub to_stdout: bool,
    /// Write the --source stream to this file (a SQLite database, a dump), once its sha256
    /// matches; an existing file is replaced only with --force.
    #[arg(long, value_name = "FILE", group = "stream_out", requires = "source", conflicts_with_all = ["target", "include", "overwrite"])]
    pub to: Option<PathBuf>,
    /// Load the --source postgres stream into this database (an existing, empty one) with psql
    /// (plain dumps) or pg_restore (custom), and report the result.
    #[arg(long, value_name = "URL", group = "stream_out", requires = "source", conflicts_with_all = ["target", "include", "overwrite"])]
    pub into: Option<String>,
    /// With --to: replace an existing file.
    #[arg(long, requires = "to")]
    pub force: bool,
    /// Restore from this remote alone, with no local vault or config: `file:///mnt/d/AtlasVault`
    /// or `s3://bucket/prefix?endpoint=http://host:port&region=R&path_style=true` (credentials
    /// from the environment).
    #[arg(long, value_name = "URL", conflicts_with = "remote")]
    pub from: Option<String>,
    /// Restore from this remote of the config file.
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Read and re-hash every blob.
    #[arg(long)]
    pub read_data: bool,
    /// Read and re-hash a random share of the packs, e.g. `10%`.
    #[arg(long, value_name = "N%", value_parser = parse_percent, conflicts_with = "read_data")]
    pub read_data_subset: Option<f64>,
    /// Audit this remote of the config file instead of the local vault.
    #[arg(long, value_name = "NAME", conflicts_with = "from")]
    pub remote: Option<String>,
    /// Audit the vault at this remote URL (as `restore --from` takes it).
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage like 10%"))?;
    if v > 0.0 && v <= 100.0 {
        Ok(v)
    } else {
        Err(format!("{s} is outside (0%, 100%]"))
    }
}

/// Maps a library error to its exit code.
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::NoVault { .. } | Error::NoRemoteVault { .. } => exit::NO_VAULT,
        Error::Backend(_) => exit::REMOTE,
        Error::Locked { .. } => exit::LOCKED,
        Error::Usage(_) => exit::USAGE,
        Error::Key(KeyError::WrongSecret | KeyError::NoSecret(_)) => exit::KEY,
        Error::Corrupt { .. } | Error::Missing { .. } => exit::DAMAGED,
        _ => exit::ERROR,
    }
}

fn default_vault() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("atlasvault")
}

/// Runs a parsed command line; returns the exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    let found = VaultFile::locate(cli.config.as_deref(), None, &cwd);
    // A config that is found is read by every command (its gate settings must give `snapshot`,
    // `gate` and `promote` the same verdicts), except the one that prints an example.
    // `remote add` creates the file when it does not exist yet.
    let creates = matches!(&cli.command, Command::Remote(RemoteCommand::Add(_)))
        && found.as_ref().is_some_and(|p| !p.exists());
    let needed = !creates && !matches!(&cli.command, Command::Config(ConfigCommand::Example));
    let config = match (&found, needed) {
        (Some(path), true) => Some(VaultFile::load(path)?),
        _ => None,
    };
    let root = cli
        .vault
        .clone()
        .or_else(|| config.as_ref().map(|c| c.vault.clone()))
        .unwrap_or_else(default_vault);
    let mut ctx = Ctx {
        root,
        config,
        json: cli.json,
        secrets: SecretSource::from_env_and(cli.password_file, cli.key_file),
        wait: cli.wait,
        cache_dir: cli.cache_dir,
        out: Out::stdout(),
    };
    let ctx = &mut ctx;
    match cli.command {
        Command::Init(a) => keys::init(ctx, &a),
        Command::Status(a) => list::status(ctx, &a),
        Command::Key(k) => keys::key(ctx, k),
        Command::Snapshot(a) => snapshot::run(ctx, a),
        Command::Snapshots => list::snapshots(ctx),
        Command::Ls { snapshot, path } => list::ls(ctx, &snapshot, path.as_deref()),
        Command::Restore(a) => restore::run(ctx, a),
        Command::Verify(a) => check::verify(ctx, &a),
        Command::Reindex => check::reindex(ctx),
        Command::Audit(a) => check::audit(ctx, &a),
        Command::Gate { snapshot, deep } => check::gate(ctx, &snapshot, deep),
        Command::Promote { snapshot } => check::promote(ctx, &snapshot),
        Command::Config(c) => config::run(ctx, c, found.as_deref()),
        Command::Push(a) => remote::push(ctx, &a),
        Command::Forget(a) => list::forget(ctx, &a),
        Command::Prune(a) => list::prune(ctx, &a),
        Command::Drill(a) => check::drill(ctx, &a),
        Command::Drills => check::drills(ctx),
        Command::Agent(a) => agent::agent(ctx, &a),
        Command::Cycle => agent::cycle(ctx),
        Command::Remote(RemoteCommand::Add(a)) => {
            remote::add(ctx, &a, found.as_deref(), cli.config.as_deref())
        }
        Command::Remote(RemoteCommand::List) => remote::list(ctx),
    }
}
