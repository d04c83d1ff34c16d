//! The one progress surface: every front end (CLI text, CLI JSON lines, GUI) renders these,
//! for a device's cycle and for an upload.
//!
//! Order for one device:
//! `Connecting` → `Identified` → `RegistrationId` → `Credential` → `Warning`* → `Recorded` →
//! (`AlreadyProvisioned` | `Writing`* → `Committed`) → `Verified` → `Passed`.
//! A device that already holds what the database recorded for it (a re-run, or a run a crash
//! cut short after the device committed) goes `RegistrationId` → `AlreadyProvisioned` →
//! `Verified` → `Passed` without a new credential. `Failed` may follow any event (or come
//! first). Nothing follows `Passed` or `Failed` for that device; the next device starts again
//! with `Connecting`.
//!
//! An upload goes `UploadStarted` → (`Request` | `Bulk` | `Retry` | `Conflict` |
//! `ItemFailed` | `Progress`)* → `UploadFinished`; a verification → (`Mismatch` | `Progress` |
//! `Retry`)* → `VerifyFinished`, then with `--registrations` (`Registration` | `Progress`)* →
//! `RegistrationsFinished`.

use serde::Serialize;
use serde_json::Value;

/// The steps the operator screen shows, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Connect,
    Identify,
    Credential,
    Write,
    Verify,
    Record,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Connect,
        Step::Identify,
        Step::Credential,
        Step::Write,
        Step::Verify,
        Step::Record,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Step::Connect => "Connect",
            Step::Identify => "Identify",
            Step::Credential => "Credential",
            Step::Write => "Write",
            Step::Verify => "Verify",
            Step::Record => "Record",
        }
    }
}

/// Progress of one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Waiting for / talking to the device on `port`.
    Connecting {
        port: String,
    },
    /// The device answered HELLO.
    Identified {
        serial: String,
        firmware: String,
        model: String,
        /// The protocol version (1), or 0 for a Zephyr MCUmgr (SMP) device.
        protocol: u8,
        provisioned: bool,
    },
    /// The registration ID this device will present to DPS.
    RegistrationId {
        registration_id: String,
    },
    /// The credential was obtained (never the key itself).
    Credential {
        attestation: &'static str,
        key_source: &'static str,
        fingerprint: String,
    },
    /// Something the operator should know that did not fail the device (e.g. a TPM without an
    /// EK certificate under policy `warn`); it is recorded with the enrollment.
    Warning {
        message: String,
    },
    /// The enrollment is durably recorded as pending.
    Recorded {
        registration_id: String,
    },
    /// The device already holds exactly this identity; nothing is rewritten.
    AlreadyProvisioned {
        digest: String,
    },
    /// Bytes of the device's records acknowledged so far.
    Writing {
        written: usize,
        total: usize,
    },
    /// The device committed; its digest of what it stored.
    Committed {
        digest: String,
    },
    /// The read-back digest matched.
    Verified {
        digest: String,
    },
    /// The device is provisioned and durably recorded so.
    Passed {
        registration_id: String,
        serial: String,
        duration_ms: f64,
        /// Time the station itself spent (not waiting on the line).
        overhead_ms: f64,
    },
    /// The device failed; nothing about it is recorded as good.
    Failed {
        registration_id: Option<String>,
        serial: Option<String>,
        /// `code`, `message` and `remedy` (flattened into the event).
        #[serde(flatten)]
        problem: crate::error::Problem,
    },
    // Upload and verification (`station upload`, the window's Upload button).
    UploadStarted {
        endpoint: String,
    },
    /// `--dry-run`: a request that would be sent (signature and keys redacted).
    Request {
        method: &'static str,
        url: String,
        authorization: String,
        body: Value,
    },
    Bulk {
        request: u32,
        mode: &'static str,
        enrollments: usize,
        uploaded: usize,
        conflicts: usize,
        failed: usize,
    },
    Retry {
        status: Option<u16>,
        reason: String,
        wait_ms: u64,
        attempt: u32,
    },
    /// A batch whose manifest is missing or does not verify: none of its enrollments is sent.
    BatchRefused {
        batch: String,
        #[serde(flatten)]
        problem: crate::error::Problem,
    },
    Conflict {
        registration_id: String,
        error_code: Option<i64>,
        error_status: Option<String>,
    },
    ItemFailed {
        registration_id: String,
        error_code: Option<i64>,
        error_status: Option<String>,
    },
    /// DPS holds something else than was sent: every differing field (`differences`, never a
    /// key value), joined in `problem`.
    Mismatch {
        registration_id: String,
        problem: String,
        differences: Vec<String>,
    },
    /// How far a long job has come (after every call to DPS, every export page).
    Progress(Progress),
    UploadFinished(UploadSummary),
    VerifyFinished(VerifySummary),
    /// A device's registration state, for a device that did not come up assigned.
    Registration {
        registration_id: String,
        #[serde(flatten)]
        state: RegistrationState,
    },
    RegistrationsFinished(RegistrationSummary),
}

impl Event {
    /// The step this event belongs to.
    pub fn step(&self) -> Option<Step> {
        Some(match self {
            Event::Connecting { .. } => Step::Connect,
            Event::Identified { .. } | Event::RegistrationId { .. } => Step::Identify,
            Event::Credential { .. } | Event::Warning { .. } | Event::Recorded { .. } => {
                Step::Credential
            }
            Event::AlreadyProvisioned { .. } | Event::Writing { .. } | Event::Committed { .. } => {
                Step::Write
            }
            Event::Verified { .. } => Step::Verify,
            Event::Passed { .. } => Step::Record,
            _ => return None,
        })
    }

    /// Whether nothing follows this event for the device.
    pub fn is_final(&self) -> bool {
        matches!(self, Event::Passed { .. } | Event::Failed { .. })
    }
}

/// What an upload did.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct UploadSummary {
    pub requests: u32,
    pub uploaded: usize,
    pub conflicts: usize,
    pub failed: usize,
    /// Enrollments whose etag was read back after the upload (verification skips their
    /// attestation while the etag is unchanged).
    pub etags_recorded: usize,
    /// Batches not sent because their manifest is missing or does not verify.
    pub refused_batches: usize,
}

/// What a verification found.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct VerifySummary {
    pub requests: u32,
    pub checked: usize,
    pub matched: usize,
    pub mismatched: usize,
    /// Of the mismatched: enrollments DPS does not hold at all.
    pub missing: usize,
    /// Query pages read.
    pub pages: u32,
    /// Attestation mechanism reads (enrollments whose etag changed or was unknown, or all
    /// with `--deep`).
    pub attestation_reads: u32,
    /// Enrollments DPS holds that this station did not upload (not compared).
    pub others: usize,
}

/// Which long job a [`Progress`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Upload,
    /// Reading back etags after an upload.
    ReadBack,
    Verify,
    Registrations,
    Export,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Upload => "Uploading",
            Phase::ReadBack => "Reading back",
            Phase::Verify => "Verifying",
            Phase::Registrations => "Registrations",
            Phase::Export => "Exporting",
        }
    }
}

/// How far a long job has come.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Progress {
    pub phase: Phase,
    /// Items done (enrollments sent, read back, verified, written).
    pub done: u64,
    /// Items in all (`done` may pass it on a read-back of a DPS shared with others).
    pub total: u64,
    /// Calls to DPS so far.
    pub requests: u32,
    /// Accepted, matched or assigned.
    pub ok: u64,
    pub conflicts: u64,
    /// Failed items, mismatches or failed registrations.
    pub failed: u64,
    /// Seconds left at the pace so far.
    pub eta_s: Option<u64>,
}

impl Progress {
    /// A progress of `phase` with nothing done yet.
    pub fn new(phase: Phase, total: u64) -> Self {
        Progress {
            phase,
            done: 0,
            total,
            requests: 0,
            ok: 0,
            conflicts: 0,
            failed: 0,
            eta_s: None,
        }
    }

    /// Fraction done, 0..=1.
    pub fn fraction(&self) -> f32 {
        if self.total == 0 {
            1.0
        } else {
            (self.done as f32 / self.total as f32).min(1.0)
        }
    }

    /// Set the time left from the pace since `started`.
    pub fn estimate(&mut self, started: std::time::Instant) {
        let left = self.total.saturating_sub(self.done);
        self.eta_s = (self.done > 0).then(|| {
            let per = started.elapsed().as_secs_f64() / self.done as f64;
            (per * left as f64).ceil() as u64
        });
    }
}

/// A device's registration state as DPS reported it (`GET /registrations/{id}`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RegistrationState {
    /// `unassigned`, `assigning`, `assigned`, `failed`, `disabled`, or `not_registered`
    /// (DPS has never seen the device).
    pub status: String,
    pub assigned_hub: Option<String>,
    pub device_id: Option<String>,
    /// `errorCode: errorMessage` of a failed registration.
    pub error: Option<String>,
    pub last_updated: Option<String>,
}

/// Did the devices come up: registration states of every uploaded enrollment.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RegistrationSummary {
    pub requests: u32,
    pub checked: usize,
    /// Assigned to a hub, by hub.
    pub assigned: std::collections::BTreeMap<String, usize>,
    pub assigning: usize,
    pub unassigned: usize,
    pub failed: usize,
    pub disabled: usize,
    /// DPS has not seen the device register yet (404).
    pub never_seen: usize,
}

impl RegistrationSummary {
    /// Devices assigned to any hub.
    pub fn registered(&self) -> usize {
        self.assigned.values().sum()
    }
}
