//! The technician's window (eframe/egui, glow renderer).
//!
//! Owns no workflow logic: a [`worker`] thread per fixture (one per `[[fixture]]`, all started
//! by `workers` and sharing one set of device claims) owns the fixture's device and runs the
//! library workflow by the station service's rules, the station's jobs thread exports, uploads
//! and runs the checks, a [`reader`] thread answers database queries, the station's label
//! queue ([`labels_view`]) prints a device label after each PASS; each reports over a channel
//! and requests a repaint. The UI thread only draws state and turns clicks and keys into
//! commands ([`app::UiCommand`]), so it never blocks on I/O or the database. One fixture
//! shows as today's device panel; several show as a grid of tiles (`tiles`).

pub mod app;
mod bench;
mod commands;
mod device_panel;
mod dialogs;
mod dps_panel;
pub mod fixture;
mod history;
pub mod jobs_view;
mod label_panel;
pub mod labels_view;
mod panels;
mod ports;
pub mod reader;
mod shift_panel;
mod tiles;
mod widgets;
mod window;
pub mod worker;
mod workers;

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
    let options = eframe::NativeOptions {
        viewport: window::viewport(&config, &title),
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
