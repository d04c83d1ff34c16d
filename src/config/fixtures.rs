//! `[[fixture]]`: the slots of a gang fixture, each on its own USB-serial adapter.
//!
//! Without `[[fixture]]` tables, `[serial]` is the one fixture (id `1`). A fixture's settings
//! are `[serial]`'s with its own overrides; [`Config::fixtures`] hands each fixture a whole
//! [`Config`] with them applied, so everything below the station (opening the port, the
//! workflow, the TPM's TCTI, the simulator) reads one configuration as it always did.

use super::Config;
use crate::domain::FixtureId;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Serials of the k-th simulated fixture start this many devices after the (k-1)-th's.
pub const SIM_SERIAL_STRIDE: u32 = 100_000;

/// Most fixtures one station drives.
pub const MAX_FIXTURES: usize = 32;

/// One `[[fixture]]` table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FixtureSection {
    /// Short name used in events, `--fixture` and barcode prefixes (letters, digits, `-`, `_`).
    pub id: String,
    /// What the technician reads on the tile (default: the id).
    #[serde(default)]
    pub label: Option<String>,
    /// A tty path, `sim` (its own simulated device stream), or `auto` (with `usb_serial`).
    pub port: String,
    /// With `auto`: the USB serial number of this fixture's adapter.
    #[serde(default)]
    pub usb_serial: Option<String>,
    /// TCTI of the TPM on this fixture (overrides `[attestation.tpm] tcti`).
    #[serde(default)]
    pub tcti: Option<String>,
    #[serde(default)]
    pub baud: Option<u32>,
    #[serde(default)]
    pub response_timeout_ms: Option<u64>,
    #[serde(default)]
    pub commit_timeout_ms: Option<u64>,
    #[serde(default)]
    pub keygen_timeout_ms: Option<u64>,
    #[serde(default)]
    pub retries: Option<u32>,
    /// The protocol of this fixture's device (overrides `[device] protocol`).
    #[serde(default)]
    pub protocol: Option<super::DeviceProtocol>,
}

/// A fixture as the station drives it.
#[derive(Debug, Clone)]
pub struct FixtureConfig {
    pub id: FixtureId,
    pub label: String,
    /// The configuration with this fixture's port and overrides applied.
    pub config: Config,
}

impl Config {
    /// Every fixture: the `[[fixture]]` tables in order, else `[serial]` as fixture `1`.
    pub fn fixtures(&self) -> Vec<FixtureConfig> {
        if self.fixtures.is_empty() {
            return vec![FixtureConfig {
                id: FixtureId("1".into()),
                label: "Fixture".into(),
                config: self.clone(),
            }];
        }
        let mut sims = 0;
        self.fixtures
            .iter()
            .map(|f| {
                let mut c = self.clone();
                let s = &mut c.serial;
                s.port = f.port.clone();
                s.usb_serial = f.usb_serial.clone().or(s.usb_serial.take());
                s.baud = f.baud.unwrap_or(s.baud);
                s.response_timeout_ms = f.response_timeout_ms.unwrap_or(s.response_timeout_ms);
                s.commit_timeout_ms = f.commit_timeout_ms.unwrap_or(s.commit_timeout_ms);
                s.keygen_timeout_ms = f.keygen_timeout_ms.unwrap_or(s.keygen_timeout_ms);
                s.retries = f.retries.unwrap_or(s.retries);
                c.device.protocol = f.protocol.unwrap_or(c.device.protocol);
                if let (Some(t), Some(tpm)) = (&f.tcti, c.attestation.tpm.as_mut()) {
                    tpm.tcti = Some(t.clone());
                }
                if f.port == "sim" {
                    // Each simulated fixture: its own serial range and flash directory.
                    c.simulator.first = self.simulator.first + sims * SIM_SERIAL_STRIDE;
                    c.simulator.flash_dir = self.simulator.flash_dir.join(&f.id);
                    sims += 1;
                }
                c.fixtures.clear();
                FixtureConfig {
                    id: FixtureId(f.id.clone()),
                    label: f.label.clone().unwrap_or_else(|| f.id.clone()),
                    config: c,
                }
            })
            .collect()
    }

    /// The fixture `id`; an unknown id names the ones there are.
    pub fn fixture(&self, id: &str) -> Result<FixtureConfig> {
        let all = self.fixtures();
        let known: Vec<String> = all.iter().map(|f| f.id.0.clone()).collect();
        all.into_iter().find(|f| f.id.0 == id).ok_or_else(|| {
            Error::Usage(format!(
                "no fixture `{id}` in {} (fixtures: {})",
                self.source_path.display(),
                known.join(", ")
            ))
        })
    }
}

/// The checks serde cannot make: ids, labels and ports each unique; `auto` told apart.
pub(super) fn check(fixtures: &[FixtureSection]) -> std::result::Result<(), (String, String)> {
    let bad = |i: usize, key: &str, msg: String| Err((format!("fixture[{i}].{key}"), msg));
    if fixtures.len() > MAX_FIXTURES {
        return bad(
            MAX_FIXTURES,
            "id",
            format!("at most {MAX_FIXTURES} fixtures per station"),
        );
    }
    for (i, f) in fixtures.iter().enumerate() {
        if f.id.is_empty()
            || f.id.len() > 16
            || !f
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad(
                i,
                "id",
                format!("`{}`: expected 1 to 16 letters, digits, `-` or `_`", f.id),
            );
        }
        let label = f.label.as_deref().unwrap_or(&f.id);
        for (j, g) in fixtures[..i].iter().enumerate() {
            if g.id == f.id {
                return bad(i, "id", format!("`{}` is also fixture[{j}]'s id", f.id));
            }
            if g.label.as_deref().unwrap_or(&g.id) == label {
                return bad(
                    i,
                    "label",
                    format!("`{label}` is also fixture `{}`'s label", g.id),
                );
            }
            let same_port = g.port == f.port && f.port != "sim" && f.port != "auto";
            let same_auto = f.port == "auto" && g.port == "auto" && g.usb_serial == f.usb_serial;
            if same_port || same_auto {
                return bad(
                    i,
                    "port",
                    format!(
                        "fixture `{}` uses the same {} as fixture `{}`; each fixture needs its own adapter{}",
                        f.id,
                        if same_auto {
                            "adapter (auto without a distinct usb_serial)"
                        } else {
                            "port"
                        },
                        g.id,
                        if same_auto {
                            ": give each `auto` fixture its adapter's usb_serial"
                        } else {
                            ""
                        }
                    ),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn each_fixture_gets_serial_settings_with_its_own_overrides() {
        let text = format!(
            "{}\n[[fixture]]\nid = \"a\"\nport = \"/dev/ttyUSB0\"\nretries = 7\ncommit_timeout_ms = 9000\n\
             [[fixture]]\nid = \"b\"\nlabel = \"Right\"\nport = \"sim\"\n\
             [[fixture]]\nid = \"c\"\nport = \"sim\"\nbaud = 57600\n",
            include_str!("../../station.toml")
        );
        let c = crate::config::load_str(&text, Path::new("station.toml")).unwrap();
        let f = c.fixtures();
        assert_eq!(f.len(), 3);
        assert_eq!((f[0].id.0.as_str(), f[0].label.as_str()), ("a", "a"));
        assert_eq!(f[0].config.serial.port, "/dev/ttyUSB0");
        assert_eq!(
            (
                f[0].config.serial.retries,
                f[0].config.serial.commit_timeout_ms
            ),
            (7, 9000)
        );
        assert_eq!(
            f[1].config.serial.retries, c.serial.retries,
            "not overridden"
        );
        assert_eq!(f[1].label, "Right");
        // The simulated fixtures: their own serial ranges and flash directories.
        assert_eq!(f[1].config.simulator.first, c.simulator.first);
        assert_eq!(f[2].config.simulator.first, c.simulator.first + 100_000);
        assert_eq!(
            f[2].config.simulator.flash_dir,
            c.simulator.flash_dir.join("c")
        );
        assert_eq!(f[2].config.serial.baud, 57600);
        assert!(f.iter().all(|x| x.config.fixtures.is_empty()));
        assert!(
            c.fixture("zz")
                .unwrap_err()
                .to_string()
                .contains("fixtures: a, b, c")
        );
    }
}
