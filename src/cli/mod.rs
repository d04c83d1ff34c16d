//! The headless command line: parses arguments, calls the station service, prints events
//! and results (text, or JSON lines with `--json`). It holds no workflow logic of its own.

mod args;
mod audit;
mod fleet;
mod label;
mod output;
mod provision;
mod tools;

pub use args::Cli;

use crate::config::{self, Config};
use crate::domain::registration_id;
use crate::dps::publish;
use crate::dps::upload::UploadOptions;
use crate::error::{Error, ExitClass, Result};
use crate::station::{doctor, jobs};
use crate::store::{Status, Store};
use args::*;
use clap::Parser;
use output::Out;
use std::process::ExitCode;

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Out {
        json: cli.json,
        tty: std::io::IsTerminal::is_terminal(&std::io::stdout()),
    };
    match run(cli, out) {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            ExitCode::from(e.exit_class() as u8)
        }
    }
}

fn run(cli: Cli, out: Out) -> Result<ExitCode> {
    let config_path = cli.config.as_deref();
    let Some(command) = cli.command else {
        return window(config_path);
    };
    match command {
        Command::Provision(a) => provision::provision(&config::load(config_path)?, &a, out),
        Command::Simulate(a) => tools::simulate(config_path, &a, out),
        Command::Export(a) => export(&config::load(config_path)?, &a, out),
        Command::Upload(a) => upload(&config::load(config_path)?, &a, out),
        Command::List(a) => list(&config::load(config_path)?, &a, out),
        Command::DeriveKey(a) => derive_key(&config::load(config_path)?, &a, out),
        Command::Doctor => Ok(doctor_cmd(config_path, out)),
        Command::Ca(CaCommand::Init { dev }) => tools::ca_init(&dev, out),
        Command::Tpm(TpmCommand::Read {
            tcti,
            ek_type,
            roots,
        }) => tools::tpm_read(config_path, tcti, ek_type, roots, out),
        Command::Label(c) => label::run(&config::load(config_path)?, c, out),
        Command::Audit(c) => audit::run(config_path, c, out),
        Command::Batch(BatchCommand::Verify { path, key }) => audit::batch_verify(&path, key, out),
        Command::Fleet(c) => fleet::run(&config::load(config_path)?, c, out),
    }
}

/// No subcommand: the technician's window (when this build has one).
#[cfg(feature = "gui")]
fn window(config_path: Option<&std::path::Path>) -> Result<ExitCode> {
    crate::gui::run(config_path, crate::sim::opener())
}

#[cfg(not(feature = "gui"))]
fn window(_config_path: Option<&std::path::Path>) -> Result<ExitCode> {
    Err(Error::Usage(
        "this station was built without the window (--no-default-features); give a command, e.g. `station provision`".into(),
    ))
}

fn export(config: &Config, a: &ExportArgs, out: Out) -> Result<ExitCode> {
    if a.list {
        let store = Store::open(&config.database_path())?;
        for b in store.batches()? {
            out.emit(&b, || {
                format!("{}  {} enrollments  {}", b.id, b.count, b.created_at)
            });
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.out.is_none() && a.batch.is_none() {
        let store = Store::open(&config.database_path())?;
        for n in jobs::start_checks(config, &store)? {
            provision::notice(out, &n);
        }
    }
    let summary = match &a.batch {
        Some(id) => Some(jobs::export_again(
            config,
            id,
            a.out.as_deref(),
            &mut |e| out.event(&e),
        )?),
        None => jobs::export_new(config, a.out.as_deref(), &mut |e| out.event(&e))?,
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
    let mut emit = |e: crate::domain::Event| out.event(&e);
    let clean = if a.verify {
        let v = jobs::verify(config, a.endpoint.as_deref(), a.deep, &mut emit)?;
        // A device that tried to register and failed is a finding too.
        let r = if a.registrations {
            jobs::registrations(config, a.endpoint.as_deref(), &mut emit)?.failed
        } else {
            0
        };
        v.mismatched == 0 && r == 0
    } else if a.fleet {
        let opts = UploadOptions {
            dry_run: a.dry_run,
            update: a.update,
            manifests: None,
        };
        let f = jobs::upload_fleet(config, a.endpoint.as_deref(), &opts, &mut emit)?;
        fleet::upload_report(&f, out);
        let s = f.upload;
        s.conflicts == 0 && s.failed == 0
    } else {
        let opts = UploadOptions {
            dry_run: a.dry_run,
            update: a.update,
            manifests: None,
        };
        let s = jobs::upload(config, a.endpoint.as_deref(), &opts, &mut emit)?;
        s.conflicts == 0 && s.failed == 0 && s.refused_batches == 0
    };
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(ExitClass::Device as u8)
    })
}

fn doctor_cmd(config_path: Option<&std::path::Path>, out: Out) -> ExitCode {
    let (checks, worst) = doctor::report(config_path);
    for c in &checks {
        out.emit(c, || {
            let mut s = format!(
                "{} {:<12} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.check,
                c.detail
            );
            if let Some(f) = &c.fix {
                s.push_str(&format!("\n     fix: {f}"));
            }
            s
        });
    }
    match worst {
        None => ExitCode::SUCCESS,
        Some(class) => ExitCode::from(class as u8),
    }
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
    for p in publish::check(&store, &config.export_dir(), false)? {
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

pub(super) fn derive_key(config: &Config, a: &DeriveKeyArgs, out: Out) -> Result<ExitCode> {
    registration_id::validate(&a.registration_id)?;
    let keys = jobs::keys(config)?;
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
