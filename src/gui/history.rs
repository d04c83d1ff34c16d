//! The bottom panel: the search field and the history table, fetched a page at a time as
//! rows scroll into view.

use super::app::{StationApp, UiCommand};
use super::widgets::{FAIL_RED, PASS_GREEN, WARN_AMBER};
use crate::store::{Enrollment, Status};
use eframe::egui::{self, Color32, RichText};
use egui_extras::{Column, TableBuilder, TableRow};

/// Height of one history row (bench mode scrolls by rows).
pub(super) const ROW_HEIGHT: f32 = 26.0;

pub(super) fn history(app: &mut StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    ui.horizontal_wrapped(|ui| {
        ui.label(RichText::new("History").strong().size(20.0));
        let label = ui.label("Search serial or registration ID");
        let r = ui.add(egui::TextEdit::singleline(&mut app.history.search).desired_width(220.0));
        if r.labelled_by(label.id).changed() {
            out.push(UiCommand::SearchChanged);
        }
        if let Some(t) = app.history.total {
            ui.label(format!("{t} devices"));
        }
    });
    // Narrower than the columns need (a 1024×768 screen): scroll sideways, cut nothing off.
    egui::ScrollArea::horizontal()
        .id_salt("history-columns")
        .auto_shrink(false)
        .show(ui, |ui| table(app, ui, out));
}

/// The table: a row per device, fetched a page at a time.
fn table(app: &mut StationApp, ui: &mut egui::Ui, out: &mut Vec<UiCommand>) {
    let total = app.history.total.unwrap_or(0);
    let mut table = TableBuilder::new(ui)
        .striped(true)
        // The panel sets the height: fewer rows on a small screen rather than a taller panel.
        .min_scrolled_height(0.0)
        .auto_shrink(false)
        .sense(egui::Sense::click())
        .column(Column::exact(110.0))
        .column(Column::initial(240.0).at_least(120.0).resizable(true))
        .column(Column::initial(150.0).at_least(100.0).resizable(true))
        .column(Column::initial(190.0).at_least(170.0))
        .column(Column::remainder().at_least(140.0));
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
                    Some(e) => enrollment_row(&mut row, e, out),
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

/// One loaded row; a click asks for the device's details.
fn enrollment_row(row: &mut TableRow<'_, '_>, e: &Enrollment, out: &mut Vec<UiCommand>) {
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

fn status_color(s: Status) -> Color32 {
    match s {
        Status::Provisioned | Status::Exported => PASS_GREEN,
        Status::Failed => FAIL_RED,
        Status::Pending => WARN_AMBER,
    }
}
