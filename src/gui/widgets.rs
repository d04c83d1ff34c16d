//! Colours and small widgets shared by the panels. Imports nothing from its siblings but
//! `app`, so every panel file may use it.

use crate::domain::event::{Phase, Progress};
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

/// `42s`, `3m05s`, `2h07m` (the command line prints time left the same way).
pub(super) fn duration_text(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// What `Progress::ok` counts in `phase`.
fn ok_word(phase: Phase) -> &'static str {
    match phase {
        Phase::Upload => "accepted",
        Phase::ReadBack => "read back",
        Phase::Verify => "matched",
        Phase::Registrations => "assigned",
        Phase::Export => "written",
    }
}

/// The bar's own text: `Uploading 450/1000 (45 %)`.
pub(super) fn progress_title(p: &Progress) -> String {
    format!(
        "{} {}/{} ({:.0} %)",
        p.phase.label(),
        p.done,
        p.total,
        p.fraction() * 100.0
    )
}

/// The line under the bar: `45 calls · 440 accepted · 0 conflicts · 10 failed · 1m05s left`.
pub(super) fn progress_counts(p: &Progress) -> String {
    let mut s = format!("{} calls · {} {}", p.requests, p.ok, ok_word(p.phase));
    if p.phase == Phase::Upload || p.conflicts > 0 {
        s.push_str(&format!(" · {} conflicts", p.conflicts));
    }
    s.push_str(&format!(" · {} failed", p.failed));
    if p.done < p.total {
        match p.eta_s {
            Some(eta) => s.push_str(&format!(" · {} left", duration_text(eta))),
            None => s.push_str(" · estimating time left"),
        }
    }
    s
}

/// A long job's progress: a bar with the phase and counts, then calls, outcomes and time left
/// (amber once anything failed or conflicted).
pub(super) fn progress(ui: &mut egui::Ui, p: &Progress) {
    ui.add(
        egui::ProgressBar::new(p.fraction())
            .text(progress_title(p))
            .animate(p.done < p.total),
    );
    let counts = progress_counts(p);
    if p.failed + p.conflicts > 0 {
        ui.colored_label(WARN_AMBER, counts);
    } else {
        ui.label(counts);
    }
}
