//! What the station adds to `mcumgr-toolkit`'s client, in one place: a serial port that counts
//! bytes and the time spent waiting on the device, and the mapping of the toolkit's errors to
//! the station's, naming the port and the step.
//!
//! SMP framing, CBOR, CRC-16, sequence numbers, retries and frame size negotiation are the
//! toolkit's; nothing here re-implements them.

use crate::device::transport::is_disconnect;
use crate::error::{Error, ErrorCode};
use mcumgr_toolkit::client::MCUmgrClientError;
use mcumgr_toolkit::connection::ExecuteError;
use mcumgr_toolkit::smp_errors::DeviceError;
use mcumgr_toolkit::transport::serial::ConfigurableTimeout;
use mcumgr_toolkit::transport::{ReceiveError, SendError};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The fs group's number (Zephyr `MGMT_GROUP_ID_FS`).
pub const GROUP_FS: u16 = 8;
/// The settings group's number (Zephyr `MGMT_GROUP_ID_SETTINGS`).
pub const GROUP_SETTINGS: u16 = 3;
/// `FS_MGMT_ERR_FILE_NOT_FOUND`.
pub const FS_ERR_NOT_FOUND: i32 = 3;
/// `FS_MGMT_ERR_FILE_WRITE_FAILED`: what Zephyr answers when LittleFS is full.
pub const FS_ERR_WRITE_FAILED: i32 = 10;
/// `FS_MGMT_ERR_FILE_EMPTY`: a hash of an empty file.
pub const FS_ERR_FILE_EMPTY: i32 = 16;
/// `SETTINGS_MGMT_ERR_KEY_NOT_FOUND`.
pub const SETTINGS_ERR_NOT_FOUND: i32 = 3;
/// `MGMT_ERR_ENOENT` (SMP v1 error answers).
const MGMT_ERR_ENOENT: i32 = 5;
/// `MGMT_ERR_ENOMEM`.
const MGMT_ERR_ENOMEM: i32 = 2;

/// Bytes and waiting time of one port, shared with the device that reports them.
#[derive(Debug, Default)]
pub struct Meter {
    tx: AtomicU64,
    rx: AtomicU64,
    wait_ns: AtomicU64,
}

impl Meter {
    pub fn tx_bytes(&self) -> u64 {
        self.tx.load(Ordering::Relaxed)
    }
    pub fn rx_bytes(&self) -> u64 {
        self.rx.load(Ordering::Relaxed)
    }
    pub fn io_wait(&self) -> Duration {
        Duration::from_nanos(self.wait_ns.load(Ordering::Relaxed))
    }
}

/// A serial port as the toolkit's serial transport takes it, metered.
pub struct MeteredPort {
    port: serialport::TTYPort,
    meter: Arc<Meter>,
}

impl MeteredPort {
    pub fn new(port: serialport::TTYPort, meter: Arc<Meter>) -> Self {
        Self { port, meter }
    }
}

impl Read for MeteredPort {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t0 = Instant::now();
        let r = self.port.read(buf);
        let waited = t0.elapsed().as_nanos() as u64;
        self.meter.wait_ns.fetch_add(waited, Ordering::Relaxed);
        match r {
            // A tty at end of file is a line that is gone.
            Ok(0) => Err(io::Error::new(io::ErrorKind::BrokenPipe, "end of file")),
            Ok(n) => {
                self.meter.rx.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => Err(e),
        }
    }
}

impl Write for MeteredPort {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.port.write(buf)?;
        self.meter.tx.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.port.flush()
    }
}

impl ConfigurableTimeout for MeteredPort {
    fn set_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        serialport::SerialPort::set_timeout(&mut self.port, timeout).map_err(Into::into)
    }
}

/// The device's own error answer, if `e` is one: `(group, rc)`; SMP v1 answers have group 0.
pub fn device_error(e: &MCUmgrClientError) -> Option<(u16, i32)> {
    match e {
        MCUmgrClientError::ExecuteError(ExecuteError::ErrorResponse(DeviceError::V2 {
            group,
            rc,
        })) => Some((*group, *rc)),
        MCUmgrClientError::ExecuteError(ExecuteError::ErrorResponse(DeviceError::V1 {
            rc,
            ..
        })) => Some((0, *rc)),
        _ => None,
    }
}

/// Whether `e` says the file or key does not exist.
pub fn not_found(e: &MCUmgrClientError) -> bool {
    matches!(
        device_error(e),
        Some((GROUP_FS, FS_ERR_NOT_FOUND))
            | Some((GROUP_SETTINGS, SETTINGS_ERR_NOT_FOUND))
            | Some((0, MGMT_ERR_ENOENT))
    )
}

/// Whether `e` says the file is empty (the fs group hashes no empty file).
pub fn file_empty(e: &MCUmgrClientError) -> bool {
    device_error(e) == Some((GROUP_FS, FS_ERR_FILE_EMPTY))
}

/// The station's error for a failed SMP `command` on `port`, after `attempts` tries.
pub fn map_error(port: &str, command: &'static str, attempts: u32, e: MCUmgrClientError) -> Error {
    let protocol = |message: String| Error::Protocol {
        port: port.to_string(),
        command,
        message,
    };
    let transport = |source: Box<dyn std::error::Error + Send + Sync>| {
        let source = match source.downcast::<io::Error>() {
            Ok(io) => *io,
            Err(other) => io::Error::other(other.to_string()),
        };
        if is_disconnect(&source) {
            Error::Disconnected {
                port: port.to_string(),
                command,
            }
        } else {
            Error::Io {
                port: port.to_string(),
                command,
                source,
            }
        }
    };
    if let Some((group, rc)) = device_error(&e) {
        return refused(port, command, group, rc, &e);
    }
    match e {
        MCUmgrClientError::ExecuteError(x) => match x {
            ExecuteError::SendFailed(SendError::Timeout)
            | ExecuteError::ReceiveFailed(ReceiveError::Timeout) => Error::Timeout {
                port: port.to_string(),
                command,
                attempts,
            },
            ExecuteError::SendFailed(SendError::TransportError(s))
            | ExecuteError::ReceiveFailed(ReceiveError::TransportError(s)) => transport(s),
            other => protocol(format!(
                "{} after {attempts} attempts (corrupt or unexpected SMP answers)",
                chain(&other)
            )),
        },
        MCUmgrClientError::FrameSizeTooSmall(_) => protocol(
            "the device's MCUmgr buffer is too small for this request: build the firmware with a larger CONFIG_MCUMGR_TRANSPORT_NETBUF_SIZE (docs/smp.md)".into(),
        ),
        other => protocol(chain(&other)),
    }
}

/// The device refused `command` with its own error code.
fn refused(port: &str, command: &'static str, group: u16, rc: i32, e: &MCUmgrClientError) -> Error {
    let full = matches!(
        (group, rc),
        (GROUP_FS, FS_ERR_WRITE_FAILED) | (0, MGMT_ERR_ENOMEM)
    );
    let what = match e {
        MCUmgrClientError::ExecuteError(ExecuteError::ErrorResponse(d)) => d.to_string(),
        other => other.to_string(),
    };
    let (code, why) = if full {
        (
            ErrorCode::DeviceSmpStorage,
            " (its file system is full or failing)",
        )
    } else {
        (ErrorCode::DeviceSmpRefused, "")
    };
    Error::Smp {
        code,
        message: format!("device on {port} refused {command}: {what}{why}"),
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(group: u16, rc: i32) -> MCUmgrClientError {
        MCUmgrClientError::ExecuteError(ExecuteError::ErrorResponse(DeviceError::V2 { group, rc }))
    }

    #[test]
    fn a_full_file_system_is_a_storage_failure_and_others_are_refusals() {
        let e = map_error(
            "/dev/x",
            "fs upload",
            4,
            answer(GROUP_FS, FS_ERR_WRITE_FAILED),
        );
        assert_eq!(e.code(), "device.smp_storage");
        assert!(e.to_string().contains("full"), "{e}");
        let e = map_error("/dev/x", "fs upload", 4, answer(GROUP_FS, 2));
        assert_eq!(e.code(), "device.smp_refused");
        assert!(not_found(&answer(GROUP_FS, FS_ERR_NOT_FOUND)));
        assert!(!not_found(&answer(GROUP_SETTINGS, 1)));
    }

    #[test]
    fn timeouts_and_gone_lines_keep_their_station_codes() {
        let t = MCUmgrClientError::ExecuteError(ExecuteError::ReceiveFailed(ReceiveError::Timeout));
        assert_eq!(map_error("p", "os echo", 3, t).code(), "device.timeout");
        let gone = io::Error::new(io::ErrorKind::BrokenPipe, "gone");
        let d = MCUmgrClientError::ExecuteError(ExecuteError::ReceiveFailed(
            ReceiveError::TransportError(Box::new(gone)),
        ));
        assert_eq!(
            map_error("p", "os echo", 3, d).code(),
            "device.disconnected"
        );
    }
}
