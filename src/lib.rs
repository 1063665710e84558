//! AtlasVault: a content-addressed, deduplicating, crash-safe snapshot store.
//!
//! The modules follow the data flow of `DESIGN.md`:
//! [`snapshot`] walks sources and drives [`chunk`] (FastCDC), [`blob`] (blake3 ids, zstd, verify
//! before write, sealing) and [`pack`] (self-describing pack files); [`tree`] and [`manifest`]
//! describe what a snapshot holds; [`index`] is the rebuildable SQLite cache of where blobs are;
//! [`restore`], [`verify`] and [`ls`] read it all back; [`vault`] owns the on-disk layout and the
//! [`lock`]; [`crypto`] and [`keys`] encrypt it; [`gates`] and [`lkg`] decide what may be
//! restored; [`audit`] records every decision.
//!
//! ```
//! use atlasvault::{config::ChunkerParams, lock::LockMode, progress::Progress, Vault};
//! use atlasvault::keys::{KdfParams, Secret, SecretSource};
//! use atlasvault::snapshot::{snapshot, SnapshotOptions};
//! use atlasvault::restore::{restore, RestoreOptions};
//!
//! let tmp = tempfile::tempdir()?;
//! let data = tmp.path().join("data");
//! std::fs::create_dir(&data)?;
//! std::fs::write(data.join("hello.txt"), b"hello, vault")?;
//!
//! // An encrypted vault; the password comes from a file here (or VAULT_PASSWORD_FILE, ...).
//! let password = tmp.path().join("password");
//! std::fs::write(&password, "correct horse battery staple")?;
//! let secret = Secret::Password(b"correct horse battery staple".to_vec());
//! let root = tmp.path().join("vault");
//! Vault::init(&root, ChunkerParams::default(), Some((&secret, &KdfParams::default())))?;
//! let secrets = SecretSource::from_env_and(Some(password), None);
//! let mut vault = Vault::open(&root, LockMode::Exclusive, None, &secrets)?;
//! let opts = SnapshotOptions { paths: vec![data], ..Default::default() };
//! let done = snapshot(&mut vault, &opts, &Progress::hidden())?;
//!
//! let target = tmp.path().join("restored");
//! let reader = vault.blob_reader()?;
//! let ropts = RestoreOptions { target: target.clone(), ..Default::default() };
//! restore(&reader, &done.manifest, &ropts, &Progress::hidden())?;
//! assert_eq!(std::fs::read(target.join("data/hello.txt"))?, b"hello, vault");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod agent;
pub mod audit;
pub mod backend;
pub mod blob;
pub mod chunk;
pub mod config;
pub mod coverage;
pub mod crashpoint;
pub mod crypto;
pub mod cycle;
pub mod drill;
pub mod error;
pub mod fsutil;
pub mod gates;
pub mod id;
pub mod index;
pub mod keys;
pub mod lkg;
pub mod lock;
pub mod ls;
pub mod manifest;
pub mod pack;
pub mod progress;
pub mod prune;
pub mod push;
pub mod remote;
pub mod restore;
pub mod retention;
pub mod scan;
pub mod snapshot;
pub mod sparse;
pub mod stored;
pub mod stream;
pub mod template;
pub mod tree;
pub mod util;
pub mod vault;
pub mod vaultfile;
pub mod verify;

pub use error::{Error, Result};
pub use id::{BlobId, PackId, SnapshotId};
pub use vault::Vault;
pub mod cli;
