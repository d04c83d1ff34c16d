//! The fs group (8) over the simulated device's file system: a directory per device on the
//! host (`<flash>/<serial>/fs/...` mirrors the device's absolute paths), so what a device holds
//! survives the simulator being killed, as flash survives a power cut.
//!
//! Uploads behave as Zephyr's fs_mgmt: offset 0 with data truncates the file (offset 0 without
//! data does not), each later chunk must start where the file ends (else
//! `FS_MGMT_ERR_FILE_OFFSET_NOT_VALID` with the file's length); hashes are `sha256` (bytes) or `crc32`
//! (a number); an empty file has no hash (`FS_MGMT_ERR_FILE_EMPTY`).

use super::SmpSim;
use super::cbor::{GROUP_FS, MGMT_ERR_EINVAL, MGMT_ERR_ENOTSUP, Reply, bytes, text, uint};
use ciborium::Value;
use sha2::{Digest as _, Sha256};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// `FS_MGMT_ERR_*` codes.
pub const FILE_INVALID_NAME: i64 = 2;
pub const FILE_NOT_FOUND: i64 = 3;
pub const FILE_IS_DIRECTORY: i64 = 4;
pub const FILE_WRITE_FAILED: i64 = 10;
pub const FILE_OFFSET_NOT_VALID: i64 = 11;
pub const FILE_OFFSET_LARGER_THAN_FILE: i64 = 12;
pub const CHECKSUM_HASH_NOT_FOUND: i64 = 13;
pub const FILE_EMPTY: i64 = 16;

fn err(rc: i64) -> Reply {
    Reply::GroupError(GROUP_FS, rc)
}

/// One fs group request.
pub fn handle(sim: &mut SmpSim, id: u8, write: bool, m: &[(Value, Value)]) -> Reply {
    if id == 3 && !write {
        return supported();
    }
    if id == 4 && write {
        return Reply::Map(vec![]);
    }
    let Some(name) = text(m, "name") else {
        return Reply::Rc(MGMT_ERR_EINVAL);
    };
    let Some(path) = sim.host_path(name) else {
        return err(FILE_INVALID_NAME);
    };
    match (id, write) {
        (0, true) => upload(sim, &path, m),
        (0, false) => download(sim, &path, uint(m, "off").unwrap_or(0)),
        (1, false) => match std::fs::metadata(&path) {
            Ok(md) if md.is_dir() => err(FILE_IS_DIRECTORY),
            Ok(md) => Reply::Map(vec![("len", md.len().into())]),
            Err(_) => err(FILE_NOT_FOUND),
        },
        (2, false) => hash(sim, name, &path, m),
        _ => Reply::Rc(MGMT_ERR_ENOTSUP),
    }
}

fn supported() -> Reply {
    let props = |format: u64, size: u64| {
        Value::Map(vec![
            ("format".into(), format.into()),
            ("size".into(), size.into()),
        ])
    };
    Reply::Map(vec![(
        "types",
        Value::Map(vec![
            ("sha256".into(), props(1, 32)),
            ("crc32".into(), props(0, 4)),
        ]),
    )])
}

fn upload(sim: &mut SmpSim, path: &Path, m: &[(Value, Value)]) -> Reply {
    let (Some(off), Some(data)) = (uint(m, "off"), bytes(m, "data")) else {
        return Reply::Rc(MGMT_ERR_EINVAL);
    };
    if off == 0 && uint(m, "len").is_none() {
        return Reply::Rc(MGMT_ERR_EINVAL);
    }
    if let Some(delay) = sim.fault_erase_delay(off) {
        std::thread::sleep(delay);
    }
    if path.is_dir() {
        return err(FILE_INVALID_NAME);
    }
    let current = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    // The next chunk must continue the file: a re-sent chunk whose answer was lost finds the
    // file already longer, and the client has to start over.
    if off > 0 && off != current {
        return Reply::GroupErrorWith(
            GROUP_FS,
            FILE_OFFSET_NOT_VALID,
            vec![("len", current.into())],
        );
    }
    // Offset 0 with data truncates; offset 0 without data only creates the file.
    let truncate = off == 0 && !data.is_empty();
    let freed = if truncate { current } else { 0 };
    if !sim.has_room(data.len() as u64, freed) {
        return err(FILE_WRITE_FAILED);
    }
    let written = (|| -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(truncate)
            .open(path)?;
        f.seek(SeekFrom::Start(off))?;
        f.write_all(data)?;
        f.sync_data()
    })();
    match written {
        Ok(()) => Reply::Map(vec![("off", (off + data.len() as u64).into())]),
        Err(_) => err(FILE_WRITE_FAILED),
    }
}

fn download(sim: &SmpSim, path: &Path, off: u64) -> Reply {
    let content = match std::fs::read(path) {
        Ok(c) => c,
        Err(_) if path.is_dir() => return err(FILE_IS_DIRECTORY),
        Err(_) => return err(FILE_NOT_FOUND),
    };
    let Some(rest) = content.get(off as usize..) else {
        return err(FILE_OFFSET_LARGER_THAN_FILE);
    };
    // Room for the header and the map's other fields in one buffer.
    let room = (sim.config.max_body as usize).saturating_sub(64).max(16);
    let chunk = &rest[..rest.len().min(room)];
    let mut fields = vec![("off", off.into()), ("data", Value::Bytes(chunk.to_vec()))];
    if off == 0 {
        fields.push(("len", (content.len() as u64).into()));
    }
    Reply::Map(fields)
}

fn hash(sim: &SmpSim, name: &str, path: &Path, m: &[(Value, Value)]) -> Reply {
    let kind = text(m, "type").unwrap_or("crc32");
    let content = match std::fs::read(path) {
        Ok(c) => c,
        Err(_) if path.is_dir() => return err(FILE_IS_DIRECTORY),
        Err(_) => return err(FILE_NOT_FOUND),
    };
    let off = uint(m, "off").unwrap_or(0) as usize;
    if content.is_empty() {
        return err(FILE_EMPTY);
    }
    let Some(rest) = content.get(off..).filter(|r| !r.is_empty()) else {
        return err(FILE_OFFSET_LARGER_THAN_FILE);
    };
    let part = &rest[..uint(m, "len").map_or(rest.len(), |l| (l as usize).min(rest.len()))];
    let output = match kind {
        "sha256" => {
            let mut h: [u8; 32] = Sha256::digest(part).into();
            if sim.fault_wrong_hash(name) {
                h[0] ^= 0xff;
            }
            Value::Bytes(h.to_vec())
        }
        "crc32" => crc32fast::hash(part).into(),
        _ => return err(CHECKSUM_HASH_NOT_FOUND),
    };
    let mut fields = vec![("type", kind.into())];
    if off > 0 {
        fields.push(("off", (off as u64).into()));
    }
    fields.push(("len", (part.len() as u64).into()));
    fields.push(("output", output));
    Reply::Map(fields)
}
