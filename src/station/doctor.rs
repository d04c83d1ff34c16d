//! `station doctor` (and the window's settings): every check a station needs before a shift, each with what to fix.

use crate::attestation;
use crate::config::{self, Config};
use crate::device;
use crate::error::{Error, ExitClass};
use crate::store::Store;
use serde::Serialize;
use std::path::Path;

/// One doctor check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every check for a loaded configuration (also shown in the GUI's settings).
pub fn checks(c: &Config) -> Vec<Check> {
    checks_for(c)
        .into_iter()
        .map(|(check, r)| match r {
            Ok(detail) => pass(check, detail),
            Err(e) => fail(check, &e),
        })
        .collect()
}

fn pass(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(check: &'static str, e: &Error) -> Check {
    Check {
        check,
        ok: false,
        detail: format!("[{}] {e}", e.code()),
        fix: Some(e.remedy().to_string()),
    }
}

/// Load the configuration at `config_path` and run every check; the worst exit class of
/// the failed ones (`None` when all pass).
pub fn report(config_path: Option<&Path>) -> (Vec<Check>, Option<ExitClass>) {
    let mut checks = Vec::new();
    let mut worst: Option<ExitClass> = None;
    let config = match config::load(config_path) {
        Ok(c) => {
            checks.push(pass(
                "config",
                format!("{} loads and validates", c.source_path.display()),
            ));
            Some(c)
        }
        Err(e) => {
            worst = Some(e.exit_class());
            checks.push(fail("config", &e));
            None
        }
    };
    for (check, result) in config.as_ref().map(checks_for).unwrap_or_default() {
        match result {
            Ok(detail) => checks.push(pass(check, detail)),
            Err(e) => {
                if worst != Some(ExitClass::Usage) {
                    worst = Some(e.exit_class());
                }
                checks.push(fail(check, &e));
            }
        }
    }
    (checks, worst)
}

fn checks_for(c: &Config) -> Vec<(&'static str, Result<String, Error>)> {
    let mut v = Vec::new();
    v.push(("credential", credential(c)));
    v.push(("database", database(c)));
    v.push(("audit", audit(c)));
    let dir = c.export_dir();
    v.push(("exported batches", exported_batches(c)));
    v.push((
        "export dir",
        std::fs::create_dir_all(&dir)
            .and_then(|()| tempfile_in(&dir))
            .map(|()| format!("{} is writable", dir.display()))
            .map_err(|source| Error::File {
                what: "export directory not writable:",
                path: dir.clone(),
                source,
            }),
    ));
    // Every fixture's port (one line each on a gang).
    let fixtures = c.fixtures();
    let several = fixtures.len() > 1;
    for f in &fixtures {
        let s = &f.config.serial;
        let name = |t: String| {
            if several {
                format!("fixture {}: {t}", f.id)
            } else {
                t
            }
        };
        let result = match s.port.as_str() {
            "sim" => Ok(name("built-in simulator (port = \"sim\")".to_string())),
            p => device::resolve_port(&f.config, p)
                .and_then(|path| {
                    device::transport::SerialTransport::open(&path, s.baud)
                        .map(|_| format!("{path} opens at {} baud", s.baud))
                })
                .map(name)
                .map_err(|e| match e {
                    Error::PortUnavailable { port, message } if several => Error::PortUnavailable {
                        port: format!("{port} (fixture {})", f.id),
                        message,
                    },
                    other => other,
                }),
        };
        v.push(("port", result));
    }
    v
}

/// The audit trail verifies end to end; the doctor run is logged.
fn audit(c: &Config) -> Result<String, Error> {
    let store = Store::open(&c.database_path())?;
    let r = store.verify_audit(None, None)?;
    let _ = store.audit(
        "doctor",
        "",
        &serde_json::json!({"audit_intact": r.first_break.is_none()}),
    );
    match r.first_break {
        None => Ok(format!(
            "audit trail intact: {} entries, {} signed heads, {} rows checked",
            r.entries, r.signatures, r.rows_checked
        )),
        Some(b) => Err(Error::Audit {
            code: crate::error::ErrorCode::AuditBroken,
            message: format!(
                "audit trail broken{}: {}",
                b.seq.map(|s| format!(" at entry {s}")).unwrap_or_default(),
                b.problem
            ),
        }),
    }
}

/// The credential source loads (and a TCTI-reached TPM answers).
fn credential(c: &Config) -> Result<String, Error> {
    attestation::source_from_config(c).map(|s| {
    let mut d = match s.kind() {
        crate::domain::AttestationKind::SymmetricKey => "symmetric keys load".to_string(),
        crate::domain::AttestationKind::Tpm => match &c.attestation.tpm {
            Some(t) => match t.tcti.as_deref().filter(|_| t.source == crate::config::TpmReach::Tcti) {
                Some(tcti) => match attestation::tpm::probe(tcti) {
                    Ok(()) => format!("TPM at `{tcti}` answers; EK root bundle loads"),
                    Err(e) => format!("EK root bundle loads; warning: [{}] {e}", e.code()),
                },
                None => "EK root bundle loads; the device reports its EK over serial".to_string(),
            },
            None => String::new(),
        },
        crate::domain::AttestationKind::X509 => {
            "station CA loads: key matches, CA with keyCertSign, valid beyond the device certificates, chain verifies"
                .to_string()
        }
    };
    for w in s.warnings() {
        d.push_str(&format!("; warning: {w}"));
    }
    d
})
}

/// The database opens, is writable, and what it holds.
fn database(c: &Config) -> Result<String, Error> {
    Store::open(&c.database_path()).and_then(|mut s| {
        s.check_writable()?;
        let counts = s.counts()?;
        let mut d = format!(
            "{} (schema v{}): {} provisioned not exported, {} exported",
            s.path(),
            s.schema_version()?,
            counts.provisioned,
            counts.exported
        );
        if counts.pending > 0 {
            d.push_str(&format!(
                "; {} unfinished (pending) devices: re-run them",
                counts.pending
            ));
        }
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(c.database_path())
                && m.permissions().mode() & 0o007 != 0
            {
                d.push_str(&format!(
                    "; warning: readable by every account (mode {:o}): chmod o-rwx it",
                    m.permissions().mode() & 0o777
                ));
            }
        }
        Ok(d)
    })
}

/// Every batch's files as exported (size and SHA-256), and no temporary files left behind.
fn exported_batches(c: &Config) -> Result<String, Error> {
    use crate::dps::publish;
    let dir = c.export_dir();
    let store = Store::open(&c.database_path())?;
    let batches = store.batches()?.len();
    let problems = publish::check(&store, &dir, true)?;
    let orphans = publish::orphans(&dir);
    if let Some(p) = problems.first() {
        return Err(Error::File {
            what: "exported batch file not as exported:",
            path: p.file.clone(),
            source: std::io::Error::other(format!(
                "{} ({} batch file(s) affected); run `{}` for each batch (the station also does it at start)",
                p.problem,
                problems.len(),
                p.fix()
            )),
        });
    }
    if let Some(o) = orphans.first() {
        return Err(Error::File {
            what: "temporary export file left behind (it may hold keys):",
            path: o.clone(),
            source: std::io::Error::other(
                "an export did not finish; `station export` or `station provision` removes it",
            ),
        });
    }
    Ok(format!(
        "{batches} batch(es) in {}: every file present with the SHA-256 recorded at export",
        dir.display()
    ))
}

fn tempfile_in(dir: &Path) -> std::io::Result<()> {
    let p = dir.join(format!(".doctor-{}", std::process::id()));
    std::fs::write(&p, b"ok")?;
    std::fs::remove_file(p)
}
