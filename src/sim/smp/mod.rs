//! The device simulator's MCUmgr (SMP) personality: a Zephyr device with MCUmgr on its UART,
//! the os, fs and settings groups, and a file system kept on the host, on the master end of a
//! real pty (`station simulate --protocol smp`, or `serial.port = "sim"` with
//! `[device] protocol = "smp"`).
//!
//! Like the protocol v1 simulator it is the independent peer the station is tested against:
//! its framing ([`frame`]) and CBOR handling ([`server`]) are written from Zephyr's SMP
//! documentation and share no code with the station's client (`mcumgr-toolkit`). A test drives
//! it with a third implementation, Python's `smpclient`.

mod cbor;
mod faults;
pub mod frame;
mod fs;
pub mod server;
mod settings;

pub use faults::SmpFaults;

use super::{SimConfig, SimExit, throttle};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use server::Outcome;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where the firmware writes the device's serial number at boot.
pub const SERIAL_FILE: &str = "/lfs/serial";

/// The device on the fixture right now.
pub(crate) struct SimDevice {
    pub(crate) number: u32,
    pub(crate) serial: String,
    /// `<flash>/<serial>`: `fs/` mirrors the device's file system, `settings` (JSON) its saved
    /// settings.
    root: PathBuf,
    /// Settings as they are in RAM (written, not necessarily saved).
    pub(crate) settings: BTreeMap<String, Vec<u8>>,
    answers: u32,
}

/// The simulator's state: its configuration and the device on the fixture.
pub struct SmpSim {
    pub(crate) config: SimConfig,
    pub(crate) device: SimDevice,
}

impl SmpSim {
    /// Power on the first device.
    pub fn new(config: SimConfig) -> io::Result<Self> {
        std::fs::create_dir_all(&config.flash_dir)?;
        let device = power_on(&config, 1)?;
        Ok(Self { config, device })
    }

    /// The answer to one request packet (SMP header + CBOR), as the device gives it, before
    /// any fault touches the wire; resets present the next device.
    pub fn respond(&mut self, packet: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(match server::handle(self, packet) {
            Outcome::Silent => None,
            Outcome::Answer(p) => Some(p),
            Outcome::AnswerThenReset(p) => {
                let next = if self.config.devices != 0 && self.device.number >= self.config.devices
                {
                    self.device.number
                } else {
                    self.device.number + 1
                };
                self.device = power_on(&self.config, next)?;
                Some(p)
            }
        })
    }

    fn faulty(&self) -> bool {
        self.config
            .fault_device
            .is_none_or(|k| k == self.device.number)
    }

    fn faults(&self) -> SmpFaults {
        if self.faulty() {
            self.config.smp_faults.clone()
        } else {
            SmpFaults::default()
        }
    }

    /// The host path of the device path `name` (absolute, no `.` or `..`); `None` if invalid.
    pub(crate) fn host_path(&self, name: &str) -> Option<PathBuf> {
        let p = Path::new(name);
        if !name.starts_with('/') || name.len() > 255 {
            return None;
        }
        let mut out = self.device.root.join("fs");
        for c in p.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(s) => out.push(s),
                _ => return None,
            }
        }
        (out != self.device.root.join("fs")).then_some(out)
    }

    /// Whether the file system takes `grows` more bytes once `freed` are released.
    pub(crate) fn has_room(&self, grows: u64, freed: u64) -> bool {
        let Some(cap) = self.faults().fs_capacity else {
            return true;
        };
        let used = dir_size(&self.device.root.join("fs"));
        used.saturating_sub(freed) + grows <= cap
    }

    /// How long erasing before the first chunk takes.
    pub(crate) fn fault_erase_delay(&self, off: u64) -> Option<Duration> {
        (off == 0).then(|| self.faults().slow_erase).flatten()
    }

    /// Whether hashes of `name` come out wrong.
    pub(crate) fn fault_wrong_hash(&self, name: &str) -> bool {
        let base = name.rsplit('/').next().unwrap_or(name);
        self.faults().wrong_hash.as_deref() == Some(base)
    }

    fn settings_path(&self) -> PathBuf {
        self.device.root.join("settings")
    }

    pub(crate) fn save_settings(&self) -> io::Result<()> {
        let map: BTreeMap<&String, String> = self
            .device
            .settings
            .iter()
            .map(|(k, v)| (k, STANDARD.encode(v)))
            .collect();
        let tmp = self.settings_path().with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&map)?)?;
        std::fs::rename(tmp, self.settings_path())
    }

    pub(crate) fn load_settings(&mut self) -> io::Result<()> {
        self.device.settings = read_settings(&self.settings_path())?;
        Ok(())
    }
}

fn read_settings(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let map: BTreeMap<String, String> = serde_json::from_slice(&text)?;
    map.into_iter()
        .map(|(k, v)| -> io::Result<(String, Vec<u8>)> {
            Ok((k, STANDARD.decode(v).map_err(io::Error::other)?))
        })
        .collect()
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Device `number` powers on: its files and saved settings are as it left them; its firmware
/// writes its serial number to [`SERIAL_FILE`].
fn power_on(config: &SimConfig, number: u32) -> io::Result<SimDevice> {
    let serial = format!("{}{:06}", config.serial_prefix, config.first + number - 1);
    let root = config.flash_dir.join(&serial);
    let serial_file = root.join("fs").join(SERIAL_FILE.trim_start_matches('/'));
    if let Some(dir) = serial_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&serial_file, serial.as_bytes())?;
    let settings = read_settings(&root.join("settings"))?;
    Ok(SimDevice {
        number,
        serial,
        root,
        settings,
        answers: 0,
    })
}

/// Run the SMP simulator on an open master end until stopped.
pub fn run<P: Read + Write>(port: P, config: SimConfig, stop: &AtomicBool) -> io::Result<SimExit> {
    let max = config.max_body as usize;
    let mut sim = SmpSim::new(config)?;
    let mut decoder = frame::Decoder::new(max);
    serve(&mut sim, &mut decoder, port, stop)
}

fn serve<P: Read + Write>(
    sim: &mut SmpSim,
    decoder: &mut frame::Decoder,
    mut port: P,
    stop: &AtomicBool,
) -> io::Result<SimExit> {
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
        let mut packets = Vec::new();
        decoder.push(&buf[..n], &mut |r| {
            if let Ok(p) = r {
                packets.push(p)
            }
        });
        wire_in += n;
        for p in packets {
            throttle(sim.config.baud, wire_in);
            wire_in = 0;
            if let Some(answer) = sim.respond(&p)? {
                transmit(sim, &mut port, frame::encode(&answer))?;
            }
        }
    }
    Ok(SimExit::Stopped)
}

/// Send an answer's lines, through the faults.
fn transmit<P: Write>(sim: &mut SmpSim, port: &mut P, mut wire: Vec<u8>) -> io::Result<()> {
    sim.device.answers += 1;
    let n = sim.device.answers;
    let faults = sim.faults();
    let mut out = Vec::new();
    if faults.noise && n.is_multiple_of(3) {
        out.extend_from_slice(
            format!("[{:>9.3}] <inf> app: sensor ok\r\n", n as f64 * 0.137).as_bytes(),
        );
    }
    if faults.drop_every.is_some_and(|k| n.is_multiple_of(k)) {
        wire.clear();
    }
    if let Some(k) = faults.corrupt_every
        && n.is_multiple_of(k)
        && wire.len() > 8
    {
        // A flipped base64 character inside the first line: the CRC catches it.
        let i = 2 + (wire.len().min(100) - 4) / 2;
        wire[i] = if wire[i] == b'A' { b'B' } else { b'A' };
    }
    out.extend_from_slice(&wire);
    throttle(sim.config.baud, out.len());
    port.write_all(&out)?;
    port.flush()
}
