//! The central panel with one fixture: the serial field and Start, the device's steps, and
//! the result banner, then the fixture's labels (`[label]`). Sizes follow the room there is (the panel scrolls, never cuts off).

use super::app::{StationApp, UiCommand};
use super::fixture::{Banner, DeviceView, StepState};
use super::label_panel;
use super::widgets::{FAIL_RED, PASS_GREEN, WARN_AMBER, banner, dot};
use crate::domain::Step;
use eframe::egui::{self, Color32, RichText};

/// Width of one step line (dot, name, state and time): the steps take as many columns as fit.
const STEP_WIDTH: f32 = 260.0;
/// The Start button.
const START_SIZE: [f32; 2] = [180.0, 56.0];
/// The serial field's width when there is room, and the least it gets.
const FIELD_WIDTH: (f32, f32) = (160.0, 320.0);
/// What a text field adds around its text (its frame's margins).
pub(super) const FIELD_MARGIN: f32 = 12.0;

/// The device panel of fixture 0 (the only one).
pub(super) fn current_device(app: &mut StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    ui.horizontal_wrapped(|ui| serial_row(app, ui, out));
    let Some(f) = app.fixtures.first() else {
        return;
    };
    let device = &f.device;
    ui.add_space(8.0);
    ui.add(
        egui::Label::new(
            RichText::new(format!(
                "Device: {}    Registration ID: {}",
                or_dash(&device.serial),
                or_dash(&device.registration_id),
            ))
            .size(20.0),
        )
        .wrap(),
    );
    ui.add_space(8.0);
    steps(ui, device);
    if let Some((w, t)) = device.progress
        && device.busy
    {
        ui.add(
            egui::ProgressBar::new(w as f32 / t.max(1) as f32)
                .text(format!("Writing {w}/{t} bytes")),
        );
    }
    for w in &device.warnings {
        ui.colored_label(WARN_AMBER, format!("⚠ {w}"));
    }
    ui.add_space(12.0);
    outcome(device, ui, out);
    ui.add_space(8.0);
    label_panel::fixture_labels(&app.labels, 0, 20.0, ui);
}

/// The six steps in as many columns as the width allows (top to bottom, then across).
fn steps(ui: &mut egui::Ui, device: &DeviceView) {
    let columns = ((ui.available_width() / STEP_WIDTH) as usize).clamp(1, 3);
    let per_column = Step::ALL.len().div_ceil(columns);
    ui.horizontal_top(|ui| {
        for (steps, states) in Step::ALL
            .chunks(per_column)
            .zip(device.steps.chunks(per_column))
        {
            ui.vertical(|ui| {
                ui.set_width(STEP_WIDTH);
                for (step, state) in steps.iter().zip(states) {
                    step_line(ui, *step, *state);
                }
            });
        }
    });
}

/// `s`, or a dash while it is not known yet.
pub(super) fn or_dash(s: &str) -> &str {
    if s.is_empty() { "—" } else { s }
}

/// The serial-number field and the Start button; Enter or Space starts too.
fn serial_row(app: &mut StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    let logged_in = app.operator.is_some();
    let show_settings = app.show_settings;
    let Some(f) = app.fixtures.first_mut() else {
        return;
    };
    let idle = !f.device.busy;
    let label = ui.label(RichText::new("Serial number").size(22.0));
    // Enter is read before the field handles it (the field gives up focus on Enter).
    let id = egui::Id::unique("serial-number");
    let entered = ui.input(|i| i.key_pressed(egui::Key::Enter)) && ui.memory(|m| m.has_focus(id));
    let spacing = ui.spacing().item_spacing.x;
    let width = (ui.available_size_before_wrap().x - START_SIZE[0] - 2.0 * spacing - FIELD_MARGIN)
        .clamp(FIELD_WIDTH.0, FIELD_WIDTH.1);
    let field = ui.add_enabled(
        idle,
        egui::TextEdit::singleline(&mut f.serial_input)
            .id(id)
            .hint_text("scan or type, then Enter")
            .font(egui::TextStyle::Heading)
            .desired_width(width),
    );
    let field = field.labelled_by(label.id);
    if entered {
        out.push(UiCommand::Start(0));
    }
    // A barcode scanner is a keyboard: keep the field focused while idle.
    if idle && logged_in && !show_settings && ui.ctx().memory(|m| m.focused().is_none()) {
        field.request_focus();
    }
    let start = ui.add_enabled(
        idle && logged_in,
        egui::Button::new(RichText::new("Start").size(28.0)).min_size(START_SIZE.into()),
    );
    if start.clicked() {
        out.push(UiCommand::Start(0));
    }
    if idle
        && !field.has_focus()
        && logged_in
        && ui.input(|i| i.key_pressed(egui::Key::Space) || i.key_pressed(egui::Key::Enter))
        && !out.contains(&UiCommand::Start(0))
        && ui.ctx().memory(|m| m.focused().is_none())
    {
        out.push(UiCommand::Start(0));
    }
}

/// A step's state: its word, its time, its colour.
pub(super) fn step_state(ui: &egui::Ui, state: StepState) -> (&'static str, String, Color32) {
    match state {
        StepState::Waiting => ("waiting", String::new(), ui.visuals().weak_text_color()),
        StepState::Running(t) => (
            "running",
            format!("{:.1} s", t.elapsed().as_secs_f32()),
            WARN_AMBER,
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
    }
}

fn step_line(ui: &mut egui::Ui, step: Step, state: StepState) {
    let (word, text, color) = step_state(ui, state);
    ui.horizontal(|ui| {
        dot(ui, color);
        ui.add_sized(
            [120.0, 28.0],
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
fn outcome(device: &DeviceView, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    match &device.banner {
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
                    !device.busy,
                    egui::Button::new(RichText::new("Retry").size(24.0)),
                )
                .clicked()
            {
                out.push(UiCommand::Retry(0));
            }
        }
        None if device.busy => {
            ui.label(RichText::new("Working…").size(28.0));
        }
        None => {
            ui.label(RichText::new("Ready: scan a serial number or press Start").size(24.0));
        }
    }
}
