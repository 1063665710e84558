//! `vault init` and `vault key ...`: creating a vault and managing the key files that unlock it.
//! The key handling itself lives in [`crate::keys`] and [`Vault`]; this only reads the flags and
//! prints.

use serde_json::json;

use super::{exit, say, Ctx, EncryptionArg, InitArgs, KeyCommand, NewKeyArgs, UNENCRYPTED_WARNING};
use crate::audit::AuditRecord;
use crate::config::{ChunkerParams, Chunking};
use crate::error::{Error, Result};
use crate::keys::{KdfParams, Secret, SecretSource};
use crate::lock::LockMode;
use crate::vault::Vault;

impl NewKeyArgs {
    fn kdf(&self) -> Result<KdfParams> {
        let d = KdfParams::default();
        let kdf = KdfParams {
            memory_kib: self.argon2_memory_kib.unwrap_or(d.memory_kib),
            iterations: self.argon2_iterations.unwrap_or(d.iterations),
            ..d
        };
        kdf.validate()?;
        Ok(kdf)
    }

    /// The new secret: the flags, else (for `init`) the usual sources, else a double prompt.
    fn secret(&self, usual: Option<&SecretSource>) -> Result<Secret> {
        if self.new_password_file.is_some() || self.new_key_file.is_some() {
            return Ok(crate::keys::new_secret(
                self.new_password_file.as_deref(),
                self.new_key_file.as_deref(),
            )?);
        }
        match usual {
            Some(s) if s.is_configured() => Ok(s.secret("password for the new vault")?),
            _ => Ok(crate::keys::new_secret(None, None)?),
        }
    }
}

/// `vault init`.
pub(super) fn init(ctx: &mut Ctx, a: &InitArgs) -> Result<i32> {
    let root = &ctx.root;
    // Explicit sizes cut everything alike; the default chunks by kind of content (profiles).
    let params = if a.chunk_min.is_some() || a.chunk_avg.is_some() || a.chunk_max.is_some() {
        let d = ChunkerParams::default();
        let params = ChunkerParams {
            min_size: a.chunk_min.unwrap_or(d.min_size),
            avg_size: a.chunk_avg.unwrap_or(d.avg_size),
            max_size: a.chunk_max.unwrap_or(d.max_size),
            ..d
        };
        params.validate().map_err(Error::Invalid)?;
        Chunking::from(params)
    } else {
        Chunking::default()
    };
    let (cfg, key_id) = match a.encryption {
        EncryptionArg::None => Vault::init(root, params, None)?,
        EncryptionArg::Xchacha20Poly1305 => {
            let kdf = a.key.kdf()?;
            if root.join("config.json").exists() {
                // Before asking for a password that would not be used.
                return Err(Error::Invalid(format!(
                    "{} is already a vault",
                    root.display()
                )));
            }
            let secret = a.key.secret(Some(&ctx.secrets))?;
            Vault::init(root, params, Some((&secret, &kdf)))?
        }
    };
    if ctx.json {
        ctx.out
            .json(json!({"vault": ctx.root, "id": cfg.id, "key": key_id, "config": cfg}))?;
    } else {
        say!(
            ctx.out,
            "created vault {} at {}",
            &cfg.id[..8],
            ctx.root.display()
        );
        match &key_id {
            Some(k) => say!(
                ctx.out,
                "encrypted ({}); key {} in keys/. Losing every password and key file \
                 loses the data: keep one safe.",
                cfg.encryption,
                &k[..8]
            ),
            None => say!(ctx.out, "{UNENCRYPTED_WARNING}"),
        }
    }
    Ok(exit::OK)
}

/// `vault key add|list|remove|passwd`.
pub(super) fn key(ctx: &mut Ctx, k: KeyCommand) -> Result<i32> {
    let mode = match k {
        KeyCommand::List => LockMode::Shared,
        _ => LockMode::Exclusive,
    };
    let vault = ctx.open(mode)?;
    if !vault.config.is_encrypted() {
        return Err(Error::Invalid(
            "this vault is not encrypted (--encryption none): it has no keys".into(),
        ));
    }
    let record = |action: &str, id: &str| {
        vault.audit(&AuditRecord::new(action, None, "ok").with_detail(json!({"key": id})))
    };
    let out = &mut ctx.out;
    match k {
        KeyCommand::List => {
            let files = vault.key_files()?;
            let list: Vec<_> = files
                .iter()
                .map(|(_, f)| {
                    json!({"id": f.id().to_hex(), "kind": f.kind().as_str(),
                           "created": f.created(), "host": f.host(), "user": f.user(),
                           "current": vault.key_id() == Some(f.id().to_hex().as_str())})
                })
                .collect();
            if ctx.json {
                out.json(json!(list))?;
            } else {
                say!(
                    out,
                    "  {:<32}  {:<8}  {:<20}  user@host",
                    "id",
                    "kind",
                    "created"
                );
                for (_, f) in &files {
                    let current = vault.key_id() == Some(f.id().to_hex().as_str());
                    say!(
                        out,
                        "{} {:<32}  {:<8}  {:<20}  {}@{}",
                        if current { "*" } else { " " },
                        f.id().to_hex(),
                        f.kind().as_str(),
                        f.created(),
                        f.user(),
                        f.host()
                    );
                }
            }
        }
        KeyCommand::Add(a) => {
            let kdf = a.kdf()?;
            let secret = a.secret(None)?;
            let id = vault.add_key(&secret, &kdf)?;
            record("key-add", &id)?;
            if ctx.json {
                out.json(json!({"added": id}))?;
            } else {
                say!(out, "added key {id}");
            }
        }
        KeyCommand::Remove { id } => {
            let removed = vault.remove_key(&id)?;
            record("key-remove", &removed)?;
            if ctx.json {
                out.json(json!({"removed": removed}))?;
            } else {
                say!(out, "removed key {removed}");
            }
        }
        KeyCommand::Passwd(a) => {
            let kdf = a.kdf()?;
            let secret = a.secret(None)?;
            // The new key is durable before the old one goes: never zero keys.
            let added = vault.add_key(&secret, &kdf)?;
            let removed = vault.remove_current_key()?;
            record("key-passwd", &added)?;
            if ctx.json {
                out.json(json!({"added": added, "removed": removed}))?;
            } else {
                say!(out, "password changed: key {added} replaces key {removed}");
            }
        }
    }
    Ok(exit::OK)
}
