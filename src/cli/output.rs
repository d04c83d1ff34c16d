//! Printers: human text or JSON lines, for events, results and errors.

use crate::domain::Event;
use crate::error::Error;
use serde::Serialize;
use std::io::Write;

/// Where command output goes, in the chosen format.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
}

impl Out {
    /// Print a JSON line (JSON mode) or run `text` (text mode).
    pub fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        let mut stdout = std::io::stdout().lock();
        let line = if self.json {
            serde_json::to_string(value).expect("output serialises")
        } else {
            text()
        };
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// Print a progress event.
    pub fn event(&self, e: &Event) {
        // In text mode, write progress is shown once the write is complete.
        if !self.json
            && let Event::Writing { written, total } = e
            && written < total
        {
            return;
        }
        self.emit(e, || event_text(e));
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
            "[identify]   serial {} firmware {firmware} model {model} protocol v{protocol}{}",
            if serial.is_empty() { "(none)" } else { serial },
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
        Event::Mismatch {
            registration_id,
            problem,
        } => {
            format!("MISMATCH {registration_id}: {problem}")
        }
        Event::UploadFinished(s) => format!(
            "{} uploaded, {} conflicts, {} failed, in {} requests",
            s.uploaded, s.conflicts, s.failed, s.requests
        ),
        Event::VerifyFinished(s) => format!(
            "{} checked: {} match, {} mismatch, in {} requests",
            s.checked, s.matched, s.mismatched, s.requests
        ),
        other => format!("{other:?}"),
    }
}
