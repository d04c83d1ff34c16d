//! Measurement and screenshot modes, run after each frame is drawn. Their state lives in the
//! egui context's memory, so the window's state (`app`) knows nothing of them.

use super::app::StationApp;
use super::fixture::{Banner, PortStatus};
use super::history::ROW_HEIGHT;
use eframe::egui;
use std::path::{Path, PathBuf};

/// Measurement mode (`STATION_GUI_BENCH=<frames>`): scroll the history, record the CPU time of
/// each frame, print the figures and close.
#[derive(Clone)]
pub struct Bench {
    frames: usize,
    cpu_ms: Vec<f32>,
    first_frame_ms: Option<f64>,
    scroll: f32,
}

impl Bench {
    pub fn from_env() -> Option<Self> {
        let frames = std::env::var("STATION_GUI_BENCH").ok()?.parse().ok()?;
        Some(Self {
            frames,
            cpu_ms: Vec::new(),
            first_frame_ms: None,
            scroll: 0.0,
        })
    }
}

/// The after-frame modes, read from the environment on the first frame.
#[derive(Clone, Default)]
struct Modes {
    bench: Option<Bench>,
    /// Screenshot mode (`STATION_GUI_SCREENSHOT=<png>`): the file, and frames waited so far.
    screenshot: Option<(PathBuf, u32)>,
    /// The screenshot is asked for: the window stops taking in reports, so the frame read
    /// back shows what was decided on (with `auto_start` fixtures go on with the next device).
    frozen: bool,
}

impl Modes {
    fn from_env() -> Self {
        Self {
            bench: Bench::from_env(),
            screenshot: std::env::var_os("STATION_GUI_SCREENSHOT").map(|p| (PathBuf::from(p), 0)),
            frozen: false,
        }
    }
}

/// Key of the modes in the context's memory.
fn modes_id() -> egui::Id {
    egui::Id::unique("station-after-frame-modes")
}

/// Whether the window must not take in the threads' reports (a screenshot is being taken).
pub fn frozen(ctx: &egui::Context) -> bool {
    ctx.data(|d| d.get_temp::<Modes>(modes_id()))
        .is_some_and(|m| m.frozen)
}

/// After drawing: measurement and screenshot modes.
pub fn after_frame(app: &mut StationApp, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
    let ctx = ui.ctx().clone();
    let id = modes_id();
    // Taken out of memory while in use: the context is not locked while this frame's work
    // calls it.
    let mut modes = ctx
        .data_mut(|d| d.remove_temp::<Modes>(id))
        .unwrap_or_else(Modes::from_env);
    if let Some(b) = &mut modes.bench {
        bench_frame(b, app, &ctx, frame.info().cpu_usage);
    }
    if let Some((path, frames)) = &mut modes.screenshot {
        modes.frozen |= screenshot_frame(path, frames, app, &ctx);
    }
    ctx.data_mut(|d| d.insert_temp(id, modes));
}

/// Record this frame; scroll on, or print the figures and close once enough are recorded.
fn bench_frame(b: &mut Bench, app: &mut StationApp, ctx: &egui::Context, cpu: Option<f32>) {
    let have_rows = app.history.total.unwrap_or(0) > 0;
    if b.first_frame_ms.is_none() {
        b.first_frame_ms = super::LAUNCHED
            .get()
            .map(|t| t.elapsed().as_secs_f64() * 1e3);
    }
    if let Some(c) = cpu
        && have_rows
    {
        b.cpu_ms.push(c * 1e3);
    }
    b.scroll += 37.0 * ROW_HEIGHT;
    let scroll = b.scroll;
    let done = b.cpu_ms.len() >= b.frames;
    if done {
        let mut v = b.cpu_ms.clone();
        v.sort_by(f32::total_cmp);
        println!(
            "{}",
            serde_json::json!({
                "frames": v.len(),
                "frame_cpu_median_ms": v[v.len() / 2],
                "frame_cpu_p99_ms": v[(v.len() - 1) * 99 / 100],
                "launch_to_first_frame_ms": b.first_frame_ms,
                "rss_mb": status_mb("VmRSS:"),
                "rss_anon_mb": status_mb("RssAnon:"),
                "rss_file_mb": status_mb("RssFile:"),
                "history_rows": app.history.total,
            })
        );
        ctx.send_viewport_cmd(egui::ViewportCommand::Close);
    } else {
        app.history.scroll_to = Some(scroll);
    }
    ctx.request_repaint();
}

/// Once every fixture has finished a device (at least one PASS) and the figures are in,
/// wait 30 frames, then save the window's pixels to `path` in a frame where every fixture
/// that has a port shows PASS (with `auto_start` they go on with the next device), and close.
/// Answers whether the screenshot has been asked for.
fn screenshot_frame(path: &Path, frames: &mut u32, app: &StationApp, ctx: &egui::Context) -> bool {
    let online = || {
        app.fixtures
            .iter()
            .filter(|f| !matches!(f.port, PortStatus::Error(_)))
    };
    let pass = |f: &&super::fixture::FixtureView| {
        !f.device.busy && matches!(f.device.banner, Some(Banner::Pass { .. }))
    };
    let passed = online().filter(pass).count();
    let settled = passed > 0
        && app.history.total.unwrap_or(0) >= passed
        && app.shift.passed as usize >= passed;
    if !settled {
        return false;
    }
    if *frames < 30 {
        *frames += 1;
    } else if *frames == 30 && online().all(|f| pass(&f)) {
        *frames += 1;
        // Have the renderer read this frame's real pixels back.
        let path = path.to_path_buf();
        let ctx2 = ctx.clone();
        ctx.request_screenshot(move |image| {
            if let Err(e) = save_png(&path, &image) {
                eprintln!("cannot save screenshot {}: {e}", path.display());
            }
            ctx2.send_viewport_cmd(egui::ViewportCommand::Close);
            ctx2.request_repaint();
        });
    }
    ctx.request_repaint();
    *frames > 30
}

/// A `/proc/self/status` memory line (`VmRSS:`, `RssAnon:`, `RssFile:`) in MB.
fn status_mb(key: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn save_png(path: &Path, image: &egui::ColorImage) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut enc = png::Encoder::new(file, image.size[0] as u32, image.size[1] as u32);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(std::io::Error::other)?;
    let bytes: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
    w.write_image_data(&bytes).map_err(std::io::Error::other)
}
