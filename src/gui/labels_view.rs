//! What the window knows of the label printer: it owns the station's label queue
//! ([`Labels`], a thread of its own), submits a device's label after each PASS and a reprint
//! when asked, and keeps what the panels draw — each fixture's labels, the printer's error, how
//! each reprint went and the last label as a texture. The queue's events arrive over a channel
//! (with a repaint); the UI thread only reads the queue's state under its short lock, never
//! waits for the printer or the database. Draws nothing (`label_panel` draws). Imports no
//! sibling.

use crate::config::Config;
use crate::domain::FixtureId;
use crate::station::{FixtureLabels, LabelEvent, LabelJob, Labels, LastLabel, Problem};
use eframe::egui;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

/// How a reprint asked for from the history went.
#[derive(Debug, Clone, PartialEq)]
pub enum Reprint {
    /// In the queue, waiting for its turn or the printer.
    Queued,
    /// The printer took it.
    Printed { printer: String },
    /// Not printed: `retrying` while it waits for the printer, else dropped.
    Failed { problem: Problem, retrying: bool },
}

/// The last label made, as the shift panel shows it.
pub struct Preview {
    pub registration_id: String,
    pub texture: egui::TextureHandle,
    /// The label the texture was made from (a new one replaces the texture).
    label: Arc<LastLabel>,
}

/// The label queue and what the window shows of it.
pub struct LabelsView {
    labels: Option<Labels>,
    /// A label is printed after each PASS (`[label] enabled`); otherwise the queue (when a
    /// printer is configured) only reprints.
    pub on_pass: bool,
    events: Receiver<LabelEvent>,
    /// The fixtures' ids, in the window's order.
    ids: Vec<FixtureId>,
    /// Each fixture's labels (by fixture index), as last read from the queue.
    pub fixtures: Vec<FixtureLabels>,
    /// The printer's error, until it takes a label again.
    pub printer_error: Option<Problem>,
    /// Where labels go, as configured (`None`: no printer).
    pub printer: Option<String>,
    /// Reprints asked for, by registration ID.
    pub reprints: HashMap<String, Reprint>,
    pub preview: Option<Preview>,
    /// The queue changed without an event (a label was submitted): read it again.
    stale: bool,
}

impl LabelsView {
    /// Start the queue for `config`'s `[label]`: printing after each PASS when enabled, for
    /// reprints only when it names a printer but is not enabled, none without `[label]`. Its
    /// events reach [`poll`](Self::poll) through a channel, each with a repaint of `ctx`.
    pub fn start(config: &Config, fixtures: Vec<FixtureId>, ctx: &egui::Context) -> Self {
        let (tx, events) = channel();
        let repaint = ctx.clone();
        let notify = move |e: &LabelEvent| {
            let _ = tx.send(e.clone());
            repaint.request_repaint();
        };
        let section = config.label.as_ref();
        let on_pass = section.is_some_and(|s| s.enabled);
        let labels = match section {
            Some(_) if on_pass => Labels::start(config, notify),
            Some(s) if s.printer.is_some() => Labels::start_with(config, s.clone(), notify).ok(),
            _ => None,
        };
        Self {
            printer: labels.as_ref().map(|l| l.printer().to_string()),
            on_pass: on_pass && labels.is_some(),
            labels,
            events,
            fixtures: vec![FixtureLabels::default(); fixtures.len()],
            ids: fixtures,
            printer_error: None,
            reprints: HashMap::new(),
            preview: None,
            stale: false,
        }
    }

    /// A label can be reprinted (a printer is configured).
    pub fn can_reprint(&self) -> bool {
        self.labels.is_some()
    }

    /// The device `registration_id` passed on `fixture`: queue its label (never waits; a full
    /// queue reports itself as an event, and the device passed all the same).
    pub fn passed(&mut self, fixture: &FixtureId, registration_id: &str) {
        if let (true, Some(labels)) = (self.on_pass, &self.labels) {
            let _ = labels.submit(LabelJob::passed(fixture, registration_id));
            self.stale = true;
        }
    }

    /// Reprint `registration_id`'s label (asked for from the history).
    pub fn reprint(&mut self, registration_id: String) {
        let Some(labels) = &self.labels else {
            return;
        };
        let state = match labels.submit(LabelJob::reprint(&registration_id)) {
            Ok(()) => Reprint::Queued,
            Err(problem) => Reprint::Failed {
                problem,
                retrying: false,
            },
        };
        self.reprints.insert(registration_id, state);
        self.stale = true;
    }

    /// Take in the queue's events; when anything changed, read the fixtures' labels, the
    /// printer's error and the last label again.
    pub fn poll(&mut self, ctx: &egui::Context) {
        let events: Vec<LabelEvent> = self.events.try_iter().collect();
        if events.is_empty() && !self.stale {
            return;
        }
        self.stale = false;
        for e in &events {
            self.take(e);
        }
        let Some(labels) = &self.labels else {
            return;
        };
        self.fixtures = self.ids.iter().map(|id| labels.fixture(id)).collect();
        self.printer_error = labels.printer_error();
        let last = labels.last();
        if let Some(last) = last
            && !self
                .preview
                .as_ref()
                .is_some_and(|p| Arc::ptr_eq(&p.label, &last))
            && let Some(image) = decode_png(&last.png)
        {
            let texture = ctx.load_texture("last-label", image, egui::TextureOptions::LINEAR);
            self.preview = Some(Preview {
                registration_id: last.data.registration_id.clone(),
                texture,
                label: last,
            });
        }
    }

    /// A reprint's outcome (a device's own label shows through its fixture's state).
    fn take(&mut self, e: &LabelEvent) {
        let (id, state) = match e {
            LabelEvent::LabelPrinted {
                fixture: None,
                registration_id,
                printer,
                ..
            } => (
                registration_id,
                Reprint::Printed {
                    printer: printer.clone(),
                },
            ),
            LabelEvent::LabelFailed {
                fixture: None,
                registration_id,
                problem,
                retrying,
                ..
            } => (
                registration_id,
                Reprint::Failed {
                    problem: problem.clone(),
                    retrying: *retrying,
                },
            ),
            _ => return,
        };
        if let Some(r) = self.reprints.get_mut(id) {
            *r = state;
        }
    }

    /// The window closes: give the queue up to `wait` to print, then stop it; the labels it
    /// did not print.
    pub fn finish(&mut self, wait: Duration) -> Vec<LabelJob> {
        self.labels
            .as_mut()
            .map(|l| l.finish(wait))
            .unwrap_or_default()
    }
}

/// A PNG (the station's label preview: 8-bit grey) as an egui image; `None` if it does not
/// decode.
pub fn decode_png(bytes: &[u8]) -> Option<egui::ColorImage> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().ok()?;
    let mut buf = vec![0; reader.output_buffer_size()?];
    let info = reader.next_frame(&mut buf).ok()?;
    let size = [info.width as usize, info.height as usize];
    let px = buf.get(..info.buffer_size())?;
    Some(match info.color_type {
        png::ColorType::Grayscale => egui::ColorImage::from_gray(size, px),
        png::ColorType::Rgb => egui::ColorImage::from_rgb(size, px),
        png::ColorType::Rgba => egui::ColorImage::from_rgba_unmultiplied(size, px),
        png::ColorType::GrayscaleAlpha => {
            let rgba: Vec<u8> = px
                .chunks_exact(2)
                .flat_map(|ga| [ga[0], ga[0], ga[0], ga[1]])
                .collect();
            egui::ColorImage::from_rgba_unmultiplied(size, &rgba)
        }
        png::ColorType::Indexed => return None,
    })
}
