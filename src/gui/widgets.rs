//! Colours and small widgets shared by the panels. Imports nothing from its siblings but
//! `app`, so every panel file may use it.

use eframe::egui::{self, Color32, RichText};

pub(super) const PASS_GREEN: Color32 = Color32::from_rgb(0x1e, 0x8c, 0x3c);
pub(super) const FAIL_RED: Color32 = Color32::from_rgb(0xc0, 0x1c, 0x28);
/// Warnings, a fixture still opening, unfinished devices.
pub(super) const WARN_AMBER: Color32 = Color32::from_rgb(0xb3, 0x6b, 0x00);

/// Green for a good outcome, red for a bad one (always next to words saying which).
pub(super) fn outcome_color(good: bool) -> Color32 {
    if good { PASS_GREEN } else { FAIL_RED }
}

/// A coloured status dot (colour is never the only signal: a word always follows).
pub(super) fn dot(ui: &mut egui::Ui, color: Color32) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(14.0, 14.0), egui::Sense::hover());
    ui.painter().circle_filled(rect.center(), 6.0, color);
}

/// The big PASS / FAIL banner: a filled frame with a title and a detail line.
pub(super) fn banner(ui: &mut egui::Ui, color: Color32, title: &str, detail: &str) {
    egui::Frame::new()
        .fill(color)
        .inner_margin(16.0)
        .corner_radius(8.0)
        .show(ui, |ui| {
            ui.set_min_width(ui.available_width());
            ui.vertical_centered(|ui| {
                ui.label(
                    RichText::new(title)
                        .size(64.0)
                        .strong()
                        .color(Color32::WHITE),
                );
                ui.label(RichText::new(detail).size(20.0).color(Color32::WHITE));
            });
        });
}
