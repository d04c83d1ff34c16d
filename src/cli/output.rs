//! Printers: human text or JSON lines, for events, results and errors.

use crate::domain::event::{Phase, Progress};
use crate::domain::{Event, FixtureId};
use crate::error::Error;
use serde::Serialize;
use std::io::Write;

/// Where command output goes, in the chosen format.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
    /// Standard output is a terminal: progress is one bar redrawn in place.
    pub tty: bool,
}

/// The progress line a terminal shows now (cleared before any other line is printed), and
/// the last step printed as a plain line when standard output is not a terminal.
static PROGRESS: std::sync::Mutex<(bool, Option<(Phase, u64)>)> =
    std::sync::Mutex::new((false, None));

impl Out {
    /// Print a JSON line (JSON mode) or run `text` (text mode).
    pub fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        let mut stdout = std::io::stdout().lock();
        let line = if self.json {
            serde_json::to_string(value).expect("output serialises")
        } else {
            text()
        };
        let mut progress = PROGRESS.lock().unwrap_or_else(|p| p.into_inner());
        if progress.0 {
            // Clear the bar; it is drawn again by the next progress event.
            let _ = write!(stdout, "\r\x1b[2K");
            progress.0 = false;
        }
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// Print a progress event.
    pub fn event(&self, e: &Event) {
        if !self.json {
            match e {
                // Write progress is shown once the write is complete.
                Event::Writing { written, total } if written < total => return,
                Event::Progress(p) => return self.progress(p),
                // On a terminal the bar says it all.
                Event::Bulk { .. } if self.tty => return,
                _ => {}
            }
        }
        self.emit(e, || event_text(e));
    }

    /// A fixture's event: JSON lines carry the fixture id; text lines start with `[id]` when
    /// several fixtures share the output (`prefix`).
    pub fn fixture_event(&self, fixture: &FixtureId, prefix: bool, e: &Event) {
        if !self.json {
            if prefix {
                if let Event::Writing { written, total } = e
                    && written < total
                {
                    return;
                }
                return self.emit(e, || format!("[{fixture}] {}", event_text(e)));
            }
            return self.event(e);
        }
        let mut v = serde_json::to_value(e).expect("events serialise");
        if let Some(m) = v.as_object_mut() {
            m.insert("fixture".into(), fixture.0.clone().into());
        }
        self.emit(&v, String::new);
    }

    /// An error that stopped one fixture.
    pub fn fixture_error(&self, fixture: &FixtureId, e: &Error) {
        if self.json {
            self.emit(
                &serde_json::json!({"event": "error", "fixture": fixture, "code": e.code(), "message": e.to_string(), "remedy": e.remedy()}),
                String::new,
            );
        } else {
            eprintln!(
                "[{fixture}] error [{}]: {e}\n  fix: {}",
                e.code(),
                e.remedy()
            );
        }
    }

    /// Progress in text mode: a bar redrawn in place on a terminal; otherwise a plain line
    /// every tenth of the way (and at the end).
    fn progress(&self, p: &Progress) {
        if self.tty {
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "\r\x1b[2K{}", progress_bar(p));
            let _ = stdout.flush();
            PROGRESS.lock().unwrap_or_else(|p| p.into_inner()).0 = true;
            return;
        }
        let step = (p.fraction() * 10.0).floor() as u64;
        {
            let mut last = PROGRESS.lock().unwrap_or_else(|p| p.into_inner());
            if last.1 == Some((p.phase, step)) {
                return;
            }
            last.1 = Some((p.phase, step));
        }
        self.emit(p, || progress_text(p));
    }

    /// Print an error with its code and remedy (stderr in text mode, a JSON line on stdout in
    /// JSON mode).
    pub fn error(&self, e: &Error) {
        if self.json {
            self.emit(
                &serde_json::json!({"event": "error", "code": e.code(), "message": e.to_string(), "remedy": e.remedy()}),
                String::new,
            );
        } else {
            eprintln!("error [{}]: {e}\n  fix: {}", e.code(), e.remedy());
        }
    }
}

fn event_text(e: &Event) -> String {
    match e {
        Event::Connecting { port } => format!("[connect]    {port}"),
        Event::Identified {
            serial,
            firmware,
            model,
            protocol,
            provisioned,
        } => format!(
            "[identify]   serial {} firmware {firmware} model {model} protocol {}{}",
            if serial.is_empty() { "(none)" } else { serial },
            match *protocol {
                crate::device::smp::PROTOCOL_SMP => "MCUmgr (SMP)".to_string(),
                v => format!("v{v}"),
            },
            if *provisioned {
                " (holds an identity)"
            } else {
                ""
            }
        ),
        Event::RegistrationId { registration_id } => {
            format!("[identify]   registration ID {registration_id}")
        }
        Event::Credential {
            attestation,
            key_source,
            fingerprint,
        } => {
            format!("[credential] {attestation} ({key_source}), fingerprint {fingerprint}")
        }
        Event::Warning { message } => format!("[warning]    {message}"),
        Event::Recorded { .. } => "[record]     enrollment recorded as pending".into(),
        Event::AlreadyProvisioned { .. } => {
            "[write]      device already holds this identity; nothing rewritten".into()
        }
        Event::Writing { written, total } => format!("[write]      {written}/{total} bytes"),
        Event::Committed { digest } => {
            format!("[write]      committed, device digest {}", &digest[..16])
        }
        Event::Verified { .. } => "[verify]     read-back digest matches".into(),
        Event::Passed {
            registration_id,
            serial,
            duration_ms,
            ..
        } => {
            format!("PASS  {registration_id}  (serial {serial})  {duration_ms:.1} ms")
        }
        Event::Failed {
            registration_id,
            problem,
            ..
        } => format!(
            "FAIL  {}  {problem}\n      fix: {}",
            registration_id.as_deref().unwrap_or("-"),
            problem.remedy
        ),
        upload => upload_text(upload),
    }
}

fn upload_text(e: &Event) -> String {
    match e {
        Event::UploadStarted { endpoint } => format!("uploading to {endpoint}"),
        Event::Request {
            method,
            url,
            authorization,
            body,
        } => format!(
            "{method} {url}\nAuthorization: {authorization}\n{}",
            serde_json::to_string_pretty(body).unwrap_or_default()
        ),
        Event::Bulk {
            request,
            mode,
            enrollments,
            uploaded,
            conflicts,
            failed,
        } => format!(
            "[{request:>5}] {mode}: {enrollments} enrollments, {uploaded} accepted, {conflicts} conflicts, {failed} failed"
        ),
        Event::Retry {
            reason,
            wait_ms,
            attempt,
            ..
        } => {
            format!("retry {attempt} in {wait_ms} ms ({reason})")
        }
        Event::Conflict {
            registration_id,
            error_code,
            error_status,
        } => format!(
            "CONFLICT {registration_id}: DPS holds a different attestation ({} {}); --update replaces it",
            error_code.map(|c| c.to_string()).unwrap_or_default(),
            error_status.as_deref().unwrap_or("")
        ),
        Event::ItemFailed {
            registration_id,
            error_code,
            error_status,
        } => format!(
            "FAILED {registration_id}: {} {}",
            error_code.map(|c| c.to_string()).unwrap_or_default(),
            error_status.as_deref().unwrap_or("")
        ),
        other => summary_text(other),
    }
}

/// Results: mismatches, registrations, upload and verification summaries.
fn summary_text(e: &Event) -> String {
    match e {
        Event::Mismatch {
            registration_id,
            differences,
            ..
        } => {
            let mut s = format!("MISMATCH {registration_id}:");
            for d in differences {
                s.push_str("\n    ");
                s.push_str(d);
            }
            s
        }
        Event::UploadFinished(s) => format!(
            "{} uploaded, {} conflicts, {} failed, in {} requests; {} etags read back",
            s.uploaded, s.conflicts, s.failed, s.requests, s.etags_recorded
        ),
        Event::VerifyFinished(s) => format!(
            "{} checked: {} match, {} mismatch ({} not held by DPS), in {} requests \
             ({} query pages, {} attestation reads); {} enrollments in DPS not uploaded by this station",
            s.checked,
            s.matched,
            s.mismatched,
            s.missing,
            s.requests,
            s.pages,
            s.attestation_reads,
            s.others
        ),
        Event::Registration {
            registration_id,
            state,
        } => format!(
            "REGISTRATION {registration_id}: {}{}",
            state.status,
            state
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
        Event::RegistrationsFinished(s) => registrations_text(s),
        other => format!("{other:?}"),
    }
}

fn registrations_text(s: &crate::domain::event::RegistrationSummary) -> String {
    let mut t = format!(
        "{} devices: {} registered, {} never seen, {} failed, {} assigning, {} unassigned, {} disabled ({} requests)",
        s.checked,
        s.registered(),
        s.never_seen,
        s.failed,
        s.assigning,
        s.unassigned,
        s.disabled,
        s.requests
    );
    for (hub, n) in &s.assigned {
        t.push_str(&format!("\n    {n:>7} on {hub}"));
    }
    t
}

/// `Uploading   450/1000  45% · 45 calls · 440 ok, 0 conflicts, 10 failed · 1m05s left`
fn progress_text(p: &Progress) -> String {
    let mut s = format!(
        "{:<13} {}/{} {:>3.0}%",
        p.phase.label(),
        p.done,
        p.total,
        p.fraction() * 100.0
    );
    if p.requests > 0 {
        s.push_str(&format!(" · {} calls", p.requests));
    }
    s.push_str(&format!(" · {} ok", p.ok));
    if p.conflicts > 0 {
        s.push_str(&format!(", {} conflicts", p.conflicts));
    }
    s.push_str(&format!(", {} failed", p.failed));
    if let Some(eta) = p.eta_s.filter(|_| p.done < p.total) {
        s.push_str(&format!(" · {} left", duration_text(eta)));
    }
    s
}

fn progress_bar(p: &Progress) -> String {
    const WIDTH: usize = 24;
    let filled = (p.fraction() * WIDTH as f32).round() as usize;
    format!(
        "[{}{}] {}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled.min(WIDTH)),
        progress_text(p)
    )
}

/// `42s`, `3m05s`, `2h07m`.
pub fn duration_text(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_as_a_technician_expects() {
        let mut p = Progress::new(Phase::Upload, 1000);
        p.done = 450;
        p.requests = 45;
        p.ok = 440;
        p.failed = 10;
        p.eta_s = Some(65);
        assert_eq!(
            progress_text(&p),
            "Uploading     450/1000  45% · 45 calls · 440 ok, 10 failed · 1m05s left"
        );
        assert!(progress_bar(&p).starts_with("[###########-------------] "));
        p.done = 1000;
        assert!(
            !progress_text(&p).contains("left"),
            "nothing left at the end"
        );
        assert_eq!(duration_text(7260), "2h01m");
    }
}
