//! Attestation: how a device gets its identity credential.
//!
//! One credential source per attestation kind, behind [`CredentialSource`]: it returns a
//! [`Credential`] (`crate::domain`), asking the device through the protocol-neutral
//! [`Device`] seam when it must (a CSR, an EK). It knows no wire protocol and neither reads
//! nor writes the database.

pub mod symmetric;
pub mod tpm;
pub mod x509;

use crate::config::Config;
use crate::device::{Capability, Device};
use crate::domain::{Credential, Enrollment};
use crate::error::{Error, Result};

/// The registration-ID rule and template live on the ground floor; re-exported for callers
/// that think of them as attestation.
pub use crate::domain::registration_id;

/// What a source learned from the device before the registration ID is formed.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    /// The registration ID the credential dictates (TPM: derived from the EK).
    pub registration_id: Option<String>,
    pub tpm: Option<crate::domain::TpmMaterial>,
    pub warnings: Vec<String>,
}

/// The capability a device must advertise for a credential source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    pub capability: Capability,
    /// The station's mode, for the message.
    pub mode: &'static str,
}

/// One attestation kind's way of obtaining a device credential.
pub trait CredentialSource: Send {
    /// The kind this source produces.
    fn kind(&self) -> crate::domain::AttestationKind;

    /// What the device must be able to store (checked against HELLO before anything else).
    fn requires(&self) -> Requirement;
    /// The credential for `registration_id`; `existing` is the device's enrollment, if any, so
    /// that a re-run reuses what DPS already has.
    fn obtain(
        &self,
        registration_id: &str,
        existing: Option<&Enrollment>,
        device: &mut dyn Device,
        inspection: Option<&Inspection>,
    ) -> Result<Credential>;

    /// Read from the device what the credential is bound to, before the registration ID is
    /// formed (TPM: the EK, which may dictate the registration ID).
    fn inspect(&self, _device: &mut dyn Device) -> Result<Option<Inspection>> {
        Ok(None)
    }

    /// Whether `existing` (a provisioned enrollment) is still good enough to keep when the
    /// device holds it (e.g. its certificate is from this CA and unexpired).
    fn still_valid(&self, existing: &Enrollment) -> bool;

    /// Whether [`CredentialSource::obtain`] gives a provisioned enrollment the same credential
    /// again (symmetric keys) rather than a new one (certificates: a re-issue).
    fn reproducible(&self) -> bool;

    /// Warnings an engineer should see (e.g. a CA key readable by others).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Build the credential source `[attestation]` asks for.
pub fn source_from_config(config: &Config) -> Result<Box<dyn CredentialSource>> {
    match config.attestation.mode {
        crate::config::AttestationMode::Symmetric => {
            let section = config
                .attestation
                .symmetric
                .as_ref()
                .ok_or(Error::MissingSection {
                    section: "[attestation.symmetric]",
                })?;
            let keys = symmetric::SymmetricKeySource::load(section, |p| config.resolve(p))?;
            Ok(Box::new(keys))
        }
        crate::config::AttestationMode::X509 => {
            let section = config
                .attestation
                .x509
                .as_ref()
                .ok_or(Error::MissingSection {
                    section: "[attestation.x509]",
                })?;
            Ok(Box::new(x509::StationCa::load(section, |p| {
                config.resolve(p)
            })?))
        }
        crate::config::AttestationMode::Tpm => {
            let section = config
                .attestation
                .tpm
                .as_ref()
                .ok_or(Error::MissingSection {
                    section: "[attestation.tpm]",
                })?;
            Ok(Box::new(tpm::TpmSource::load(section, |p| {
                config.resolve(p)
            })?))
        }
    }
}
