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
use std::time::{Duration, Instant};

/// Irreversible steps the operator (or an engineer) explicitly allowed for this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Replace an identity the device already holds under another registration ID.
    pub overwrite_identity: bool,
    /// Issue a new certificate to a device whose enrollment already has a valid one.
    pub reissue_certificate: bool,
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
        let store = Store::open(&config.database_path())?;
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
                        message: format!("{db}; while recording failure {}: {error}", error.code()),
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
        let scanned = input
            .scanned_serial
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let serial = match (info.serial.trim(), scanned) {
            ("", None) => return Err(Error::NoSerial),
            ("", Some(s)) => s.to_string(),
            (r, Some(s)) if !r.eq_ignore_ascii_case(s) => {
                return Err(Error::SerialMismatch {
                    scanned: s.to_string(),
                    reported: r.to_string(),
                });
            }
            (r, _) => r.to_string(),
        };
        known.serial = Some(serial.clone());
        // A TPM's EK may dictate the registration ID: read it first.
        let inspection = self.source.inspect(link)?;
        let registration_id = match inspection.as_ref().and_then(|i| i.registration_id.clone()) {
            Some(id) => {
                crate::attestation::registration_id::validate(&id)?;
                id
            }
            None => self.template.render(&Inputs {
                serial: &serial,
                scan: scanned,
                station: &self.station,
                line: &self.line,
                model: &info.model,
            })?,
        };
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
        if info.provisioned {
            let held = link.read_record(RecordId::RegistrationId as u8)?;
            let held = held.map(|b| String::from_utf8_lossy(&b).into_owned());
            match held {
                Some(held) if !held.eq_ignore_ascii_case(&registration_id) => {
                    if !input.permissions.overwrite_identity {
                        return Err(Error::IdentityConflict {
                            serial,
                            existing: held,
                            wanted: registration_id,
                        });
                    }
                    flags |= commit_flag::REPLACE;
                }
                Some(_) => holds_this_id = true,
                None => {}
            }
        }

        let provisioned = existing
            .as_ref()
            .filter(|e| matches!(e.status, Status::Provisioned | Status::Exported));
        if let Some(e) = provisioned {
            // The device already holds what the database has for it: verify, and finish.
            if holds_this_id && !input.permissions.reissue_certificate && self.source.still_valid(e)
            {
                let d = link.read_digest()?;
                let digest = hex(&d.digest);
                if d.provisioned && e.device_digest.as_deref() == Some(digest.as_str()) {
                    emit(Event::AlreadyProvisioned {
                        digest: digest.clone(),
                    });
                    emit(Event::Verified {
                        digest: digest.clone(),
                    });
                    return self.finish(
                        link,
                        input,
                        &registration_id,
                        &serial,
                        &digest,
                        start,
                        started_at,
                        io0,
                    );
                }
            }
            if !self.source.reproducible() && !input.permissions.reissue_certificate {
                return Err(Error::ReissueNotPermitted {
                    serial,
                    registration_id,
                });
            }
        }
        let supersede = provisioned.is_some() && !self.source.reproducible();

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
            supersede,
        })?;
        emit(Event::Recorded {
            registration_id: registration_id.clone(),
        });

        let already = info.provisioned && {
            let d = link.read_digest()?;
            d.provisioned && d.digest == expected
        };
        if already {
            emit(Event::AlreadyProvisioned {
                digest: hex(&expected),
            });
        } else {
            let total: usize = records.iter().map(|(_, b)| b.len()).sum();
            let mut done = 0;
            for (id, bytes) in &records {
                let before = done;
                link.write_record(*id as u8, bytes, |n, _| {
                    emit(Event::Writing {
                        written: before + n,
                        total,
                    })
                })?;
                done += bytes.len();
            }
            let committed = link.commit(flags)?;
            emit(Event::Committed {
                digest: hex(&committed.digest),
            });
            if committed.digest != expected {
                return Err(Error::VerifyMismatch {
                    expected: hex(&expected),
                    actual: hex(&committed.digest),
                });
            }
        }
        let readback = link.read_digest()?;
        if !readback.provisioned || readback.digest != expected {
            return Err(Error::VerifyMismatch {
                expected: hex(&expected),
                actual: hex(&readback.digest),
            });
        }
        emit(Event::Verified {
            digest: hex(&expected),
        });

        self.finish(
            link,
            input,
            &registration_id,
            &serial,
            &hex(&expected),
            start,
            started_at,
            io0,
        )
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
pub fn wait_for_next_device(link: &mut Link, previous: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match link.hello() {
            Ok(info) if info.serial != previous => return Ok(()),
            Ok(_) => std::thread::sleep(Duration::from_millis(200)),
            Err(e @ (Error::Disconnected { .. } | Error::Io { .. })) => return Err(e),
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                port: link.port().to_string(),
                command: "HELLO (waiting for the next device)",
                attempts: 0,
            });
        }
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
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
