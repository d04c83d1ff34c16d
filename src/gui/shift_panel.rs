//! The right-hand panel: shift and day figures, export, DPS (in `dps_panel`), unfinished
//! devices, the last label (in `label_panel`).

use super::app::{StationApp, UiCommand};
use super::dps_panel;
use super::label_panel;
use super::widgets::{FAIL_RED, progress};
use crate::domain::event::Phase;
use eframe::egui::{self, RichText};

pub(super) fn shift_panel(app: &mut StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    egui::ScrollArea::vertical().show(ui, |ui| {
        stats_block(ui, "This shift", &app.shift);
        ui.add_space(6.0);
        stats_block(ui, "Today", &app.day);
        if !app.shift.failures_by_code.is_empty() {
            ui.add_space(6.0);
            ui.label(RichText::new("Failures this shift").strong());
            for (code, n) in app.shift.failures_by_code.iter().take(5) {
                ui.label(format!("{n} × {code}"));
            }
        }
        ui.separator();
        export(app, ui, out);
        if app.config.upload.is_some() {
            ui.separator();
            dps_panel::dps(app, ui, out);
        }
        if app.pending.iter().any(|e| !in_progress(app, e)) {
            ui.separator();
            pending(app, ui, out);
        }
        if app.labels.on_pass || app.labels.preview.is_some() {
            ui.separator();
            label_panel::last_label(&app.labels, ui);
        }
    });
}

fn stats_block(ui: &mut egui::Ui, title: &str, s: &crate::store::ShiftStats) {
    ui.label(RichText::new(title).strong().size(20.0));
    ui.label(format!("Passed: {}   Failed: {}", s.passed, s.failed));
    ui.label(format!(
        "Yield: {}   Median cycle: {}",
        s.yield_percent()
            .map_or("—".into(), |y| format!("{y:.1} %")),
        s.median_cycle_ms.map_or("—".into(), |m| format!("{m} ms"))
    ));
}

/// The Export button and what the last export did.
fn export(app: &StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    if ui
        .add(egui::Button::new(RichText::new("Export batch").size(20.0)))
        .clicked()
    {
        out.push(UiCommand::Export);
    }
    if let Some(p) = app.jobs_view.progress.filter(|p| p.phase == Phase::Export) {
        progress(ui, &p);
    }
    match &app.jobs_view.export_note {
        Some(Ok(Some(s))) => {
            ui.label(format!("Batch {}: {} enrollments", s.batch, s.count));
            ui.label(format!("{}", s.csv.display()));
            ui.label(format!("{}", s.json.display()));
        }
        Some(Ok(None)) => {
            ui.label("Nothing to export: every provisioned device is in a batch.");
        }
        Some(Err(p)) => {
            ui.colored_label(
                FAIL_RED,
                format!("Export failed: {} — {}", p.message, p.remedy),
            );
        }
        None => {}
    }
}

/// Whether `e` is pending because a fixture is working on it right now (with several
/// fixtures, the list is often read while another fixture is mid-device).
fn in_progress(app: &StationApp, e: &crate::store::Enrollment) -> bool {
    app.fixtures.iter().any(|f| {
        f.device.busy
            && (f.device.serial == e.device_serial || f.device.registration_id == e.registration_id)
    })
}

/// Devices left pending by a crash or a pulled cable, each with a Re-run button.
fn pending(app: &StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    ui.label(RichText::new("Unfinished devices").strong().color(FAIL_RED));
    for e in app.pending.iter().filter(|e| !in_progress(app, e)) {
        ui.horizontal_wrapped(|ui| {
            ui.label(format!("{} ({})", e.registration_id, e.device_serial));
            if ui.button("Re-run this device").clicked() {
                out.push(UiCommand::Rerun(e.device_serial.clone()));
            }
        });
    }
}
