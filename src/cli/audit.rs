//! `station audit key|verify` and `station batch verify`.

use super::args::AuditCommand;
use super::output::Out;
use crate::config;
use crate::dps::manifest;
use crate::error::{Error, ErrorCode, Result};
use crate::store::Store;
use crate::store::audit_key::{AuditKey, parse_public_key};
use std::path::Path;
use std::process::ExitCode;

/// A public key given on the command line: a file holding it, or the key itself.
fn public_key(arg: Option<String>) -> Result<Option<Vec<u8>>> {
    let Some(a) = arg else { return Ok(None) };
    let text = std::fs::read_to_string(&a).unwrap_or(a.clone());
    parse_public_key(&text).map(Some).ok_or_else(|| {
        Error::Usage(format!(
            "--key: `{a}` is neither a PEM public key file nor a base64 Ed25519 key (`station audit key` prints one)"
        ))
    })
}

pub(super) fn run(config_path: Option<&Path>, c: AuditCommand, out: Out) -> Result<ExitCode> {
    let config = config::load(config_path)?;
    let db = config.database_path();
    match c {
        AuditCommand::Key => {
            let key = AuditKey::load_or_create(&db)?;
            out.emit(
                &serde_json::json!({"event": "audit_key", "public_key": key.public_base64(), "pem": key.public_pem(), "file": AuditKey::path_for(&db)}),
                || key.public_pem().trim_end().to_string(),
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { from, key } => {
            let key = public_key(key)?;
            let store = Store::open(&db)?;
            let r = store.verify_audit(from.as_deref(), key.as_deref())?;
            let verdict = match &r.first_break {
                None => "intact".to_string(),
                Some(b) => format!(
                    "BROKEN{}: {}",
                    b.seq.map(|s| format!(" at entry {s}")).unwrap_or_default(),
                    b.problem
                ),
            };
            out.emit(&r, || {
                format!(
                    "audit trail {verdict}\n  {} entries, {} signed heads, {} rows checked{}",
                    r.entries,
                    r.signatures,
                    r.rows_checked,
                    r.head
                        .as_ref()
                        .map(|(s, h)| format!("; head {s} {h}"))
                        .unwrap_or_default()
                )
            });
            if let Some(b) = r.first_break {
                let e = Error::Audit {
                    code: ErrorCode::AuditBroken,
                    message: b.problem,
                };
                out.error(&e);
                return Ok(ExitCode::from(e.exit_class() as u8));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) fn batch_verify(path: &Path, key: Option<String>, out: Out) -> Result<ExitCode> {
    let key = public_key(key)?;
    let found = manifest::manifests_at(path)?;
    if found.is_empty() {
        return Err(Error::Usage(format!(
            "no batch manifest (*.manifest.json) at {}",
            path.display()
        )));
    }
    let mut bad = 0;
    for m in found {
        let c = manifest::check(&m, key.as_deref());
        bad += usize::from(c.problem.is_some());
        out.emit(&c, || match &c.problem {
            None => format!("ok    {} ({} enrollments)", c.batch, c.count),
            Some(p) => format!("FAIL  {}: {p}", c.manifest.display()),
        });
    }
    if key.is_none() && !out.json {
        eprintln!(
            "note: no --key given: the files match their manifests, but who signed them is not checked"
        );
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::error::ExitClass::Device as u8)
    })
}
