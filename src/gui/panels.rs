//! Drawing: the header here; the current device, shift panel, history and dialogs in their
//! own files. Panels read state and return [`UiCommand`]s; they never change state or touch
//! threads themselves.

use super::app::{PortStatus, StationApp, UiCommand};
use super::device_panel;
use super::dialogs;
use super::history;
use super::shift_panel;
use super::widgets::{FAIL_RED, PASS_GREEN, WARN_AMBER, dot};
use eframe::egui;

/// Draw the whole window; return what the operator asked for.
pub fn draw(app: &mut StationApp, ui: &mut egui::Ui) -> Vec<UiCommand> {
    let mut out = Vec::new();
    egui::Panel::top("header").show(ui, |ui| header(app, ui, &mut out));
    egui::Panel::right("shift")
        .default_size(330.0)
        .resizable(true)
        .show(ui, |ui| shift_panel::shift_panel(app, ui, &mut out));
    egui::Panel::bottom("history")
        .default_size(280.0)
        .resizable(true)
        .show(ui, |ui| history::history(app, ui, &mut out));
    egui::CentralPanel::default().show(ui, |ui| device_panel::current_device(app, ui, &mut out));
    if app.operator.is_none() {
        dialogs::login(app, ui.ctx(), &mut out);
    }
    if app.show_settings {
        dialogs::settings(app, ui.ctx(), &mut out);
    }
    if app.history.details.is_some() {
        dialogs::details(app, ui.ctx(), &mut out);
    }
    out
}

fn header(app: &mut StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    ui.horizontal(|ui| {
        ui.heading(format!(
            "{} · {}",
            app.config.station.id, app.config.station.line
        ));
        ui.separator();
        ui.label(format!(
            "Operator: {}",
            app.operator.as_deref().unwrap_or("(not logged in)")
        ));
        ui.separator();
        ui.label(format!(
            "Mode: {:?} · ID scope {}",
            app.config.attestation.mode, app.config.dps.id_scope
        ));
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if ui.button("Settings").clicked() {
                out.push(UiCommand::ToggleSettings);
            }
            if app.operator.is_some() && ui.button("Log out").clicked() {
                out.push(UiCommand::Logout);
            }
            ui.checkbox(&mut app.prefs.muted, "Mute sounds");
        });
    });
    ui.horizontal(|ui| status_line(app, ui));
    if let PortStatus::Error(p) = &app.port {
        ui.colored_label(FAIL_RED, format!("{} — {}", p.message, p.remedy));
    }
    if let Some(e) = &app.db_error {
        ui.colored_label(FAIL_RED, e);
    }
    for w in &app.warnings {
        ui.colored_label(WARN_AMBER, format!("Warning: {w}"));
    }
}

/// Fixture, database and counters, each a dot and words.
fn status_line(app: &StationApp, ui: &mut egui::Ui) {
    match &app.port {
        PortStatus::Opening => {
            dot(ui, WARN_AMBER);
            ui.label("Fixture: opening");
        }
        PortStatus::Connected(p) => {
            dot(ui, PASS_GREEN);
            ui.label(format!("Fixture: connected ({p})"));
        }
        PortStatus::Error(p) => {
            dot(ui, FAIL_RED);
            ui.colored_label(FAIL_RED, format!("Fixture: error {}", p.code));
        }
    }
    ui.separator();
    match &app.db_error {
        None => {
            dot(ui, PASS_GREEN);
            ui.label("Database: ok");
        }
        Some(_) => {
            dot(ui, FAIL_RED);
            ui.colored_label(FAIL_RED, "Database: error");
        }
    }
    if let Some(c) = &app.counts {
        ui.separator();
        ui.label(format!("Not yet exported: {}", c.provisioned));
        if c.pending > 0 {
            ui.separator();
            ui.colored_label(FAIL_RED, format!("Unfinished: {}", c.pending));
        }
    }
}
