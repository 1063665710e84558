//! Where secrets come from: [`SecretSource`] (flags, `VAULT_PASSWORD_FILE`,
//! `VAULT_PASSWORD_COMMAND`, `VAULT_KEY_FILE`, the terminal) and [`new_secret`] for a new one.
//! It reads password files, runs the password command and reads raw key files, all with bounded
//! sizes; what a secret opens is `file.rs`'s business, not this file's.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use super::{
    KeyError, Secret, ENV_KEY_FILE, ENV_PASSWORD_COMMAND, ENV_PASSWORD_FILE, PASSWORD_MAX_BYTES,
    RAW_KEY_FILE_MAX_BYTES, RAW_KEY_FILE_MIN_BYTES,
};

/// Where the secret that opens a vault comes from; see [`SecretSource::secret`] for the order.
///
/// The environment is read once, by [`SecretSource::from_env_and`].
#[derive(Clone, Default)]
pub struct SecretSource {
    /// `--password-file`.
    pub password_file: Option<PathBuf>,
    /// `--key-file`.
    pub key_file: Option<PathBuf>,
    pub(super) env_password_file: Option<PathBuf>,
    pub(super) env_password_command: Option<String>,
    pub(super) env_key_file: Option<PathBuf>,
    pub(super) interactive: bool,
}

impl fmt::Debug for SecretSource {
    // The command may embed a secret (`echo hunter2`); show only whether it is set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSource")
            .field("password_file", &self.password_file)
            .field("key_file", &self.key_file)
            .field("env_password_file", &self.env_password_file)
            .field(
                "env_password_command",
                &self.env_password_command.as_ref().map(|_| ".."),
            )
            .field("env_key_file", &self.env_key_file)
            .field("interactive", &self.interactive)
            .finish()
    }
}

impl SecretSource {
    /// The CLI's `--password-file` / `--key-file` plus `VAULT_PASSWORD_FILE`,
    /// `VAULT_PASSWORD_COMMAND` and `VAULT_KEY_FILE` (empty values count as unset), and whether
    /// stdin is a terminal.
    pub fn from_env_and(password_file: Option<PathBuf>, key_file: Option<PathBuf>) -> Self {
        Self::from_lookup(password_file, key_file, io::stdin().is_terminal(), |name| {
            std::env::var_os(name)
        })
    }

    /// `from_env_and` with the environment passed in, so tests need not mutate the process's.
    pub(super) fn from_lookup(
        password_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
        interactive: bool,
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> Self {
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
        SecretSource {
            password_file,
            key_file,
            env_password_file: var(ENV_PASSWORD_FILE).map(PathBuf::from),
            env_password_command: var(ENV_PASSWORD_COMMAND)
                .map(|c| c.to_string_lossy().into_owned()),
            env_key_file: var(ENV_KEY_FILE).map(PathBuf::from),
            interactive,
        }
    }

    /// Whether a flag or the environment names a secret (no prompt needed).
    pub fn is_configured(&self) -> bool {
        self.password_file.is_some()
            || self.key_file.is_some()
            || self.env_password_file.is_some()
            || self.env_password_command.is_some()
            || self.env_key_file.is_some()
    }

    /// Reads the secret from the first source set, in this order: `--password-file`,
    /// `--key-file` (both at once is an error), `VAULT_PASSWORD_FILE`, `VAULT_PASSWORD_COMMAND`,
    /// `VAULT_KEY_FILE`, then a prompt `"{Purpose}: "` on the terminal when stdin is one; else
    /// `NoSecret`. Flags come before the environment so that a flag always wins.
    pub fn secret(&self, purpose: &str) -> Result<Secret, KeyError> {
        match (&self.password_file, &self.key_file) {
            (Some(_), Some(_)) => Err(KeyError::Invalid(
                "give either --password-file or --key-file, not both".into(),
            )),
            (Some(p), None) => read_password_file(p),
            (None, Some(p)) => read_raw_key_file(p),
            (None, None) => {
                if let Some(p) = &self.env_password_file {
                    read_password_file(p)
                } else if let Some(c) = &self.env_password_command {
                    run_password_command(c)
                } else if let Some(p) = &self.env_key_file {
                    read_raw_key_file(p)
                } else if self.interactive {
                    let mut chars = purpose.chars();
                    let prompt: String = match chars.next() {
                        Some(c) => c.to_uppercase().chain(chars).collect(),
                        None => "Password".into(),
                    };
                    prompt_password(&format!("{prompt}: ")).map(Secret::Password)
                } else {
                    Err(KeyError::NoSecret(format!(
                        "no {purpose}: set {ENV_PASSWORD_FILE}=FILE or \
                         {ENV_PASSWORD_COMMAND}=COMMAND (or {ENV_KEY_FILE}=FILE for a raw key \
                         file), or run on a terminal to be asked"
                    )))
                }
            }
        }
    }
}

/// Reads a new secret for `vault init`, `key add` and `key passwd`: from `--new-password-file`,
/// from `--new-key-file`, or by asking twice on the terminal (the answers must match).
pub fn new_secret(
    password_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Secret, KeyError> {
    new_secret_from(password_file, key_file, io::stdin().is_terminal())
}

pub(super) fn new_secret_from(
    password_file: Option<&Path>,
    key_file: Option<&Path>,
    interactive: bool,
) -> Result<Secret, KeyError> {
    match (password_file, key_file) {
        (Some(_), Some(_)) => Err(KeyError::Invalid(
            "give either --new-password-file or --new-key-file, not both".into(),
        )),
        (Some(p), None) => read_password_file(p),
        (None, Some(p)) => read_raw_key_file(p),
        (None, None) if interactive => {
            let first = prompt_password("New vault password: ")?;
            let again = Zeroizing::new(prompt_password("Repeat the new vault password: ")?);
            if first != *again {
                return Err(KeyError::Invalid("the two passwords differ".into()));
            }
            Ok(Secret::Password(first))
        }
        (None, None) => Err(KeyError::NoSecret(
            "no new password: pass --new-password-file FILE or --new-key-file FILE, or run on a \
             terminal to be asked"
                .into(),
        )),
    }
}

/// Reads at most `max` bytes of `path`; a longer file is an error.
fn read_capped(path: &Path, max: usize, what: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let file = std::fs::File::open(path).map_err(|e| KeyError::io(path, e))?;
    // Sized up front so that growing the buffer leaves no copies of the secret behind.
    let hint = file
        .metadata()
        .map(|m| usize::try_from(m.len()).unwrap_or(usize::MAX))
        .unwrap_or(0);
    let mut buf = Zeroizing::new(Vec::with_capacity(hint.min(max) + 1));
    file.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| KeyError::io(path, e))?;
    if buf.len() > max {
        return Err(KeyError::Invalid(format!(
            "{what} {} is larger than {max} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

/// Drops one trailing `\n` or `\r\n`, as editors and `echo` add.
fn strip_one_newline(buf: &mut Vec<u8>) {
    if buf.ends_with(b"\r\n") {
        buf.truncate(buf.len() - 2);
    } else if buf.ends_with(b"\n") {
        buf.truncate(buf.len() - 1);
    }
}

fn read_password_file(path: &Path) -> Result<Secret, KeyError> {
    let mut buf = read_capped(path, PASSWORD_MAX_BYTES, "password file")?;
    strip_one_newline(&mut buf);
    if buf.is_empty() {
        return Err(KeyError::Invalid(format!(
            "password file {} is empty",
            path.display()
        )));
    }
    Ok(Secret::Password(std::mem::take(&mut *buf)))
}

fn read_raw_key_file(path: &Path) -> Result<Secret, KeyError> {
    let mut buf = read_capped(path, RAW_KEY_FILE_MAX_BYTES, "key file")?;
    if buf.len() < RAW_KEY_FILE_MIN_BYTES {
        return Err(KeyError::Invalid(format!(
            "key file {} holds {} bytes; a raw key file needs at least {RAW_KEY_FILE_MIN_BYTES} \
             (make one with `head -c 32 /dev/urandom > FILE`)",
            path.display(),
            buf.len()
        )));
    }
    Ok(Secret::KeyFile(std::mem::take(&mut *buf)))
}

/// Runs `sh -c command` with stdin and stderr inherited (a pinentry may need them) and takes its
/// stdout as the password. Errors never show the command or its output: either may hold the
/// password.
fn run_password_command(command: &str) -> Result<Secret, KeyError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        // Never the vault's own stdin: it may be a dump piped to `snapshot --stdin`.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| KeyError::Command(format!("cannot run {ENV_PASSWORD_COMMAND}: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .expect("invariant: stdout was set to piped");
    let mut out = Zeroizing::new(Vec::with_capacity(1024));
    let read = stdout
        .take(PASSWORD_MAX_BYTES as u64 + 1)
        .read_to_end(&mut out);
    if read.is_err() || out.len() > PASSWORD_MAX_BYTES {
        // Best effort: the command is abandoned either way.
        let _ = child.kill();
        let _ = child.wait();
        let why = match read {
            Err(e) => format!("reading its output failed: {e}"),
            Ok(_) => format!("it printed more than {PASSWORD_MAX_BYTES} bytes"),
        };
        return Err(KeyError::Command(format!("{ENV_PASSWORD_COMMAND}: {why}")));
    }
    let status = child
        .wait()
        .map_err(|e| KeyError::Command(format!("{ENV_PASSWORD_COMMAND}: {e}")))?;
    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exited with code {code}"),
            None => "was killed by a signal".into(),
        };
        return Err(KeyError::Command(format!(
            "{ENV_PASSWORD_COMMAND} {how}; its output is not shown"
        )));
    }
    strip_one_newline(&mut out);
    if out.is_empty() {
        return Err(KeyError::Command(format!(
            "{ENV_PASSWORD_COMMAND} printed no password"
        )));
    }
    Ok(Secret::Password(std::mem::take(&mut *out)))
}

/// Asks on the terminal (rpassword reads `/dev/tty` with echo off).
fn prompt_password(prompt: &str) -> Result<Vec<u8>, KeyError> {
    let answer = Zeroizing::new(
        rpassword::prompt_password(prompt).map_err(|e| KeyError::io(Path::new("/dev/tty"), e))?,
    );
    if answer.is_empty() {
        return Err(KeyError::Invalid("the password is empty".into()));
    }
    Ok(answer.as_bytes().to_vec())
}
