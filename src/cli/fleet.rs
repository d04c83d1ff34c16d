//! `station fleet init|status|sync`, and the sync thread `station provision` runs.

use super::args::FleetCommand;
use super::output::Out;
use crate::config::Config;
use crate::error::Result;
use crate::fleet::{self, FleetStatus, SyncHandle};
use crate::store::Store;
use std::process::ExitCode;
use std::time::Duration;

/// How long `station provision` waits at its end for the queue to reach the server.
const DRAIN: Duration = Duration::from_secs(5);

pub(super) fn run(config: &Config, c: FleetCommand, out: Out) -> Result<ExitCode> {
    fleet::section(config)?;
    match c {
        FleetCommand::Init => {
            let mut client = fleet::connect(config)?;
            let version = fleet::schema::init(&mut client)?;
            out.emit(
                &serde_json::json!({"event": "fleet_schema", "version": version}),
                || format!("fleet schema at version {version}"),
            );
        }
        FleetCommand::Status { days } => {
            let mut client = fleet::connect(config)?;
            fleet::schema::check(&mut client)?;
            let status = fleet::status::read(&mut client, days)?;
            let local = Store::open(&config.database_path())?.outbox_state()?;
            out.emit(
                &serde_json::json!({"event": "fleet_status", "fleet": status,
                    "this_station": {"station": config.station.id, "joined": local.joined,
                        "pending": local.pending, "lag_s": fleet::sync::lag_seconds(&local),
                        "last_sync_at": local.last_sync_at, "last_error": local.last_error}}),
                || status_text(&status),
            );
        }
        FleetCommand::Sync => {
            let mut client = fleet::connect(config)?;
            fleet::schema::check(&mut client)?;
            let mut store = Store::open(&config.database_path())?;
            store.fleet_join()?;
            let batch = fleet::section(config)?.sync_batch;
            let r = fleet::sync::push(&mut client, &mut store, config, batch)?;
            out.emit(
                &serde_json::json!({"event": "fleet_sync", "sent": r.sent, "pending": r.pending}),
                || {
                    format!(
                        "sent {} entries to the fleet database; {} queued",
                        r.sent, r.pending
                    )
                },
            );
        }
        FleetCommand::Release {
            registration_id,
            reason,
        } => {
            let r = fleet::release::release(config, &registration_id, &reason)?;
            out.emit(
                &serde_json::json!({"event": "fleet_release", "registration_id": r.registration_id,
                    "keys": r.keys, "reason": r.reason}),
                || {
                    format!(
                        "released the claim on {} (and {} key claim(s)); another station can provision it now",
                        r.registration_id,
                        r.keys.len()
                    )
                },
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status_text(s: &FleetStatus) -> String {
    let mut t = String::from(
        "station          line        last sync             lag s  queued  enrollments  uploaded  not in DPS  upload failed  conflicts\n",
    );
    for r in &s.stations {
        t += &format!(
            "{:<16} {:<11} {:<21} {:>5.1} {:>7} {:>12} {:>9} {:>11} {:>14} {:>10}\n",
            r.station,
            r.line,
            r.last_sync_at.as_deref().unwrap_or("never"),
            r.lag_s,
            r.pending,
            r.enrollments,
            r.uploaded,
            r.not_uploaded,
            r.upload_failed,
            r.conflicts
        );
    }
    t += "\nline        day          passed  failed  yield\n";
    for l in &s.lines {
        t += &format!(
            "{:<11} {:<12} {:>6} {:>7} {:>5.1}%\n",
            l.line, l.day, l.passed, l.failed, l.yield_percent
        );
    }
    if s.conflicts.is_empty() {
        t += "\nno conflicts";
    } else {
        t += &format!(
            "\n{} conflicts (never merged; resolve by hand):\n",
            s.conflicts.len()
        );
        for c in &s.conflicts {
            t += &format!(
                "  {} ({}): provisioned on {} (line {}) while {} (line {}) held it\n",
                c.registration_id, c.what, c.station, c.line, c.holder, c.holder_line
            );
        }
    }
    t.trim_end().to_string()
}

/// What `station upload --fleet` did besides the upload's own events.
pub(super) fn upload_report(f: &fleet::upload::FleetUploadSummary, out: Out) {
    for s in &f.skipped {
        out.emit(
            &serde_json::json!({"event": "fleet_upload_skipped", "station": s.station,
                "export_seq": s.export_seq, "registration_id": s.registration_id,
                "reason": s.reason}),
            || {
                format!(
                    "not sent: {} (station {}, version {}): {}",
                    s.registration_id, s.station, s.export_seq, s.reason
                )
            },
        );
    }
    out.emit(
        &serde_json::json!({"event": "fleet_upload", "mirrored": f.mirrored,
            "written_back": f.written_back, "skipped": f.skipped.len()}),
        || {
            format!(
                "fleet upload: {} versions taken from the fleet database, {} results written back, {} not sent",
                f.mirrored,
                f.written_back,
                f.skipped.len()
            )
        },
    );
}

/// Start the sync thread when station.toml has `[fleet]`.
pub(super) fn start(config: &Config) -> Result<Option<SyncHandle>> {
    config
        .fleet
        .as_ref()
        .map(|_| SyncHandle::start(config))
        .transpose()
}

/// Give the queue a moment to reach the server, stop the thread, and say where it stands.
pub(super) fn finish(sync: Option<SyncHandle>, out: Out) {
    let Some(sync) = sync else { return };
    let s = sync.finish(DRAIN);
    out.emit(
        &serde_json::json!({"event": "fleet", "online": s.online, "pending": s.pending,
            "lag_s": s.lag_s, "conflicts": s.conflicts, "error": s.last_error}),
        || match (&s.last_error, s.pending) {
            (Some(e), n) => {
                format!("fleet: offline, {n} entries queued for the fleet database ({e})")
            }
            (None, 0) => format!("fleet: in sync, {} conflicts", s.conflicts),
            (None, n) => format!("fleet: {n} entries still queued"),
        },
    );
}
