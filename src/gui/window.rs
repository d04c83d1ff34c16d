//! The native window: how it opens (sized to the monitor, or full screen for the kiosk), and
//! the frame loop: take in the threads' reports, draw, apply what the operator asked for,
//! then run the measurement and screenshot modes.

use super::app::{self, StationApp};
use super::bench;
use super::panels;
use crate::config::Config;
use eframe::egui;
use std::time::Duration;

/// How long a closing window waits for queued labels to print.
const LABELS_DRAIN: Duration = Duration::from_secs(5);

/// The size the window asks for. eframe clamps it to the largest monitor, so a 1024×768 or
/// 1920×1080 screen gets a window that fills it; a window manager then maximizes it.
const OPEN_SIZE: [f32; 2] = [1920.0, 1080.0];

/// Smallest window the layout is made for (1024×768 at the default scale fits).
const MIN_SIZE: [f32; 2] = [800.0, 600.0];

/// The window as it opens: maximized at the monitor's size, or full screen with
/// `[gui] fullscreen = true` (the kiosk entry).
pub fn viewport(config: &Config, title: &str) -> egui::ViewportBuilder {
    let mut viewport = egui::ViewportBuilder::default()
        .with_title(title)
        .with_app_id("provisioning-station")
        .with_inner_size(OPEN_SIZE)
        .with_clamp_size_to_monitor_size(true)
        .with_min_inner_size(MIN_SIZE)
        .with_maximized(true)
        .with_fullscreen(config.gui.fullscreen);
    if let Some(icon) = app::window_icon() {
        viewport = viewport.with_icon(icon);
    }
    viewport
}

impl eframe::App for StationApp {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        if !bench::frozen(ui.ctx()) {
            self.poll();
        }
        let commands = panels::draw(self, ui);
        for c in commands {
            self.apply(c);
        }
        bench::after_frame(self, ui, frame);
    }

    /// Give the label queue a moment to print what it holds (naming what it did not), and
    /// sign the audit trail's head as the window closes.
    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        for job in self.labels.finish(LABELS_DRAIN) {
            eprintln!(
                "warning: the label of {0} was not printed; once the printer is back: station label reprint {0}",
                job.registration_id
            );
        }
        if let Ok(store) = crate::store::Store::open(&self.config.database_path()) {
            let _ = store.sign_audit_head("shutdown");
        }
    }
}
