//! Drawing: the header here; the current device (one fixture) or the fixture tiles (several),
//! the shift panel, history and dialogs in their own files. Panels read state and return
//! [`UiCommand`]s; they never change state or touch threads themselves.
//!
//! The layout adapts to the screen, from 1024×768 to 1920×1080 and beyond: the side and
//! bottom panels take a share of the window, and what does not fit scrolls instead of being
//! cut off.

use super::app::{StationApp, UiCommand};
use super::device_panel;
use super::dialogs;
use super::fixture::PortStatus;
use super::history;
use super::shift_panel;
use super::tiles;
use super::widgets::{FAIL_RED, PASS_GREEN, WARN_AMBER, dot};
use eframe::egui;

/// Share of the window's width the shift panel opens with (one fixture, several), and its
/// bounds in points.
const SHIFT_SHARE: (f32, f32) = (0.28, 0.22);
const SHIFT_WIDTH: (f32, f32) = (220.0, 400.0);
/// Share of the window's height the history opens with (one fixture, several), and bounds.
const HISTORY_SHARE: (f32, f32) = (0.28, 0.22);
const HISTORY_HEIGHT: (f32, f32) = (130.0, 320.0);

/// Draw the whole window; return what the operator asked for.
pub fn draw(app: &mut StationApp, ui: &mut egui::Ui) -> Vec<UiCommand> {
    let mut out = Vec::new();
    let screen = ui.ctx().content_rect().size();
    let (shift_share, history_share) = if app.is_gang() {
        (SHIFT_SHARE.1, HISTORY_SHARE.1)
    } else {
        (SHIFT_SHARE.0, HISTORY_SHARE.0)
    };
    // The panels open at a share of the window. egui keeps a panel's size once shown, so the
    // window's size (rounded) is part of their ids: when the window is resized, maximized or
    // zoomed (the first frames often have another size than the window settles at), the
    // panels start again from their share of the new size.
    let size_key = ((screen.x / 16.0) as i32, (screen.y / 16.0) as i32);
    egui::Panel::top("header").show(ui, |ui| header(app, ui, &mut out));
    egui::Panel::right(("shift", size_key))
        .default_size((screen.x * shift_share).clamp(SHIFT_WIDTH.0, SHIFT_WIDTH.1))
        .min_size(SHIFT_WIDTH.0 * 0.8)
        .resizable(true)
        .show(ui, |ui| shift_panel::shift_panel(app, ui, &mut out));
    egui::Panel::bottom(("history", size_key))
        .default_size((screen.y * history_share).clamp(HISTORY_HEIGHT.0, HISTORY_HEIGHT.1))
        .min_size(HISTORY_HEIGHT.0 * 0.8)
        .resizable(true)
        .show(ui, |ui| history::history(app, ui, &mut out));
    egui::CentralPanel::default().show(ui, |ui| {
        if app.is_gang() {
            tiles::gang(app, ui, &mut out);
        } else {
            egui::ScrollArea::vertical()
                .id_salt("current-device")
                .auto_shrink(false)
                .show(ui, |ui| device_panel::current_device(app, ui, &mut out));
        }
    });
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
    ui.horizontal_wrapped(|ui| {
        ui.label(format!(
            "Mode: {:?} · ID scope {}",
            app.config.attestation.mode, app.config.dps.id_scope
        ));
        ui.separator();
        status_line(app, ui);
    });
    if let (false, Some(f)) = (app.is_gang(), app.fixtures.first())
        && let PortStatus::Error(p) = &f.port
    {
        ui.colored_label(FAIL_RED, format!("{} — {}", p.message, p.remedy));
    }
    if let Some(e) = &app.db_error {
        ui.colored_label(FAIL_RED, e);
    }
    for w in &app.warnings {
        ui.colored_label(WARN_AMBER, format!("Warning: {w}"));
    }
}

/// The fixture's port (several: how many are open), each a dot and words.
fn fixture_status(app: &StationApp, ui: &mut egui::Ui) {
    if app.is_gang() {
        let n = app.fixtures.len();
        let open = app
            .fixtures
            .iter()
            .filter(|f| matches!(f.port, PortStatus::Connected(_)))
            .count();
        let errors = app
            .fixtures
            .iter()
            .filter(|f| matches!(f.port, PortStatus::Error(_)))
            .count();
        let color = match (errors, open) {
            (0, o) if o == n => PASS_GREEN,
            (0, _) => WARN_AMBER,
            _ => FAIL_RED,
        };
        dot(ui, color);
        let mut text = format!("Fixtures: {open} of {n} connected");
        if errors > 0 {
            text += &format!(", {errors} with a port error");
        }
        ui.colored_label(color, text);
        return;
    }
    match app.fixtures.first().map(|f| &f.port) {
        Some(PortStatus::Opening) | None => {
            dot(ui, WARN_AMBER);
            ui.label("Fixture: opening");
        }
        Some(PortStatus::Connected(p)) => {
            dot(ui, PASS_GREEN);
            ui.label(format!("Fixture: connected ({p})"));
        }
        Some(PortStatus::Error(p)) => {
            dot(ui, FAIL_RED);
            ui.colored_label(FAIL_RED, format!("Fixture: error {}", p.code));
        }
    }
}

/// Fixtures, database and counters, each a dot and words.
fn status_line(app: &StationApp, ui: &mut egui::Ui) {
    fixture_status(app, ui);
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
    if let Some(fleet) = &app.fleet {
        ui.separator();
        fleet_status(&fleet.state(), ui);
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

/// The fleet database: online or not, the sync lag and queue, conflicts.
fn fleet_status(s: &crate::fleet::SyncState, ui: &mut egui::Ui) {
    let (color, text) = match s {
        s if s.conflicts > 0 => (
            FAIL_RED,
            format!("Fleet: {} conflicts (station fleet status)", s.conflicts),
        ),
        s if s.online => (
            PASS_GREEN,
            format!(
                "Fleet: online · lag {:.1} s · {} queued",
                s.lag_s, s.pending
            ),
        ),
        s if s.rounds == 0 => (WARN_AMBER, "Fleet: connecting".to_string()),
        s => (
            WARN_AMBER,
            format!(
                "Fleet: offline · lag {:.0} s · {} queued",
                s.lag_s, s.pending
            ),
        ),
    };
    dot(ui, color);
    ui.colored_label(color, text);
}
