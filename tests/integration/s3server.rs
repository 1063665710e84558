//! A real S3-compatible server for the S3 tests.
//!
//! By default each test starts its own `s3s-fs` (crates.io `s3s-fs@0.14.1`, which checks request
//! signatures) on 127.0.0.1 with a random port, random keys and a data dir in the fixture, and
//! stops it when dropped. With `VAULT_TEST_S3_ENDPOINT` set, the tests instead use that server
//! (`scripts/test-garage.sh` points them at Garage): `VAULT_TEST_S3_BUCKET`,
//! `VAULT_TEST_S3_REGION` and the `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` of the environment
//! name the bucket and keys, and each test works under its own prefix. Without s3s-fs the tests
//! fail when `CI` or `VAULT_TEST_REQUIRE_REAL` is set, and otherwise skip with a loud message.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// How long a starting server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running S3 server and the credentials and location the tests use on it.
pub struct S3Server {
    child: Option<Child>,
    /// s3s-fs's data dir (a bucket is a directory in it); `None` for an external server.
    pub data: Option<PathBuf>,
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub prefix: String,
    pub access_key: String,
    pub secret_key: String,
    /// The port s3s-fs bound, so that a restart can take it again.
    port: u16,
    log: PathBuf,
}

/// The s3s-fs binary: on PATH or in ~/.cargo/bin.
fn s3s_fs_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("s3s-fs"))
            .find(|b| b.is_file())
    });
    on_path.or_else(|| {
        let b = PathBuf::from(std::env::var_os("HOME")?).join(".cargo/bin/s3s-fs");
        b.is_file().then_some(b)
    })
}

impl S3Server {
    /// A server for one test (`name` makes the prefix unique on a shared server); `None` (after
    /// a loud message) when there is none and none is required.
    pub fn start(f: &Fixture, name: &str) -> Option<S3Server> {
        if let Ok(endpoint) = std::env::var("VAULT_TEST_S3_ENDPOINT") {
            let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
            let nonce = blake3::hash(f.root().as_os_str().as_encoded_bytes()).to_hex();
            return Some(S3Server {
                child: None,
                data: None,
                endpoint,
                bucket: var("VAULT_TEST_S3_BUCKET"),
                region: std::env::var("VAULT_TEST_S3_REGION").unwrap_or("garage".into()),
                prefix: format!("it/{name}-{}", &nonce.as_str()[..8]),
                access_key: var("AWS_ACCESS_KEY_ID"),
                secret_key: var("AWS_SECRET_ACCESS_KEY"),
                port: 0,
                log: f.path("s3.log"),
            });
        }
        let Some(_) = s3s_fs_binary() else {
            let why = "s3s-fs is not installed (cargo install s3s-fs@0.14.1 --features binary \
                       --locked; scripts/test.sh does it)";
            assert!(!real_components_required(), "{why}");
            eprintln!("\n*** SKIPPED: the S3 test {name} needs a real S3 server: {why} ***\n");
            return None;
        };
        let data = f.path("s3-data");
        let bucket = "atlas-test".to_string();
        fs::create_dir_all(data.join(&bucket)).unwrap();
        let mut s = S3Server {
            child: None,
            data: Some(data),
            endpoint: String::new(),
            bucket,
            region: "us-east-1".into(),
            prefix: format!("vaults/{name}"),
            // Distinct, recognisable strings: the leak test greps for them.
            access_key: format!("AKIA{}", hex_of(f, "ak", 16).to_uppercase()),
            secret_key: format!("SeCrEt{}", hex_of(f, "sk", 34)),
            port: 0,
            log: f.path("s3.log"),
        };
        s.spawn();
        Some(s)
    }

    /// Starts s3s-fs (on `self.port`, or any free port the first time) and waits for its address.
    fn spawn(&mut self) {
        let bin = s3s_fs_binary().expect("s3s-fs binary");
        let log = fs::File::create(&self.log).unwrap();
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--access-key",
                &self.access_key,
                "--secret-key",
                &self.secret_key,
            ])
            .arg(self.data.as_ref().expect("s3s-fs has a data dir"))
            .env("RUST_LOG", "s3s_fs=info,s3s=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + START_TIMEOUT;
        let port = loop {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(p) = text
                .lines()
                .filter_map(|l| l.split("http://127.0.0.1:").nth(1))
                .filter_map(|rest| {
                    rest.split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse::<u16>()
                        .ok()
                })
                .next()
            {
                break p;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("s3s-fs exited ({status}) before listening:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not report its port within {START_TIMEOUT:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.port = port;
        self.endpoint = format!("http://127.0.0.1:{port}");
        self.child = Some(child);
    }

    /// Kills the server (SIGKILL) without cleaning anything up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.data.is_some(), "only s3s-fs can be restarted");
        self.kill();
        self.spawn();
    }

    /// Starts it again on the same port and data with other credentials, as when the keys a
    /// client holds are revoked: every request signed with the old ones is refused (403). The
    /// old keys stay in `self`, so that [`S3Server::creds`] still hands them out and a later
    /// [`S3Server::restart`] brings them back; they are also returned.
    pub fn restart_revoking_keys(&mut self) -> (String, String) {
        assert!(self.data.is_some(), "only s3s-fs can be restarted");
        self.kill();
        let old = (self.access_key.clone(), self.secret_key.clone());
        self.access_key = format!("AKIA{}", "R".repeat(16));
        self.secret_key = "revoked-and-replaced-secret-key-0123456789".into();
        self.spawn();
        // A later restart() brings the old keys back.
        self.access_key = old.0.clone();
        self.secret_key = old.1.clone();
        old
    }

    /// True for the s3s-fs this test started (which can be killed and logs its operations).
    pub fn is_local(&self) -> bool {
        self.data.is_some()
    }

    /// How many times the server logged operation `op` (s3s-fs only; it logs each twice).
    pub fn op_count(&self, op: &str) -> usize {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("resolved route") && l.contains(&format!("op: {op},")))
            .count()
    }

    /// The `[[remote]]` table for this server.
    pub fn remote_table(&self, name: &str, append_only: bool) -> String {
        format!(
            "[[remote]]\nname = \"{name}\"\nurl = \"s3://{}/{}\"\nendpoint = \"{}\"\nregion = \"{}\"\n\
             path_style = true\nappend_only = {append_only}\n",
            self.bucket, self.prefix, self.endpoint, self.region
        )
    }

    /// The URL `restore --from` takes.
    pub fn url(&self) -> String {
        format!(
            "s3://{}/{}?endpoint={}&region={}&path_style=true",
            self.bucket, self.prefix, self.endpoint, self.region
        )
    }

    /// The remote's objects as the library's S3 backend sees them.
    pub fn backend(&self) -> atlasvault::backend::DynBackend {
        let spec = atlasvault::backend::RemoteSpec::from_url(&self.url()).expect("url");
        let raw = atlasvault::backend::s3::S3Backend::open(
            &atlasvault::backend::s3::S3Options {
                bucket: self.bucket.clone(),
                prefix: self.prefix.clone(),
                endpoint: spec.endpoint.clone(),
                region: spec.region.clone(),
                path_style: true,
            },
            &self.credentials(),
        )
        .expect("open the S3 backend");
        std::sync::Arc::new(raw)
    }

    pub fn credentials(&self) -> atlasvault::backend::s3::Credentials {
        atlasvault::backend::s3::Credentials {
            access_key_id: Some(self.access_key.clone().into()),
            secret_access_key: Some(self.secret_key.clone().into()),
            session_token: None,
        }
    }

    /// Adds the credentials to a command.
    pub fn creds(&self, cmd: VaultCmd) -> VaultCmd {
        cmd.env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
    }

    /// Lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `len` hex digits derived from the fixture path: unique per test, stable within it.
fn hex_of(f: &Fixture, what: &str, len: usize) -> String {
    let h = blake3::hash(format!("{}{what}", f.root().display()).as_bytes()).to_hex();
    h.as_str()[..len].to_string()
}
