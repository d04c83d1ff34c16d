//! Drawing: header, current device, shift panel, history, login, settings. Panels read state
//! and return [`UiCommand`]s; they never change state or touch threads themselves.

use super::app::{Banner, PortStatus, StationApp, StepState, UiCommand};
use crate::domain::Step;
use crate::store::Status;
use eframe::egui::{self, Color32, RichText};
use egui_extras::{Column, TableBuilder};

const PASS_GREEN: Color32 = Color32::from_rgb(0x1e, 0x8c, 0x3c);
const FAIL_RED: Color32 = Color32::from_rgb(0xc0, 0x1c, 0x28);
const ROW_HEIGHT: f32 = 26.0;

/// Draw the whole window; return what the operator asked for.
pub fn draw(app: &mut StationApp, ui: &mut egui::Ui) -> Vec<UiCommand> {
    let mut out = Vec::new();
    egui::Panel::top("header").show(ui, |ui| header(app, ui, &mut out));
    egui::Panel::right("shift")
        .default_size(330.0)
        .resizable(true)
        .show(ui, |ui| shift_panel(app, ui, &mut out));
    egui::Panel::bottom("history")
        .default_size(280.0)
        .resizable(true)
        .show(ui, |ui| history(app, ui, &mut out));
    egui::CentralPanel::default().show(ui, |ui| current_device(app, ui, &mut out));
    if app.operator.is_none() {
        login(app, ui.ctx(), &mut out);
    }
    if app.show_settings {
        settings(app, ui.ctx(), &mut out);
    }
    if app.history.details.is_some() {
        details(app, ui.ctx(), &mut out);
    }
    out
}

fn header(app: &mut StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    ui.horizontal(|ui| {
        ui.heading(format!(
            "{} · {}",
            app.config.station.id, app.config.station.line
        ));
        ui.separator();
        ui.label(format!(
            "Operator: {}",
            app.operator.as_deref().unwrap_or("(not logged in)")
        ));
        ui.separator();
        ui.label(format!(
            "Mode: {:?} · ID scope {}",
            app.config.attestation.mode, app.config.dps.id_scope
        ));
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if ui.button("Settings").clicked() {
                out.push(UiCommand::ToggleSettings);
            }
            if app.operator.is_some() && ui.button("Log out").clicked() {
                out.push(UiCommand::Logout);
            }
            ui.checkbox(&mut app.prefs.muted, "Mute sounds");
        });
    });
    ui.horizontal(|ui| {
        match &app.port {
            PortStatus::Opening => {
                dot(ui, Color32::from_rgb(0xb3, 0x6b, 0x00));
                ui.label("Fixture: opening");
            }
            PortStatus::Connected(p) => {
                dot(ui, PASS_GREEN);
                ui.label(format!("Fixture: connected ({p})"));
            }
            PortStatus::Error(p) => {
                dot(ui, FAIL_RED);
                ui.colored_label(FAIL_RED, format!("Fixture: error {}", p.code));
            }
        }
        ui.separator();
        match &app.db_error {
            None => {
                dot(ui, PASS_GREEN);
                ui.label("Database: ok");
            }
            Some(_) => {
                dot(ui, FAIL_RED);
                ui.colored_label(FAIL_RED, "Database: error");
            }
        }
        if let Some(c) = &app.counts {
            ui.separator();
            ui.label(format!("Not yet exported: {}", c.provisioned));
            if c.pending > 0 {
                ui.separator();
                ui.colored_label(FAIL_RED, format!("Unfinished: {}", c.pending));
            }
        }
    });
    if let PortStatus::Error(p) = &app.port {
        ui.colored_label(FAIL_RED, format!("{} — {}", p.message, p.remedy));
    }
    if let Some(e) = &app.db_error {
        ui.colored_label(FAIL_RED, e);
    }
    for w in &app.warnings {
        ui.colored_label(Color32::from_rgb(0xb3, 0x6b, 0x00), format!("Warning: {w}"));
    }
}

/// Green for a good outcome, red for a bad one (always next to words saying which).
fn outcome_color(good: bool) -> Color32 {
    if good { PASS_GREEN } else { FAIL_RED }
}

/// A coloured status dot (colour is never the only signal: a word always follows).
fn dot(ui: &mut egui::Ui, color: Color32) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(14.0, 14.0), egui::Sense::hover());
    ui.painter().circle_filled(rect.center(), 6.0, color);
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

fn current_device(app: &mut StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    let idle = !app.device.busy;
    ui.horizontal(|ui| {
        let label = ui.label(RichText::new("Serial number").size(22.0));
        // Enter is read before the field handles it (the field gives up focus on Enter).
        let id = egui::Id::unique("serial-number");
        let entered =
            ui.input(|i| i.key_pressed(egui::Key::Enter)) && ui.memory(|m| m.has_focus(id));
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
    });
    ui.add_space(8.0);
    ui.label(
        RichText::new(format!(
            "Device: {}    Registration ID: {}",
            if app.device.serial.is_empty() {
                "—"
            } else {
                &app.device.serial
            },
            if app.device.registration_id.is_empty() {
                "—"
            } else {
                &app.device.registration_id
            },
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
        ui.colored_label(Color32::from_rgb(0xb3, 0x6b, 0x00), format!("⚠ {w}"));
    }
    ui.add_space(12.0);
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

fn banner(ui: &mut egui::Ui, color: Color32, title: &str, detail: &str) {
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

fn stats_block(ui: &mut egui::Ui, title: &str, s: &crate::store::ShiftStats) {
    ui.label(RichText::new(title).strong().size(20.0));
    ui.label(format!("Passed: {}   Failed: {}", s.passed, s.failed));
    ui.label(format!(
        "Yield: {}   Median cycle: {}",
        s.yield_percent()
            .map_or("—".into(), |y| format!("{y:.1} %")),
        s.median_cycle_ms.map_or("—".into(), |m| format!("{m} ms"))
    ));
}

fn shift_panel(app: &mut StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    egui::ScrollArea::vertical().show(ui, |ui| {
        stats_block(ui, "This shift", &app.shift);
        ui.add_space(6.0);
        stats_block(ui, "Today", &app.day);
        if !app.shift.failures_by_code.is_empty() {
            ui.add_space(6.0);
            ui.label(RichText::new("Failures this shift").strong());
            for (code, n) in app.shift.failures_by_code.iter().take(5) {
                ui.label(format!("{n} × {code}"));
            }
        }
        ui.separator();
        if ui
            .add(egui::Button::new(RichText::new("Export batch").size(20.0)))
            .clicked()
        {
            out.push(UiCommand::Export);
        }
        match &app.export_note {
            Some(Ok(Some(s))) => {
                ui.label(format!("Batch {}: {} enrollments", s.batch, s.count));
                ui.label(format!("{}", s.csv.display()));
                ui.label(format!("{}", s.json.display()));
            }
            Some(Ok(None)) => {
                ui.label("Nothing to export: every provisioned device is in a batch.");
            }
            Some(Err(p)) => {
                ui.colored_label(
                    FAIL_RED,
                    format!("Export failed: {} — {}", p.message, p.remedy),
                );
            }
            None => {}
        }
        if app.config.upload.is_some() {
            ui.separator();
            let label = if app.uploading {
                "Uploading…"
            } else {
                "Upload to DPS"
            };
            if ui
                .add_enabled(
                    !app.uploading,
                    egui::Button::new(RichText::new(label).size(20.0)),
                )
                .clicked()
            {
                out.push(UiCommand::Upload);
            }
            match &app.upload_note {
                Some(Ok(s)) => {
                    let color = outcome_color(s.conflicts + s.failed == 0);
                    ui.colored_label(
                        color,
                        format!(
                            "Uploaded {}, conflicts {}, failed {} ({} requests)",
                            s.uploaded, s.conflicts, s.failed, s.requests
                        ),
                    );
                    if s.conflicts > 0 {
                        ui.label(
                            "Conflicts: an engineer resolves them with `station upload --update`.",
                        );
                    }
                }
                Some(Err(p)) => {
                    ui.colored_label(
                        FAIL_RED,
                        format!("Upload stopped: {} — {}", p.message, p.remedy),
                    );
                }
                None => {}
            }
        }
        if !app.pending.is_empty() {
            ui.separator();
            ui.label(RichText::new("Unfinished devices").strong().color(FAIL_RED));
            for e in app.pending.clone() {
                ui.horizontal(|ui| {
                    ui.label(format!("{} ({})", e.registration_id, e.device_serial));
                    if ui.button("Re-run this device").clicked() {
                        out.push(UiCommand::Rerun(e.device_serial.clone()));
                    }
                });
            }
        }
    });
}

fn status_color(s: Status) -> Color32 {
    match s {
        Status::Provisioned | Status::Exported => PASS_GREEN,
        Status::Failed => FAIL_RED,
        Status::Pending => Color32::from_rgb(0xb3, 0x6b, 0x00),
    }
}

fn history(app: &mut StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    ui.horizontal(|ui| {
        ui.label(RichText::new("History").strong().size(20.0));
        let label = ui.label("Search serial or registration ID");
        let r = ui.add(egui::TextEdit::singleline(&mut app.history.search).desired_width(260.0));
        if r.labelled_by(label.id).changed() {
            out.push(UiCommand::SearchChanged);
        }
        if let Some(t) = app.history.total {
            ui.label(format!("{t} devices"));
        }
    });
    let total = app.history.total.unwrap_or(0);
    let mut table = TableBuilder::new(ui)
        .striped(true)
        .sense(egui::Sense::click())
        .column(Column::exact(130.0))
        .column(Column::initial(300.0).resizable(true))
        .column(Column::initial(180.0).resizable(true))
        .column(Column::initial(200.0))
        .column(Column::remainder());
    if let Some(y) = app.history.scroll_to.take() {
        table = table.vertical_scroll_offset(y);
    }
    let mut wanted = Vec::new();
    table
        .header(24.0, |mut h| {
            for t in ["Status", "Registration ID", "Serial", "Updated", "Error"] {
                h.col(|ui| {
                    ui.strong(t);
                });
            }
        })
        .body(|body| {
            body.rows(ROW_HEIGHT, total, |mut row| {
                let i = row.index();
                match app.history_row(i) {
                    Some(e) => {
                        let status = e.status;
                        let id = e.registration_id.clone();
                        row.col(|ui| {
                            ui.colored_label(status_color(status), status.as_str());
                        });
                        row.col(|ui| {
                            ui.label(&id);
                        });
                        let serial = e.device_serial.clone();
                        let updated = e.updated_at.clone();
                        let error = e.error_code.clone().unwrap_or_default();
                        row.col(|ui| {
                            ui.label(serial);
                        });
                        row.col(|ui| {
                            ui.label(updated);
                        });
                        row.col(|ui| {
                            ui.label(error);
                        });
                        if row.response().clicked() {
                            out.push(UiCommand::ShowDetails(id));
                        }
                    }
                    None => {
                        wanted.push(i);
                        row.col(|ui| {
                            ui.weak("…");
                        });
                    }
                }
            });
        });
    for i in wanted {
        app.request_page(i);
    }
}

fn login(app: &mut StationApp, ctx: &egui::Context, out: &mut Vec<UiCommand>) {
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

fn settings(app: &mut StationApp, ctx: &egui::Context, out: &mut Vec<UiCommand>) {
    let mut open = true;
    egui::Window::new("Settings")
        .open(&mut open)
        .default_size([700.0, 600.0])
        .show(ctx, |ui| {
            ui.label(RichText::new("Fixture port").strong());
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

fn details(app: &mut StationApp, ctx: &egui::Context, out: &mut Vec<UiCommand>) {
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

/// Measurement mode (`STATION_GUI_BENCH=<frames>`): scroll the history, record the CPU time of
/// each frame, print the figures and close.
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

/// After drawing: measurement and screenshot modes.
pub fn after_frame(app: &mut StationApp, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
    let ctx = ui.ctx().clone();
    let cpu = frame.info().cpu_usage;
    let have_rows = app.history.total.unwrap_or(0) > 0;
    if let Some(b) = app.bench_mut() {
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
    let passed = matches!(app.device.banner, Some(Banner::Pass { .. }));
    let settled = app.history.total.unwrap_or(0) > 0 && app.shift.passed > 0;
    if let Some((path, frames)) = app.screenshot_mut()
        && passed
        && settled
    {
        *frames += 1;
        if *frames == 30 {
            // Let the banner settle, then have the renderer read the real pixels back.
            let path = path.clone();
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
    }
}

fn save_png(path: &std::path::Path, image: &egui::ColorImage) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut enc = png::Encoder::new(file, image.size[0] as u32, image.size[1] as u32);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(std::io::Error::other)?;
    let bytes: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
    w.write_image_data(&bytes).map_err(std::io::Error::other)
}
