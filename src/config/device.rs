//! `[device]`: which protocol the device in a fixture speaks, and how an MCUmgr (SMP) device
//! keeps its identity.
//!
//! Protocol v1 needs nothing beyond `[serial]`; an SMP device needs to be told where its
//! identity lives (files through the fs group, or settings keys) and where its serial number
//! comes from. A `[[fixture]]` may override `protocol` for its own slot.

use serde::{Deserialize, Serialize};

/// The protocol a device speaks.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceProtocol {
    /// The station's own protocol v1 (docs/protocol.md).
    #[default]
    V1,
    /// Zephyr MCUmgr over its serial transport (docs/smp.md).
    Smp,
}

impl DeviceProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceProtocol::V1 => "v1",
            DeviceProtocol::Smp => "smp",
        }
    }
}

/// `[device]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// The protocol of every fixture that does not name its own.
    #[serde(default)]
    pub protocol: DeviceProtocol,
    /// `[device.smp]`: used when the protocol is `smp`.
    #[serde(default)]
    pub smp: SmpSection,
}

/// Where an SMP device keeps its identity.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmpStorage {
    /// One file per record under `dir`, through the fs group (group 8).
    #[default]
    Files,
    /// One settings key per record under `settings_prefix`, through the settings group (3).
    Settings,
}

/// `[device.smp]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmpSection {
    #[serde(default)]
    pub storage: SmpStorage,
    /// Directory of the identity files (storage = "files").
    #[serde(default = "default_dir")]
    pub dir: String,
    /// Subtree of the identity's settings keys (storage = "settings").
    #[serde(default = "default_prefix")]
    pub settings_prefix: String,
    /// Where the device's serial number comes from: `scan` (the scanned barcode),
    /// `file:PATH` (a file the firmware writes) or `settings:KEY` (a settings key).
    #[serde(default = "default_serial_source")]
    pub serial_source: String,
}

impl Default for SmpSection {
    fn default() -> Self {
        Self {
            storage: SmpStorage::default(),
            dir: default_dir(),
            settings_prefix: default_prefix(),
            serial_source: default_serial_source(),
        }
    }
}

fn default_dir() -> String {
    "/lfs/dps".into()
}
fn default_prefix() -> String {
    "dps".into()
}
fn default_serial_source() -> String {
    "file:/lfs/serial".into()
}

/// Where an SMP device's serial number comes from, parsed from `serial_source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialSource {
    Scan,
    File(String),
    Setting(String),
}

impl SmpSection {
    /// `serial_source` parsed; the message says what is accepted.
    pub fn serial_source(&self) -> std::result::Result<SerialSource, String> {
        let s = self.serial_source.trim();
        match s.split_once(':') {
            _ if s == "scan" => Ok(SerialSource::Scan),
            Some(("file", p)) if p.starts_with('/') => Ok(SerialSource::File(p.into())),
            Some(("settings", k)) if !k.is_empty() => Ok(SerialSource::Setting(k.into())),
            _ => Err(format!(
                "expected \"scan\", \"file:/ABSOLUTE/PATH\" or \"settings:KEY\", got `{s}`"
            )),
        }
    }

    /// The checks serde cannot express: `(key, message)` of the first failure.
    pub(super) fn check(&self) -> std::result::Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((format!("device.smp.{k}"), m));
        if let Err(m) = self.serial_source() {
            return bad("serial_source", m);
        }
        let dir = self.dir.trim_end_matches('/');
        if !self.dir.starts_with('/') || dir.is_empty() || dir.contains("//") {
            return bad(
                "dir",
                format!(
                    "expected an absolute directory on the device such as \"/lfs/dps\", got `{}`",
                    self.dir
                ),
            );
        }
        let p = &self.settings_prefix;
        if p.is_empty() || p.starts_with('/') || p.ends_with('/') || p.contains(char::is_whitespace)
        {
            return bad(
                "settings_prefix",
                format!("expected a settings subtree such as \"dps\", got `{p}`"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_sources_parse_and_bad_ones_say_what_is_accepted() {
        let mut s = SmpSection::default();
        assert_eq!(
            s.serial_source(),
            Ok(SerialSource::File("/lfs/serial".into()))
        );
        s.serial_source = "settings:dev/serial".into();
        assert_eq!(
            s.serial_source(),
            Ok(SerialSource::Setting("dev/serial".into()))
        );
        s.serial_source = "scan".into();
        assert_eq!(s.serial_source(), Ok(SerialSource::Scan));
        s.serial_source = "file:relative".into();
        assert!(s.check().unwrap_err().1.contains("file:/ABSOLUTE/PATH"));
        s.serial_source = "scan".into();
        s.dir = "lfs".into();
        assert_eq!(s.check().unwrap_err().0, "device.smp.dir");
    }
}
