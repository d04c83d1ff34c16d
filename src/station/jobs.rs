//! The station's work besides the fixture: start-of-run checks, export, upload and
//! verification. Each is a plain function (the command line calls them in turn); [`Jobs`] runs
//! them on a thread of their own for the window, so a slow network never holds up a fixture.

use super::doctor::{self, Check};
use crate::attestation::symmetric::SymmetricKeySource;
use crate::config::Config;
use crate::domain::event::RegistrationState;
use crate::domain::{Event, Status};
use crate::dps::export::{self, ExportSummary};
use crate::dps::upload::{
    self, Dps, RegistrationSummary, UploadOptions, UploadSummary, VerifyOptions, VerifySummary,
};
use crate::dps::{enrollment::DpsOptions, publish};
use crate::error::{Error, ErrorCode, Result};
use crate::store::Store;
use serde_json::json;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};

/// Something the technician or engineer must know at start, in words and as a JSON event.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The JSON form (with its `event` name).
    pub json: serde_json::Value,
    pub text: String,
    /// Something to act on (as opposed to a report of what was tidied).
    pub warning: bool,
}

/// The group keys an export needs to re-derive keys (none outside symmetric mode).
pub fn keys(config: &Config) -> Result<Option<SymmetricKeySource>> {
    SymmetricKeySource::from_config(config)
}

/// Log in the audit trail that the station started `what` (a command, the window): the
/// configuration's SHA-256, the fingerprints of the keys in use, and `detail` (e.g. the
/// permissions granted).
pub fn audit_start(
    config: &Config,
    store: &Store,
    what: &str,
    detail: serde_json::Value,
) -> Result<()> {
    let sha = |p: &Path| {
        std::fs::read(p)
            .map(|b| crate::domain::hex(&<sha2::Sha256 as sha2::Digest>::digest(&b)))
            .unwrap_or_else(|e| format!("unreadable: {e}"))
    };
    let mut keys_in_use = json!({});
    if let Ok(Some(k)) = keys(config) {
        keys_in_use["group_key"] = json!(k.primary.as_ref().map(|g| g.id()));
        keys_in_use["secondary_group_key"] = json!(k.secondary.as_ref().map(|g| g.id()));
    }
    if let Some(x) = &config.attestation.x509 {
        keys_in_use["ca_cert_sha256"] = json!(sha(&config.resolve(&x.ca_cert)));
    }
    if let Some(t) = &config.attestation.tpm {
        let roots: Vec<String> = t.ek_roots.iter().map(|r| sha(&config.resolve(r))).collect();
        keys_in_use["ek_roots_sha256"] = json!(roots);
    }
    store.audit(
        "station.start",
        what,
        &json!({
            "config": config.source_path,
            "config_sha256": sha(&config.source_path),
            "keys": keys_in_use,
            "detail": detail,
        }),
    )
}

/// Devices an earlier run left unfinished, and batches committed but never published
/// (re-created), orphan temporary export files (removed).
pub fn start_checks(config: &Config, store: &Store) -> Result<Vec<Notice>> {
    let mut notices = unfinished(store)?;
    let done = publish::repair(store, || keys(config), &config.export_dir())?;
    for batch in &done.recreated {
        notices.push(Notice {
            json: json!({"event": "batch_recreated", "batch": batch}),
            text: format!("batch {batch} was recorded but its files were missing; re-created them"),
            warning: true,
        });
    }
    for path in &done.removed {
        notices.push(Notice {
            json: json!({"event": "temporary_file_removed", "path": path}),
            text: format!(
                "removed {} left by an export that did not finish",
                path.display()
            ),
            warning: false,
        });
    }
    for (p, why) in &done.failed {
        notices.push(Notice {
            json: json!({"event": "batch_unpublished", "batch": p.batch, "file": p.file, "problem": p.problem, "error": why, "fix": p.fix()}),
            text: format!(
                "batch {}: {} is {}; re-creating it failed ({why}); fix that, then run `{}`",
                p.batch,
                p.file.display(),
                p.problem,
                p.fix()
            ),
            warning: true,
        });
    }
    Ok(notices)
}

/// Devices recorded but never verified (a crash, an unplugged device).
fn unfinished(store: &Store) -> Result<Vec<Notice>> {
    let pending = store.list(Some(Status::Pending), None, 20, 0)?;
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let total = store.counts()?.pending;
    let serials: Vec<&str> = pending.iter().map(|e| e.device_serial.as_str()).collect();
    Ok(vec![Notice {
        json: json!({"event": "unfinished", "count": total, "serials": serials}),
        text: format!(
            "{total} device(s) were left unfinished by an earlier run (recorded, never verified): {}{} — put each on the fixture again; the station finishes it from what the device holds",
            serials.join(", "),
            if total as usize > serials.len() {
                ", …"
            } else {
                ""
            }
        ),
        warning: true,
    }])
}

/// [`start_checks`] on the configured database, as lines for the window.
fn start_notices(config: &Config) -> Vec<String> {
    let checked = Store::open(&config.database_path()).and_then(|s| {
        audit_start(config, &s, "window", json!({}))?;
        start_checks(config, &s)
    });
    match checked {
        Ok(notices) => notices.into_iter().map(|n| n.text).collect(),
        Err(e) => vec![format!(
            "the start-of-run checks failed: [{}] {e}; {}",
            e.code(),
            e.remedy()
        )],
    }
}

/// Export a new batch of every provisioned enrollment not yet exported, into `dir` (default:
/// the configured export directory); `None` when there is nothing to export.
pub fn export_new(
    config: &Config,
    dir: Option<&Path>,
    progress: &mut dyn FnMut(Event),
) -> Result<Option<ExportSummary>> {
    let mut store = Store::open(&config.database_path())?;
    let keys = keys(config)?;
    let dir = dir.map_or_else(|| config.export_dir(), Path::to_path_buf);
    export::export_new(
        &mut store,
        &config.station.id,
        &DpsOptions::from_config(&config.dps),
        keys.as_ref(),
        &dir,
        progress,
    )
}

/// Write batch `id` again into `dir` (default: the export directory).
pub fn export_again(
    config: &Config,
    id: &str,
    dir: Option<&Path>,
    progress: &mut dyn FnMut(Event),
) -> Result<ExportSummary> {
    let store = Store::open(&config.database_path())?;
    let keys = keys(config)?;
    let dir = dir.map_or_else(|| config.export_dir(), Path::to_path_buf);
    export::export_again(&store, id, keys.as_ref(), &dir, progress)
}

/// The DPS client `[upload]` describes, and its query page size.
fn dps(config: &Config, endpoint: Option<&str>) -> Result<(Dps, u32)> {
    let section = config.upload.as_ref().ok_or(Error::Upload {
        code: ErrorCode::UploadNotConfigured,
        message: "station.toml has no [upload] section".into(),
    })?;
    Ok((
        Dps::new(config, section, endpoint)?,
        section.query_page_size,
    ))
}

/// Upload every exported enrollment DPS does not hold yet.
pub fn upload(
    config: &Config,
    endpoint: Option<&str>,
    options: &UploadOptions,
    emit: &mut dyn FnMut(Event),
) -> Result<UploadSummary> {
    if config
        .fleet
        .as_ref()
        .is_some_and(|f| f.uploads == crate::config::FleetUploads::Fleet)
    {
        return Err(Error::Upload {
            code: ErrorCode::UploadFleetOwns,
            message: "[fleet] uploads = \"fleet\": this station's enrollments are uploaded centrally; run `station upload --fleet` (from any station or the back office) instead".into(),
        });
    }
    let (mut dps, page_size) = dps(config, endpoint)?;
    let mut store = Store::open(&config.database_path())?;
    let keys = keys(config)?;
    let options = UploadOptions {
        manifests: Some(config.export_dir()),
        ..options.clone()
    };
    let summary = upload::upload(
        &mut store,
        &mut dps,
        keys.as_ref(),
        &options,
        page_size,
        emit,
    )?;
    if !options.dry_run {
        store.audit("upload", dps.base(), &json!(summary))?;
        store.sign_audit_head("upload")?;
    }
    Ok(summary)
}

/// Upload every station's exported enrollments DPS does not hold yet, from this host
/// (`station upload --fleet`, docs/fleet.md).
pub fn upload_fleet(
    config: &Config,
    endpoint: Option<&str>,
    options: &UploadOptions,
    emit: &mut dyn FnMut(Event),
) -> Result<crate::fleet::upload::FleetUploadSummary> {
    crate::fleet::section(config)?;
    let (mut dps, page_size) = dps(config, endpoint)?;
    let keys = keys(config)?;
    let summary = crate::fleet::upload::upload_fleet(
        config,
        &mut dps,
        keys.as_ref(),
        options,
        page_size,
        emit,
    )?;
    if !options.dry_run {
        // This host's own audit trail records the run, as `station upload` does.
        let store = Store::open(&config.database_path())?;
        store.audit("fleet_upload", dps.base(), &json!(summary))?;
        store.sign_audit_head("fleet_upload")?;
    }
    Ok(summary)
}

/// Read back every uploaded enrollment from DPS and compare (`deep`: every attestation too).
pub fn verify(
    config: &Config,
    endpoint: Option<&str>,
    deep: bool,
    emit: &mut dyn FnMut(Event),
) -> Result<VerifySummary> {
    let (mut dps, page_size) = dps(config, endpoint)?;
    let mut store = Store::open(&config.database_path())?;
    let opts = VerifyOptions { deep, page_size };
    upload::verify(&mut store, &mut dps, keys(config)?.as_ref(), opts, emit)
}

/// Read every uploaded device's registration state from DPS: did the devices come up?
pub fn registrations(
    config: &Config,
    endpoint: Option<&str>,
    emit: &mut dyn FnMut(Event),
) -> Result<RegistrationSummary> {
    let (mut dps, _) = dps(config, endpoint)?;
    let mut store = Store::open(&config.database_path())?;
    upload::registrations(&mut store, &mut dps, emit)
}

/// One device's registration state, read from DPS now and recorded (`None`: the station has
/// not uploaded its enrollment).
pub fn registration(config: &Config, registration_id: &str) -> Result<Option<RegistrationState>> {
    let (mut dps, _) = dps(config, None)?;
    let mut store = Store::open(&config.database_path())?;
    upload::registration(&mut store, &mut dps, registration_id, &mut |_| {})
}

/// Verify every uploaded enrollment, then read every device's registration state.
fn reconcile(
    config: &Config,
    emit: &mut dyn FnMut(Event),
) -> Result<(VerifySummary, RegistrationSummary)> {
    let v = verify(config, None, false, emit)?;
    Ok((v, registrations(config, None, emit)?))
}

/// Work the window hands to the jobs thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// The start-of-run checks ([`start_checks`]).
    StartChecks,
    Export,
    Upload,
    /// Verify what DPS holds and whether the devices came up.
    Verify,
    /// Read one device's registration state.
    Registration(String),
    /// Log an act of the window in the audit trail: kind, subject (operator log-in/out).
    Audit(String, String),
    Doctor,
}

/// What a job came to.
#[derive(Debug, Clone)]
pub enum JobOutcome {
    /// What the start-of-run checks found, in words.
    Notices(Vec<String>),
    Exported(std::result::Result<Option<ExportSummary>, super::Problem>),
    Uploaded(std::result::Result<UploadSummary, super::Problem>),
    Verified(std::result::Result<(VerifySummary, RegistrationSummary), super::Problem>),
    /// A device's registration state (`None`: its enrollment is not uploaded).
    Registration(
        String,
        std::result::Result<Option<RegistrationState>, super::Problem>,
    ),
    Checked(Vec<Check>),
    /// Export, upload and verification progress.
    Event(Event),
}

/// The jobs thread: runs [`Job`]s one after another, reports [`JobOutcome`]s.
pub struct Jobs {
    tx: Option<Sender<Job>>,
    pub rx: Receiver<JobOutcome>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Jobs {
    /// Start the thread; `wake` is called after every report.
    pub fn spawn(config: Config, wake: impl Fn() + Send + 'static) -> Self {
        let (tx, jobs) = channel::<Job>();
        let (reports, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("station-jobs".into())
            .spawn(move || {
                let send = |r: JobOutcome| {
                    let _ = reports.send(r);
                    wake();
                };
                for job in jobs {
                    send(match job {
                        Job::StartChecks => JobOutcome::Notices(start_notices(&config)),
                        Job::Export => JobOutcome::Exported(
                            export_new(&config, None, &mut |e| send(JobOutcome::Event(e)))
                                .map_err(|e| (&e).into()),
                        ),
                        Job::Upload => JobOutcome::Uploaded(
                            upload(&config, None, &UploadOptions::default(), &mut |e| {
                                send(JobOutcome::Event(e))
                            })
                            .map_err(|e| (&e).into()),
                        ),
                        Job::Verify => JobOutcome::Verified(
                            reconcile(&config, &mut |e| send(JobOutcome::Event(e)))
                                .map_err(|e| (&e).into()),
                        ),
                        Job::Registration(id) => {
                            let r = registration(&config, &id).map_err(|e| (&e).into());
                            JobOutcome::Registration(id, r)
                        }
                        Job::Doctor => JobOutcome::Checked(doctor::checks(&config)),
                        Job::Audit(kind, subject) => {
                            let logged = Store::open(&config.database_path())
                                .and_then(|s| s.audit(&kind, &subject, &json!({})));
                            match logged {
                                Ok(()) => continue,
                                Err(e) => JobOutcome::Notices(vec![format!(
                                    "the audit trail could not log {kind}: [{}] {e}",
                                    e.code()
                                )]),
                            }
                        }
                    });
                }
            })
            .expect("spawn the jobs thread");
        Self {
            tx: Some(tx),
            rx,
            thread: Some(thread),
        }
    }

    /// Queue `job`; false when the thread has ended.
    pub fn send(&self, job: Job) -> bool {
        self.tx.as_ref().is_some_and(|t| t.send(job).is_ok())
    }
}

impl Drop for Jobs {
    /// Ends the thread after the job in progress; an upload is not waited for (it resumes
    /// where it stopped next time).
    fn drop(&mut self) {
        self.tx.take();
        self.thread.take();
    }
}
