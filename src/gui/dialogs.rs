//! The windows over the main view: operator login, settings, and a device's details.

use super::app::{StationApp, UiCommand};
use super::dps_panel;
use super::label_panel;
use super::widgets::{FAIL_RED, PASS_GREEN, outcome_color};
use eframe::egui::{self, RichText};

pub(super) fn login(app: &mut StationApp, ctx: &egui::Context, out: &mut Vec<UiCommand>) {
    egui::Window::new("Operator login")
        .collapsible(false)
        .resizable(false)
        .anchor(egui::Align2::CENTER_CENTER, egui::vec2(0.0, 0.0))
        .show(ctx, |ui| {
            let label = ui.label(RichText::new("Operator ID (type or scan your badge)").size(20.0));
            let id = egui::Id::unique("operator-id");
            let enter =
                ui.input(|i| i.key_pressed(egui::Key::Enter)) && ui.memory(|m| m.has_focus(id));
            let r = ui
                .add(
                    egui::TextEdit::singleline(&mut app.operator_input)
                        .id(id)
                        .font(egui::TextStyle::Heading),
                )
                .labelled_by(label.id);
            if !r.has_focus() && ctx.memory(|m| m.focused().is_none()) {
                r.request_focus();
            }
            if (ui.button(RichText::new("Start shift").size(20.0)).clicked() || enter)
                && !app.operator_input.trim().is_empty()
            {
                out.push(UiCommand::Login(app.operator_input.clone()));
            }
        });
}

pub(super) fn settings(app: &mut StationApp, ctx: &egui::Context, out: &mut Vec<UiCommand>) {
    let mut open = true;
    egui::Window::new("Settings")
        .open(&mut open)
        .default_size([700.0, 600.0])
        .show(ctx, |ui| {
            ui.label(RichText::new("Fixture port").strong());
            if app.is_gang() {
                fixture_choice(app, ui);
            }
            ui.horizontal(|ui| {
                let label = ui.label("Port path, sim or auto");
                ui.add(egui::TextEdit::singleline(&mut app.port_input))
                    .labelled_by(label.id);
                if ui.button("Use this port").clicked() {
                    out.push(UiCommand::UsePort(app.port_input.clone()));
                }
            });
            // Listed when Settings opens (and on Refresh), never per frame.
            if ui.button("Refresh ports").clicked() {
                out.push(UiCommand::ListPorts);
            }
            for (name, desc) in &app.ports {
                if ui.selectable_label(&app.port_input == name, desc).clicked() {
                    app.port_input = name.clone();
                }
            }
            ui.separator();
            ui.horizontal(|ui| {
                ui.label(RichText::new("Station checks").strong());
                if ui.button("Run checks").clicked() {
                    out.push(UiCommand::RunDoctor);
                }
            });
            if let Some(checks) = &app.doctor {
                for c in checks {
                    let (icon, color) = if c.ok {
                        ("ok", PASS_GREEN)
                    } else {
                        ("FAIL", FAIL_RED)
                    };
                    ui.colored_label(color, format!("{icon} {}: {}", c.check, c.detail));
                    if let Some(f) = &c.fix {
                        ui.label(format!("    fix: {f}"));
                    }
                }
            }
            ui.separator();
            ui.label(RichText::new("Effective station.toml (read-only)").strong());
            egui::ScrollArea::vertical()
                .max_height(300.0)
                .show(ui, |ui| {
                    ui.add(egui::Label::new(
                        RichText::new(&app.effective_config).monospace(),
                    ));
                });
        });
    if !open {
        out.push(UiCommand::ToggleSettings);
    }
}

/// Which fixture's port Settings changes (several fixtures).
fn fixture_choice(app: &mut StationApp, ui: &mut egui::Ui) {
    let before = app.settings_fixture;
    let current = app
        .fixtures
        .get(before)
        .map(|f| f.label.clone())
        .unwrap_or_default();
    ui.horizontal(|ui| {
        let label = ui.label("Fixture");
        egui::ComboBox::from_id_salt("settings-fixture")
            .selected_text(current)
            .show_ui(ui, |ui| {
                for (i, f) in app.fixtures.iter().enumerate() {
                    ui.selectable_value(&mut app.settings_fixture, i, &f.label);
                }
            })
            .response
            .labelled_by(label.id);
    });
    if app.settings_fixture != before
        && let Some(f) = app.fixtures.get(app.settings_fixture)
    {
        app.port_input = f.configured_port.clone();
    }
}

pub(super) fn details(app: &mut StationApp, ctx: &egui::Context, out: &mut Vec<UiCommand>) {
    let Some((id, enrollment, attempts)) = &app.history.details else {
        return;
    };
    let mut open = true;
    egui::Window::new(format!("Device {id}"))
        .open(&mut open)
        .show(ctx, |ui| {
            if let Some(e) = enrollment {
                ui.label(format!(
                    "Serial {} · firmware {} · {} ({}) · status {}{}",
                    e.device_serial,
                    e.firmware,
                    e.attestation_type,
                    e.key_source.as_deref().unwrap_or(""),
                    e.status.as_str(),
                    e.batch
                        .as_deref()
                        .map(|b| format!(" · batch {b}"))
                        .unwrap_or_default()
                ));
                if let Some(serial) = &e.cert_serial {
                    ui.label(format!(
                        "Certificate serial {serial} · SHA-256 {} · valid to {}",
                        e.cert_thumbprint.as_deref().unwrap_or(""),
                        e.cert_not_after.as_deref().unwrap_or("")
                    ));
                }
                if e.attestation_type == crate::domain::AttestationKind::Tpm {
                    ui.label(format!(
                        "TPM endorsement key enrolled · EK certificate: {}",
                        e.ek_cert_status.as_deref().unwrap_or("not recorded")
                    ));
                }
                ui.separator();
            }
            label_panel::reprint(&app.labels, ui, id, enrollment.as_deref(), out);
            dps_panel::registration(app, ui, id, out);
            ui.label(RichText::new("Attempts").strong());
            for a in attempts {
                let color = outcome_color(a.outcome == "passed");
                ui.colored_label(
                    color,
                    format!(
                        "{}  {}  {}  {} ms  operator {}  {}",
                        a.started_at,
                        a.outcome,
                        a.error_code.as_deref().unwrap_or(""),
                        a.duration_ms,
                        a.operator,
                        a.message.as_deref().unwrap_or("")
                    ),
                );
            }
        });
    if !open {
        out.push(UiCommand::CloseDetails);
    }
}
