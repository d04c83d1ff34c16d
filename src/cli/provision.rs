//! `station provision`: one fixture on this thread, or several (`--all-fixtures`, or every
//! `[[fixture]]` table) each on its own thread; a summary per fixture and in all.

use super::args::ProvisionArgs;
use super::output::Out;
use crate::config::{Config, FixtureConfig};
use crate::domain::FixtureId;
use crate::error::{Error, ExitClass, Result};
use crate::station::{Labels, fixture, gang, jobs};
use crate::workflow::{DeviceInput, Interrupt, Permissions, Workflow};
use std::process::ExitCode;
use std::time::Duration;

/// The fixtures this run drives: `--fixture ID`, else every fixture (`--all-fixtures`, or
/// the `[[fixture]]` tables), with `--port` overriding the port of a single one.
fn chosen(config: &Config, a: &ProvisionArgs) -> Result<Vec<FixtureConfig>> {
    let mut fixtures = match &a.fixture {
        Some(id) => vec![config.fixture(id)?],
        None => config.fixtures(),
    };
    if let Some(port) = &a.port {
        let [one] = fixtures.as_mut_slice() else {
            return Err(Error::Usage(
                "--port names one fixture's port; with several fixtures choose one with --fixture ID".into(),
            ));
        };
        one.config.serial.port = port.clone();
    }
    if a.serial.is_some() && (a.count > 1 || fixtures.len() > 1) {
        return Err(Error::Usage(
            "--serial names one device; use it without --count and on one fixture (--fixture ID)"
                .into(),
        ));
    }
    Ok(fixtures)
}

pub(super) fn provision(config: &Config, a: &ProvisionArgs, out: Out) -> Result<ExitCode> {
    if a.all_fixtures && a.fixture.is_some() {
        return Err(Error::Usage(
            "--fixture ID and --all-fixtures exclude each other".into(),
        ));
    }
    let fixtures = chosen(config, a)?;
    let input = DeviceInput {
        scanned_serial: a.serial.clone(),
        operator: a.operator.clone(),
        permissions: Permissions {
            overwrite_identity: a.allow_overwrite,
            rekey: a.allow_rekey,
        },
    };
    // The station-wide checks once, before any fixture starts.
    let workflow = Workflow::new(&fixtures[0].config)?;
    for w in workflow.warnings() {
        out.emit(
            &serde_json::json!({"event": "warning", "message": w}),
            || format!("warning: {w}"),
        );
    }
    for n in jobs::start_checks(config, workflow.store())? {
        notice(out, &n);
    }
    let granted = serde_json::json!({"operator": a.operator, "allow_overwrite": a.allow_overwrite,
        "allow_rekey": a.allow_rekey, "fixtures": fixtures.iter().map(|f| &f.id).collect::<Vec<_>>()});
    jobs::audit_start(config, workflow.store(), "provision", granted)?;
    let interrupt = Interrupt::install()?;
    // Labels print on a thread of their own; a printer never holds up or fails a device.
    let labels = super::label::start(config, out);
    // So does the fleet sync: the outbox is in the database, so a run ended before the server
    // answered loses nothing.
    let sync = super::fleet::start(config)?;
    let result = match fixtures.as_slice() {
        [one] => single(one, workflow, &input, a.count, &interrupt, labels, out),
        many => several(config, many, &input, a.count, &interrupt, labels, out),
    };
    super::fleet::finish(sync, out);
    result
}

/// One fixture, on this thread.
fn single(
    f: &FixtureConfig,
    mut workflow: Workflow,
    input: &DeviceInput,
    count: u32,
    interrupt: &Interrupt,
    labels: Option<Labels>,
    out: Out,
) -> Result<ExitCode> {
    workflow.set_fixture(f.id.clone(), Default::default());
    workflow.set_interrupt(interrupt.clone());
    let mut device = (crate::sim::opener())(&f.config, None)?;
    let tally = fixture::run(
        &mut workflow,
        device.device.as_mut(),
        input,
        count,
        Duration::from_secs(f.config.serial.next_device_timeout_s),
        interrupt,
        &mut |e| {
            out.fixture_event(&f.id, false, &e);
            super::label::passed(labels.as_ref(), &f.id, &e);
        },
    );
    if let Some(e) = tally
        .waiting
        .as_ref()
        .filter(|e| !matches!(e, Error::Interrupted { .. }))
    {
        out.error(e);
    }
    super::label::finish(labels, &f.config, out);
    let _ = workflow.store().sign_audit_head("shutdown");
    let unexported = workflow.store().counts()?.provisioned;
    let signal = interrupt.requested();
    summary(
        out,
        None,
        tally.passed,
        tally.failed,
        tally.not_run,
        Some(unexported),
        signal,
    );
    match tally.stopped {
        // The summary is out; the process exits with the error's class.
        Some(e @ Error::Database { .. }) => Err(e),
        _ if signal.is_some() => Ok(ExitCode::from(ExitClass::Interrupted as u8)),
        _ if tally.failed == 0 && tally.not_run == 0 => Ok(ExitCode::SUCCESS),
        _ => Ok(ExitCode::from(ExitClass::Device as u8)),
    }
}

/// Several fixtures, one thread each; `count` devices in all.
fn several(
    config: &Config,
    fixtures: &[FixtureConfig],
    input: &DeviceInput,
    count: u32,
    interrupt: &Interrupt,
    labels: Option<Labels>,
    out: Out,
) -> Result<ExitCode> {
    let opener = crate::sim::opener();
    let g = gang::run_all(fixtures, &opener, input, count, interrupt, &|id, e| {
        out.fixture_event(id, true, &e);
        super::label::passed(labels.as_ref(), id, &e);
    });
    let mut database = None;
    for f in &g.fixtures {
        let t = &f.tally;
        if let Some(e) = t.stopped.as_ref().or(t.waiting.as_ref()) {
            if !matches!(e, Error::Interrupted { .. }) {
                out.fixture_error(&f.fixture, e);
            }
            if matches!(e, Error::Database { .. }) {
                database = Some(e.to_string());
            }
        }
        summary(out, Some(&f.fixture), t.passed, t.failed, 0, None, None);
    }
    super::label::finish(labels, config, out);
    let store = crate::store::Store::open(&config.database_path())?;
    let _ = store.sign_audit_head("shutdown");
    let unexported = store.counts()?.provisioned;
    let signal = interrupt.requested();
    let (passed, failed) = (g.passed(), g.failed());
    summary(
        out,
        None,
        passed,
        failed,
        g.not_run,
        Some(unexported),
        signal,
    );
    Ok(match () {
        _ if database.is_some() => ExitCode::from(ExitClass::Environment as u8),
        _ if signal.is_some() => ExitCode::from(ExitClass::Interrupted as u8),
        _ if failed == 0 && g.not_run == 0 => ExitCode::SUCCESS,
        _ => ExitCode::from(ExitClass::Device as u8),
    })
}

/// `N passed, M failed[, K not run][ (stopped by SIG)]`, for one fixture or the run.
fn summary(
    out: Out,
    fixture: Option<&FixtureId>,
    passed: u32,
    failed: u32,
    not_run: u32,
    unexported: Option<i64>,
    signal: Option<&'static str>,
) {
    let mut json = serde_json::json!({"event": "summary", "passed": passed, "failed": failed, "not_run": not_run});
    if let Some(f) = fixture {
        json["event"] = "fixture_summary".into();
        json["fixture"] = f.0.clone().into();
    } else {
        json["unexported"] = unexported.into();
        json["interrupted_by"] = signal.into();
    }
    out.emit(&json, || {
        format!(
            "{}{passed} passed, {failed} failed{}{}",
            fixture.map(|f| format!("[{f}] ")).unwrap_or_default(),
            if not_run > 0 {
                format!(", {not_run} not run")
            } else {
                String::new()
            },
            signal
                .map(|s| format!(" (stopped by {s})"))
                .unwrap_or_default()
        )
    });
}

/// A start-of-run notice, as a JSON event or a line of text.
pub(super) fn notice(out: Out, n: &jobs::Notice) {
    out.emit(&n.json, || {
        if n.warning {
            format!("warning: {}", n.text)
        } else {
            n.text.clone()
        }
    });
}
