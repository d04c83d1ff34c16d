//! The technician's window (eframe/egui, glow renderer).
//!
//! Owns no workflow logic: a [`worker`] thread per fixture owns the fixture and runs the
//! library workflow by the station service's rules, the station's jobs thread exports,
//! uploads and runs the checks, a [`reader`] thread answers database queries; each reports
//! over a channel and requests a repaint. The UI thread only draws state and turns clicks and
//! keys into commands ([`app::UiCommand`]), so it never blocks on I/O or the database.

pub mod app;
mod bench;
mod device_panel;
mod dialogs;
mod dps_panel;
mod history;
pub mod jobs_view;
mod panels;
mod ports;
pub mod reader;
mod shift_panel;
mod widgets;
mod window;
pub mod worker;

use crate::config;
use crate::device::Opener;
use crate::error::Result;
use std::path::Path;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Instant;

/// When the process started (for the launch-to-first-frame figure).
pub static LAUNCHED: OnceLock<Instant> = OnceLock::new();

/// Open the station window on the configuration at `config_path` (or the default), opening
/// fixtures with `opener`.
pub fn run(config_path: Option<&Path>, opener: Opener) -> Result<ExitCode> {
    LAUNCHED.get_or_init(Instant::now);
    let config = config::load(config_path)?;
    let title = format!("Provisioning station — {}", config.station.id);
    let mut viewport = eframe::egui::ViewportBuilder::default()
        .with_title(&title)
        .with_app_id("provisioning-station")
        .with_inner_size([1280.0, 800.0])
        .with_min_inner_size([900.0, 600.0]);
    if let Some(icon) = app::window_icon() {
        viewport = viewport.with_icon(icon);
    }
    let options = eframe::NativeOptions {
        viewport,
        renderer: eframe::Renderer::Glow,
        ..Default::default()
    };
    eframe::run_native(
        &title,
        options,
        Box::new(move |cc| {
            Ok(Box::new(app::StationApp::with_opener(
                &cc.egui_ctx,
                config,
                opener,
            )))
        }),
    )
    .map_err(|e| crate::Error::Display {
        message: format!("{e} (is a desktop session running?)"),
    })?;
    Ok(ExitCode::SUCCESS)
}
