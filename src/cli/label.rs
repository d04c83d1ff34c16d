//! `station label reprint|preview`, and the labels of `station provision`: the printer queue
//! started for the run, a label submitted at each PASS, its events printed as they come, and
//! at the end a bounded wait for the queue with what did not print reported. A label never
//! changes a device's result or the exit code of `station provision`.

use super::args::LabelCommand;
use super::output::Out;
use crate::config::Config;
use crate::domain::{Event, FixtureId};
use crate::error::{Error, Result};
use crate::label::{self, Label, LabelData};
use crate::station::{LabelEvent, LabelJob, Labels};
use crate::store::Store;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub(super) fn run(config: &Config, c: LabelCommand, out: Out) -> Result<ExitCode> {
    match c {
        LabelCommand::Reprint { registration_id } => reprint(config, &registration_id, out),
        LabelCommand::Preview {
            registration_id,
            out: png,
            zpl,
        } => preview(config, &registration_id, &png, zpl.as_deref(), out),
    }
}

fn reprint(config: &Config, registration_id: &str, out: Out) -> Result<ExitCode> {
    let section = config
        .label
        .as_ref()
        .ok_or(Error::MissingSection { section: "[label]" })?;
    let store = Store::open(&config.database_path())?;
    let label = label::print_now(config, section, &store, registration_id)?;
    let printer = section.printer.as_ref().map(|p| p.to_string());
    out.emit(
        &json!({"event": "label_printed", "fixture": null, "registration_id": label.registration_id, "printer": printer, "attempts": 1}),
        || {
            format!(
                "[label]      {} printed on {}",
                label.registration_id,
                printer.as_deref().unwrap_or("")
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

/// The preview PNG (and the ZPL) of a provisioned device; the built-in label without `[label]`.
fn preview(
    config: &Config,
    registration_id: &str,
    png: &Path,
    zpl: Option<&Path>,
    out: Out,
) -> Result<ExitCode> {
    let section = config.label.clone().unwrap_or_default();
    let store = Store::open(&config.database_path())?;
    let data = LabelData::lookup(&store, config, registration_id)?;
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|source| Error::File {
            what: "cannot write the label preview",
            path: path.to_path_buf(),
            source,
        })
    };
    write(png, &label::render_png(&data, &section))?;
    if let Some(path) = zpl {
        write(path, Label::new(&data, &section).zpl.as_bytes())?;
    }
    out.emit(
        &json!({"event": "label_preview", "registration_id": data.registration_id, "png": png, "zpl": zpl, "qr_data": label::template::qr_data(&data, &section)}),
        || format!("label of {} written to {}", data.registration_id, png.display()),
    );
    Ok(ExitCode::SUCCESS)
}

/// The label queue for `station provision`, when `[label]` is enabled; its events printed.
pub(super) fn start(config: &Config, out: Out) -> Option<Labels> {
    let section = config.label.as_ref()?;
    let retry_s = section.retry_ms as f64 / 1000.0;
    Labels::start(config, move |e| {
        out.emit(e, || event_text(e, retry_s));
    })
}

/// Submit the label of a device that passed on `fixture` (nothing for any other event).
pub(super) fn passed(labels: Option<&Labels>, fixture: &FixtureId, e: &Event) {
    if let (
        Some(labels),
        Event::Passed {
            registration_id, ..
        },
    ) = (labels, e)
    {
        // A full queue is reported by the queue itself; the device passed all the same.
        let _ = labels.submit(LabelJob::passed(fixture, registration_id));
    }
}

/// Wait (up to `[label] drain_s`) for the queued labels to print, then report what did not.
pub(super) fn finish(labels: Option<Labels>, config: &Config, out: Out) {
    let Some(mut labels) = labels else { return };
    let wait = Duration::from_secs(config.label.as_ref().map_or(0, |l| l.drain_s));
    let printer = labels.printer().to_string();
    let waiting = labels.queued();
    if waiting > 0 {
        out.emit(
            &json!({"event": "label_waiting", "queued": waiting, "wait_s": wait.as_secs()}),
            || {
                format!(
                    "[label]      waiting up to {}s for {waiting} label(s) to print on {printer}",
                    wait.as_secs()
                )
            },
        );
    }
    let left = labels.finish(wait);
    let reason = labels.printer_error();
    for job in &left {
        out.emit(
            &json!({"event": "label_unprinted", "fixture": job.fixture, "registration_id": job.registration_id, "printer": printer, "reason": reason}),
            || {
                format!(
                    "warning: the label of {0} was not printed on {printer}; once the printer is back: station label reprint {0}",
                    job.registration_id
                )
            },
        );
    }
    out.emit(
        &json!({"event": "label_summary", "printed": labels.printed(), "unprinted": left.len(), "printer": printer}),
        || {
            format!(
                "[label]      {} printed, {} not printed",
                labels.printed(),
                left.len()
            )
        },
    );
}

fn event_text(e: &LabelEvent, retry_s: f64) -> String {
    match e {
        LabelEvent::LabelPrinted {
            fixture,
            registration_id,
            printer,
            attempts,
        } => format!(
            "{}[label]      {registration_id} printed on {printer}{}",
            prefix(fixture),
            if *attempts > 1 {
                format!(" (after {attempts} tries)")
            } else {
                String::new()
            }
        ),
        LabelEvent::LabelFailed {
            fixture,
            registration_id,
            problem,
            retrying,
            queued,
        } => format!(
            "{}warning: label of {registration_id} not printed: {problem}{}\n      fix: {}",
            prefix(fixture),
            if *retrying {
                format!(" — queued ({queued} waiting), trying again every {retry_s}s")
            } else {
                String::new()
            },
            problem.remedy
        ),
    }
}

fn prefix(fixture: &Option<FixtureId>) -> String {
    fixture
        .as_ref()
        .map(|f| format!("[{f}] "))
        .unwrap_or_default()
}
