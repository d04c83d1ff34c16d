//! The ground floor: the station's own vocabulary, used by every layer above and importing
//! none of them.
//!
//! A registration ID and the template that forms it ([`registration_id`]); the attestation
//! kinds and a device's [`Credential`] (one enum arm per kind, [`credential`]); the named
//! records an identity consists of and their digest ([`record`]); an enrollment as the
//! station records it ([`enrollment`]); the one progress event type every front end
//! renders ([`event`]); and the device label's ZPL template language ([`label`]).

pub mod credential;
pub mod enrollment;
pub mod event;
pub mod label;
pub mod record;
pub mod registration_id;

pub use credential::{Credential, Identity, KeySource, Minted, Secret, SecretBytes, TpmMaterial};
pub use enrollment::{Enrollment, Status};
pub use event::{Event, Step};
pub use record::{CredentialType, Digest, RecordId};

/// Attestation kinds, spelled as the DPS API spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum AttestationKind {
    #[serde(rename = "symmetricKey")]
    SymmetricKey,
    #[serde(rename = "x509")]
    X509,
    #[serde(rename = "tpm")]
    Tpm,
}

impl AttestationKind {
    /// Every kind.
    pub const ALL: [AttestationKind; 3] = [
        AttestationKind::SymmetricKey,
        AttestationKind::X509,
        AttestationKind::Tpm,
    ];

    /// The DPS `attestation.type` value (also the stored spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            AttestationKind::SymmetricKey => "symmetricKey",
            AttestationKind::X509 => "x509",
            AttestationKind::Tpm => "tpm",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for AttestationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which fixture (one serial port, or one slot of a gang fixture) a device sits in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct FixtureId(pub String);

impl std::fmt::Display for FixtureId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
