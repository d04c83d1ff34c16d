//! Device labels: what a label shows for one provisioned device ([`LabelData`], read from the
//! database by registration ID), the ZPL job made from the `[label]` template ([`template`]),
//! sending it to a printer ([`printer`]: raw TCP, CUPS, a directory) and a PNG preview
//! rendered by the station ([`render`]).
//!
//! A label is only ever made for a provisioned (or exported) enrollment, never after a FAIL.
//! This layer sends one label when asked; the queue that keeps labels in order while the
//! printer is down, on a thread of its own, is the station's (`station::labels`). Nothing here
//! touches a device or changes the database.

pub mod printer;
pub mod render;
pub mod template;

use crate::config::{Config, LabelSection};
use crate::domain::label::Field;
use crate::domain::{Enrollment, Status};
use crate::error::{Error, ErrorCode, Result};
use crate::store::Store;

pub use render::render_png;

/// What one device's label shows: every placeholder's value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LabelData {
    pub registration_id: String,
    pub serial: String,
    pub id_scope: String,
    pub model: String,
    pub firmware: String,
    /// The day the device was provisioned, `YYYY-MM-DD` (UTC).
    pub date: String,
    pub station: String,
    pub line: String,
    /// X.509 only; empty otherwise.
    pub cert_thumbprint: String,
}

impl LabelData {
    /// The label of a provisioned enrollment; any other status is refused
    /// (`label.not_provisioned`): no label after a FAIL, none for an unfinished device.
    pub fn from_enrollment(e: &Enrollment, config: &Config) -> Result<LabelData> {
        if !matches!(e.status, Status::Provisioned | Status::Exported) {
            return Err(not_provisioned(
                &e.registration_id,
                &format!("it is {}", e.status.as_str()),
            ));
        }
        let day = e.provisioned_at.as_deref().unwrap_or(&e.created_at);
        Ok(LabelData {
            registration_id: e.registration_id.clone(),
            serial: e.device_serial.clone(),
            id_scope: config.dps.id_scope.clone(),
            model: e.model.clone(),
            firmware: e.firmware.clone(),
            date: day.get(..10).unwrap_or(day).to_string(),
            station: e.station.clone(),
            line: e.line.clone(),
            cert_thumbprint: e.cert_thumbprint.clone().unwrap_or_default(),
        })
    }

    /// The label of the enrollment `registration_id`, read from `store`.
    pub fn lookup(store: &Store, config: &Config, registration_id: &str) -> Result<LabelData> {
        match store.find(registration_id)? {
            Some(e) => LabelData::from_enrollment(&e, config),
            None => Err(not_provisioned(
                registration_id,
                "the database has no such enrollment",
            )),
        }
    }

    /// The value of `field`; `qr` is the QR code's data (`{qr}`).
    pub fn value(&self, field: Field, qr: &str) -> String {
        match field {
            Field::RegistrationId => &self.registration_id,
            Field::Serial => &self.serial,
            Field::IdScope => &self.id_scope,
            Field::Model => &self.model,
            Field::Firmware => &self.firmware,
            Field::Date => &self.date,
            Field::Station => &self.station,
            Field::Line => &self.line,
            Field::CertThumbprint => &self.cert_thumbprint,
            Field::Qr => qr,
        }
        .to_string()
    }

    /// A made-up device, for showing what the configured label looks like before any device
    /// has passed (never printed by the station).
    pub fn example(config: &Config) -> LabelData {
        LabelData {
            registration_id: "example-0001".into(),
            serial: "EXAMPLE0001".into(),
            id_scope: config.dps.id_scope.clone(),
            model: "model".into(),
            firmware: "1.0.0".into(),
            date: crate::store::now().get(..10).unwrap_or_default().into(),
            station: config.station.id.clone(),
            line: config.station.line.clone(),
            cert_thumbprint: String::new(),
        }
    }
}

fn not_provisioned(registration_id: &str, why: &str) -> Error {
    Error::Label {
        code: ErrorCode::LabelNotProvisioned,
        message: format!(
            "no label for `{registration_id}`: {why}; only a provisioned device gets one"
        ),
    }
}

/// One label as it goes to the printer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub registration_id: String,
    /// The ZPL job, `^XA` … `^XZ`, every placeholder filled.
    pub zpl: String,
}

impl Label {
    /// The label for `data` under `section`'s template.
    pub fn new(data: &LabelData, section: &LabelSection) -> Label {
        Label {
            registration_id: data.registration_id.clone(),
            zpl: template::zpl(data, section),
        }
    }
}

/// Print the label of `registration_id` now, on `section`'s printer (for `station label
/// reprint`): made from the database, sent once, the error returned.
pub fn print_now(
    config: &Config,
    section: &LabelSection,
    store: &Store,
    registration_id: &str,
) -> Result<Label> {
    let printer = section.printer.as_ref().ok_or(Error::MissingSection {
        section: "[label] printer",
    })?;
    let label = Label::new(&LabelData::lookup(store, config, registration_id)?, section);
    printer::send(printer, &config.base_dir, &label, section.timeout())?;
    Ok(label)
}
