//! The per-device workflow: identify → credential → store pending → write → commit → verify
//! digest → store provisioned → PASS.
//!
//! This is where the crash-safety invariant lives: the enrollment is durably `pending` before a
//! byte of the credential goes to the device, and `provisioned` (then PASS) only after the
//! device's own digest of what it stored matched what was sent. Any failure is recorded with
//! its error code; a provisioned enrollment is never downgraded. Overwriting an identity the
//! device already holds needs [`Permissions::overwrite_identity`].
//!
//! It drives a `&mut dyn Device` and a [`Store`] and reports through [`Event`]s; it knows no
//! wire protocol, and nothing of egui, clap or terminals.

mod checks;
mod claims;
mod input;
mod interrupt;
#[cfg(test)]
mod tests;

pub use crate::domain::event::{Event, Step};
pub use claims::{Claim, Claims};
pub use input::{DeviceInput, Outcome, Permissions};
pub use interrupt::Interrupt;

use checks::{device_responsive, ms, rekey_refused, resolve_serial, scanned, verify};

use crate::attestation::{self, CredentialSource, Inspection};
use crate::config::Config;
use crate::device::{Device, DeviceInfo};
use crate::domain::registration_id::{self, Inputs, Template};
use crate::domain::{Credential, Enrollment, FixtureId, Identity, RecordId, Status, hex};
use crate::error::{Error, Result};
use crate::fleet::Claimer;
use crate::store::{Attempt, NewEnrollment, Store, now};
use std::time::{Duration, Instant};

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
    /// The fixture this workflow drives, and the devices every fixture of the station holds.
    fixture: FixtureId,
    claims: Claims,
    /// Fleet-wide claims, when station.toml has `[fleet]`.
    fleet: Option<Claimer>,
}

/// One device's pass through the workflow: what is known so far, for the attempt record.
struct Cycle<'a> {
    input: &'a DeviceInput,
    start: Instant,
    started_at: String,
    io0: Duration,
    serial: Option<String>,
    registration_id: Option<String>,
}

/// Who the device in the fixture is, once identified.
struct Identified {
    info: DeviceInfo,
    serial: String,
    registration_id: String,
    inspection: Option<Inspection>,
    /// This fixture's hold on the device until its cycle ends.
    _claim: Claim,
}

/// What the device holds, asked before any credential is made.
#[derive(Default)]
struct Held {
    /// It holds another registration ID and the operator allowed replacing it.
    replace: bool,
    /// It holds this registration ID.
    this_id: bool,
    /// It holds this registration ID under the configured ID scope and global endpoint.
    current: bool,
    /// The digest of the identity it holds (hex).
    digest: Option<String>,
}

impl Workflow {
    /// Load the credential source and open the database named in `config`.
    pub fn new(config: &Config) -> Result<Self> {
        let source = attestation::source_from_config(config)?;
        let mut store = Store::open(&config.database_path())?;
        store.check_writable()?;
        let mut workflow = Self::with_parts(config, source, store)?;
        workflow.fleet = config
            .fleet
            .as_ref()
            .map(|_| Claimer::new(config))
            .transpose()?;
        Ok(workflow)
    }

    /// Build from parts (tests and benches supply their own store or source).
    pub fn with_parts(
        config: &Config,
        source: Box<dyn CredentialSource>,
        store: Store,
    ) -> Result<Self> {
        let template = Template::parse(&config.registration.template).map_err(|message| {
            Error::ConfigInvalid {
                location: "station.toml".into(),
                key: "registration.template".into(),
                message,
            }
        })?;
        Ok(Self {
            station: config.station.id.clone(),
            line: config.station.line.clone(),
            id_scope: config.dps.id_scope.clone(),
            global_endpoint: config.dps.global_endpoint.clone(),
            template,
            source,
            store,
            interrupt: None,
            fixture: FixtureId("1".into()),
            claims: Claims::default(),
            fleet: None,
        })
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Drive fixture `id`, sharing `claims` with the station's other fixtures: a device another
    /// fixture is working on fails here with `fixture.same_device`.
    pub fn set_fixture(&mut self, id: FixtureId, claims: Claims) {
        self.fixture = id;
        self.claims = claims;
    }

    /// Let `interrupt` stop the current device before its COMMIT.
    pub fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.interrupt = Some(interrupt);
    }

    /// Warnings from the credential source an engineer should see.
    pub fn warnings(&self) -> Vec<String> {
        self.source.warnings()
    }

    /// Provision the device in the fixture. Emits events ending in `Passed` or `Failed`; the
    /// result says the same.
    pub fn provision(
        &mut self,
        device: &mut dyn Device,
        input: &DeviceInput,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Outcome> {
        let mut cycle = Cycle {
            input,
            start: Instant::now(),
            started_at: now(),
            io0: device.io_wait(),
            serial: None,
            registration_id: None,
        };
        match self.run(device, &mut cycle, emit) {
            Ok(outcome) => {
                emit(Event::Passed {
                    registration_id: outcome.registration_id.clone(),
                    serial: outcome.serial.clone(),
                    duration_ms: ms(outcome.duration),
                    overhead_ms: ms(outcome.overhead()),
                });
                // End of cycle: the device restarts into its identity. Its answer changes
                // nothing already recorded, so a failure here is not the device's failure.
                let _ = device.reset();
                Ok(outcome)
            }
            Err(error) => Err(self.fail(device, &cycle, error, emit)),
        }
    }

    /// Record the failed attempt and say so; the device is reset when it can still listen.
    fn fail(
        &mut self,
        device: &mut dyn Device,
        cycle: &Cycle<'_>,
        error: Error,
        emit: &mut dyn FnMut(Event),
    ) -> Error {
        let attempt = Attempt {
            registration_id: cycle.registration_id.as_deref(),
            device_serial: cycle.serial.as_deref(),
            passed: false,
            error_code: Some(error.code().as_str()),
            message: Some(&error.to_string()),
            station: &self.station,
            operator: &cycle.input.operator,
            port: device.port(),
            started_at: &cycle.started_at,
            duration_ms: cycle.start.elapsed().as_millis() as u64,
        };
        let error = match self.store.mark_failed(&attempt) {
            Ok(()) => error,
            // Keep the device's error for the operator, but never hide that the database
            // could not record it.
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
            registration_id: cycle.registration_id.clone(),
            serial: cycle.serial.clone(),
            problem: (&error).into(),
        });
        if device_responsive(&error) {
            let _ = device.reset();
        }
        error
    }

    fn run(
        &mut self,
        device: &mut dyn Device,
        cycle: &mut Cycle<'_>,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Outcome> {
        let who = self.identify(device, cycle, emit)?;
        let existing = self.store.find(&who.registration_id)?;
        if let Some(e) = &existing
            && e.device_serial != who.serial
        {
            // Not this device's enrollment: it stays untouched (failures are recorded only
            // against rows of the same serial); the attempt is recorded.
            return Err(Error::DuplicateRegistration {
                registration_id: who.registration_id,
                enrolled_serial: e.device_serial.clone(),
                serial: who.serial,
            });
        }
        let held = self.held(device, &who, cycle.input)?;
        if let Some(e) = &existing
            && let Some(digest) = self.resumable(e, &held, cycle.input)
        {
            emit(Event::AlreadyProvisioned {
                digest: digest.clone(),
            });
            emit(Event::Verified {
                digest: digest.clone(),
            });
            return self.finish(device, cycle, &digest);
        }
        let digest = self.deliver(device, &who, existing.as_ref(), &held, cycle.input, emit)?;
        self.finish(device, cycle, &digest)
    }

    /// HELLO, serial, capabilities, and the registration ID (a TPM's EK may dictate it, so
    /// the source inspects the device first).
    fn identify(
        &mut self,
        device: &mut dyn Device,
        cycle: &mut Cycle<'_>,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Identified> {
        emit(Event::Connecting {
            port: device.port().to_string(),
        });
        let info = device.identify()?;
        emit(Event::Identified {
            serial: info.serial.clone(),
            firmware: info.firmware.clone(),
            model: info.model.clone(),
            protocol: info.protocol,
            provisioned: info.holds_identity,
        });
        let serial = resolve_serial(&info.serial, cycle.input.scanned_serial.as_deref())?;
        cycle.serial = Some(serial.clone());
        checks::capabilities(&info, self.source.requires())?;
        self.check_interrupt()?;
        let inspection = self.source.inspect(device)?;
        let registration_id =
            self.registration_id(&serial, cycle.input, &info, inspection.as_ref())?;
        // Claimed before the registration ID is noted: a device another fixture holds fails
        // here without touching its enrollment.
        let claim = self
            .claims
            .claim(&self.fixture, &serial, &registration_id)?;
        cycle.registration_id = Some(registration_id.clone());
        emit(Event::RegistrationId {
            registration_id: registration_id.clone(),
        });
        Ok(Identified {
            info,
            serial,
            registration_id,
            inspection,
            _claim: claim,
        })
    }

    /// What the device holds. A credential that may have reached it (committed before a
    /// crash, or a lost COMMIT answer) is re-used, never overwritten.
    fn held(&self, device: &mut dyn Device, who: &Identified, input: &DeviceInput) -> Result<Held> {
        let mut held = Held::default();
        if !who.info.holds_identity {
            return Ok(held);
        }
        let held_id = device.held_record(RecordId::RegistrationId)?;
        match held_id.map(|b| String::from_utf8_lossy(&b).into_owned()) {
            Some(id) if !id.eq_ignore_ascii_case(&who.registration_id) => {
                if !input.permissions.overwrite_identity {
                    return Err(Error::IdentityConflict {
                        serial: who.serial.clone(),
                        existing: id,
                        wanted: who.registration_id.clone(),
                    });
                }
                held.replace = true;
            }
            Some(_) => held.this_id = true,
            None => {}
        }
        if held.this_id {
            // Another ID scope or endpoint would send the device to another DPS instance than
            // the one its enrollment goes to now: never finished as it is.
            held.current = device.held_record(RecordId::IdScope)?.as_deref()
                == Some(self.id_scope.as_bytes())
                && device.held_record(RecordId::GlobalEndpoint)?.as_deref()
                    == Some(self.global_endpoint.as_bytes());
        }
        held.digest = device.held_digest()?.map(|d| hex(&d));
        Ok(held)
    }

    /// The digest to finish on without writing, when the device already holds exactly what
    /// the database records for it, under the configured ID scope and endpoint.
    fn resumable(&self, e: &Enrollment, held: &Held, input: &DeviceInput) -> Option<String> {
        let digest = held.digest.as_deref().filter(|_| held.current)?;
        let recorded = match e.status {
            Status::Provisioned | Status::Exported => {
                let keep = !input.permissions.rekey && self.source.still_valid(e);
                e.device_digest.as_deref().filter(|_| keep)
            }
            // Recorded, then committed by the device, but never marked (a crash, a lost
            // answer): the device holds exactly what the database recorded.
            Status::Pending | Status::Failed => e.expected_digest.as_deref(),
        };
        (recorded == Some(digest)).then(|| digest.to_string())
    }

    /// Obtain the credential, record it as pending, write and commit it, and read the
    /// device's digest back. The verified digest (hex).
    fn deliver(
        &mut self,
        device: &mut dyn Device,
        who: &Identified,
        existing: Option<&Enrollment>,
        held: &Held,
        input: &DeviceInput,
        emit: &mut dyn FnMut(Event),
    ) -> Result<String> {
        let provisioned =
            existing.filter(|e| matches!(e.status, Status::Provisioned | Status::Exported));
        if provisioned.is_some() && !self.source.reproducible() && !input.permissions.rekey {
            return Err(Error::ReissueNotPermitted {
                serial: who.serial.clone(),
                registration_id: who.registration_id.clone(),
            });
        }
        self.check_interrupt()?;
        let credential = self.source.obtain(
            &who.registration_id,
            existing,
            device,
            who.inspection.as_ref(),
        )?;
        emit(Event::Credential {
            attestation: credential.kind().as_str(),
            key_source: credential.key_source().as_str(),
            fingerprint: credential.fingerprint(),
        });
        for message in who.inspection.iter().flat_map(|i| &i.warnings) {
            emit(Event::Warning {
                message: message.clone(),
            });
        }
        let identity = Identity::new(
            &self.id_scope,
            &self.global_endpoint,
            &who.registration_id,
            &credential,
        );
        let expected = identity.digest();
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
        self.check_unfinished_rekey(who, existing, held, &expected_hex, input)?;
        checks::claim_in_fleet(self.fleet.as_mut(), &who.registration_id, &credential, emit)?;
        self.record_pending(who, &credential, input, &expected_hex, supersede)?;
        emit(Event::Recorded {
            registration_id: who.registration_id.clone(),
        });
        if held.digest.as_deref() == Some(expected_hex.as_str()) {
            emit(Event::AlreadyProvisioned {
                digest: expected_hex.clone(),
            });
        } else {
            self.write(device, &identity, &expected, held.replace, emit)?;
        }
        verify(device, &expected)?;
        emit(Event::Verified {
            digest: expected_hex.clone(),
        });
        Ok(expected_hex)
    }

    /// An approved re-key that did not finish leaves the device holding its previous version
    /// (kept as superseded) and the row failed: replacing that credential needs the
    /// permission again, as every re-key does.
    fn check_unfinished_rekey(
        &self,
        who: &Identified,
        existing: Option<&Enrollment>,
        held: &Held,
        wanted: &str,
        input: &DeviceInput,
    ) -> Result<()> {
        let Some(e) = existing.filter(|e| matches!(e.status, Status::Pending | Status::Failed))
        else {
            return Ok(());
        };
        let Some(digest) = held
            .digest
            .as_deref()
            .filter(|d| held.this_id && *d != wanted)
        else {
            return Ok(());
        };
        if input.permissions.rekey
            || !self
                .store
                .is_superseded_version(&who.registration_id, digest)?
        {
            return Ok(());
        }
        Err(Error::RekeyNotPermitted {
            registration_id: e.registration_id.clone(),
            serial: e.device_serial.clone(),
            recorded: digest.to_string(),
            wanted: wanted.to_string(),
            cause:
                "an approved re-key did not finish: the device still holds its previous credential"
                    .into(),
        })
    }

    fn record_pending(
        &mut self,
        who: &Identified,
        credential: &Credential,
        input: &DeviceInput,
        expected_digest: &str,
        supersede: bool,
    ) -> Result<()> {
        self.store.record_pending(&NewEnrollment {
            registration_id: &who.registration_id,
            device_serial: &who.serial,
            firmware: &who.info.firmware,
            model: &who.info.model,
            credential,
            station: &self.station,
            line: &self.line,
            operator: &input.operator,
            expected_digest,
            supersede,
        })
    }

    /// Stage every record, then commit and compare the device's digest with ours. An
    /// interrupt is honoured up to the commit; after it the device is finished.
    fn write(
        &self,
        device: &mut dyn Device,
        identity: &Identity,
        expected: &crate::domain::Digest,
        replace: bool,
        emit: &mut dyn FnMut(Event),
    ) -> Result<()> {
        let total = identity.total_len();
        let mut done = 0;
        for (id, bytes) in identity.records() {
            self.check_interrupt()?;
            let before = done;
            device.stage(id, bytes, &mut |n| {
                emit(Event::Writing {
                    written: before + n,
                    total,
                })
            })?;
            done += bytes.len();
        }
        self.check_interrupt()?;
        let committed = device.commit(replace)?;
        emit(Event::Committed {
            digest: hex(&committed),
        });
        if committed != *expected {
            return Err(Error::VerifyMismatch {
                expected: hex(expected),
                actual: hex(&committed),
            });
        }
        Ok(())
    }

    /// The registration ID: dictated by the credential (TPM EK) or formed by the template.
    fn registration_id(
        &self,
        serial: &str,
        input: &DeviceInput,
        info: &DeviceInfo,
        inspection: Option<&Inspection>,
    ) -> Result<String> {
        match inspection.and_then(|i| i.registration_id.clone()) {
            Some(id) => {
                registration_id::validate(&id)?;
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

    /// Stop an unfinished device when a stop was asked for (never after COMMIT).
    fn check_interrupt(&self) -> Result<()> {
        match self.interrupt.as_ref().and_then(Interrupt::requested) {
            Some(signal) => Err(Error::Interrupted { signal }),
            None => Ok(()),
        }
    }

    /// Durably mark the device provisioned with its verified digest; only then is it a PASS.
    fn finish(
        &mut self,
        device: &mut dyn Device,
        cycle: &Cycle<'_>,
        digest: &str,
    ) -> Result<Outcome> {
        let registration_id = cycle.registration_id.as_deref().unwrap_or_default();
        let serial = cycle.serial.as_deref().unwrap_or_default();
        let duration = cycle.start.elapsed();
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
                operator: &cycle.input.operator,
                port: device.port(),
                started_at: &cycle.started_at,
                duration_ms: duration.as_millis() as u64,
            },
        )?;
        Ok(Outcome {
            registration_id: registration_id.to_string(),
            serial: serial.to_string(),
            duration: cycle.start.elapsed(),
            io_wait: device.io_wait().saturating_sub(cycle.io0),
        })
    }
}
