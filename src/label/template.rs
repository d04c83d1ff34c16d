//! Filling the `[label]` template for one device: the QR code's data first (`qr_data`), then
//! the ZPL with every placeholder, `{qr}` included. The template was checked when the
//! configuration loaded; filling cannot fail.

use super::LabelData;
use crate::config::LabelSection;
use crate::domain::label::Field;

/// What the QR code carries for `data`: `[label] qr_data` filled in.
pub fn qr_data(data: &LabelData, section: &LabelSection) -> String {
    section.parsed_qr_data().fill(|f| data.value(f, ""))
}

/// The ZPL job for `data`: `^XA` … `^XZ` with every placeholder filled.
pub fn zpl(data: &LabelData, section: &LabelSection) -> String {
    let qr = qr_data(data, section);
    section.parsed_template().fill(|f| data.value(f, &qr))
}

/// Whether the template in force shows the QR code at all.
pub fn has_qr(section: &LabelSection) -> bool {
    section.parsed_template().fields().any(|f| f == Field::Qr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> LabelData {
        LabelData {
            registration_id: "sim000001".into(),
            serial: "SIM000001".into(),
            id_scope: "0ne000TEST1".into(),
            model: "sim-sensor".into(),
            firmware: "1.4.2".into(),
            date: "2026-03-01".into(),
            station: "st-1".into(),
            line: "l1".into(),
            cert_thumbprint: String::new(),
        }
    }

    #[test]
    fn label_default_template_fills_every_field_and_the_qr_code() {
        let section = LabelSection::default();
        assert!(has_qr(&section));
        let zpl = zpl(&data(), &section);
        assert!(
            zpl.starts_with("^XA") && zpl.trim_end().ends_with("^XZ"),
            "{zpl}"
        );
        assert!(zpl.contains("^FDMA,sim000001^FS"), "{zpl}");
        for v in [
            "SN SIM000001",
            "sim-sensor 1.4.2",
            "^FD2026-03-01^FS",
            "st-1 l1",
            "scope 0ne000TEST1",
        ] {
            assert!(zpl.contains(v), "{v} in {zpl}");
        }
        assert!(!zpl.contains('{'), "every placeholder filled: {zpl}");
    }

    #[test]
    fn label_qr_data_is_configurable() {
        let section = LabelSection {
            qr_data: "https://example.com/d/{registration_id}?sn={serial}".into(),
            ..LabelSection::default()
        };
        assert_eq!(
            qr_data(&data(), &section),
            "https://example.com/d/sim000001?sn=SIM000001"
        );
        assert!(
            zpl(&data(), &section)
                .contains("^FDMA,https://example.com/d/sim000001?sn=SIM000001^FS")
        );
    }
}
