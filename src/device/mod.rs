//! The device in the fixture, behind one protocol-neutral seam: [`Device`].
//!
//! The workflow and the credential sources only ever hold a `&mut dyn Device`. Protocol v1
//! over a serial byte link ([`transport`]) is one implementation ([`v1::Link`]); another
//! protocol is another implementation of the trait. A device's TPM reached directly over a
//! TCTI is in [`tpm`]. Nothing here touches the database or knows about attestation policy;
//! the device simulator is a separate peer (`crate::sim`) that this module never imports.

pub mod smp;
pub mod tpm;
pub mod transport;
pub mod v1;

use crate::config::{Config, TpmEkType, X509KeyType, load::parse_usb_id};
use crate::domain::{Digest, RecordId};
use crate::error::{Error, Result};
use std::time::Duration;

/// What a device can store or do, as it advertises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Store a symmetric key.
    SymmetricKey,
    /// Store an X.509 certificate chain and its private key.
    X509Chain,
    /// Generate a key pair and a CSR on the device.
    Csr,
    /// Report its TPM's endorsement key.
    TpmEk,
    /// Lock its identity against rewriting.
    Lock,
}

impl Capability {
    /// The capability's bit in the station's capability word (protocol v1 carries the word
    /// unchanged in HELLO).
    pub const fn bit(self) -> u32 {
        1 << match self {
            Capability::SymmetricKey => 0,
            Capability::X509Chain => 1,
            Capability::Csr => 2,
            Capability::TpmEk => 3,
            Capability::Lock => 4,
        }
    }

    /// Its name in docs/protocol.md.
    pub fn name(self) -> &'static str {
        match self {
            Capability::SymmetricKey => "SYMMETRIC_KEY",
            Capability::X509Chain => "X509_CHAIN",
            Capability::Csr => "CSR",
            Capability::TpmEk => "TPM",
            Capability::Lock => "LOCK",
        }
    }
}

/// Who the device says it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// The protocol version the session speaks.
    pub protocol: u8,
    /// The capability word ([`Capability::bit`]).
    pub capabilities: u32,
    /// Whether the device holds a committed identity.
    pub holds_identity: bool,
    pub serial: String,
    pub firmware: String,
    pub model: String,
}

impl DeviceInfo {
    pub fn has(&self, c: Capability) -> bool {
        self.capabilities & c.bit() != 0
    }
}

/// An EK as a device reports it.
#[derive(Debug, Clone)]
pub struct ReportedEk {
    /// TPM2B_PUBLIC of the EK.
    pub public: Vec<u8>,
    /// EK certificate (DER), if the TPM has one.
    pub certificate: Option<Vec<u8>>,
    /// TPM2B_PUBLIC of the SRK, if present.
    pub srk: Option<Vec<u8>>,
}

/// A device in a fixture, whatever protocol it speaks.
///
/// An identity is staged record by record and takes effect only at [`Device::commit`], which
/// answers with the device's own digest of what it stored; [`Device::held_digest`] asks for
/// it again at any time. Secrets are never read back.
pub trait Device: Send {
    /// The port (or slot) the device is on, for messages.
    fn port(&self) -> &str;

    /// Open a session: who the device is, what it can do, whether it holds an identity.
    fn identify(&mut self) -> Result<DeviceInfo>;

    /// A non-secret record of the identity the device holds (registration ID, ID scope,
    /// global endpoint, credential type); `None` when it holds none. Secret records are never
    /// read back.
    fn held_record(&mut self, record: RecordId) -> Result<Option<Vec<u8>>>;

    /// The digest of the identity the device holds; `None` when it holds none.
    fn held_digest(&mut self) -> Result<Option<Digest>>;

    /// Stage one record; `progress(bytes)` after each part the device acknowledged.
    fn stage(
        &mut self,
        record: RecordId,
        bytes: &[u8],
        progress: &mut dyn FnMut(usize),
    ) -> Result<()>;

    /// Make the staged records the device's identity (replacing one it holds when
    /// `replace`); the device's digest of what it stored.
    fn commit(&mut self, replace: bool) -> Result<Digest>;

    /// Have the device generate a key pair (kept until commit) and return a PKCS#10 CSR (DER)
    /// with `common_name` as its subject CN.
    fn generate_csr(&mut self, key_type: X509KeyType, common_name: &str) -> Result<Vec<u8>>;

    /// Have the device read its TPM's endorsement key.
    fn read_ek(&mut self, ek_type: TpmEkType) -> Result<ReportedEk>;

    /// End the cycle: the device restarts into its identity.
    fn reset(&mut self) -> Result<()>;

    /// Time spent so far waiting on the device (to tell the station's own time apart).
    fn io_wait(&self) -> Duration;
}

/// An open fixture: its device, and whatever must live as long as it (e.g. the simulator
/// behind a pseudo-terminal).
pub struct Fixture {
    pub device: Box<dyn Device>,
    _keep: Option<Box<dyn Send>>,
}

impl Fixture {
    pub fn new(device: Box<dyn Device>) -> Self {
        Self {
            device,
            _keep: None,
        }
    }

    /// A fixture that keeps `keep` alive (dropped after the device).
    pub fn keeping(device: Box<dyn Device>, keep: Box<dyn Send>) -> Self {
        Self {
            device,
            _keep: Some(keep),
        }
    }
}

/// How a front end opens a fixture: `port` overrides `serial.port`. [`open`] opens serial
/// ports; a front end may add its own (the built-in simulator).
pub type Opener = std::sync::Arc<dyn Fn(&Config, Option<&str>) -> Result<Fixture> + Send + Sync>;

/// Which port `[serial]` (or `--port`) designates, resolving `auto` by USB VID:PID and, when
/// configured, the adapter's USB serial number.
pub fn resolve_port(config: &Config, port: &str) -> Result<String> {
    if port != "auto" {
        return Ok(port.to_string());
    }
    let ids: Vec<(u16, u16)> = config
        .serial
        .usb_ids
        .iter()
        .filter_map(|s| parse_usb_id(s))
        .collect();
    let usb_serial = config.serial.usb_serial.as_deref();
    let found = transport::find_usb_ports(&ids, usb_serial)?;
    let wanted = match usb_serial {
        Some(s) => format!("USB serial number {s}"),
        None => format!("VID:PID in [{}]", config.serial.usb_ids.join(", ")),
    };
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::NoFixture {
            message: format!("no USB serial port with {wanted}"),
        }),
        many => Err(Error::NoFixture {
            message: format!(
                "several fixtures match ({}); name one with --port or give its usb_serial",
                many.join(", ")
            ),
        }),
    }
}

/// Open the fixture on a serial port: `port_override` wins over `serial.port`.
pub fn open(config: &Config, port_override: Option<&str>) -> Result<Fixture> {
    let port = port_override.unwrap_or(&config.serial.port);
    let path = resolve_port(config, port)?;
    Ok(Fixture::new(open_serial(
        config,
        &path,
        config.serial.baud,
    )?))
}

/// The device on the serial port at `path`: protocol v1 or MCUmgr (SMP) as `[device] protocol`
/// (or the fixture's `protocol`) says, with the `[serial]` timeouts and retries.
pub fn open_serial(config: &Config, path: &str, baud: u32) -> Result<Box<dyn Device>> {
    if config.device.protocol == crate::config::DeviceProtocol::Smp {
        let opts = smp::SmpOptions::from_config(config, baud)?;
        return Ok(Box::new(smp::open(path, opts)?));
    }
    let transport = transport::SerialTransport::open(path, baud)?;
    let timeouts = v1::protocol::Timeouts {
        response: Duration::from_millis(config.serial.response_timeout_ms),
        commit: Duration::from_millis(config.serial.commit_timeout_ms),
        keygen: Duration::from_millis(config.serial.keygen_timeout_ms),
    };
    Ok(Box::new(v1::Link::new(
        Box::new(transport),
        baud,
        timeouts,
        config.serial.retries,
    )))
}
