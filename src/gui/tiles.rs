//! The central panel with several fixtures (a gang): **Start all**, then one tile per fixture
//! in a grid that fits the room there is (1 to 16 and more): columns and tile size are chosen
//! so the tiles are as large as possible, text scales with them down to a floor, and what
//! still does not fit scrolls. A tile: label, port, device serial and registration ID, the six
//! steps in one line, a PASS / FAIL block readable at two metres (with the failure code and
//! what to do), the fixture's labels (`[label]`), the serial field, Start and Retry, and the
//! fixture's own counters.

use super::app::{StationApp, UiCommand};
use super::device_panel::{FIELD_MARGIN, or_dash, step_state};
use super::fixture::{Banner, FixtureView, PortStatus};
use super::label_panel;
use super::widgets::{FAIL_RED, PASS_GREEN, WARN_AMBER, dot};
use crate::domain::Step;
use eframe::egui::{self, Color32, RichText, Stroke};

/// A tile's size at text scale 1, in points.
const TILE: [f32; 2] = [300.0, 290.0];
/// Text scale bounds: below the floor the grid scrolls instead of shrinking further (at the
/// floor PASS and FAIL are still large; the details are read up close).
const SCALE: (f32, f32) = (0.5, 1.3);
/// A tile's extra height at text scale 1 when it shows its labels (one line).
const LABEL_LINE: f32 = 22.0;
/// Space between tiles.
const GAP: f32 = 8.0;
/// Start and Retry at text scale 1.
const BUTTON: egui::Vec2 = egui::vec2(80.0, 40.0);

/// The grid: columns, tile size and text scale.
#[derive(Debug, Clone, Copy)]
struct Grid {
    columns: usize,
    tile: egui::Vec2,
    scale: f32,
}

impl Grid {
    /// The grid of `n` tiles in `room` with the largest tiles; when even those are below the
    /// floor, as many columns as fit at the floor's width, scrolling down.
    fn fit(room: egui::Vec2, n: usize, extra: f32) -> Self {
        let n = n.max(1);
        let tile = egui::vec2(TILE[0], TILE[1] + extra);
        let size = |columns: usize| {
            let rows = n.div_ceil(columns);
            let w = (room.x - GAP * (columns - 1) as f32) / columns as f32;
            let h = (room.y - GAP * (rows - 1) as f32) / rows as f32;
            (egui::vec2(w, h), (w / tile.x).min(h / tile.y))
        };
        let (columns, (tile, scale)) = (1..=n)
            .map(|c| (c, size(c)))
            .max_by(|a, b| a.1.1.total_cmp(&b.1.1))
            .unwrap_or((1, size(1)));
        if scale >= SCALE.0 {
            return Self {
                columns,
                tile,
                scale: scale.min(SCALE.1),
            };
        }
        let floor = tile * SCALE.0;
        let columns = (((room.x + GAP) / (floor.x + GAP)) as usize).clamp(1, n);
        let w = (room.x - GAP * (columns - 1) as f32) / columns as f32;
        Self {
            columns,
            tile: egui::vec2(w.max(floor.x), floor.y),
            scale: SCALE.0,
        }
    }
}

/// The gang view: Start all and the tiles.
pub(super) fn gang(app: &mut StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    toolbar(app, ui, out);
    ui.add_space(GAP);
    // Room for the scroll bar too: the grid must fit across even when it scrolls down.
    let room = ui.available_size() - egui::vec2(ui.spacing().scroll.allocated_width(), 0.0);
    let extra = if app.labels.on_pass { LABEL_LINE } else { 0.0 };
    let grid = Grid::fit(room, app.fixtures.len(), extra);
    egui::ScrollArea::vertical()
        .id_salt("fixture-tiles")
        .auto_shrink(false)
        .show(ui, |ui| {
            ui.spacing_mut().item_spacing = egui::vec2(GAP, GAP);
            let n = app.fixtures.len();
            for row in (0..n).step_by(grid.columns) {
                ui.horizontal_top(|ui| {
                    for i in row..(row + grid.columns).min(n) {
                        tile(app, i, grid, ui, out);
                    }
                });
            }
        });
}

/// Start all, and how the gang is doing.
fn toolbar(app: &StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    ui.horizontal_wrapped(|ui| {
        let ready = app.fixtures.iter().any(FixtureView::ready);
        let start_all = egui::Button::new(RichText::new("Start all").size(26.0))
            .min_size(egui::vec2(170.0, 48.0));
        if ui
            .add_enabled(ready && app.operator.is_some(), start_all)
            .clicked()
        {
            out.push(UiCommand::StartAll);
        }
        let count = |f: fn(&FixtureView) -> bool| app.fixtures.iter().filter(|x| f(x)).count();
        let passed = count(|f| matches!(f.device.banner, Some(Banner::Pass { .. })));
        let failed = count(|f| matches!(f.device.banner, Some(Banner::Fail(_))));
        let offline = count(|f| matches!(f.port, PortStatus::Error(_)));
        let running = count(|f| f.device.busy);
        let mut summary = format!("{passed} PASS · {failed} FAIL · {running} running");
        if offline > 0 {
            summary += &format!(" · {offline} offline");
        }
        ui.label(RichText::new(summary).size(20.0));
        let example = app.fixtures.last().map(|f| f.id.0.as_str()).unwrap_or("1");
        ui.label(
            RichText::new(format!(
                "Scans go to the highlighted tile, or to the fixture they start with: {example}:SERIAL"
            ))
            .size(15.0)
            .weak(),
        );
    });
}

/// One fixture's tile.
fn tile(app: &mut StationApp, i: usize, grid: Grid, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    let s = grid.scale;
    let selected = app.selected == i;
    let stroke = if selected {
        Stroke::new(3.0, ui.visuals().selection.stroke.color)
    } else {
        Stroke::new(1.0, ui.visuals().widgets.noninteractive.bg_stroke.color)
    };
    let margin = 8.0 * s;
    egui::Frame::group(ui.style())
        .stroke(stroke)
        .inner_margin(margin)
        .corner_radius(6.0)
        .show(ui, |ui| {
            let inner = grid.tile - egui::vec2(2.0 * margin + 6.0, 2.0 * margin + 6.0);
            ui.set_width(inner.x);
            ui.set_min_height(inner.y);
            // The row lays tiles out across; a tile's own content goes down.
            ui.vertical(|ui| {
                ui.spacing_mut().item_spacing = egui::vec2(6.0, 4.0 * s);
                let f = &app.fixtures[i];
                heading(f, s, ui);
                steps(f, s, ui);
                result(f, s, ui);
                label_panel::fixture_labels(&app.labels, i, 15.0 * s, ui);
                controls(app, i, s, ui, out);
                let f = &app.fixtures[i];
                let counts = format!("Passed {} · Failed {}", f.passed, f.failed);
                ui.label(RichText::new(counts).size(15.0 * s));
            });
        });
}

/// Label, port, and the device on the fixture.
fn heading(f: &FixtureView, s: f32, ui: &mut egui::Ui) {
    ui.horizontal_wrapped(|ui| {
        ui.label(RichText::new(&f.label).size(26.0 * s).strong());
        let (color, text) = match &f.port {
            PortStatus::Opening => (WARN_AMBER, "opening port".to_string()),
            PortStatus::Connected(p) => (PASS_GREEN, format!("connected {p}")),
            PortStatus::Error(p) => (FAIL_RED, format!("port error {}", p.code)),
        };
        dot(ui, color);
        ui.colored_label(color, RichText::new(text).size(15.0 * s));
    });
    ui.add(
        egui::Label::new(
            RichText::new(format!(
                "Serial {}   ID {}",
                or_dash(&f.device.serial),
                or_dash(&f.device.registration_id)
            ))
            .size(17.0 * s),
        )
        .wrap(),
    );
}

/// The six steps as six boxes, then the step running (or failed) in words.
fn steps(f: &FixtureView, s: f32, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        for state in f.device.steps {
            let (_, _, color) = step_state(ui, state);
            let (rect, _) =
                ui.allocate_exact_size(egui::vec2(16.0 * s, 12.0 * s), egui::Sense::hover());
            ui.painter().rect_filled(rect, 2.0, color);
        }
        let text = match f.device.current_step() {
            Some((n, step, state)) => {
                let (word, _, _) = step_state(ui, state);
                format!("{} {}/{} {word}", step.label(), n + 1, Step::ALL.len())
            }
            None if f.device.banner.is_some() => "all steps done".into(),
            None => String::new(),
        };
        ui.label(RichText::new(text).size(15.0 * s));
    });
}

/// The big block: PASS, FAIL (code, message, what to do), the port's error, or the state.
fn result(f: &FixtureView, s: f32, ui: &mut egui::Ui) {
    let (color, title, detail, remedy) = match (&f.device.banner, &f.port) {
        (_, PortStatus::Error(p)) => (
            FAIL_RED,
            "OFFLINE",
            format!("{}: {}", p.code, p.message),
            Some(p.remedy),
        ),
        (
            Some(Banner::Pass {
                registration_id,
                ms,
                ..
            }),
            _,
        ) => (
            PASS_GREEN,
            "PASS",
            format!("{registration_id} in {ms:.0} ms"),
            None,
        ),
        (Some(Banner::Fail(p)), _) => (
            FAIL_RED,
            "FAIL",
            format!("{}: {}", p.code, p.message),
            Some(p.remedy),
        ),
        (None, _) if f.device.busy => (WARN_AMBER, "WORKING", String::new(), None),
        (None, PortStatus::Opening) => (Color32::GRAY, "OPENING", String::new(), None),
        (None, _) => (Color32::GRAY, "READY", String::new(), None),
    };
    egui::Frame::new()
        .fill(color)
        .inner_margin(6.0 * s)
        .corner_radius(6.0)
        .show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.vertical_centered(|ui| {
                let big = RichText::new(title).size(44.0 * s).strong();
                ui.label(big.color(Color32::WHITE));
                if !detail.is_empty() {
                    let small = RichText::new(detail).size(15.0 * s).color(Color32::WHITE);
                    ui.add(egui::Label::new(small).wrap());
                }
            });
        });
    if let Some(remedy) = remedy {
        let text = RichText::new(format!("What to do: {remedy}"))
            .size(15.0 * s)
            .strong();
        ui.add(egui::Label::new(text).wrap());
    }
}

/// The serial field (scans go here) across the tile, then Start and Retry side by side.
fn controls(app: &mut StationApp, i: usize, s: f32, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    let logged_in = app.operator.is_some();
    let focus_here = app.selected == i && logged_in && !app.show_settings;
    let selected = app.selected;
    let f = &mut app.fixtures[i];
    let id = egui::Id::unique(("serial-number", i));
    // Enter is read before the field handles it (the field gives up focus on Enter).
    let entered = ui.input(|k| k.key_pressed(egui::Key::Enter)) && ui.memory(|m| m.has_focus(id));
    let field = ui
        .add(
            egui::TextEdit::singleline(&mut f.serial_input)
                .id(id)
                .hint_text("scan or type, then Enter")
                .font(egui::FontId::proportional(18.0 * s))
                .desired_width(ui.available_width() - FIELD_MARGIN),
        )
        .accessible_name(format!("Serial number for {}", f.label));
    if entered {
        out.push(UiCommand::Start(i));
    }
    if field.has_focus() && !entered && selected != i {
        out.push(UiCommand::Select(i));
    }
    // A barcode scanner is a keyboard: the selected tile's field has the focus.
    if focus_here && ui.ctx().memory(|m| m.focused().is_none()) {
        field.request_focus();
    }
    ui.horizontal_wrapped(|ui| buttons_of(f, logged_in, i, s, ui, out));
}

/// A tile's Start and Retry, named for screen readers (and tests) with the fixture's label.
fn buttons_of(
    f: &FixtureView,
    logged_in: bool,
    i: usize,
    s: f32,
    ui: &mut egui::Ui,
    out: &mut Vec<UiCommand>,
) {
    // Half the tile each (at least their own size: on a narrow tile Retry wraps below).
    let half = (ui.available_width() - ui.spacing().item_spacing.x) / 2.0;
    let size = egui::vec2(half.max(BUTTON.x * s), BUTTON.y * s);
    let button = |text: &str| egui::Button::new(RichText::new(text).size(22.0 * s)).min_size(size);
    let start = ui.add_enabled(f.ready() && logged_in, button("Start"));
    if start
        .accessible_name(format!("Start {}", f.label))
        .clicked()
    {
        out.push(UiCommand::Start(i));
    }
    let failed = matches!(f.device.banner, Some(Banner::Fail(_)));
    let can_retry = failed && f.ready() && logged_in && f.last_start.is_some();
    let retry = ui.add_enabled(can_retry, button("Retry"));
    if retry
        .accessible_name(format!("Retry {}", f.label))
        .clicked()
    {
        out.push(UiCommand::Retry(i));
    }
}
