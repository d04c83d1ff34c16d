//! The named records a provisioned device holds (DPS coordinates, registration ID, the
//! credential), and the digest over them that proves the device stored exactly these.
//!
//! Record ids are the station's own numbering; protocol v1 carries them unchanged
//! (docs/protocol.md §6), another protocol maps them to its own keys.

use sha2::{Digest as _, Sha256};

/// SHA-256 over an identity's records (see [`records_digest`]).
pub type Digest = [u8; 32];

/// Named records an identity consists of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum RecordId {
    IdScope = 0x01,
    GlobalEndpoint = 0x02,
    RegistrationId = 0x03,
    CredentialType = 0x04,
    Credential = 0x05,
    CredentialSecondary = 0x06,
    PrivateKey = 0x07,
}

impl RecordId {
    /// Records every identity has.
    pub const REQUIRED: [RecordId; 5] = [
        RecordId::IdScope,
        RecordId::GlobalEndpoint,
        RecordId::RegistrationId,
        RecordId::CredentialType,
        RecordId::Credential,
    ];

    /// Every record, in id order.
    pub const ALL: [RecordId; 7] = [
        RecordId::IdScope,
        RecordId::GlobalEndpoint,
        RecordId::RegistrationId,
        RecordId::CredentialType,
        RecordId::Credential,
        RecordId::CredentialSecondary,
        RecordId::PrivateKey,
    ];

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == v)
    }

    /// Whether a device may give this record back (secrets never).
    pub fn readable(self) -> bool {
        !matches!(
            self,
            RecordId::Credential | RecordId::CredentialSecondary | RecordId::PrivateKey
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            RecordId::IdScope => "id-scope",
            RecordId::GlobalEndpoint => "global-endpoint",
            RecordId::RegistrationId => "registration-id",
            RecordId::CredentialType => "credential-type",
            RecordId::Credential => "credential",
            RecordId::CredentialSecondary => "credential-secondary",
            RecordId::PrivateKey => "private-key",
        }
    }
}

/// Value of the CREDENTIAL_TYPE record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CredentialType {
    /// Base64 symmetric key, as the Azure SDKs take it.
    SymmetricKey = 1,
    /// X.509 certificate chain (PEM); the key was generated on the device.
    X509DeviceKey = 2,
    /// X.509 certificate chain (PEM) and its private key in the PRIVATE_KEY record (PKCS#8 DER).
    X509StationKey = 3,
    /// The device's TPM: the CREDENTIAL record holds the EK's TPM2B_PUBLIC the station enrolled.
    Tpm = 4,
}

/// The digest a device reports over its committed records: SHA-256 over, for each record in
/// ascending id order, `id | len u16 LE | bytes`.
pub fn records_digest<'a>(records: impl IntoIterator<Item = (u8, &'a [u8])>) -> Digest {
    let mut sorted: Vec<(u8, &[u8])> = records.into_iter().collect();
    sorted.sort_by_key(|r| r.0);
    let mut h = Sha256::new();
    for (id, data) in sorted {
        h.update([id]);
        h.update((data.len() as u16).to_le_bytes());
        h.update(data);
    }
    h.finalize().into()
}
