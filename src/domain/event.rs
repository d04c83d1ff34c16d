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
//! `ItemFailed`)* → `UploadFinished`; a verification → `Mismatch`* → `VerifyFinished`.

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
    Mismatch {
        registration_id: String,
        problem: String,
    },
    UploadFinished(UploadSummary),
    VerifyFinished(VerifySummary),
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
}

/// What a verification found.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct VerifySummary {
    pub requests: u32,
    pub checked: usize,
    pub matched: usize,
    pub mismatched: usize,
}
