//! DPS in the window: the Upload and Verify buttons with their progress and results (in the
//! shift panel), and a device's registration check (in the details window). Reads state and
//! returns [`UiCommand`]s, like every panel.

use super::app::{StationApp, UiCommand};
use super::jobs_view::{RegistrationCheck, VerifyNote};
use super::widgets::{FAIL_RED, PASS_GREEN, WARN_AMBER, outcome_color, progress};
use crate::domain::event::{Phase, RegistrationState, RegistrationSummary, VerifySummary};
use crate::station::Problem;
use eframe::egui::{self, Color32, RichText};

/// What to tell an engineer when DPS disagrees with the station.
const VERIFY_REMEDY: &str =
    "an engineer lists each one with `station upload --verify --registrations`";

/// The DPS section of the shift panel (shown when the station uploads).
pub(super) fn dps(app: &StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    let view = &app.jobs_view;
    ui.horizontal_wrapped(|ui| {
        let idle = !view.dps_busy();
        let upload = egui::Button::new(RichText::new("Upload to DPS").size(20.0));
        if ui.add_enabled(idle, upload).clicked() {
            out.push(UiCommand::Upload);
        }
        let verify = egui::Button::new(RichText::new("Verify with DPS").size(20.0));
        if ui.add_enabled(idle, verify).clicked() {
            out.push(UiCommand::Verify);
        }
    });
    let dps_phases = [
        Phase::Upload,
        Phase::ReadBack,
        Phase::Verify,
        Phase::Registrations,
    ];
    match view.progress.filter(|p| dps_phases.contains(&p.phase)) {
        Some(p) => progress(ui, &p),
        None if view.uploading => {
            ui.label("Upload waiting to start…");
        }
        None if view.verifying => {
            ui.label("Verification waiting to start…");
        }
        None => {}
    }
    match &view.upload_note {
        Some(Ok(s)) => {
            let color = outcome_color(s.conflicts + s.failed == 0);
            ui.colored_label(
                color,
                format!(
                    "Uploaded {}, conflicts {}, failed {} ({} requests)",
                    s.uploaded, s.conflicts, s.failed, s.requests
                ),
            );
            if s.conflicts > 0 {
                ui.label("Conflicts: an engineer resolves them with `station upload --update`.");
            }
        }
        Some(Err(p)) => problem(ui, "Upload stopped", p),
        None => {}
    }
    if let Some(note) = &view.verify_note {
        verify_note(ui, note);
    }
}

/// A job's error: what happened, its code, what to do.
fn problem(ui: &mut egui::Ui, what: &str, p: &Problem) {
    ui.colored_label(
        FAIL_RED,
        format!("{what}: {} [{}] — {}", p.message, p.code, p.remedy),
    );
}

/// What verification found: the attention line first, then the figures.
fn verify_note(ui: &mut egui::Ui, note: &VerifyNote) {
    let (v, r) = match note {
        Ok(found) => found,
        Err(p) => return problem(ui, "Verification stopped", p),
    };
    if let Some((color, line)) = attention(v, r) {
        ui.colored_label(color, RichText::new(line).strong());
    }
    ui.colored_label(
        outcome_color(v.mismatched == 0),
        format!(
            "Verified {}: {} match, {} mismatch ({} not held by DPS)",
            v.checked, v.matched, v.mismatched, v.missing
        ),
    );
    if v.others > 0 {
        ui.label(format!(
            "{} enrollments in DPS were not uploaded by this station",
            v.others
        ));
    }
    ui.colored_label(
        outcome_color(r.failed + r.disabled == 0),
        format!(
            "Registered {} of {}: never seen {}, failed {}, assigning {}, unassigned {}, disabled {}",
            r.registered(),
            r.checked,
            r.never_seen,
            r.failed,
            r.assigning,
            r.unassigned,
            r.disabled
        ),
    );
    for (hub, n) in &r.assigned {
        ui.label(format!("    {n} on {hub}"));
    }
}

/// Red when DPS holds something else or devices failed to register; amber when devices have
/// not come up yet (normal until they first connect); `None` when all is well.
fn attention(v: &VerifySummary, r: &RegistrationSummary) -> Option<(Color32, String)> {
    let mut bad = Vec::new();
    if v.mismatched > 0 {
        bad.push(format!(
            "{} enrollments differ from DPS ({} not held by DPS)",
            v.mismatched, v.missing
        ));
    }
    if r.failed > 0 {
        bad.push(format!("{} devices failed to register", r.failed));
    }
    if r.disabled > 0 {
        bad.push(format!("{} devices disabled in DPS", r.disabled));
    }
    if !bad.is_empty() {
        let line = format!("Attention: {} — {VERIFY_REMEDY}.", bad.join(", "));
        return Some((FAIL_RED, line));
    }
    let waiting = r.never_seen + r.assigning + r.unassigned;
    (waiting > 0).then(|| {
        let line = format!(
            "Not up yet: {waiting} devices not assigned to a hub ({} never seen, {} assigning, {} unassigned) — normal until they first connect.",
            r.never_seen, r.assigning, r.unassigned
        );
        (WARN_AMBER, line)
    })
}

/// The details window's registration check for `registration_id`.
pub(super) fn registration(
    app: &StationApp,
    ui: &mut egui::Ui,
    registration_id: &str,
    out: &mut Vec<UiCommand>,
) {
    if app.config.upload.is_none() {
        return;
    }
    let check = app.jobs_view.registrations.get(registration_id);
    let asked = check == Some(&RegistrationCheck::Asked);
    ui.horizontal(|ui| {
        let button = egui::Button::new("Check registration in DPS");
        if ui.add_enabled(!asked, button).clicked() {
            out.push(UiCommand::CheckRegistration(registration_id.to_string()));
        }
        if asked {
            ui.label("Asking DPS…");
        }
    });
    match check {
        Some(RegistrationCheck::Answered(Ok(state))) => {
            let (color, text) = registration_text(state.as_ref());
            ui.colored_label(color, text);
        }
        Some(RegistrationCheck::Answered(Err(p))) => problem(ui, "Registration check failed", p),
        Some(RegistrationCheck::Asked) | None => {}
    }
}

/// A device's registration state in words (`None`: not uploaded), and its colour.
fn registration_text(state: Option<&RegistrationState>) -> (Color32, String) {
    let Some(s) = state else {
        return (WARN_AMBER, "This device is not uploaded to DPS yet.".into());
    };
    let updated = s
        .last_updated
        .as_deref()
        .map(|t| format!(", last update {t}"))
        .unwrap_or_default();
    match s.status.as_str() {
        "assigned" => (
            PASS_GREEN,
            format!(
                "Registered: assigned to {} as device {}{updated}",
                s.assigned_hub.as_deref().unwrap_or("an IoT hub"),
                s.device_id.as_deref().unwrap_or("(no device ID)")
            ),
        ),
        "assigning" => (
            WARN_AMBER,
            format!("DPS is assigning this device to a hub now{updated}"),
        ),
        "unassigned" => (
            WARN_AMBER,
            format!("Registered, but DPS assigned no hub{updated}"),
        ),
        "failed" => (
            FAIL_RED,
            format!(
                "Registration failed: {}{updated}",
                s.error.as_deref().unwrap_or("DPS gave no reason")
            ),
        ),
        "disabled" => (
            FAIL_RED,
            format!("Disabled: DPS refuses this device's registrations{updated}"),
        ),
        "not_registered" => (
            WARN_AMBER,
            "DPS has not seen this device register yet".into(),
        ),
        other => (WARN_AMBER, format!("DPS reports status {other}{updated}")),
    }
}
