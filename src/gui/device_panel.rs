//! The central panel: the serial field and Start, the device's steps, and the result banner.

use super::app::{Banner, StationApp, StepState, UiCommand};
use super::widgets::{FAIL_RED, PASS_GREEN, WARN_AMBER, banner, dot};
use crate::domain::Step;
use eframe::egui::{self, Color32, RichText};

pub(super) fn current_device(app: &mut StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    ui.horizontal(|ui| serial_row(app, ui, out));
    ui.add_space(8.0);
    ui.label(
        RichText::new(format!(
            "Device: {}    Registration ID: {}",
            or_dash(&app.device.serial),
            or_dash(&app.device.registration_id),
        ))
        .size(20.0),
    );
    ui.add_space(8.0);
    ui.horizontal(|ui| {
        ui.vertical(|ui| {
            for (step, state) in Step::ALL.iter().zip(app.device.steps) {
                step_line(ui, *step, state);
            }
        });
    });
    if let Some((w, t)) = app.device.progress
        && app.device.busy
    {
        ui.add(
            egui::ProgressBar::new(w as f32 / t.max(1) as f32)
                .text(format!("Writing {w}/{t} bytes")),
        );
    }
    for w in &app.device.warnings {
        ui.colored_label(WARN_AMBER, format!("⚠ {w}"));
    }
    ui.add_space(12.0);
    outcome(app, ui, out);
}

/// `s`, or a dash while it is not known yet.
fn or_dash(s: &str) -> &str {
    if s.is_empty() { "—" } else { s }
}

/// The serial-number field and the Start button; Enter or Space starts too.
fn serial_row(app: &mut StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    let idle = !app.device.busy;
    let label = ui.label(RichText::new("Serial number").size(22.0));
    // Enter is read before the field handles it (the field gives up focus on Enter).
    let id = egui::Id::unique("serial-number");
    let entered = ui.input(|i| i.key_pressed(egui::Key::Enter)) && ui.memory(|m| m.has_focus(id));
    let field = ui.add_enabled(
        idle,
        egui::TextEdit::singleline(&mut app.serial_input)
            .id(id)
            .hint_text("scan or type, then Enter")
            .font(egui::TextStyle::Heading)
            .desired_width(320.0),
    );
    let field = field.labelled_by(label.id);
    if entered {
        out.push(UiCommand::Start);
    }
    // A barcode scanner is a keyboard: keep the field focused while idle.
    if idle
        && app.operator.is_some()
        && !app.show_settings
        && ui.ctx().memory(|m| m.focused().is_none())
    {
        field.request_focus();
    }
    let start = ui.add_enabled(
        idle && app.operator.is_some(),
        egui::Button::new(RichText::new("Start").size(28.0)).min_size(egui::vec2(180.0, 56.0)),
    );
    if start.clicked() {
        out.push(UiCommand::Start);
    }
    if idle
        && !field.has_focus()
        && app.operator.is_some()
        && ui.input(|i| i.key_pressed(egui::Key::Space) || i.key_pressed(egui::Key::Enter))
        && !out.contains(&UiCommand::Start)
        && ui.ctx().memory(|m| m.focused().is_none())
    {
        out.push(UiCommand::Start);
    }
}

fn step_line(ui: &mut egui::Ui, step: Step, state: StepState) {
    let (word, text, color) = match state {
        StepState::Waiting => ("waiting", String::new(), ui.visuals().weak_text_color()),
        StepState::Running(t) => (
            "running",
            format!("{:.1} s", t.elapsed().as_secs_f32()),
            Color32::from_rgb(0xd0, 0x90, 0x20),
        ),
        StepState::Done(d) => (
            "done",
            format!("{:.0} ms", d.as_secs_f64() * 1e3),
            PASS_GREEN,
        ),
        StepState::Failed(d) => (
            "FAILED",
            format!("{:.0} ms", d.as_secs_f64() * 1e3),
            FAIL_RED,
        ),
    };
    ui.horizontal(|ui| {
        dot(ui, color);
        ui.add_sized(
            [150.0, 28.0],
            egui::Label::new(RichText::new(step.label()).size(22.0).color(color)),
        );
        ui.label(
            RichText::new(format!("{word} {text}"))
                .size(18.0)
                .color(color),
        );
    });
}

/// The PASS / FAIL banner (with the remedy and Retry), or what the station is doing.
fn outcome(app: &StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    match &app.device.banner {
        Some(Banner::Pass {
            registration_id,
            serial,
            ms,
        }) => {
            banner(
                ui,
                PASS_GREEN,
                "PASS",
                &format!("{registration_id} (serial {serial}) in {ms:.0} ms"),
            );
        }
        Some(Banner::Fail(p)) => {
            banner(ui, FAIL_RED, "FAIL", &format!("{}: {}", p.code, p.message));
            ui.label(
                RichText::new(format!("What to do: {}", p.remedy))
                    .size(22.0)
                    .strong(),
            );
            if ui
                .add_enabled(
                    !app.device.busy,
                    egui::Button::new(RichText::new("Retry").size(24.0)),
                )
                .clicked()
            {
                out.push(UiCommand::Retry);
            }
        }
        None if app.device.busy => {
            ui.label(RichText::new("Working…").size(28.0));
        }
        None => {
            ui.label(RichText::new("Ready: scan a serial number or press Start").size(24.0));
        }
    }
}
