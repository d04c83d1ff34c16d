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
//! which serves `serial.port = "sim"`.

use crate::device::v1::frame::{self, Decoder};
use crate::device::v1::protocol::{
    self, CredentialType, HelloInfo, NakCode, RecordId, Request, capability, commit_flag, kind,
};
use serde::{Deserialize, Serialize};
use serialport::SerialPort;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Largest record the simulated device stores.
pub const MAX_RECORD: usize = 8192;

/// What a simulated device can store by default: symmetric keys, certificate chains with a
/// station key, GEN_CSR, and a TPM's EK (protocol.md §5, HELLO).
pub const DEFAULT_CAPABILITIES: u32 =
    capability::SYMMETRIC_KEY | capability::X509_CHAIN | capability::CSR | capability::TPM_EK;

/// A record's size limit (protocol.md §6).
fn record_max(id: RecordId) -> usize {
    match id {
        RecordId::IdScope => 32,
        RecordId::GlobalEndpoint => 253,
        RecordId::RegistrationId => 128,
        RecordId::CredentialType => 1,
        _ => MAX_RECORD,
    }
}

/// Faults the simulator can inject (see `docs/protocol.md`, "Simulator").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Boot-log text at power-on and log lines between frames.
    pub noise: bool,
    /// Corrupt one byte of every Nth response.
    pub corrupt_every: Option<u32>,
    /// Drop every Nth response.
    pub drop_every: Option<u32>,
    /// Stop answering at the first request of this type (the device hangs).
    pub stall_on: Option<u8>,
    /// Close the line at the second request of this type (unplugged mid-operation).
    pub disconnect_on: Option<u8>,
    /// Refuse every request of this type with this NAK code.
    pub nak_on: Option<(u8, u8)>,
    /// Devices come with an identity already committed under this registration ID.
    pub provisioned_as: Option<String>,
    /// The device stores a corrupted credential (its digest will not match).
    pub bad_storage: bool,
    /// GEN_CSR answers with a CSR whose signature is broken.
    pub csr_tamper: bool,
    /// GEN_CSR puts this CN in the CSR instead of the one asked for.
    pub csr_cn: Option<String>,
    /// GEN_CSR makes a key of this type instead (`ed25519`, `p256`, `p384`, `rsa2048`).
    pub csr_key: Option<String>,
    /// Refuse the first N requests of this type with BUSY (a device still booting).
    pub busy_on: Option<(u8, u32)>,
    /// Answer this request type with a response of another type (firmware bug).
    pub wrong_type_on: Option<u8>,
    /// Answer this request type under the previous sequence number.
    pub stale_seq_on: Option<u8>,
    /// Refuse this request type with a NAK that has no code byte.
    pub empty_nak_on: Option<u8>,
    /// Answer COMMIT/READ_DIGEST of this type with this state byte.
    pub state_on: Option<(u8, u8)>,
}

impl Faults {
    /// Parse one `--fault` spec: `noise`, `corrupt:N`, `drop:N`, `stall[:CMD]`,
    /// `disconnect[:CMD]`, `nak:CMD[:CODE]`, `provisioned:REGID`, `bad-storage`.
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        let mut parts = spec.splitn(3, ':');
        let name = parts.next().unwrap_or("");
        let a = parts.next();
        let b = parts.next();
        let num = |v: Option<&str>| -> Result<u32, String> {
            v.and_then(|s| s.parse().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("fault `{spec}` needs a count above 0, e.g. {name}:3"))
        };
        let cmd = |v: Option<&str>, default: u8| -> Result<u8, String> {
            match v.map(str::to_ascii_lowercase).as_deref() {
                None => Ok(default),
                Some("hello") => Ok(kind::HELLO),
                Some("write") => Ok(kind::WRITE),
                Some("commit") => Ok(kind::COMMIT),
                Some("read-digest") | Some("digest") => Ok(kind::READ_DIGEST),
                Some("read-record") => Ok(kind::READ_RECORD),
                Some("reset") => Ok(kind::RESET),
                Some("gen-csr") => Ok(kind::GEN_CSR),
                Some("read-ek") => Ok(kind::READ_EK),
                Some(o) => Err(format!(
                    "unknown command `{o}` in fault `{spec}`; use hello, write, commit, read-digest, read-record, gen-csr or reset"
                )),
            }
        };
        match name {
            "noise" => self.noise = true,
            "corrupt" => self.corrupt_every = Some(num(a)?),
            "drop" => self.drop_every = Some(num(a)?),
            "stall" => self.stall_on = Some(cmd(a, kind::WRITE)?),
            "disconnect" => self.disconnect_on = Some(cmd(a, kind::WRITE)?),
            "nak" => {
                let c = cmd(a, kind::COMMIT)?;
                let code = match b {
                    None => NakCode::StorageFailure as u8,
                    Some(v) => v
                        .parse::<u8>()
                        .map_err(|_| format!("NAK code in `{spec}` must be a number"))?,
                };
                self.nak_on = Some((c, code));
            }
            "provisioned" => {
                self.provisioned_as = Some(
                    a.filter(|s| !s.is_empty())
                        .ok_or_else(|| format!("fault `{spec}` needs a registration ID"))?
                        .to_string(),
                )
            }
            "bad-storage" => self.bad_storage = true,
            "busy" => {
                let n = match b {
                    None => u32::MAX,
                    Some(v) => num(Some(v))?,
                };
                self.busy_on = Some((cmd(a, kind::WRITE)?, n));
            }
            "wrong-type" => self.wrong_type_on = Some(cmd(a, kind::COMMIT)?),
            "stale-seq" => self.stale_seq_on = Some(cmd(a, kind::COMMIT)?),
            "empty-nak" => self.empty_nak_on = Some(cmd(a, kind::COMMIT)?),
            "state" => {
                let c = cmd(a, kind::READ_DIGEST)?;
                let v = b.and_then(|v| v.parse::<u8>().ok()).ok_or_else(|| {
                    format!("fault `{spec}` needs a state byte, e.g. state:commit:0")
                })?;
                self.state_on = Some((c, v));
            }
            "csr-tamper" => self.csr_tamper = true,
            "csr-cn" => {
                self.csr_cn = Some(
                    a.filter(|s| !s.is_empty())
                        .ok_or_else(|| format!("fault `{spec}` needs a CN"))?
                        .to_string(),
                )
            }
            "csr-key" => match a {
                Some(k @ ("ed25519" | "p256" | "p384" | "rsa2048")) => {
                    self.csr_key = Some(k.to_string())
                }
                _ => {
                    return Err(format!(
                        "fault `{spec}`: use csr-key:ed25519, p256, p384 or rsa2048"
                    ));
                }
            },
            _ => {
                return Err(format!(
                    "unknown fault `{spec}`; use noise, corrupt:N, drop:N, stall[:CMD], disconnect[:CMD], nak:CMD[:CODE], provisioned:ID, bad-storage, csr-tamper, csr-cn:CN, csr-key:TYPE, busy:CMD[:N], wrong-type:CMD, stale-seq:CMD, empty-nak:CMD, state:CMD:N"
                ));
            }
        }
        Ok(())
    }
}

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
        }
    }
}

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

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

struct Staged {
    total: usize,
    data: Vec<u8>,
}

struct Device {
    number: u32,
    serial: String,
    flash: Flash,
    committed: BTreeMap<u8, Vec<u8>>,
    staged: BTreeMap<u8, Staged>,
    staged_key: Option<Vec<u8>>,
    session: bool,
    last: Option<(u8, u8, Vec<u8>, Vec<u8>)>, // seq, kind, request body, response wire
    stalled: bool,
    seen: BTreeMap<u8, u32>,
    responses: u32,
    booted: bool,
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
    pub fn stop(mut self) -> io::Result<SimExit> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(io::Error::other("simulator panicked")))
            })
            .unwrap_or(Ok(SimExit::Stopped))
    }
}

impl SimHandle {
    /// Wait until the simulator ends by itself (a disconnect fault or an I/O error).
    pub fn wait(mut self) -> io::Result<SimExit> {
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
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
            run(master, config, &stop2)
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

enum Action {
    Silent,
    Disconnect,
    Respond(Vec<u8>, bool),
}

fn power_on(config: &SimConfig, number: u32) -> io::Result<Device> {
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

fn store(path: &Path, flash: &mut Flash, committed: &BTreeMap<u8, Vec<u8>>) -> io::Result<()> {
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

fn digest_of(committed: &BTreeMap<u8, Vec<u8>>) -> [u8; 32] {
    protocol::records_digest(committed.iter().map(|(k, v)| (*k, v.as_slice())))
}

fn nak(seq: u8, code: NakCode, detail: &[u8]) -> Vec<u8> {
    let mut body = vec![code as u8];
    body.extend_from_slice(detail);
    frame::encode(kind::NAK, seq, &body)
}

fn handle(config: &SimConfig, d: &mut Device, f: &frame::Frame) -> Action {
    if d.stalled {
        return Action::Silent;
    }
    if f.kind != kind::HELLO
        && let Some((seq, k, body, wire)) = &d.last
        && *seq == f.seq
        && *k == f.kind
        && *body == f.body
    {
        return Action::Respond(wire.clone(), false);
    }
    let faults = if faults_apply(config, d) {
        config.faults.clone()
    } else {
        Faults::default()
    };
    let count = {
        let c = d.seen.entry(f.kind).or_insert(0);
        *c += 1;
        *c
    };
    if faults.stall_on == Some(f.kind) {
        d.stalled = true;
        return Action::Silent;
    }
    if faults.disconnect_on == Some(f.kind) && (count >= 2 || f.kind != kind::WRITE) {
        return Action::Disconnect;
    }
    let mut reset = false;
    if let Some((k, n)) = faults.busy_on
        && k == f.kind
        && count <= n
    {
        // BUSY: nothing was done, nothing is remembered.
        return Action::Respond(nak(f.seq, NakCode::Busy, b"booting"), false);
    }
    let wire = if let Some((k, code)) = faults.nak_on.filter(|(k, _)| *k == f.kind) {
        let _ = k;
        let mut body = vec![code];
        body.extend_from_slice(b"injected fault");
        frame::encode(kind::NAK, f.seq, &body)
    } else if faults.empty_nak_on == Some(f.kind) {
        frame::encode(kind::NAK, f.seq, &[])
    } else if faults.wrong_type_on == Some(f.kind) {
        frame::encode(kind::READ_RECORD | kind::RESPONSE, f.seq, b"oops")
    } else if faults.stale_seq_on == Some(f.kind) {
        frame::encode(f.kind | kind::RESPONSE, f.seq.wrapping_sub(1), &[1; 33])
    } else {
        match Request::decode(f.kind, &f.body) {
            None if protocol::command_name(f.kind) == "UNKNOWN" || f.kind & kind::RESPONSE != 0 => {
                nak(f.seq, NakCode::UnknownCommand, b"")
            }
            // A CN that is not UTF-8.
            None if f.kind == kind::GEN_CSR && f.body.len() >= 2 => {
                nak(f.seq, NakCode::BadFrame, b"common name is not UTF-8")
            }
            None => nak(f.seq, NakCode::BadLength, b""),
            Some(req) => {
                let (mut w, r) = respond(config, d, f.seq, req, &faults);
                if let Some((k, state)) = faults.state_on
                    && k == f.kind
                    && w.len() > 4
                {
                    // Re-frame the answer with another state byte.
                    let mut frames = Vec::new();
                    Decoder::new(4096).push(&w, |r| frames.extend(r.ok()));
                    if let Some(mut a) = frames.pop().filter(|a| a.kind != kind::NAK) {
                        a.body[0] = state;
                        w = frame::encode(a.kind, a.seq, &a.body);
                    }
                }
                reset = r;
                w
            }
        }
    };
    d.last = Some((f.seq, f.kind, f.body.clone(), wire.clone()));
    Action::Respond(wire, reset)
}

fn respond(
    config: &SimConfig,
    d: &mut Device,
    seq: u8,
    req: Request,
    faults: &Faults,
) -> (Vec<u8>, bool) {
    let ok = |body: &[u8]| frame::encode(req.kind() | kind::RESPONSE, seq, body);
    match &req {
        Request::Hello { min, max } => {
            if *min > protocol::VERSION_MAX || *max < protocol::VERSION_MIN {
                return (
                    nak(
                        seq,
                        NakCode::UnsupportedVersion,
                        &[protocol::VERSION_MIN, protocol::VERSION_MAX],
                    ),
                    false,
                );
            }
            d.session = true;
            d.staged.clear();
            d.staged_key = None;
            let info = HelloInfo {
                version: protocol::VERSION_MAX.min(*max),
                max_body: config.max_body,
                capabilities: config.capabilities,
                provisioned: !d.committed.is_empty(),
                serial: d.serial.clone(),
                firmware: d.flash.firmware.clone(),
                model: config.model.clone(),
            };
            (ok(&protocol::encode_device_info(&info)), false)
        }
        _ if !d.session => (nak(seq, NakCode::NoSession, b""), false),
        Request::Write {
            record,
            offset,
            total,
            data,
        } => {
            let Some(id) = RecordId::from_u8(*record) else {
                return (nak(seq, NakCode::BadRecord, b""), false);
            };
            let (offset, total) = (*offset as usize, *total as usize);
            if total == 0 {
                return (nak(seq, NakCode::BadLength, b"empty record"), false);
            }
            if total > record_max(id) {
                return (nak(seq, NakCode::BadLength, b"record too large"), false);
            }
            if offset == 0 {
                d.staged.insert(
                    *record,
                    Staged {
                        total,
                        data: Vec::with_capacity(total),
                    },
                );
            }
            let Some(s) = d.staged.get_mut(record) else {
                return (nak(seq, NakCode::OutOfOrder, b""), false);
            };
            if s.data.len() != offset || s.total != total {
                return (nak(seq, NakCode::OutOfOrder, b""), false);
            }
            if offset + data.len() > total {
                return (nak(seq, NakCode::BadLength, b"past declared total"), false);
            }
            s.data.extend_from_slice(data);
            let mut body = vec![*record];
            body.extend_from_slice(&(s.data.len() as u32).to_le_bytes());
            (ok(&body), false)
        }
        Request::Commit { flags } => {
            let complete = RecordId::REQUIRED.iter().all(|r| {
                d.staged
                    .get(&(*r as u8))
                    .is_some_and(|s| s.data.len() == s.total)
            }) && d.staged.values().all(|s| s.data.len() == s.total);
            let cred_type = d
                .staged
                .get(&(RecordId::CredentialType as u8))
                .and_then(|s| s.data.first().copied());
            let key_ok = match cred_type {
                Some(t) if t == CredentialType::X509DeviceKey as u8 => d.staged_key.is_some(),
                Some(t) if t == CredentialType::X509StationKey as u8 => {
                    d.staged.contains_key(&(RecordId::PrivateKey as u8))
                }
                Some(t) => {
                    t == CredentialType::SymmetricKey as u8 || t == CredentialType::Tpm as u8
                }
                None => false,
            };
            if cred_type.is_some_and(|t| !(1..=4).contains(&t)) {
                return (nak(seq, NakCode::BadRecord, b"credential type"), false);
            }
            if !complete || !key_ok {
                return (nak(seq, NakCode::Incomplete, b""), false);
            }
            let new: BTreeMap<u8, Vec<u8>> =
                d.staged.iter().map(|(k, s)| (*k, s.data.clone())).collect();
            let rid = RecordId::RegistrationId as u8;
            if !d.committed.is_empty()
                && d.committed.get(&rid) != new.get(&rid)
                && flags & commit_flag::REPLACE == 0
            {
                return (nak(seq, NakCode::AlreadyProvisioned, b""), false);
            }
            let mut stored = new;
            if faults.bad_storage
                && let Some(c) = stored.get_mut(&(RecordId::Credential as u8))
                && let Some(b) = c.first_mut()
            {
                *b ^= 0x01;
            }
            let path = Flash::path(&config.flash_dir, &d.serial);
            let previous_key = d.flash.device_key.clone();
            d.flash.device_key = match cred_type {
                Some(t) if t == CredentialType::X509DeviceKey as u8 => {
                    d.staged_key.as_deref().map(protocol::hex)
                }
                _ => None,
            };
            if store(&path, &mut d.flash, &stored).is_err() {
                d.flash.device_key = previous_key;
                return (
                    nak(seq, NakCode::StorageFailure, b"flash write failed"),
                    false,
                );
            }
            d.committed = stored;
            d.staged.clear();
            d.staged_key = None;
            let mut body = vec![1];
            body.extend_from_slice(&digest_of(&d.committed));
            (ok(&body), false)
        }
        Request::ReadDigest => {
            let mut body = vec![!d.committed.is_empty() as u8];
            if d.committed.is_empty() {
                body.extend_from_slice(&[0; 32]);
            } else {
                body.extend_from_slice(&digest_of(&d.committed));
            }
            (ok(&body), false)
        }
        Request::ReadRecord { record } => match RecordId::from_u8(*record) {
            Some(r) if !r.readable() => (nak(seq, NakCode::AccessDenied, b""), false),
            Some(_) => match d.committed.get(record) {
                Some(v) => (ok(v), false),
                None => (nak(seq, NakCode::BadRecord, b"not stored"), false),
            },
            None => (nak(seq, NakCode::BadRecord, b""), false),
        },
        Request::Reset => {
            d.session = false;
            (ok(&[]), true)
        }
        Request::ReadEk { ek_type } => match (&config.tpm, read_ek(config, *ek_type)) {
            (None, _) => (nak(seq, NakCode::UnknownCommand, b"no TPM"), false),
            (Some(_), Ok(body)) => (ok(&body), false),
            (Some(_), Err(code)) => (nak(seq, code, b"TPM read failed"), false),
        },
        Request::GenCsr { common_name, .. } if common_name.is_empty() || common_name.len() > 64 => {
            (
                nak(
                    seq,
                    NakCode::BadLength,
                    b"common name must be 1 to 64 bytes",
                ),
                false,
            )
        }
        Request::GenCsr {
            key_type,
            common_name,
        } => match make_csr(*key_type, common_name, faults) {
            Ok((csr, key)) => {
                d.staged_key = Some(key);
                (ok(&csr), false)
            }
            Err(code) => (nak(seq, code, b""), false),
        },
    }
}

/// What a device does on GEN_CSR: generate a key of the asked type, sign a CSR with CN =
/// `common_name`. Faults can change the key type, the CN, or break the signature.
fn make_csr(
    key_type: u8,
    common_name: &str,
    faults: &Faults,
) -> Result<(Vec<u8>, Vec<u8>), NakCode> {
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};
    let rsa = || KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048);
    let key = match (faults.csr_key.as_deref(), key_type) {
        (Some("ed25519"), _) => KeyPair::generate_for(&PKCS_ED25519),
        (Some("p256"), _) | (None, 1) => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        (Some("p384"), _) | (None, 2) => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
        (Some("rsa2048"), _) | (None, 3) => rsa(),
        _ => return Err(NakCode::BadRecord),
    }
    .map_err(|_| NakCode::StorageFailure)?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        faults.csr_cn.as_deref().unwrap_or(common_name),
    );
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(|_| NakCode::StorageFailure)?;
    let mut der = csr.der().to_vec();
    if faults.csr_tamper
        && let Some(b) = der.last_mut()
    {
        *b ^= 0x01;
    }
    Ok((der, key.serialize_der()))
}

/// What a device does on READ_EK: read its own TPM (here through the simulator's TCTI).
fn read_ek(config: &SimConfig, ek_type: u8) -> Result<Vec<u8>, NakCode> {
    use crate::config::TpmEkType;
    let tcti = config.tpm.as_deref().ok_or(NakCode::UnknownCommand)?;
    let t = match ek_type {
        1 => TpmEkType::Rsa2048,
        2 => TpmEkType::EccP256,
        _ => return Err(NakCode::BadRecord),
    };
    let r = crate::device::tpm::read_ek_tcti(tcti, t, false, true, true)
        .map_err(|_| NakCode::StorageFailure)?;
    Ok(protocol::encode_ek(
        &r.public,
        r.certificate.as_deref().unwrap_or_default(),
        r.srk.as_deref().unwrap_or_default(),
    ))
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
