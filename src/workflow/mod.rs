//! The per-device workflow: identify → credential → store pending → write → commit → verify
//! digest → store provisioned → PASS.
//!
//! This is where the crash-safety invariant lives: the enrollment is durably `pending` before a
//! byte of the credential goes to the device, and `provisioned` (then PASS) only after the
//! device's own digest of what it stored matched what was sent. Any failure is recorded with
//! its error code; a provisioned enrollment is never downgraded. Overwriting an identity the
//! device already holds needs [`Permissions::overwrite_identity`].
//!
//! It drives a [`Link`] and a [`Store`] and reports through [`Event`]s; it knows nothing of
//! egui, clap or terminals.

mod event;

pub use event::{Event, Step};

use crate::attestation::registration_id::{Inputs, Template};
use crate::attestation::{self, CredentialSource};
use crate::config::Config;
use crate::device::link::Link;
use crate::device::protocol::{self, RecordId, commit_flag, hex};
use crate::error::{Error, Result};
use crate::store::{Attempt, NewEnrollment, Status, Store, now};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Irreversible steps the operator (or an engineer) explicitly allowed for this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Replace an identity the device already holds under another registration ID.
    pub overwrite_identity: bool,
    /// Re-key a provisioned device: write a credential other than the one its enrollment
    /// holds (a new certificate, another group key, ID scope or endpoint). The current version
    /// is kept in `superseded_enrollments`.
    pub rekey: bool,
}

/// What the operator supplies for one device.
#[derive(Debug, Clone, Default)]
pub struct DeviceInput {
    /// A scanned serial-number barcode, if any.
    pub scanned_serial: Option<String>,
    pub operator: String,
    pub permissions: Permissions,
}

/// A passed device.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub registration_id: String,
    pub serial: String,
    pub duration: Duration,
    /// Time spent waiting on the serial line.
    pub io_wait: Duration,
}

impl Outcome {
    /// Time the station itself spent.
    pub fn overhead(&self) -> Duration {
        self.duration.saturating_sub(self.io_wait)
    }
}

/// The workflow for one station: configuration, credential source and database.
pub struct Workflow {
    station: String,
    line: String,
    id_scope: String,
    global_endpoint: String,
    template: Template,
    source: Box<dyn CredentialSource>,
    store: Store,
    interrupt: Option<Interrupt>,
}

/// A request to stop, set by SIGINT or SIGTERM (or by a front end). The current device is
/// abandoned before its COMMIT, or finished after it; nothing new starts.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    signal: Arc<AtomicUsize>,
    seen: Arc<AtomicBool>,
}

impl Interrupt {
    /// Route SIGINT and SIGTERM here. A second signal ends the process at once (exit 130).
    pub fn install() -> Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let i = Self::default();
        for sig in [SIGINT, SIGTERM] {
            let registered = signal_hook::flag::register_conditional_shutdown(
                sig,
                crate::error::ExitClass::Interrupted as i32,
                i.seen.clone(),
            )
            .and_then(|_| signal_hook::flag::register(sig, i.seen.clone()))
            .and_then(|_| signal_hook::flag::register_usize(sig, i.signal.clone(), sig as usize));
            registered
                .map_err(|e| Error::Usage(format!("cannot install a signal handler: {e}")))?;
        }
        Ok(i)
    }

    /// Ask for a stop, as a signal would.
    pub fn request(&self, signal: i32) {
        self.signal.store(signal as usize, Ordering::SeqCst);
        self.seen.store(true, Ordering::SeqCst);
    }

    /// The signal that asked for a stop, if any.
    pub fn requested(&self) -> Option<&'static str> {
        if !self.seen.load(Ordering::SeqCst) {
            return None;
        }
        Some(match self.signal.load(Ordering::SeqCst) as i32 {
            signal_hook::consts::SIGTERM => "SIGTERM",
            signal_hook::consts::SIGINT => "SIGINT",
            _ => "a stop request",
        })
    }
}

#[derive(Default)]
struct Known {
    registration_id: Option<String>,
    serial: Option<String>,
}

impl Workflow {
    /// Load the credential source and open the database named in `config`.
    pub fn new(config: &Config) -> Result<Self> {
        let source = attestation::source_from_config(config)?;
        let mut store = Store::open(&config.database_path())?;
        store.check_writable()?;
        Self::with_parts(config, source, store)
    }

    /// Build from parts (tests and benches supply their own store or source).
    pub fn with_parts(
        config: &Config,
        source: Box<dyn CredentialSource>,
        store: Store,
    ) -> Result<Self> {
        let template = Template::parse(&config.registration.template).map_err(Error::Usage)?;
        Ok(Self {
            station: config.station.id.clone(),
            line: config.station.line.clone(),
            id_scope: config.dps.id_scope.clone(),
            global_endpoint: config.dps.global_endpoint.clone(),
            template,
            source,
            store,
            interrupt: None,
        })
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Provision the device on `link`. Emits events ending in `Passed` or `Failed`; the result
    /// says the same.
    pub fn provision(
        &mut self,
        link: &mut Link,
        input: &DeviceInput,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Outcome> {
        let start = Instant::now();
        let started_at = now();
        let io0 = link.stats.io_wait;
        let mut known = Known::default();
        let result = self.run(link, input, emit, &mut known, start, &started_at, io0);
        match result {
            Ok(outcome) => {
                emit(Event::Passed {
                    registration_id: outcome.registration_id.clone(),
                    serial: outcome.serial.clone(),
                    duration_ms: ms(outcome.duration),
                    overhead_ms: ms(outcome.overhead()),
                });
                // End of cycle: the device reboots into its identity. Its answer changes
                // nothing already recorded, so a failure here is not the device's failure.
                let _ = link.reset();
                Ok(outcome)
            }
            Err(error) => {
                let attempt = Attempt {
                    registration_id: known.registration_id.as_deref(),
                    device_serial: known.serial.as_deref(),
                    passed: false,
                    error_code: Some(error.code()),
                    message: Some(&error.to_string()),
                    station: &self.station,
                    operator: &input.operator,
                    port: link.port(),
                    started_at: &started_at,
                    duration_ms: start.elapsed().as_millis() as u64,
                };
                let recorded = self.store.mark_failed(&attempt);
                let error = match recorded {
                    Ok(()) => error,
                    // Keep the device's error for the operator, but never hide that the
                    // database could not record it.
                    Err(db) => Error::Database {
                        path: self.store.path().to_string(),
                        message: format!(
                            "{}; the failure it could not record was {}: {error}",
                            match db {
                                Error::Database { message, .. } => message,
                                other => other.to_string(),
                            },
                            error.code()
                        ),
                    },
                };
                emit(Event::Failed {
                    registration_id: known.registration_id.clone(),
                    serial: known.serial.clone(),
                    code: error.code(),
                    message: error.to_string(),
                    remedy: error.remedy(),
                });
                if device_responsive(&error) {
                    let _ = link.reset();
                }
                Err(error)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        link: &mut Link,
        input: &DeviceInput,
        emit: &mut dyn FnMut(Event),
        known: &mut Known,
        start: Instant,
        started_at: &str,
        io0: Duration,
    ) -> Result<Outcome> {
        emit(Event::Connecting {
            port: link.port().to_string(),
        });
        let info = link.hello()?;
        emit(Event::Identified {
            serial: info.serial.clone(),
            firmware: info.firmware.clone(),
            model: info.model.clone(),
            protocol: info.version,
            provisioned: info.provisioned,
        });
        let serial = resolve_serial(&info.serial, input.scanned_serial.as_deref())?;
        known.serial = Some(serial.clone());
        self.check_capabilities(info.capabilities)?;
        self.check_interrupt()?;
        // A TPM's EK may dictate the registration ID: read it first.
        let inspection = self.source.inspect(link)?;
        let registration_id = self.registration_id(&serial, input, &info, inspection.as_ref())?;
        known.registration_id = Some(registration_id.clone());
        emit(Event::RegistrationId {
            registration_id: registration_id.clone(),
        });

        let existing = self.store.find(&registration_id)?;
        if let Some(e) = &existing
            && e.device_serial != serial
        {
            // Not this device's enrollment: it stays untouched (failures are recorded only
            // against rows of the same serial); the attempt is recorded.
            return Err(Error::DuplicateRegistration {
                registration_id,
                enrolled_serial: e.device_serial.clone(),
                serial,
            });
        }
        let mut flags = 0;
        let mut holds_this_id = false;
        // What the device holds, asked before any credential is made: a credential that may
        // have reached it (committed before a crash, or a lost COMMIT answer) is re-used, never
        // overwritten.
        let mut held: Option<String> = None;
        if info.provisioned {
            let id = link.read_record(RecordId::RegistrationId as u8)?;
            match id.map(|b| String::from_utf8_lossy(&b).into_owned()) {
                Some(id) if !id.eq_ignore_ascii_case(&registration_id) => {
                    if !input.permissions.overwrite_identity {
                        return Err(Error::IdentityConflict {
                            serial,
                            existing: id,
                            wanted: registration_id,
                        });
                    }
                    flags |= commit_flag::REPLACE;
                }
                Some(_) => holds_this_id = true,
                None => {}
            }
            let d = link.read_digest()?;
            held = d.provisioned.then(|| hex(&d.digest));
        }

        if let Some(e) = &existing
            && let Some(digest) = held.as_deref()
        {
            let recorded = match e.status {
                Status::Provisioned | Status::Exported => {
                    let keep =
                        holds_this_id && !input.permissions.rekey && self.source.still_valid(e);
                    e.device_digest.as_deref().filter(|_| keep)
                }
                // Recorded, then committed by the device, but never marked (a crash, a lost
                // answer): the device holds exactly what the database recorded.
                Status::Pending | Status::Failed => e.expected_digest.as_deref(),
            };
            if recorded == Some(digest) {
                emit(Event::AlreadyProvisioned {
                    digest: digest.to_string(),
                });
                emit(Event::Verified {
                    digest: digest.to_string(),
                });
                return self.finish(
                    link,
                    input,
                    &registration_id,
                    &serial,
                    digest,
                    start,
                    started_at,
                    io0,
                );
            }
        }

        let provisioned = existing
            .as_ref()
            .filter(|e| matches!(e.status, Status::Provisioned | Status::Exported));
        if provisioned.is_some() && !self.source.reproducible() && !input.permissions.rekey {
            return Err(Error::ReissueNotPermitted {
                serial,
                registration_id,
            });
        }
        self.check_interrupt()?;
        let credential = self.source.obtain(
            &registration_id,
            existing.as_ref(),
            link,
            inspection.as_ref(),
        )?;
        emit(Event::Credential {
            attestation: credential.kind.as_str(),
            key_source: credential.key_source,
            fingerprint: credential.fingerprint.clone(),
        });
        for message in &credential.warnings {
            emit(Event::Warning {
                message: message.clone(),
            });
        }
        let mut records: Vec<(RecordId, &[u8])> = vec![
            (RecordId::IdScope, self.id_scope.as_bytes()),
            (RecordId::GlobalEndpoint, self.global_endpoint.as_bytes()),
            (RecordId::RegistrationId, registration_id.as_bytes()),
        ];
        records.extend(
            credential
                .records
                .iter()
                .map(|(id, s)| (*id, s.0.as_slice())),
        );
        let expected = protocol::records_digest(records.iter().map(|(id, b)| (*id as u8, *b)));
        let expected_hex = hex(&expected);
        // A provisioned device gets exactly what the database holds; anything else (another
        // group key, ID scope or endpoint, a new certificate) is a re-key.
        let supersede = match provisioned {
            Some(e) if e.device_digest.as_deref() != Some(expected_hex.as_str()) => {
                if !input.permissions.rekey {
                    return Err(rekey_refused(e, &credential, &expected_hex));
                }
                true
            }
            _ => false,
        };

        self.store.record_pending(&NewEnrollment {
            registration_id: &registration_id,
            device_serial: &serial,
            firmware: &info.firmware,
            model: &info.model,
            attestation_type: credential.kind.as_str(),
            key_source: Some(credential.key_source),
            primary_key: credential.stored_primary.as_ref(),
            secondary_key: credential.stored_secondary.as_ref(),
            group_key_id: credential.group_key_id.as_deref(),
            certificate: credential.certificate.as_ref(),
            tpm: credential.tpm.as_ref(),
            station: &self.station,
            line: &self.line,
            operator: &input.operator,
            expected_digest: &expected_hex,
            supersede,
        })?;
        emit(Event::Recorded {
            registration_id: registration_id.clone(),
        });

        if held.as_deref() == Some(expected_hex.as_str()) {
            emit(Event::AlreadyProvisioned {
                digest: expected_hex.clone(),
            });
        } else {
            self.write(link, &records, flags, &expected, emit)?;
        }
        let readback = link.read_digest()?;
        if !readback.provisioned || readback.digest != expected {
            return Err(Error::VerifyMismatch {
                expected: expected_hex,
                actual: hex(&readback.digest),
            });
        }
        emit(Event::Verified {
            digest: expected_hex.clone(),
        });

        self.finish(
            link,
            input,
            &registration_id,
            &serial,
            &expected_hex,
            start,
            started_at,
            io0,
        )
    }

    /// WRITE every record, then COMMIT and compare the device's digest with ours. An
    /// interrupt is honoured up to the COMMIT; after it the device is finished.
    fn write(
        &self,
        link: &mut Link,
        records: &[(RecordId, &[u8])],
        flags: u8,
        expected: &[u8; 32],
        emit: &mut dyn FnMut(Event),
    ) -> Result<()> {
        let total: usize = records.iter().map(|(_, b)| b.len()).sum();
        let mut done = 0;
        for (id, bytes) in records {
            self.check_interrupt()?;
            let before = done;
            link.write_record(*id as u8, bytes, |n, _| {
                emit(Event::Writing {
                    written: before + n,
                    total,
                })
            })?;
            done += bytes.len();
        }
        self.check_interrupt()?;
        let committed = link.commit(flags)?;
        emit(Event::Committed {
            digest: hex(&committed.digest),
        });
        if committed.digest != *expected {
            return Err(Error::VerifyMismatch {
                expected: hex(expected),
                actual: hex(&committed.digest),
            });
        }
        Ok(())
    }

    /// The registration ID: dictated by the credential (TPM EK) or formed by the template.
    fn registration_id(
        &self,
        serial: &str,
        input: &DeviceInput,
        info: &protocol::DeviceInfo,
        inspection: Option<&attestation::Inspection>,
    ) -> Result<String> {
        match inspection.and_then(|i| i.registration_id.clone()) {
            Some(id) => {
                crate::attestation::registration_id::validate(&id)?;
                Ok(id)
            }
            None => self.template.render(&Inputs {
                serial,
                scan: scanned(input.scanned_serial.as_deref()),
                station: &self.station,
                line: &self.line,
                model: &info.model,
            }),
        }
    }

    /// Refuse a device whose firmware does not advertise the capability this mode needs,
    /// before anything is asked of it or written.
    fn check_capabilities(&self, capabilities: u32) -> Result<()> {
        let need = self.source.requires();
        if capabilities & need.bit == 0 {
            return Err(Error::CapabilityMissing {
                mode: need.mode,
                capability: need.capability,
                bit: need.bit.trailing_zeros(),
                capabilities,
            });
        }
        Ok(())
    }

    /// Stop an unfinished device when SIGINT/SIGTERM asked for it (never after COMMIT).
    fn check_interrupt(&self) -> Result<()> {
        match self.interrupt.as_ref().and_then(Interrupt::requested) {
            Some(signal) => Err(Error::Interrupted { signal }),
            None => Ok(()),
        }
    }

    /// Let `interrupt` stop the current device before its COMMIT.
    pub fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.interrupt = Some(interrupt);
    }

    /// Durably mark the device provisioned with its verified digest; only then is it a PASS.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        link: &mut Link,
        input: &DeviceInput,
        registration_id: &str,
        serial: &str,
        digest: &str,
        start: Instant,
        started_at: &str,
        io0: Duration,
    ) -> Result<Outcome> {
        let duration = start.elapsed();
        self.store.mark_provisioned(
            registration_id,
            digest,
            &Attempt {
                registration_id: Some(registration_id),
                device_serial: Some(serial),
                passed: true,
                error_code: None,
                message: None,
                station: &self.station,
                operator: &input.operator,
                port: link.port(),
                started_at,
                duration_ms: duration.as_millis() as u64,
            },
        )?;
        Ok(Outcome {
            registration_id: registration_id.to_string(),
            serial: serial.to_string(),
            duration: start.elapsed(),
            io_wait: link.stats.io_wait - io0,
        })
    }

    /// Warnings from the credential source an engineer should see.
    pub fn warnings(&self) -> Vec<String> {
        self.source.warnings()
    }
}

/// Wait until a device other than `previous` answers HELLO (the operator swapped devices).
pub fn wait_for_next_device(
    link: &mut Link,
    previous: &str,
    timeout: Duration,
    interrupt: &Interrupt,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(signal) = interrupt.requested() {
            return Err(Error::Interrupted { signal });
        }
        match link.hello() {
            Ok(info) if info.serial != previous => return Ok(()),
            Ok(_) => std::thread::sleep(Duration::from_millis(200)),
            Err(e @ (Error::Disconnected { .. } | Error::Io { .. })) => return Err(e),
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(Error::NoNextDevice {
                port: link.port().to_string(),
                previous: previous.to_string(),
                waited_s: timeout.as_secs(),
            });
        }
    }
}

/// A scanned serial, if one was given (blank counts as none).
fn scanned(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// The device's serial: reported, or scanned; both must agree when both are there.
fn resolve_serial(reported: &str, scan: Option<&str>) -> Result<String> {
    match (reported.trim(), scanned(scan)) {
        ("", None) => Err(Error::NoSerial),
        ("", Some(s)) => Ok(s.to_string()),
        (r, Some(s)) if !r.eq_ignore_ascii_case(s) => Err(Error::SerialMismatch {
            scanned: s.to_string(),
            reported: r.to_string(),
        }),
        (r, _) => Ok(r.to_string()),
    }
}

/// Why writing `credential` to a provisioned device is a re-key, in words.
fn rekey_refused(
    e: &crate::store::Enrollment,
    credential: &attestation::Credential,
    wanted: &str,
) -> Error {
    let cause = match (&e.group_key_id, &credential.group_key_id) {
        (Some(was), Some(now)) if was != now => {
            format!("it was provisioned with group key {was}, the configured group key is {now}")
        }
        _ => {
            "the ID scope, global endpoint or credential differs from what it was provisioned with"
                .into()
        }
    };
    Error::RekeyNotPermitted {
        registration_id: e.registration_id.clone(),
        serial: e.device_serial.clone(),
        recorded: e.device_digest.clone().unwrap_or_default(),
        wanted: wanted.to_string(),
        cause,
    }
}

fn device_responsive(e: &Error) -> bool {
    matches!(
        e,
        Error::Nak { .. }
            | Error::IdentityConflict { .. }
            | Error::VerifyMismatch { .. }
            | Error::SerialMismatch { .. }
            | Error::DuplicateRegistration { .. }
            | Error::RegistrationId { .. }
            | Error::RekeyNotPermitted { .. }
            | Error::ReissueNotPermitted { .. }
            | Error::CapabilityMissing { .. }
            | Error::RequestTooLarge { .. }
            | Error::Interrupted { .. }
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
