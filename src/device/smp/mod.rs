//! A Zephyr device speaking MCUmgr (SMP) over its serial console: the second implementation of
//! [`Device`], for products that ship MCUmgr for firmware updates and need no provisioning
//! firmware of their own (docs/smp.md).
//!
//! The SMP client is `mcumgr-toolkit`'s; [`client`] holds the little the station adds to it.
//! Records become files through the fs group (or settings keys), each checked by its SHA-256
//! on the device; [`layout`] describes the files and the manifest that makes them an identity.
//! Identify uses the os group (echo, application info, MCUmgr parameters), reset the os group's
//! reset. Device-made keys (a CSR) and reading a TPM through the device are not MCUmgr
//! commands: they fail with `device.smp_unsupported`.

pub mod client;
pub mod layout;
pub mod store;

use crate::config::{Config, SerialSource, SmpStorage, TpmEkType, TpmReach, X509KeyType};
use crate::device::{Capability, Device, DeviceInfo, ReportedEk};
use crate::domain::record::records_digest;
use crate::domain::{Digest, RecordId, hex};
use crate::error::{Error, ErrorCode, Result};
use client::{Meter, MeteredPort, map_error};
use layout::{CLEARED, Entry, MANIFEST, Manifest, record_name};
use mcumgr_toolkit::MCUmgrClient;
use mcumgr_toolkit::client::MCUmgrClientError;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use zeroize::Zeroizing;

/// What [`DeviceInfo::protocol`] says for an SMP device (protocol v1 devices say 1).
pub const PROTOCOL_SMP: u8 = 0;

/// Wire bytes of an exchange the station plans line time for: a 1024-byte SMP buffer each way,
/// base64-encoded with its line markers.
const LINE_BUDGET_BYTES: u64 = 2 * 1400;

/// The station's settings for one SMP device.
#[derive(Debug, Clone)]
pub struct SmpOptions {
    pub store: Store,
    pub serial: SerialSource,
    /// Base time for an answer.
    pub response: Duration,
    /// Extra time for a file write (the first chunk erases).
    pub write: Duration,
    pub retries: u8,
    pub baud: u32,
    /// The fixture exposes the device's TPM through a TCTI (TPM attestation is then possible).
    pub tpm_via_fixture: bool,
}

impl SmpOptions {
    /// The options `[device.smp]`, `[serial]` and `[attestation.tpm]` give.
    pub fn from_config(config: &Config, baud: u32) -> Result<Self> {
        let s = &config.device.smp;
        let store = match s.storage {
            SmpStorage::Files => Store::Files { dir: s.dir.clone() },
            SmpStorage::Settings => Store::Settings {
                prefix: s.settings_prefix.clone(),
            },
        };
        let serial = s.serial_source().map_err(|message| Error::ConfigInvalid {
            location: config.source_path.display().to_string(),
            key: "device.smp.serial_source".into(),
            message,
        })?;
        let tpm_via_fixture = config
            .attestation
            .tpm
            .as_ref()
            .is_some_and(|t| t.source == TpmReach::Tcti);
        Ok(Self {
            store,
            serial,
            response: Duration::from_millis(config.serial.response_timeout_ms),
            write: Duration::from_millis(config.serial.commit_timeout_ms),
            retries: config.serial.retries.min(u8::MAX as u32) as u8,
            baud: baud.max(1),
            tpm_via_fixture,
        })
    }
}

/// An SMP device on a serial port.
pub struct SmpDevice {
    client: MCUmgrClient,
    port: String,
    meter: Arc<Meter>,
    opts: SmpOptions,
    /// Records staged since the last identify, with their bytes until the commit.
    staged: Vec<(RecordId, Zeroizing<Vec<u8>>)>,
}

/// Open `path` at `baud` and speak SMP on it.
pub fn open(path: &str, opts: SmpOptions) -> Result<SmpDevice> {
    let port = serialport::new(path, opts.baud)
        .timeout(opts.response)
        .open_native()
        .map_err(|e| Error::PortUnavailable {
            port: path.to_string(),
            message: e.to_string(),
        })?;
    let meter = Arc::new(Meter::default());
    let client = MCUmgrClient::new_from_serial(MeteredPort::new(port, meter.clone()));
    client.set_retries(opts.retries);
    Ok(SmpDevice {
        client,
        port: path.to_string(),
        meter,
        opts,
        staged: Vec::new(),
    })
}

impl SmpDevice {
    /// The toolkit's client, for tools and benchmarks that speak SMP beyond the trait.
    pub fn client(&self) -> &MCUmgrClient {
        &self.client
    }

    /// Bytes sent and received so far.
    pub fn wire_bytes(&self) -> (u64, u64) {
        (self.meter.tx_bytes(), self.meter.rx_bytes())
    }

    fn err(&self, (command, e): (&'static str, MCUmgrClientError)) -> Error {
        map_error(&self.port, command, self.opts.retries as u32 + 1, e)
    }

    /// Allow `extra` beyond the response time, plus line time for the largest frame.
    fn set_timeout(&self, extra: Duration) -> Result<()> {
        let line =
            Duration::from_micros(LINE_BUDGET_BYTES * 10 * 1_000_000 / self.opts.baud as u64);
        self.client
            .set_timeout(self.opts.response + extra + line)
            .map_err(|e| self.err(("set timeout", e)))
    }

    fn app_info(&self, format: &str) -> Result<String> {
        match self.client.os_application_info(Some(format)) {
            Ok(s) => Ok(s.trim().to_string()),
            Err(e) if e.command_not_supported() => Ok(String::new()),
            Err(e) => Err(self.err(("os application info", e))),
        }
    }

    fn serial(&self) -> Result<String> {
        let value = match &self.opts.serial {
            SerialSource::Scan => return Ok(String::new()),
            SerialSource::File(path) => {
                let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
                let files = Store::Files { dir: dir.into() };
                files.get(&self.client, name).map_err(|e| self.err(e))?
            }
            SerialSource::Setting(key) => {
                let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
                match prefix {
                    "" => self.client.settings_read(name).map(Some).or_else(|e| {
                        client::not_found(&e)
                            .then_some(None)
                            .ok_or_else(|| self.err(("settings read", e)))
                    })?,
                    p => {
                        let keys = Store::Settings { prefix: p.into() };
                        keys.get(&self.client, name).map_err(|e| self.err(e))?
                    }
                }
            }
        };
        // A missing serial is the workflow's to report (it may take a scanned one).
        Ok(value
            .map(|v| String::from_utf8_lossy(&v).trim().to_string())
            .unwrap_or_default())
    }

    /// The manifest the device holds, if it parses.
    fn manifest(&self) -> Result<Option<Manifest>> {
        let bytes = self
            .opts
            .store
            .get(&self.client, MANIFEST)
            .map_err(|e| self.err(e))?;
        Ok(bytes.and_then(|b| Manifest::parse(&b)))
    }

    fn hash(&self, name: &str) -> Result<Option<[u8; 32]>> {
        self.opts
            .store
            .sha256(&self.client, name)
            .map_err(|e| self.err(e))
    }

    fn unsupported(&self, what: &str) -> Error {
        Error::Smp {
            code: ErrorCode::DeviceSmpUnsupported,
            message: format!("the MCUmgr (SMP) device on {} cannot {what}", self.port),
        }
    }

    /// Every staged record's device-side hash is the hash of what was written.
    fn check_staged(&self) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        for (record, bytes) in &self.staged {
            let name = record_name(*record);
            let sent: [u8; 32] = Sha256::digest(bytes.as_slice()).into();
            match self.hash(name)? {
                Some(h) if h == sent => {}
                held => {
                    return Err(Error::Smp {
                        code: ErrorCode::DeviceSmpHashMismatch,
                        message: format!(
                            "{} on the device on {} does not hold what was written: SHA-256 {} written, device reports {}",
                            self.opts.store.path(name),
                            self.port,
                            hex(&sent),
                            held.map(|h| hex(&h)).unwrap_or_else(|| "no file".into())
                        ),
                    });
                }
            }
            entries.push(Entry {
                record: *record,
                len: bytes.len(),
                sha256: sent,
            });
        }
        Ok(entries)
    }

    /// Empty the records of an earlier identity that this one does not have (a private key
    /// left from X.509 when the device now gets a symmetric key).
    fn clear_leftovers(&self) -> Result<()> {
        for r in RecordId::ALL {
            if self.staged.iter().any(|(s, _)| *s == r) {
                continue;
            }
            let name = record_name(r);
            let cleared: [u8; 32] = Sha256::digest(CLEARED).into();
            let empty: [u8; 32] = Sha256::digest(b"").into();
            if self.hash(name)?.is_some_and(|h| h != cleared && h != empty) {
                self.opts
                    .store
                    .clear(&self.client, name)
                    .map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }
}

impl Device for SmpDevice {
    fn port(&self) -> &str {
        &self.port
    }

    fn identify(&mut self) -> Result<DeviceInfo> {
        self.staged.clear();
        self.set_timeout(Duration::ZERO)?;
        self.client
            .check_connection()
            .map_err(|e| self.err(("os echo", e)))?;
        // Firmware without the parameters command keeps the toolkit's default frame size.
        if let Err(e) = self.client.use_auto_frame_size()
            && !e.command_not_supported()
        {
            return Err(self.err(("os mcumgr params", e)));
        }
        let firmware = self.app_info("v")?;
        let model = self.app_info("i")?;
        let serial = self.serial()?;
        let holds_identity = self.manifest()?.is_some();
        let mut capabilities = Capability::SymmetricKey.bit() | Capability::X509Chain.bit();
        if self.opts.tpm_via_fixture {
            capabilities |= Capability::TpmEk.bit();
        }
        Ok(DeviceInfo {
            protocol: PROTOCOL_SMP,
            capabilities,
            holds_identity,
            serial,
            firmware,
            model,
        })
    }

    fn held_record(&mut self, record: RecordId) -> Result<Option<Vec<u8>>> {
        if !record.readable() || self.manifest()?.is_none() {
            return Ok(None);
        }
        self.opts
            .store
            .get(&self.client, record_name(record))
            .map_err(|e| self.err(e))
    }

    /// The manifest's digest, when every record it lists hashes on the device to the listed
    /// SHA-256; `None` otherwise (no identity, or a broken one).
    fn held_digest(&mut self) -> Result<Option<Digest>> {
        let Some(m) = self.manifest()? else {
            return Ok(None);
        };
        for e in &m.entries {
            if self.hash(record_name(e.record))? != Some(e.sha256) {
                return Ok(None);
            }
        }
        Ok(Some(m.digest))
    }

    /// Upload one record; a file that already holds exactly these bytes (a re-run after an
    /// interruption) is left as it is. The first record of a cycle empties the manifest first:
    /// from then on the device holds no identity until [`Device::commit`].
    fn stage(
        &mut self,
        record: RecordId,
        bytes: &[u8],
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        if self.staged.is_empty() {
            self.set_timeout(self.opts.write)?;
            let manifest = self.opts.store.clear(&self.client, MANIFEST);
            manifest.map_err(|e| self.err(e))?;
        }
        let name = record_name(record);
        let sent: [u8; 32] = Sha256::digest(bytes).into();
        if self.hash(name)? == Some(sent) {
            progress(bytes.len());
        } else {
            self.set_timeout(self.opts.write)?;
            let put = self.opts.store.put(&self.client, name, bytes, progress);
            self.set_timeout(Duration::ZERO)?;
            put.map_err(|e| self.err(e))?;
        }
        self.staged.retain(|(r, _)| *r != record);
        self.staged.push((record, Zeroizing::new(bytes.to_vec())));
        Ok(())
    }

    /// Check every record's device-side hash, then write the manifest (and check its hash):
    /// only now does the device hold the identity. `replace` is the workflow's permission,
    /// already checked before the first record was staged.
    fn commit(&mut self, _replace: bool) -> Result<Digest> {
        let mut entries = self.check_staged()?;
        self.clear_leftovers()?;
        entries.sort_by_key(|e| e.record);
        let digest = records_digest(self.staged.iter().map(|(r, b)| (*r as u8, b.as_slice())));
        let manifest = Manifest { entries, digest }.encode();
        self.set_timeout(self.opts.write)?;
        let written = self
            .opts
            .store
            .put(&self.client, MANIFEST, &manifest, &mut |_| {});
        self.set_timeout(Duration::ZERO)?;
        written.map_err(|e| self.err(e))?;
        if self.hash(MANIFEST)? != Some(Sha256::digest(&manifest).into()) {
            return Err(Error::Smp {
                code: ErrorCode::DeviceSmpHashMismatch,
                message: format!(
                    "{} on the device on {} does not hold the manifest that was written",
                    self.opts.store.path(MANIFEST),
                    self.port
                ),
            });
        }
        self.opts
            .store
            .save(&self.client)
            .map_err(|e| self.err(e))?;
        self.staged.clear();
        Ok(digest)
    }

    fn generate_csr(&mut self, _key_type: X509KeyType, _common_name: &str) -> Result<Vec<u8>> {
        Err(self.unsupported(
            "generate a key pair and a CSR: device-made keys are not part of standard MCUmgr; use protocol v1 firmware, or key_source = \"station\" (the key then crosses the line, docs/smp.md)",
        ))
    }

    fn read_ek(&mut self, _ek_type: TpmEkType) -> Result<ReportedEk> {
        Err(self.unsupported(
            "read its TPM's endorsement key: MCUmgr has no TPM command; expose the fixture's TPM through a TCTI ([attestation.tpm] source = \"tcti\", docs/smp.md)",
        ))
    }

    /// The os group's reset. The device restarts as it answers; an answer lost to the restart
    /// is not a failure.
    fn reset(&mut self) -> Result<()> {
        self.client.set_retries(0);
        let r = self.client.os_system_reset(false, None);
        self.client.set_retries(self.opts.retries);
        match r.map_err(|e| self.err(("os reset", e))) {
            Err(Error::Timeout { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn io_wait(&self) -> Duration {
        self.meter.io_wait()
    }
}
