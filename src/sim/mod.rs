//! The device simulator: the device side of protocol v1 on the master end of a real pty.
//!
//! It implements what firmware implements (sessions, chunked staging, atomic COMMIT with a
//! SHA-256 digest, read-back, replay of the last response on a repeated sequence number) and
//! keeps each device's "flash" in `<flash_dir>/<serial>.json`, written atomically on COMMIT. It
//! can throttle to a baud rate and inject the faults a production line sees. A RESET ends a
//! device's cycle: the simulated fixture then presents the next device.
//!
//! It must never share code paths with the station side beyond the frame codec and the
//! message definitions: it is the independent peer the station is tested against. The station
//! side (device … station layers) never imports it; front ends reach it through [`opener`],
//! which serves `serial.port = "sim"`. With `[device] protocol = "smp"` the simulated device is a
//! Zephyr MCUmgr device instead ([`smp`]).

mod faults;
mod flash;
mod respond;
pub mod smp;
mod state;

pub use faults::Faults;
pub use flash::Flash;

use crate::device::v1::frame::Decoder;
use crate::device::v1::protocol::capability;
use respond::{Action, handle};
use serialport::SerialPort;
use state::{Device, power_on};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Largest record the simulated device stores.
pub const MAX_RECORD: usize = 8192;

/// What a simulated device can store by default: symmetric keys, certificate chains with a
/// station key, GEN_CSR, and a TPM's EK (protocol.md §5, HELLO).
pub const DEFAULT_CAPABILITIES: u32 =
    capability::SYMMETRIC_KEY | capability::X509_CHAIN | capability::CSR | capability::TPM_EK;

/// How the simulator runs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub flash_dir: PathBuf,
    pub serial_prefix: String,
    /// Number of the first device (serials are `<prefix><number:06>`).
    pub first: u32,
    /// How many devices the fixture presents in turn (0 = unlimited).
    pub devices: u32,
    pub firmware: String,
    pub model: String,
    /// Simulated line rate; 0 = unthrottled.
    pub baud: u32,
    /// Largest frame body the device accepts.
    pub max_body: u16,
    pub faults: Faults,
    /// Apply faults only to this device number (1-based position in this run).
    pub fault_device: Option<u32>,
    /// The devices' TPM, reached through this TCTI, for READ_EK.
    pub tpm: Option<String>,
    /// HELLO capability bits the devices advertise (and honour).
    pub capabilities: u32,
    /// The protocol the devices speak: v1, or Zephyr MCUmgr ([`smp`]).
    pub protocol: crate::config::DeviceProtocol,
    /// Faults of SMP devices.
    pub smp_faults: smp::SmpFaults,
}

impl SimConfig {
    /// Defaults for a simulator keeping flash in `flash_dir`.
    pub fn new(flash_dir: impl Into<PathBuf>) -> Self {
        Self {
            flash_dir: flash_dir.into(),
            serial_prefix: "SIM".into(),
            first: 1,
            devices: 0,
            firmware: "1.4.2".into(),
            model: "sim-sensor".into(),
            baud: 0,
            max_body: 1024,
            faults: Faults::default(),
            fault_device: None,
            tpm: None,
            capabilities: DEFAULT_CAPABILITIES,
            protocol: crate::config::DeviceProtocol::V1,
            smp_faults: smp::SmpFaults::default(),
        }
    }
}

/// Why the simulator loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum SimExit {
    Stopped,
    Disconnected,
}

/// A simulator running on a pty in a background thread.
pub struct SimHandle {
    pub path: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<io::Result<SimExit>>>,
}

impl SimHandle {
    /// Stop the simulator and wait for it.
    pub fn stop(self) -> io::Result<SimExit> {
        self.stop.store(true, Ordering::Relaxed);
        self.wait()
    }
}

impl SimHandle {
    /// Wait until the simulator ends by itself (a disconnect fault or an I/O error).
    pub fn wait(mut self) -> io::Result<SimExit> {
        self.join()
    }

    fn join(&mut self) -> io::Result<SimExit> {
        self.thread
            .take()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(io::Error::other("simulator panicked")))
            })
            .unwrap_or(Ok(SimExit::Stopped))
    }
}

impl Drop for SimHandle {
    /// Stop the simulator (when `stop` or `wait` did not already join it).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.join();
    }
}

/// Create a pty pair and run the simulator on its master end in a thread. The returned path is
/// the slave tty the station opens.
pub fn spawn(config: SimConfig) -> io::Result<SimHandle> {
    std::fs::create_dir_all(&config.flash_dir)?;
    let (master, slave) = serialport::TTYPort::pair().map_err(io::Error::other)?;
    let path = slave
        .name()
        .ok_or_else(|| io::Error::other("pty has no name"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("device-sim".into())
        .spawn(move || {
            // Holding the slave open keeps the master readable while no station is attached.
            let _slave = slave;
            match config.protocol {
                crate::config::DeviceProtocol::Smp => smp::run(master, config, &stop2),
                crate::config::DeviceProtocol::V1 => run(master, config, &stop2),
            }
        })?;
    Ok(SimHandle {
        path,
        stop,
        thread: Some(thread),
    })
}

/// Run the simulator on an open master end until stopped or disconnected by a fault.
pub fn run<P: Read + Write>(
    mut port: P,
    config: SimConfig,
    stop: &AtomicBool,
) -> io::Result<SimExit> {
    std::fs::create_dir_all(&config.flash_dir)?;
    let mut decoder = Decoder::new(config.max_body as usize);
    let mut device = power_on(&config, 1)?;
    let mut buf = [0u8; 4096];
    let mut wire_in = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let n = match port.read(&mut buf) {
            Ok(0) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) if e.raw_os_error() == Some(5) => {
                // EIO: no station has the tty open right now.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut frames = Vec::new();
        decoder.push(&buf[..n], |r| {
            if let Ok(f) = r {
                frames.push(f)
            }
        });
        wire_in += n;
        for f in frames {
            throttle(config.baud, wire_in);
            wire_in = 0;
            let action = handle(&config, &mut device, &f);
            match action {
                Action::Silent => {}
                Action::Disconnect => return Ok(SimExit::Disconnected),
                Action::Respond(wire, then_reset) => {
                    transmit(&config, &mut device, &mut port, wire)?;
                    if then_reset {
                        // The fixture presents the next device; after the last one, the last
                        // device reboots and stays on the fixture.
                        let next = if config.devices != 0 && device.number >= config.devices {
                            device.number
                        } else {
                            device.number + 1
                        };
                        device = power_on(&config, next)?;
                    }
                }
            }
        }
    }
    Ok(SimExit::Stopped)
}

fn faults_apply(config: &SimConfig, device: &Device) -> bool {
    config.fault_device.is_none_or(|k| k == device.number)
}

fn throttle(baud: u32, bytes: usize) {
    if baud > 0 && bytes > 0 {
        std::thread::sleep(Duration::from_micros(
            bytes as u64 * 10 * 1_000_000 / baud as u64,
        ));
    }
}

fn transmit<P: Write>(
    config: &SimConfig,
    device: &mut Device,
    port: &mut P,
    mut wire: Vec<u8>,
) -> io::Result<()> {
    device.responses += 1;
    let faults = if faults_apply(config, device) {
        config.faults.clone()
    } else {
        Faults::default()
    };
    let mut out = Vec::new();
    if faults.noise {
        if !device.booted {
            out.extend_from_slice(
                b"\r\nROM boot v2.1\r\nflash: 4096 KiB ok\r\n[    0.012] provisioning agent starting\r\n",
            );
        } else if device.responses.is_multiple_of(3) {
            out.extend_from_slice(
                format!(
                    "[{:>9.3}] sensor: temp=21.5C\r\n",
                    device.responses as f64 * 0.137
                )
                .as_bytes(),
            );
        }
    }
    device.booted = true;
    if faults
        .drop_every
        .is_some_and(|k| device.responses.is_multiple_of(k))
    {
        wire.clear();
    }
    if let Some(k) = faults.corrupt_every
        && device.responses.is_multiple_of(k)
        && wire.len() > 4
    {
        let i = wire.len() / 2;
        wire[i] ^= 0x5a;
        if wire[i] == 0 {
            wire[i] = 0x01;
        }
    }
    out.extend_from_slice(&wire);
    throttle(config.baud, out.len());
    port.write_all(&out)?;
    port.flush()
}

/// Open fixtures as [`crate::device::open`] does, plus `sim`: the built-in simulator on a
/// fresh pseudo-terminal, configured by `[simulator]` and kept alive with the fixture.
pub fn opener() -> crate::device::Opener {
    std::sync::Arc::new(|config, port| {
        let port = port.unwrap_or(&config.serial.port);
        if port != "sim" {
            return crate::device::open(config, Some(port));
        }
        let mut sc = SimConfig::new(config.resolve(&config.simulator.flash_dir));
        sc.serial_prefix = config.simulator.serial_prefix.clone();
        sc.baud = config.simulator.baud;
        sc.first = config.simulator.first;
        sc.protocol = config.device.protocol;
        let handle = spawn(sc).map_err(|e| crate::Error::PortUnavailable {
            port: "sim".into(),
            message: format!("cannot start the built-in simulator: {e}"),
        })?;
        let baud = if config.simulator.baud > 0 {
            config.simulator.baud
        } else {
            config.serial.baud
        };
        let device = crate::device::open_serial(config, &handle.path, baud)?;
        Ok(crate::device::Fixture::keeping(device, Box::new(handle)))
    })
}
