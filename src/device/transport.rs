//! The byte link to a device, behind a trait so other links (USB CDC without a tty, SMP, TCP to
//! a fixture controller) can be added without touching the protocol or the workflow.
//!
//! The serial implementation opens a real tty path with `serialport`. It knows nothing of
//! frames.

use crate::error::{Error, Result};
use std::io::{self, Read, Write};
use std::time::Duration;

/// A bidirectional byte link.
pub trait Transport: Send {
    /// Port name for messages (e.g. `/dev/ttyUSB0`).
    fn port_name(&self) -> &str;
    /// Write all bytes.
    fn send(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Read what arrives within `timeout`; `Ok(0)` means nothing arrived.
    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
    /// Discard anything buffered on input.
    fn discard_input(&mut self) -> io::Result<()>;
}

/// A serial port (USB-serial adapter, on-board UART, or a pty).
pub struct SerialTransport {
    port: serialport::TTYPort,
    name: String,
}

impl SerialTransport {
    /// Open `path` at `baud`, 8N1, no flow control, exclusive.
    pub fn open(path: &str, baud: u32) -> Result<Self> {
        let port = serialport::new(path, baud)
            .timeout(Duration::from_millis(100))
            .open_native()
            .map_err(|e| Error::PortUnavailable {
                port: path.to_string(),
                message: e.to_string(),
            })?;
        Ok(Self {
            port,
            name: path.to_string(),
        })
    }
}

impl Transport for SerialTransport {
    fn port_name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.port.write_all(bytes)?;
        // serialport reports a failed tcdrain as a bare "flush failed" without the OS error.
        // A signal (EINTR) fails it once; a line that is gone (EIO after an unplug or a
        // hang-up) fails it again: that is a disconnect, not an I/O error to retry.
        if self.port.flush().is_ok() {
            return Ok(());
        }
        self.port.flush().map_err(|e| {
            io::Error::new(io::ErrorKind::BrokenPipe, format!("{e}: the port is gone"))
        })
    }

    fn recv(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        use serialport::SerialPort;
        self.port
            .set_timeout(timeout.max(Duration::from_millis(1)))
            .map_err(io::Error::other)?;
        match self.port.read(buf) {
            Ok(0) => Err(io::Error::new(io::ErrorKind::BrokenPipe, "end of file")),
            Ok(n) => Ok(n),
            // A signal woke the wait: nothing arrived; the caller decides whether to go on.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    fn discard_input(&mut self) -> io::Result<()> {
        use serialport::SerialPort;
        self.port
            .clear(serialport::ClearBuffer::Input)
            .map_err(io::Error::other)
    }
}

/// Whether an I/O error means the device or adapter went away.
pub fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::NotConnected
    ) || e.raw_os_error() == Some(5) // EIO: pty master closed, USB adapter unplugged
        || e.raw_os_error() == Some(19) // ENODEV
}

/// USB serial ports whose VID:PID is in `ids`.
pub fn find_usb_ports(ids: &[(u16, u16)], usb_serial: Option<&str>) -> Result<Vec<String>> {
    let ports = serialport::available_ports().map_err(|e| Error::NoFixture {
        message: e.to_string(),
    })?;
    Ok(ports
        .into_iter()
        .filter(|p| match &p.port_type {
            serialport::SerialPortType::UsbPort(u) => {
                (ids.is_empty() || ids.contains(&(u.vid, u.pid)))
                    && usb_serial.is_none_or(|s| u.serial_number.as_deref() == Some(s))
            }
            _ => false,
        })
        .map(|p| p.port_name)
        .collect())
}
