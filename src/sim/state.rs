//! A simulated device's state between frames, and its power-on from its flash file.

use super::SimConfig;
use super::flash::{Flash, store, unhex};
use crate::device::v1::protocol::RecordId;
use std::collections::BTreeMap;
use std::io;

/// A record being written in chunks.
pub(super) struct Staged {
    pub(super) total: usize,
    pub(super) data: Vec<u8>,
}

/// The device on the fixture right now.
pub(super) struct Device {
    pub(super) number: u32,
    pub(super) serial: String,
    pub(super) flash: Flash,
    pub(super) committed: BTreeMap<u8, Vec<u8>>,
    pub(super) staged: BTreeMap<u8, Staged>,
    pub(super) staged_key: Option<Vec<u8>>,
    pub(super) session: bool,
    pub(super) last: Option<(u8, u8, Vec<u8>, Vec<u8>)>, // seq, kind, request body, response wire
    pub(super) stalled: bool,
    pub(super) seen: BTreeMap<u8, u32>,
    pub(super) responses: u32,
    pub(super) booted: bool,
}

/// Device `number` (1-based position in this run) powers on: it loads its flash file, or
/// starts blank (or pre-provisioned, under the `provisioned` fault).
pub(super) fn power_on(config: &SimConfig, number: u32) -> io::Result<Device> {
    let serial = format!("{}{:06}", config.serial_prefix, config.first + number - 1);
    let path = Flash::path(&config.flash_dir, &serial);
    let mut flash = match Flash::load(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Flash {
            serial: serial.clone(),
            firmware: config.firmware.clone(),
            ..Default::default()
        },
        Err(e) => return Err(e),
    };
    let mut committed: BTreeMap<u8, Vec<u8>> =
        flash.records.iter().map(|(k, v)| (*k, unhex(v))).collect();
    let faulty = config.fault_device.is_none_or(|k| k == number);
    if committed.is_empty()
        && faulty
        && let Some(existing) = &config.faults.provisioned_as
    {
        committed.insert(RecordId::IdScope as u8, b"0ne99999999".to_vec());
        committed.insert(
            RecordId::GlobalEndpoint as u8,
            b"global.azure-devices-provisioning.net".to_vec(),
        );
        committed.insert(RecordId::RegistrationId as u8, existing.as_bytes().to_vec());
        committed.insert(RecordId::CredentialType as u8, vec![1]);
        committed.insert(
            RecordId::Credential as u8,
            b"cHJldmlvdXMtZmFjdG9yeS1rZXk=".to_vec(),
        );
        store(&path, &mut flash, &committed)?;
    }
    Ok(Device {
        number,
        serial,
        flash,
        committed,
        staged: BTreeMap::new(),
        staged_key: None,
        session: false,
        last: None,
        stalled: false,
        seen: BTreeMap::new(),
        responses: 0,
        booted: false,
    })
}
