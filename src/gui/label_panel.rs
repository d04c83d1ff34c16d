//! Drawing the device labels: a fixture's labels (its tile, or the one device panel), the last
//! label with the printer's state (the shift panel), and Reprint in a device's details. Reads
//! the [`LabelsView`]; a click returns a [`UiCommand`].

use super::app::UiCommand;
use super::labels_view::{LabelsView, Reprint};
use super::widgets::{FAIL_RED, PASS_GREEN, WARN_AMBER};
use crate::store::{Enrollment, Status};
use eframe::egui::{self, RichText};

/// Fixture `i`'s labels in text of `size` points: the last one printed, how many wait, how
/// many will not print, and the last error with what to do (amber: the device is not failed).
/// Nothing when labels are not printed after a PASS.
pub(super) fn fixture_labels(view: &LabelsView, i: usize, size: f32, ui: &mut egui::Ui) {
    let Some(s) = view.fixtures.get(i).filter(|_| view.on_pass) else {
        return;
    };
    let mut parts = vec![match &s.last_printed {
        Some(id) => format!("Label printed: {id}"),
        None => "Label: none printed yet".to_string(),
    }];
    if s.waiting > 0 {
        parts.push(format!("{} waiting", s.waiting));
    }
    if s.dropped > 0 {
        parts.push(format!("{} not printed", s.dropped));
    }
    ui.add(egui::Label::new(RichText::new(parts.join(" · ")).size(size)).wrap());
    if let Some(p) = &s.last_error {
        let error = format!("Label error {}: {}", p.code, p.message);
        let remedy = format!("Label — what to do: {}", p.remedy);
        for text in [error, remedy] {
            ui.add(egui::Label::new(RichText::new(text).size(size).color(WARN_AMBER)).wrap());
        }
    }
}

/// The shift panel's "Last label": the printer's error (amber), then the last label made,
/// scaled to the panel's width.
pub(super) fn last_label(view: &LabelsView, ui: &mut egui::Ui) {
    if !view.on_pass && view.preview.is_none() {
        return;
    }
    ui.label(RichText::new("Last label").strong().size(20.0));
    if let Some(p) = &view.printer_error {
        let printer = view.printer.as_deref().unwrap_or("the printer");
        ui.colored_label(
            WARN_AMBER,
            format!("Printer {printer}: {} — {}", p.code, p.message),
        );
        ui.colored_label(WARN_AMBER, format!("What to do: {}", p.remedy));
    }
    let Some(preview) = &view.preview else {
        ui.weak("No label made yet this session.");
        return;
    };
    let size = preview.texture.size_vec2();
    let width = ui.available_width().min(size.x).max(1.0);
    let image = egui::Image::new((preview.texture.id(), size))
        .fit_to_exact_size(size * (width / size.x.max(1.0)))
        .alt_text(format!("Last label: {}", preview.registration_id));
    ui.add(image);
}

/// A device's details: Reprint label (a printer is configured and the device is provisioned)
/// and how the last reprint went.
pub(super) fn reprint(
    view: &LabelsView,
    ui: &mut egui::Ui,
    id: &str,
    enrollment: Option<&Enrollment>,
    out: &mut Vec<UiCommand>,
) {
    let provisioned =
        enrollment.is_some_and(|e| matches!(e.status, Status::Provisioned | Status::Exported));
    if !view.can_reprint() || !provisioned {
        return;
    }
    ui.horizontal_wrapped(|ui| {
        if ui.button("Reprint label").clicked() {
            out.push(UiCommand::Reprint(id.to_string()));
        }
        match view.reprints.get(id) {
            None => {}
            Some(Reprint::Queued) => {
                ui.label("Reprint queued for the printer");
            }
            Some(Reprint::Printed { printer }) => {
                ui.colored_label(PASS_GREEN, format!("Label reprinted on {printer}"));
            }
            Some(Reprint::Failed { problem, retrying }) => {
                let (color, state) = match retrying {
                    true => (WARN_AMBER, "waiting for the printer"),
                    false => (FAIL_RED, "not printed"),
                };
                ui.colored_label(
                    color,
                    format!(
                        "Reprint {state}: {} {} — {}",
                        problem.code, problem.message, problem.remedy
                    ),
                );
            }
        }
    });
    ui.separator();
}
