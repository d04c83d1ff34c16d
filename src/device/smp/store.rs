//! Where an SMP device keeps named values: files under a directory through the fs group, or
//! settings keys under a subtree through the settings group (written, then saved).
//!
//! Every value is checked by its SHA-256 on the device side: the fs group's hash/checksum
//! command (`sha256`) for files; for settings, which have no hash command, the value read back
//! (settings storage sends secrets back over the line; docs/smp.md says so).

use super::client::{GROUP_FS, device_error, file_empty, not_found};
use super::layout::CLEARED;
use mcumgr_toolkit::MCUmgrClient;
use mcumgr_toolkit::client::MCUmgrClientError;
use mcumgr_toolkit::commands::fs::{FileChecksumData, FileUpload, file_upload_max_data_chunk_size};
use sha2::{Digest as _, Sha256};

type R<T> = std::result::Result<T, (&'static str, MCUmgrClientError)>;

/// `FS_MGMT_ERR_FILE_OFFSET_NOT_VALID`: a chunk re-sent after its answer was lost finds the
/// file already longer than the chunk's offset.
const FS_ERR_OFFSET_NOT_VALID: i32 = 11;
/// How often an upload resumes after such a chunk.
const UPLOAD_RESUMES: u32 = 8;
/// SMP frame size a resumed upload's chunks are sized for: Zephyr's default buffer, which every
/// device has at least.
const RESUME_FRAME: usize = 384 - 4;

/// Upload `bytes` as the file `path` in chunks the toolkit sizes from the negotiated frame size.
/// The toolkit re-sends a chunk whose answer was lost; Zephyr then refuses it (the file is
/// already longer), and the upload resumes where the device's file stops matching `bytes`
/// (found by its SHA-256), or starts over.
fn upload(c: &MCUmgrClient, path: &str, bytes: &[u8], progress: &mut dyn FnMut(usize)) -> R<()> {
    let mut from = None;
    let mut resumes = 0;
    loop {
        let sent = match from {
            None => {
                let mut cb = |done: u64, _total: u64| {
                    progress(done as usize);
                    true
                };
                c.fs_file_upload(path, bytes, bytes.len() as u64, Some(&mut cb))
            }
            Some(off) => upload_from(c, path, bytes, off, progress),
        };
        match sent {
            Err(e)
                if device_error(&e) == Some((GROUP_FS, FS_ERR_OFFSET_NOT_VALID))
                    && resumes < UPLOAD_RESUMES =>
            {
                resumes += 1;
                from = held_prefix(c, path, bytes)?;
            }
            r => return r.map_err(|e| ("fs upload", e)),
        }
    }
}

/// How much of `bytes` the device's file `path` already holds (`None`: nothing usable).
fn held_prefix(c: &MCUmgrClient, path: &str, bytes: &[u8]) -> R<Option<usize>> {
    match c.fs_file_checksum(path, Some("sha256"), 0, None) {
        Ok(r) => {
            let len = r.len as usize;
            let FileChecksumData::Hash(h) = r.output else {
                return Ok(None);
            };
            let prefix = bytes
                .get(..len)
                .filter(|p| Sha256::digest(p).as_slice() == &h[..]);
            Ok(prefix.map(|_| len).filter(|l| *l > 0))
        }
        Err(e) if not_found(&e) || file_empty(&e) => Ok(None),
        Err(e) => Err(("fs hash", e)),
    }
}

/// Upload `bytes[off..]` to the file `path`, which holds `bytes[..off]`.
fn upload_from(
    c: &MCUmgrClient,
    path: &str,
    bytes: &[u8],
    mut off: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<(), MCUmgrClientError> {
    let chunk = file_upload_max_data_chunk_size(RESUME_FRAME, path)
        .map_err(MCUmgrClientError::FrameSizeTooSmall)?;
    while off < bytes.len() {
        let data = &bytes[off..(off + chunk).min(bytes.len())];
        let answer = c.raw_command(&FileUpload {
            off: off as u64,
            data,
            name: path,
            len: None,
        })?;
        if answer.off as usize != off + data.len() {
            return Err(MCUmgrClientError::UnexpectedOffset);
        }
        off += data.len();
        progress(off);
    }
    Ok(())
}

/// A storage place on the device.
#[derive(Debug, Clone)]
pub enum Store {
    Files { dir: String },
    Settings { prefix: String },
}

impl Store {
    /// The device-side path (or key) of `name`.
    pub fn path(&self, name: &str) -> String {
        match self {
            Store::Files { dir } => format!("{}/{name}", dir.trim_end_matches('/')),
            Store::Settings { prefix } => format!("{prefix}/{name}"),
        }
    }

    /// Write `bytes` as `name`; `progress(bytes)` after each acknowledged chunk. Files go up
    /// in chunks the toolkit sizes from the negotiated frame size.
    pub fn put(
        &self,
        c: &MCUmgrClient,
        name: &str,
        bytes: &[u8],
        progress: &mut dyn FnMut(usize),
    ) -> R<()> {
        let path = self.path(name);
        match self {
            Store::Files { .. } => upload(c, &path, bytes, progress),
            Store::Settings { .. } => {
                c.settings_write(&path, bytes)
                    .map_err(|e| ("settings write", e))?;
                progress(bytes.len());
                Ok(())
            }
        }
    }

    /// The device's SHA-256 of `name`; `None` when it does not exist.
    pub fn sha256(&self, c: &MCUmgrClient, name: &str) -> R<Option<[u8; 32]>> {
        let path = self.path(name);
        match self {
            Store::Files { .. } => match c.fs_file_checksum(&path, Some("sha256"), 0, None) {
                Ok(r) => match r.output {
                    FileChecksumData::Hash(h) => Ok(<[u8; 32]>::try_from(&h[..]).ok()),
                    FileChecksumData::Checksum(_) => Ok(None),
                },
                Err(e) if not_found(&e) => Ok(None),
                Err(e) if file_empty(&e) => Ok(Some(Sha256::digest(b"").into())),
                Err(e) => Err(("fs hash", e)),
            },
            Store::Settings { .. } => Ok(self.get(c, name)?.map(|v| Sha256::digest(&v).into())),
        }
    }

    /// The value of `name` (never asked for secrets); `None` when it does not exist.
    pub fn get(&self, c: &MCUmgrClient, name: &str) -> R<Option<Vec<u8>>> {
        let path = self.path(name);
        match self {
            Store::Files { .. } => {
                let mut out = Vec::new();
                match c.fs_file_download(&path, &mut out, None) {
                    Ok(()) => Ok(Some(out)),
                    Err(e) if not_found(&e) => Ok(None),
                    Err(e) => Err(("fs download", e)),
                }
            }
            Store::Settings { .. } => match c.settings_read(&path) {
                Ok(v) => Ok(Some(v)),
                Err(e) if not_found(&e) => Ok(None),
                Err(e) => Err(("settings read", e)),
            },
        }
    }

    /// Make `name` hold nothing: a file holding [`CLEARED`] (the fs group has no delete, and an
    /// upload without data truncates nothing), or a deleted key, saved.
    pub fn clear(&self, c: &MCUmgrClient, name: &str) -> R<()> {
        let path = self.path(name);
        match self {
            Store::Files { .. } => upload(c, &path, CLEARED, &mut |_| {}),
            Store::Settings { .. } => {
                match c.settings_delete(&path) {
                    Ok(()) => {}
                    Err(e) if not_found(&e) => return Ok(()),
                    Err(e) => return Err(("settings delete", e)),
                }
                self.save(c)
            }
        }
    }

    /// Make what was written persistent: settings are saved; files already are (the fs group
    /// closes them after a quiet period, so they are closed now).
    pub fn save(&self, c: &MCUmgrClient) -> R<()> {
        match self {
            Store::Files { .. } => match c.fs_file_close() {
                Err(e) if !e.command_not_supported() => Err(("fs close", e)),
                _ => Ok(()),
            },
            Store::Settings { .. } => c
                .settings_save(None::<&str>)
                .map_err(|e| ("settings save", e)),
        }
    }
}
