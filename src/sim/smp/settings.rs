//! The settings group (3): keys held in RAM, persisted to `<flash>/<serial>/settings` (JSON) only
//! on save, as Zephyr's settings subsystem keeps written values until `settings_save`.
//! `device/serial` is a read-only runtime key carrying the device's serial number.

use super::SmpSim;
use super::cbor::{GROUP_SETTINGS, MGMT_ERR_EINVAL, MGMT_ERR_ENOTSUP, Reply, bytes, text};
use ciborium::Value;

/// `SETTINGS_MGMT_ERR_*` codes.
pub const KEY_TOO_LONG: i64 = 2;
pub const KEY_NOT_FOUND: i64 = 3;
pub const WRITE_NOT_SUPPORTED: i64 = 6;
pub const UNKNOWN: i64 = 1;

/// Longest key name (Zephyr `CONFIG_MCUMGR_GRP_SETTINGS_NAME_LEN` default).
const MAX_NAME: usize = 32;
/// The runtime key carrying the serial number.
pub const SERIAL_KEY: &str = "device/serial";

fn err(rc: i64) -> Reply {
    Reply::GroupError(GROUP_SETTINGS, rc)
}

/// One settings group request.
pub fn handle(sim: &mut SmpSim, id: u8, write: bool, m: &[(Value, Value)]) -> Reply {
    match (id, write) {
        (2, true) => return Reply::Map(vec![]),
        (3, false) => {
            return match sim.load_settings() {
                Ok(()) => Reply::Map(vec![]),
                Err(_) => err(UNKNOWN),
            };
        }
        (3, true) => {
            return match sim.save_settings() {
                Ok(()) => Reply::Map(vec![]),
                Err(_) => err(UNKNOWN),
            };
        }
        _ => {}
    }
    let Some(name) = text(m, "name") else {
        return Reply::Rc(MGMT_ERR_EINVAL);
    };
    if name.len() > MAX_NAME {
        return err(KEY_TOO_LONG);
    }
    match (id, write) {
        (0, false) if name == SERIAL_KEY => Reply::Map(vec![(
            "val",
            Value::Bytes(sim.device.serial.as_bytes().to_vec()),
        )]),
        (0, false) => match sim.device.settings.get(name) {
            Some(v) => Reply::Map(vec![("val", Value::Bytes(v.clone()))]),
            None => err(KEY_NOT_FOUND),
        },
        (0, true) if name == SERIAL_KEY => err(WRITE_NOT_SUPPORTED),
        (0, true) => match bytes(m, "val") {
            Some(v) => {
                sim.device.settings.insert(name.to_string(), v.to_vec());
                Reply::Map(vec![])
            }
            None => Reply::Rc(MGMT_ERR_EINVAL),
        },
        (1, true) => match sim.device.settings.remove(name) {
            Some(_) => Reply::Map(vec![]),
            None => err(KEY_NOT_FOUND),
        },
        _ => Reply::Rc(MGMT_ERR_ENOTSUP),
    }
}
