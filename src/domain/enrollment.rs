//! An individual enrollment as the station records it, and where it stands.

use super::AttestationKind;
use super::credential::Secret;
use serde::Serialize;

/// Where an enrollment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Recorded, not yet verified on the device: unfinished (e.g. after a crash).
    Pending,
    /// Verified on the device; waiting for export.
    Provisioned,
    /// The last attempt failed; `error_code` says why.
    Failed,
    /// Provisioned and included in an export batch.
    Exported,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Provisioned => "provisioned",
            Status::Failed => "failed",
            Status::Exported => "exported",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "provisioned" => Status::Provisioned,
            "failed" => Status::Failed,
            "exported" => Status::Exported,
            _ => return None,
        })
    }
}

/// One enrollment row (with its derived status and batch).
#[derive(Debug, Clone, Serialize)]
pub struct Enrollment {
    pub registration_id: String,
    pub device_serial: String,
    pub firmware: String,
    pub model: String,
    pub attestation_type: AttestationKind,
    pub key_source: Option<String>,
    #[serde(skip)]
    pub primary_key: Option<Secret>,
    #[serde(skip)]
    pub secondary_key: Option<Secret>,
    pub group_key_id: Option<String>,
    /// X.509: the device certificate (PEM).
    pub certificate: Option<String>,
    pub cert_serial: Option<String>,
    pub cert_thumbprint: Option<String>,
    pub cert_not_before: Option<String>,
    pub cert_not_after: Option<String>,
    /// TPM: whether the EK certificate verified (`verified`, `missing`, `invalid: …`).
    pub ek_cert_status: Option<String>,
    pub device_digest: Option<String>,
    /// The digest of the recorded credential as the device holds it once committed (set when
    /// the credential is recorded; a re-run compares the device's READ_DIGEST with it).
    pub expected_digest: Option<String>,
    pub status: Status,
    pub error_code: Option<String>,
    pub station: String,
    pub line: String,
    pub operator: String,
    pub created_at: String,
    pub updated_at: String,
    pub provisioned_at: Option<String>,
    pub export_seq: Option<i64>,
    pub batch: Option<String>,
}
