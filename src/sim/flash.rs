//! A simulated device's flash: the JSON file keeping its committed records, written
//! atomically on COMMIT.

use crate::device::v1::protocol::{self, RecordId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// A device's flash file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flash {
    pub serial: String,
    pub firmware: String,
    /// Committed records, id → hex.
    pub records: BTreeMap<u8, String>,
    /// Hex SHA-256 of the committed records, as reported by READ_DIGEST.
    pub digest: String,
    pub commits: u32,
    /// The device-generated private key (PKCS#8 DER, hex), kept outside the records: it is
    /// never read out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_key: Option<String>,
}

impl Flash {
    /// Read a flash file.
    pub fn load(path: &Path) -> io::Result<Flash> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(io::Error::other)
    }

    /// A committed record's bytes.
    pub fn record(&self, id: RecordId) -> Option<Vec<u8>> {
        self.records.get(&(id as u8)).map(|h| unhex(h))
    }

    /// Path of the flash file of device `serial`.
    pub fn path(flash_dir: &Path, serial: &str) -> PathBuf {
        flash_dir.join(format!("{serial}.json"))
    }
}

pub(super) fn unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

/// Write `committed` into `flash` and the flash file at `path` (atomically: a temporary file
/// renamed over it).
pub(super) fn store(
    path: &Path,
    flash: &mut Flash,
    committed: &BTreeMap<u8, Vec<u8>>,
) -> io::Result<()> {
    flash.records = committed
        .iter()
        .map(|(k, v)| (*k, protocol::hex(v)))
        .collect();
    flash.digest = protocol::hex(&digest_of(committed));
    flash.commits += 1;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(flash).map_err(io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

/// SHA-256 of the committed records, as READ_DIGEST and COMMIT report it.
pub(super) fn digest_of(committed: &BTreeMap<u8, Vec<u8>>) -> [u8; 32] {
    protocol::records_digest(committed.iter().map(|(k, v)| (*k, v.as_slice())))
}
