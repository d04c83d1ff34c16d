//! The headless command line: parses arguments, runs library calls, prints results. It holds
//! no workflow logic of its own.

mod args;
pub mod doctor;
mod output;

pub use args::Cli;

use crate::attestation::registration_id;
use crate::attestation::symmetric::SymmetricKeySource;
use crate::config::{self, Config};
use crate::device::{self, sim};
use crate::dps::{enrollment::DpsOptions, export};
use crate::error::{Error, ExitClass, Result};
use crate::store::{Status, Store};
use crate::workflow::{self, DeviceInput, Permissions, Workflow};
use args::*;
use clap::Parser;
use output::Out;
use std::process::ExitCode;
use std::time::Duration;

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out { json: cli.json };
    match run(cli, out) {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            ExitCode::from(e.exit_class() as u8)
        }
    }
}

fn run(cli: Cli, out: Out) -> Result<ExitCode> {
    let Some(command) = cli.command else {
        // No subcommand: the technician's window.
        return crate::gui::run(cli.config.as_deref());
    };
    let config_path = cli.config.as_deref();
    match command {
        Command::Provision(a) => provision(&config::load(config_path)?, &a, out),
        Command::Simulate(a) => simulate(config_path, &a, out),
        Command::Export(a) => export_cmd(&config::load(config_path)?, &a, out),
        Command::Upload(a) => upload(&config::load(config_path)?, &a, out),
        Command::List(a) => list(&config::load(config_path)?, &a, out),
        Command::DeriveKey(a) => derive_key(&config::load(config_path)?, &a, out),
        Command::Doctor => Ok(doctor::run(config_path, out)),
        Command::Ca(CaCommand::Init { dev }) => ca_init(&dev, out),
        Command::Tpm(TpmCommand::Read {
            tcti,
            ek_type,
            roots,
        }) => tpm_read(config_path, tcti, ek_type, roots, out),
    }
}

fn tpm_read(
    config_path: Option<&std::path::Path>,
    tcti: Option<String>,
    ek_type: Option<String>,
    roots: Vec<std::path::PathBuf>,
    out: Out,
) -> Result<ExitCode> {
    use crate::attestation::tpm;
    use crate::config::{EkCertPolicy, TpmEkType};
    // Flags first; what is missing comes from [attestation.tpm] when a config is at hand.
    let config = if tcti.is_none() || ek_type.is_none() {
        config::load(config_path).ok()
    } else {
        None
    };
    let section = config.as_ref().and_then(|c| c.attestation.tpm.clone());
    let tcti = tcti
        .or_else(|| section.as_ref().and_then(|s| s.tcti.clone()))
        .ok_or_else(|| {
            Error::Usage("give --tcti (no [attestation.tpm] tcti is configured)".into())
        })?;
    let ek_type = match ek_type.as_deref() {
        Some("ecc-p256") => TpmEkType::EccP256,
        Some(_) => TpmEkType::Rsa2048,
        None => section.as_ref().map(|s| s.ek_type).unwrap_or_default(),
    };
    let roots = if roots.is_empty() {
        match (&section, &config) {
            (Some(s), Some(c)) => tpm::load_roots(&s.ek_roots, |p| c.resolve(p))?,
            _ => Vec::new(),
        }
    } else {
        tpm::load_roots(&roots, |p| p.to_path_buf())?
    };
    let reading = tpm::read_ek_tcti(&tcti, ek_type, false, true, true)?;
    let policy = if roots.is_empty() {
        EkCertPolicy::Off
    } else {
        EkCertPolicy::Warn
    };
    let (material, _) = tpm::check(&reading, policy, &roots)?;
    let cert_status = if roots.is_empty() && reading.certificate.is_some() {
        "present, not verified (no roots given)".to_string()
    } else if roots.is_empty() {
        "missing".to_string()
    } else {
        material.ek_cert_status.clone()
    };
    let id = tpm::registration_id(&reading.public);
    out.emit(
        &serde_json::json!({
            "endorsement_key": material.endorsement_key,
            "storage_root_key": material.storage_root_key,
            "registration_id": id,
            "ek_origin": reading.origin,
            "ek_certificate": cert_status,
            "ek_certificate_issuer": material.ek_cert_issuer,
        }),
        || {
            format!(
                "TPM at {tcti}\n  EK ({}, {} bytes TPM2B_PUBLIC): {}\n  registration ID: {id}\n  EK certificate: {cert_status}{}",
                reading.origin,
                reading.public.len(),
                material.endorsement_key,
                material
                    .ek_cert_issuer
                    .as_deref()
                    .map(|i| format!(" (issuer {i})"))
                    .unwrap_or_default()
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

fn ca_init(dir: &std::path::Path, out: Out) -> Result<ExitCode> {
    let ca = crate::attestation::x509::init_dev_ca(dir)?;
    out.emit(&ca, || {
        format!(
            "development CA created (NOT for production):\n  root          {}\n  intermediate  {}\n\
             In station.toml:\n  [attestation]\n  mode = \"x509\"\n  [attestation.x509]\n  \
             ca_cert = \"{}\"\n  ca_key = \"{}\"\n  chain = [\"{}\"]",
            ca.root_cert.display(),
            ca.ca_cert.display(),
            ca.ca_cert.display(),
            ca.ca_key.display(),
            ca.root_cert.display()
        )
    });
    Ok(ExitCode::SUCCESS)
}

fn provision(config: &Config, a: &ProvisionArgs, out: Out) -> Result<ExitCode> {
    if a.serial.is_some() && a.count > 1 {
        return Err(Error::Usage(
            "--serial names one device; use it without --count".into(),
        ));
    }
    let mut workflow = Workflow::new(config)?;
    for w in workflow.warnings() {
        out.emit(
            &serde_json::json!({"event": "warning", "message": w}),
            || format!("warning: {w}"),
        );
    }
    report_unfinished(workflow.store(), out)?;
    republish(config, workflow.store(), out)?;
    let interrupt = workflow::Interrupt::install()?;
    workflow.set_interrupt(interrupt.clone());
    let mut fixture = device::connect(config, a.port.as_deref())?;
    let input = DeviceInput {
        scanned_serial: a.serial.clone(),
        operator: a.operator.clone(),
        permissions: Permissions {
            overwrite_identity: a.allow_overwrite,
            rekey: a.allow_rekey,
        },
    };
    let (mut passed, mut failed) = (0u32, 0u32);
    let mut previous: Option<String> = None;
    let mut stopped: Option<Error> = None;
    for i in 0..a.count {
        if interrupt.requested().is_some() {
            break;
        }
        if i > 0
            && let Some(prev) = &previous
        {
            let wait = Duration::from_secs(config.serial.next_device_timeout_s);
            if let Err(e) =
                workflow::wait_for_next_device(&mut fixture.link, prev, wait, &interrupt)
            {
                if !matches!(e, Error::Interrupted { .. }) {
                    out.error(&e);
                }
                break;
            }
        }
        let result = workflow.provision(&mut fixture.link, &input, &mut |e| out.event(&e));
        match result {
            Ok(o) => {
                passed += 1;
                previous = Some(o.serial);
            }
            Err(e) => {
                failed += 1;
                previous = None;
                // The station cannot go on: no database, or no port (an unplugged adapter
                // would fail every next device again).
                if matches!(
                    e,
                    Error::Database { .. }
                        | Error::Disconnected { .. }
                        | Error::Io { .. }
                        | Error::Interrupted { .. }
                ) {
                    stopped = Some(e);
                    break;
                }
            }
        }
    }
    let missing = a.count - passed - failed;
    let counts = workflow.store().counts()?;
    let signal = interrupt.requested();
    out.emit(
        &serde_json::json!({"event": "summary", "passed": passed, "failed": failed, "not_run": missing, "unexported": counts.provisioned, "interrupted_by": signal}),
        || {
            format!(
                "{passed} passed, {failed} failed{}{}",
                if missing > 0 { format!(", {missing} not run") } else { String::new() },
                signal.map(|s| format!(" (stopped by {s})")).unwrap_or_default()
            )
        },
    );
    match stopped {
        // The summary is out; the process exits with the error's class.
        Some(e @ Error::Database { .. }) => Err(e),
        _ if signal.is_some() => Ok(ExitCode::from(ExitClass::Interrupted as u8)),
        _ if failed == 0 && missing == 0 => Ok(ExitCode::SUCCESS),
        _ => Ok(ExitCode::from(ExitClass::Device as u8)),
    }
}

/// Re-create the files of batches committed but never published (a crash between the commit
/// and the rename) and remove orphan temporary export files; say what could not be done.
fn republish(config: &Config, store: &Store, out: Out) -> Result<()> {
    let keys = load_keys(config)?;
    let done = crate::dps::publish::repair(store, keys.as_ref(), &config.export_dir())?;
    for batch in &done.recreated {
        out.emit(
            &serde_json::json!({"event": "batch_recreated", "batch": batch}),
            || format!("warning: batch {batch} was recorded but its files were missing; re-created them"),
        );
    }
    for path in &done.removed {
        out.emit(
            &serde_json::json!({"event": "temporary_file_removed", "path": path}),
            || {
                format!(
                    "removed {} left by an export that did not finish",
                    path.display()
                )
            },
        );
    }
    for (p, why) in &done.failed {
        out.emit(
            &serde_json::json!({"event": "batch_unpublished", "batch": p.batch, "file": p.file, "problem": p.problem, "error": why, "fix": p.fix()}),
            || format!(
                "warning: batch {}: {} is {}; re-creating it failed ({why}); fix that, then run `{}`",
                p.batch,
                p.file.display(),
                p.problem,
                p.fix()
            ),
        );
    }
    Ok(())
}

/// Say at start which devices a previous run left unfinished (recorded, never verified).
fn report_unfinished(store: &Store, out: Out) -> Result<()> {
    let pending = store.list(Some(Status::Pending), None, 20, 0)?;
    if pending.is_empty() {
        return Ok(());
    }
    let total = store.counts()?.pending;
    let serials: Vec<&str> = pending.iter().map(|e| e.device_serial.as_str()).collect();
    out.emit(
        &serde_json::json!({"event": "unfinished", "count": total, "serials": serials}),
        || {
            format!(
                "warning: {total} device(s) were left unfinished by an earlier run (recorded, never verified): {}{} — put each on the fixture again; the station finishes it from what the device holds",
                serials.join(", "),
                if total as usize > serials.len() { ", …" } else { "" }
            )
        },
    );
    Ok(())
}

fn simulate(config_path: Option<&std::path::Path>, a: &SimulateArgs, out: Out) -> Result<ExitCode> {
    // The simulator stands alone: it only reads station.toml for defaults when no --flash is
    // given.
    let config = match &a.flash {
        Some(_) => None,
        None => Some(config::load(config_path)?),
    };
    let flash = match (&a.flash, &config) {
        (Some(f), _) => f.clone(),
        (None, Some(c)) => c.resolve(&c.simulator.flash_dir),
        (None, None) => unreachable!("config is loaded when --flash is absent"),
    };
    let mut sc = sim::SimConfig::new(flash);
    if let Some(c) = &config {
        sc.serial_prefix = c.simulator.serial_prefix.clone();
        sc.baud = c.simulator.baud;
    }
    if let Some(p) = &a.serial_prefix {
        sc.serial_prefix = p.clone();
    }
    if let Some(b) = a.baud {
        sc.baud = b;
    }
    sc.devices = a.devices;
    sc.first = a.first.max(1);
    sc.max_body = a.max_body;
    sc.firmware = a.firmware.clone();
    sc.fault_device = a.fault_device;
    sc.tpm = a.tpm.clone();
    if let Some(bits) = a.capabilities {
        sc.capabilities = bits;
    }
    for f in &a.faults {
        sc.faults.add(f).map_err(Error::Usage)?;
    }
    let flash_dir = sc.flash_dir.clone();
    let handle = sim::spawn(sc).map_err(|e| Error::PortUnavailable {
        port: "pty".into(),
        message: format!("cannot create a pseudo-terminal: {e}"),
    })?;
    out.emit(
        &serde_json::json!({"event": "simulator_ready", "port": handle.path, "flash": flash_dir}),
        || handle.path.clone(),
    );
    if !out.json {
        eprintln!(
            "simulated fixture on {} (flash in {}); Ctrl-C to stop",
            handle.path,
            flash_dir.display()
        );
    }
    let exit = handle.wait().map_err(|e| Error::PortUnavailable {
        port: "pty".into(),
        message: e.to_string(),
    })?;
    if exit == sim::SimExit::Disconnected {
        eprintln!("simulated device disconnected (fault injected)");
    }
    Ok(ExitCode::SUCCESS)
}

fn load_keys(config: &Config) -> Result<Option<SymmetricKeySource>> {
    SymmetricKeySource::from_config(config)
}

fn export_cmd(config: &Config, a: &ExportArgs, out: Out) -> Result<ExitCode> {
    let mut store = Store::open(&config.database_path())?;
    if a.list {
        for b in store.batches()? {
            out.emit(&b, || {
                format!("{}  {} enrollments  {}", b.id, b.count, b.created_at)
            });
        }
        return Ok(ExitCode::SUCCESS);
    }
    let keys = load_keys(config)?;
    let dir = a.out.clone().unwrap_or_else(|| config.export_dir());
    if a.out.is_none() && a.batch.is_none() {
        republish(config, &store, out)?;
    }
    let summary = match &a.batch {
        Some(id) => Some(export::export_again(&store, id, keys.as_ref(), &dir)?),
        None => export::export_new(
            &mut store,
            &config.station.id,
            &DpsOptions::from_config(&config.dps),
            keys.as_ref(),
            &dir,
        )?,
    };
    match summary {
        Some(s) => out.emit(&s, || {
            format!(
                "batch {}: {} enrollments\n  {}\n  {} ({} bulk operations)",
                s.batch,
                s.count,
                s.csv.display(),
                s.json.display(),
                s.bulk_operations
            )
        }),
        None => out.emit(&serde_json::json!({"event": "nothing_to_export"}), || {
            "nothing to export: every provisioned enrollment is already in a batch".into()
        }),
    }
    Ok(ExitCode::SUCCESS)
}

fn upload(config: &Config, a: &UploadArgs, out: Out) -> Result<ExitCode> {
    use crate::dps::upload::{self, Dps, UploadEvent, UploadOptions};
    let section = config.upload.as_ref().ok_or(Error::Upload {
        code: "upload.not_configured",
        message: "station.toml has no [upload] section".into(),
    })?;
    let mut store = Store::open(&config.database_path())?;
    let keys = load_keys(config)?;
    let mut dps = Dps::new(config, section, a.endpoint.as_deref())?;
    let mut emit = |e: UploadEvent| {
        out.emit(&e, || match &e {
            UploadEvent::UploadStarted { endpoint } => format!("uploading to {endpoint}"),
            UploadEvent::Request { method, url, authorization, body } => format!(
                "{method} {url}\nAuthorization: {authorization}\n{}",
                serde_json::to_string_pretty(body).unwrap_or_default()
            ),
            UploadEvent::Bulk { request, mode, enrollments, uploaded, conflicts, failed } => format!(
                "[{request:>5}] {mode}: {enrollments} enrollments, {uploaded} accepted, {conflicts} conflicts, {failed} failed"
            ),
            UploadEvent::Retry { reason, wait_ms, attempt, .. } => {
                format!("retry {attempt} in {wait_ms} ms ({reason})")
            }
            UploadEvent::Conflict { registration_id, error_code, error_status } => format!(
                "CONFLICT {registration_id}: DPS holds a different attestation ({} {}); --update replaces it",
                error_code.map(|c| c.to_string()).unwrap_or_default(),
                error_status.as_deref().unwrap_or("")
            ),
            UploadEvent::ItemFailed { registration_id, error_code, error_status } => format!(
                "FAILED {registration_id}: {} {}",
                error_code.map(|c| c.to_string()).unwrap_or_default(),
                error_status.as_deref().unwrap_or("")
            ),
            UploadEvent::Mismatch { registration_id, problem } => {
                format!("MISMATCH {registration_id}: {problem}")
            }
            UploadEvent::UploadFinished(s) => format!(
                "{} uploaded, {} conflicts, {} failed, in {} requests",
                s.uploaded, s.conflicts, s.failed, s.requests
            ),
            UploadEvent::VerifyFinished(s) => format!(
                "{} checked: {} match, {} mismatch, in {} requests",
                s.checked, s.matched, s.mismatched, s.requests
            ),
        })
    };
    if a.verify {
        let s = upload::verify(&mut store, &mut dps, keys.as_ref(), &mut emit)?;
        return Ok(if s.mismatched == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(ExitClass::Device as u8)
        });
    }
    let opts = UploadOptions {
        dry_run: a.dry_run,
        update: a.update,
    };
    let s = upload::upload(&mut store, &mut dps, keys.as_ref(), &opts, &mut emit)?;
    Ok(if s.conflicts == 0 && s.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(ExitClass::Device as u8)
    })
}

fn list(config: &Config, a: &ListArgs, out: Out) -> Result<ExitCode> {
    let store = Store::open(&config.database_path())?;
    let status = a.status.as_deref().and_then(Status::parse);
    for e in store.list(status, a.search.as_deref(), a.limit, a.offset)? {
        out.emit(&e, || {
            let flag = match e.status {
                Status::Pending => "  <- unfinished: re-run this device",
                _ => "",
            };
            format!(
                "{:<12} {:<32} {:<16} {:<20} {}{}",
                e.status.as_str(),
                e.registration_id,
                e.device_serial,
                e.updated_at,
                e.error_code.as_deref().unwrap_or(""),
                flag
            )
        });
    }
    for p in crate::dps::publish::check(&store, &config.export_dir(), false)? {
        out.emit(
            &serde_json::json!({"event": "batch_unpublished", "batch": p.batch, "file": p.file, "problem": p.problem, "fix": p.fix()}),
            || format!("warning: batch {}: {} is {}; run `{}`", p.batch, p.file.display(), p.problem, p.fix()),
        );
    }
    let c = store.counts()?;
    out.emit(&serde_json::json!({"event": "counts", "counts": c}), || {
        format!(
            "{} provisioned (not exported), {} exported, {} failed, {} pending",
            c.provisioned, c.exported, c.failed, c.pending
        )
    });
    Ok(ExitCode::SUCCESS)
}

fn derive_key(config: &Config, a: &DeriveKeyArgs, out: Out) -> Result<ExitCode> {
    registration_id::validate(&a.registration_id)?;
    let keys = load_keys(config)?;
    let group = keys
        .as_ref()
        .and_then(|k| k.primary.as_ref())
        .ok_or_else(|| Error::Secret {
            what: "group key".into(),
            message: "no group key is configured in [attestation.symmetric]".into(),
        })?;
    let key = group.derive(&a.registration_id);
    out.emit(
        &serde_json::json!({"registration_id": a.registration_id, "derived_key": key}),
        || key.clone(),
    );
    Ok(ExitCode::SUCCESS)
}
