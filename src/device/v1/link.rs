//! The station side of protocol v1: request/response with sequence numbers, per-command
//! timeouts that grow with line time, bounded retries and resynchronisation.
//!
//! Owns one [`Transport`]; knows the protocol's commands but not the workflow's meaning of
//! them. It counts the time spent waiting for the device so the workflow can report the
//! station's own overhead separately from the line.

use super::frame::{self, Decoder, Frame, FrameError};
use super::protocol::{self, DigestState, HelloInfo, NakCode, Request, Timeouts, kind};
use crate::config::{TpmEkType, X509KeyType};
use crate::device::transport::{Transport, is_disconnect};
use crate::device::{Device, DeviceInfo, ReportedEk};
use crate::domain::{Digest, RecordId};
use crate::error::{Error, Result};
use std::time::{Duration, Instant};

/// Longest response the station expects, for line-time budgeting of timeouts.
const MAX_RESPONSE_WIRE: usize = 300;

/// Waits before each re-send after a BUSY NAK (protocol.md §7); then `device.busy`.
const BUSY_BACKOFF: [Duration; 6] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1000),
];

/// Plain words for a message type byte, for protocol errors.
fn describe_kind(k: u8) -> String {
    match k {
        kind::NAK => "NAK".into(),
        k if k & kind::RESPONSE != 0 => format!("{} response", protocol::command_name(k)),
        k => format!("{} request", protocol::command_name(k)),
    }
}

/// Counters a link keeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkStats {
    /// Requests sent again after a timeout or corrupt answer.
    pub resent: u32,
    /// Chunks between delimiters that were not valid frames (noise, corruption).
    pub bad_frames: u32,
    /// Time spent blocked waiting for the device.
    pub io_wait: Duration,
    /// Bytes sent and received.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

/// A protocol link to one device.
pub struct Link {
    transport: Box<dyn Transport>,
    decoder: Decoder,
    seq: u8,
    retries: u32,
    timeouts: Timeouts,
    baud: u32,
    device_max_body: usize,
    rx: Vec<u8>,
    tx: Vec<u8>,
    pub stats: LinkStats,
}

impl Link {
    /// Wrap a transport. `baud` is used to budget timeouts for line time.
    pub fn new(transport: Box<dyn Transport>, baud: u32, timeouts: Timeouts, retries: u32) -> Self {
        let mut seed = [0u8; 1];
        let _ = getrandom::fill(&mut seed);
        Self {
            transport,
            decoder: Decoder::new(protocol::STATION_MAX_BODY),
            seq: seed[0],
            retries,
            timeouts,
            baud: baud.max(1),
            device_max_body: 256,
            rx: vec![0; 4096],
            tx: Vec::with_capacity(protocol::STATION_MAX_BODY + 64),
            stats: LinkStats::default(),
        }
    }

    /// Number the next request `seq` + 1 instead of from a random start: for tests and fuzzing,
    /// which must replay a device's answers exactly.
    pub fn starting_after(mut self, seq: u8) -> Self {
        self.seq = seq;
        self
    }

    /// Port name, for messages.
    pub fn port(&self) -> &str {
        self.transport.port_name()
    }

    fn line_time(&self, bytes: usize) -> Duration {
        Duration::from_micros(bytes as u64 * 10 * 1_000_000 / self.baud as u64)
    }

    /// Send `req` and wait for its response frame (retrying as configured). A NAK becomes
    /// [`Error::Nak`]; BUSY is waited out with a bounded backoff, each re-send under a new
    /// sequence number (the device replays a NAK to an identical retry).
    pub fn request(&mut self, req: &Request) -> Result<Frame> {
        let command = req.name();
        let body = req.encode_body();
        if req.kind() != kind::HELLO && body.len() > self.device_max_body {
            return Err(Error::RequestTooLarge {
                command,
                size: body.len(),
                limit: self.device_max_body,
            });
        }
        let mut busy = 0;
        loop {
            let f = self.exchange(req.kind(), &body, command)?;
            if f.kind != kind::NAK {
                return Ok(f);
            }
            if f.body.is_empty() {
                return Err(self.protocol_error(
                    command,
                    "NAK without a code byte (protocol.md §7: a NAK body starts with its code)",
                ));
            }
            if f.body[0] != NakCode::Busy as u8 {
                return Err(nak_error(command, &f.body));
            }
            let Some(wait) = BUSY_BACKOFF.get(busy) else {
                return Err(Error::Busy {
                    command,
                    attempts: busy as u32 + 1,
                });
            };
            busy += 1;
            let t0 = Instant::now();
            std::thread::sleep(*wait);
            self.stats.io_wait += t0.elapsed();
        }
    }

    /// One request under a new sequence number: its answer (a response or a NAK), after
    /// re-sends on timeouts and corrupt answers.
    fn exchange(&mut self, req_kind: u8, body: &[u8], command: &'static str) -> Result<Frame> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.tx.clear();
        frame::encode_into(req_kind, seq, body, &mut self.tx);
        let base = match req_kind {
            kind::COMMIT => self.timeouts.commit,
            kind::GEN_CSR | kind::READ_EK => self.timeouts.keygen,
            _ => self.timeouts.response,
        };
        let timeout = base + self.line_time(self.tx.len() + MAX_RESPONSE_WIRE);
        let attempts = self.retries + 1;
        let mut stray = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                self.stats.resent += 1;
            }
            let tx = std::mem::take(&mut self.tx);
            let sent = self.transport.send(&tx);
            self.tx = tx;
            sent.map_err(|e| self.io_error(command, e))?;
            self.stats.tx_bytes += self.tx.len() as u64;
            match self.await_response(seq, timeout, command, &mut stray)? {
                Some(f) if f.kind == kind::NAK || f.kind == req_kind | kind::RESPONSE => {
                    return Ok(f);
                }
                Some(f) => {
                    return Err(self.protocol_error(
                        command,
                        format!(
                            "answered seq 0x{seq:02x} with message type 0x{:02x} ({}), expected 0x{:02x}",
                            f.kind,
                            describe_kind(f.kind),
                            req_kind | kind::RESPONSE
                        ),
                    ));
                }
                None => continue,
            }
        }
        match stray {
            Some((k, s)) => Err(self.protocol_error(
                command,
                format!(
                    "no answer to seq 0x{seq:02x} after {attempts} attempts; the device sent other frames instead, the last of type 0x{k:02x} ({}) with seq 0x{s:02x}",
                    describe_kind(k)
                ),
            )),
            None => Err(Error::Timeout {
                port: self.port().to_string(),
                command,
                attempts,
            }),
        }
    }

    /// Wait for the frame carrying `seq`. `None`: timed out, or a corrupt frame that was likely
    /// the answer (so resending now beats waiting). Frames with another `seq` are remembered
    /// in `stray`.
    fn await_response(
        &mut self,
        seq: u8,
        timeout: Duration,
        command: &'static str,
        stray: &mut Option<(u8, u8)>,
    ) -> Result<Option<Frame>> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let t0 = Instant::now();
            let got = self.transport.recv(&mut self.rx, deadline - now);
            self.stats.io_wait += t0.elapsed();
            let n = got.map_err(|e| self.io_error(command, e))?;
            if n == 0 {
                continue;
            }
            self.stats.rx_bytes += n as u64;
            let mut found = None;
            let mut crc_error = false;
            let mut bad = 0;
            let (decoder, rx) = (&mut self.decoder, &self.rx[..n]);
            decoder.push(rx, |r| match r {
                Ok(f) if f.seq == seq => {
                    if found.is_none() {
                        found = Some(f)
                    }
                }
                // A late answer to an earlier request.
                Ok(f) => *stray = Some((f.kind, f.seq)),
                Err(FrameError::Crc) => {
                    bad += 1;
                    crc_error = true
                }
                Err(_) => bad += 1,
            });
            self.stats.bad_frames += bad;
            if found.is_some() {
                return Ok(found);
            }
            if crc_error {
                return Ok(None);
            }
        }
    }

    fn io_error(&self, command: &'static str, e: std::io::Error) -> Error {
        if is_disconnect(&e) {
            Error::Disconnected {
                port: self.port().to_string(),
                command,
            }
        } else {
            Error::Io {
                port: self.port().to_string(),
                command,
                source: e,
            }
        }
    }

    fn protocol_error(&self, command: &'static str, message: impl Into<String>) -> Error {
        Error::Protocol {
            port: self.port().to_string(),
            command,
            message: message.into(),
        }
    }

    /// HELLO: negotiate the version and learn who the device is.
    pub fn hello(&mut self) -> Result<HelloInfo> {
        self.decoder.reset();
        let _ = self.transport.discard_input();
        let req = Request::Hello {
            min: protocol::VERSION_MIN,
            max: protocol::VERSION_MAX,
        };
        let f = self.request(&req)?;
        let info = protocol::decode_device_info(&f.body)
            .ok_or_else(|| self.protocol_error("HELLO", "malformed HELLO response"))?;
        if !(protocol::VERSION_MIN..=protocol::VERSION_MAX).contains(&info.version) {
            return Err(Error::UnsupportedProtocol {
                device_min: info.version,
                device_max: info.version,
                station_min: protocol::VERSION_MIN,
                station_max: protocol::VERSION_MAX,
            });
        }
        if (info.max_body as usize) < protocol::MIN_DEVICE_MAX_BODY {
            return Err(self.protocol_error(
                "HELLO",
                format!(
                    "device max_body {} is below the protocol's minimum of {}",
                    info.max_body,
                    protocol::MIN_DEVICE_MAX_BODY
                ),
            ));
        }
        self.device_max_body = (info.max_body as usize).min(protocol::STATION_MAX_BODY);
        Ok(info)
    }

    /// Write one record in chunks; `progress(done, total)` after each acknowledged chunk.
    pub fn write_record(
        &mut self,
        record: u8,
        data: &[u8],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<()> {
        let chunk = self.device_max_body - protocol::WRITE_HEADER_LEN;
        let total = data.len();
        let mut offset = 0;
        loop {
            let end = (offset + chunk).min(total);
            let req = Request::Write {
                record,
                offset: offset as u32,
                total: total as u32,
                data: data[offset..end].to_vec(),
            };
            let f = self.request(&req)?;
            if f.body.len() != 5 || f.body[0] != record {
                return Err(self.protocol_error("WRITE", "malformed WRITE acknowledgement"));
            }
            let received = u32::from_le_bytes(f.body[1..5].try_into().unwrap()) as usize;
            if received != end {
                return Err(self.protocol_error(
                    "WRITE",
                    format!("device acknowledged {received} bytes, {end} were sent"),
                ));
            }
            offset = end;
            progress(offset, total);
            if offset >= total {
                return Ok(());
            }
        }
    }

    /// COMMIT the staged records; the device answers with the digest of what it stored.
    pub fn commit(&mut self, flags: u8) -> Result<DigestState> {
        let f = self.request(&Request::Commit { flags })?;
        let d = self.digest_state("COMMIT", &f.body)?;
        if !d.provisioned {
            return Err(self.protocol_error(
                "COMMIT",
                "the device answered COMMIT with state 0 (no identity committed)",
            ));
        }
        Ok(d)
    }

    /// READ_DIGEST: what the device holds now.
    pub fn read_digest(&mut self) -> Result<DigestState> {
        let f = self.request(&Request::ReadDigest)?;
        self.digest_state("READ_DIGEST", &f.body)
    }

    fn digest_state(&self, command: &'static str, body: &[u8]) -> Result<DigestState> {
        match body.first() {
            Some(&state) if body.len() == 33 && state > 1 => Err(self.protocol_error(
                command,
                format!("state byte 0x{state:02x} is reserved (0 = no identity, 1 = committed)"),
            )),
            _ => protocol::decode_digest(body).ok_or_else(|| {
                self.protocol_error(
                    command,
                    format!(
                        "malformed {command} response: {} bytes, expected 33 (state, SHA-256)",
                        body.len()
                    ),
                )
            }),
        }
    }

    /// READ_RECORD: a non-secret committed record; `None` if the device has none.
    pub fn read_record(&mut self, record: u8) -> Result<Option<Vec<u8>>> {
        match self.request(&Request::ReadRecord { record }) {
            Ok(f) => Ok(Some(f.body)),
            Err(Error::Nak { code, .. }) if code == NakCode::BadRecord as u8 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GEN_CSR: the device generates a key pair (kept staged until COMMIT) and returns a
    /// PKCS#10 CSR (DER) with `common_name` as subject CN.
    pub fn gen_csr(&mut self, key_type: u8, common_name: &str) -> Result<Vec<u8>> {
        let f = self.request(&Request::GenCsr {
            key_type,
            common_name: common_name.to_string(),
        })?;
        Ok(f.body)
    }

    /// RESET: end of cycle; the device reboots into its new identity.
    pub fn reset(&mut self) -> Result<()> {
        self.request(&Request::Reset).map(|_| ())
    }
}

fn nak_error(command: &'static str, body: &[u8]) -> Error {
    let code = body.first().copied().unwrap_or(0);
    if code == NakCode::UnsupportedVersion as u8 && body.len() == 3 {
        return Error::UnsupportedProtocol {
            device_min: body[1],
            device_max: body[2],
            station_min: protocol::VERSION_MIN,
            station_max: protocol::VERSION_MAX,
        };
    }
    let detail = body
        .get(1..)
        .filter(|d| !d.is_empty() && code != NakCode::UnsupportedVersion as u8)
        .map(|d| format!(": {}", String::from_utf8_lossy(d)))
        .unwrap_or_default();
    Error::Nak {
        command,
        code,
        reason: NakCode::describe(code),
        detail,
    }
}

impl Device for Link {
    fn port(&self) -> &str {
        self.transport.port_name()
    }

    fn identify(&mut self) -> Result<DeviceInfo> {
        let h = self.hello()?;
        Ok(DeviceInfo {
            protocol: h.version,
            capabilities: h.capabilities,
            holds_identity: h.provisioned,
            serial: h.serial,
            firmware: h.firmware,
            model: h.model,
        })
    }

    fn held_record(&mut self, record: RecordId) -> Result<Option<Vec<u8>>> {
        if !record.readable() {
            return Err(Error::Internal {
                message: format!("the {} record is secret and never read back", record.name()),
            });
        }
        self.read_record(record as u8)
    }

    fn held_digest(&mut self) -> Result<Option<Digest>> {
        let d = self.read_digest()?;
        Ok(d.provisioned.then_some(d.digest))
    }

    fn stage(
        &mut self,
        record: RecordId,
        bytes: &[u8],
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        self.write_record(record as u8, bytes, |n, _| progress(n))
    }

    fn commit(&mut self, replace: bool) -> Result<Digest> {
        let flags = if replace {
            protocol::commit_flag::REPLACE
        } else {
            0
        };
        Ok(Link::commit(self, flags)?.digest)
    }

    fn generate_csr(&mut self, key_type: X509KeyType, common_name: &str) -> Result<Vec<u8>> {
        self.gen_csr(protocol::key_type_code(key_type), common_name)
    }

    fn read_ek(&mut self, ek_type: TpmEkType) -> Result<ReportedEk> {
        let f = self.request(&Request::ReadEk {
            ek_type: protocol::ek_type_code(ek_type),
        })?;
        let (public, cert, srk) = protocol::decode_ek(&f.body)
            .ok_or_else(|| self.protocol_error("READ_EK", "malformed READ_EK response"))?;
        Ok(ReportedEk {
            public,
            certificate: (!cert.is_empty()).then_some(cert),
            srk: (!srk.is_empty()).then_some(srk),
        })
    }

    fn reset(&mut self) -> Result<()> {
        Link::reset(self)
    }

    fn io_wait(&self) -> Duration {
        self.stats.io_wait
    }
}
