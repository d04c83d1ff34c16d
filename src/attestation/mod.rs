//! Attestation: how a device gets its identity credential.
//!
//! Owns the registration-ID rule and template ([`registration_id`]) and the credential sources,
//! one per attestation kind, behind [`CredentialSource`]. A source returns a [`Credential`]: the
//! records to write into the device and what the enrollment must hold. It does not talk to the
//! device or the database itself.

pub mod registration_id;
pub mod symmetric;
pub mod tpm;
pub mod x509;

use crate::config::{Config, SymmetricKeys};
use crate::device::protocol::{CredentialType, RecordId, capability};
use crate::error::{Error, Result};
use crate::store::Enrollment;

/// Attestation kinds, spelled as the DPS API spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AttestationKind {
    #[serde(rename = "symmetricKey")]
    SymmetricKey,
    #[serde(rename = "x509")]
    X509,
    #[serde(rename = "tpm")]
    Tpm,
}

impl AttestationKind {
    /// The DPS `attestation.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            AttestationKind::SymmetricKey => "symmetricKey",
            AttestationKind::X509 => "x509",
            AttestationKind::Tpm => "tpm",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "symmetricKey" => Some(AttestationKind::SymmetricKey),
            "x509" => Some(AttestationKind::X509),
            "tpm" => Some(AttestationKind::Tpm),
            _ => None,
        }
    }
}

/// A secret string whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Secret bytes whose `Debug` never shows them, zeroized when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(pub Vec<u8>);

impl Drop for SecretBytes {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

/// What a credential source produced for one device.
#[derive(Debug, Clone)]
pub struct Credential {
    pub kind: AttestationKind,
    /// `group-derived` or `individual` for symmetric keys.
    pub key_source: &'static str,
    /// Records written into the device besides the DPS coordinates and registration ID.
    pub records: Vec<(RecordId, SecretBytes)>,
    /// Keys the enrollment row must hold (individual keys only).
    pub stored_primary: Option<Secret>,
    pub stored_secondary: Option<Secret>,
    /// Fingerprint of the group key a derived key came from.
    pub group_key_id: Option<String>,
    /// A short non-secret fingerprint shown to the operator (SHA-256 prefix of the device key,
    /// or of the certificate).
    pub fingerprint: String,
    /// The minted device certificate (X.509).
    pub certificate: Option<x509::Minted>,
    /// The TPM's endorsement key and its certificate status (TPM).
    pub tpm: Option<tpm::TpmMaterial>,
    /// Things the operator should know that did not fail the device.
    pub warnings: Vec<String>,
}

/// What a source learned from the device before the registration ID is formed.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    /// The registration ID the credential dictates (TPM: derived from the EK).
    pub registration_id: Option<String>,
    pub tpm: Option<tpm::TpmMaterial>,
    pub warnings: Vec<String>,
}

/// An EK as a device reports it over READ_EK.
#[derive(Debug, Clone)]
pub struct ReportedEk {
    /// TPM2B_PUBLIC of the EK.
    pub public: Vec<u8>,
    /// EK certificate (DER), if the TPM has one.
    pub certificate: Option<Vec<u8>>,
    /// TPM2B_PUBLIC of the SRK, if asked for and present.
    pub srk: Option<Vec<u8>>,
}

/// What a credential source may ask of the device in the fixture.
pub trait DeviceOps {
    /// Have the device generate a key pair (kept until COMMIT) and return a PKCS#10 CSR (DER)
    /// with `common_name` as its subject CN.
    fn generate_csr(&mut self, key_type: u8, common_name: &str) -> Result<Vec<u8>>;

    /// Have the device read its TPM's endorsement key (`ek_type` as in READ_EK).
    fn read_ek(&mut self, ek_type: u8) -> Result<ReportedEk>;
}

/// The HELLO capability a device must advertise for a credential source (protocol.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    /// The capability bit (a single bit of the HELLO `capabilities` word).
    pub bit: u32,
    /// Its name in protocol.md.
    pub capability: &'static str,
    /// The station's mode, for the message.
    pub mode: &'static str,
}

/// One attestation kind's way of obtaining a device credential.
pub trait CredentialSource: Send {
    /// The kind this source produces.
    fn kind(&self) -> AttestationKind;

    /// What the device must be able to store (checked against HELLO before anything else).
    fn requires(&self) -> Requirement;
    /// The credential for `registration_id`; `existing` is the device's enrollment, if any, so
    /// that a re-run reuses what DPS already has.
    fn obtain(
        &self,
        registration_id: &str,
        existing: Option<&Enrollment>,
        device: &mut dyn DeviceOps,
        inspection: Option<&Inspection>,
    ) -> Result<Credential>;

    /// Read from the device what the credential is bound to, before the registration ID is
    /// formed (TPM: the EK, which may dictate the registration ID).
    fn inspect(&self, _device: &mut dyn DeviceOps) -> Result<Option<Inspection>> {
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
                .ok_or_else(|| Error::Usage("[attestation.symmetric] is missing".into()))?;
            let keys = symmetric::SymmetricKeySource::load(section, |p| config.resolve(p))?;
            Ok(Box::new(keys))
        }
        crate::config::AttestationMode::X509 => {
            let section = config
                .attestation
                .x509
                .as_ref()
                .ok_or_else(|| Error::Usage("[attestation.x509] is missing".into()))?;
            Ok(Box::new(x509::StationCa::load(section, |p| {
                config.resolve(p)
            })?))
        }
        crate::config::AttestationMode::Tpm => {
            let section = config
                .attestation
                .tpm
                .as_ref()
                .ok_or_else(|| Error::Usage("[attestation.tpm] is missing".into()))?;
            Ok(Box::new(tpm::TpmSource::load(section, |p| {
                config.resolve(p)
            })?))
        }
    }
}

impl CredentialSource for x509::StationCa {
    fn kind(&self) -> AttestationKind {
        AttestationKind::X509
    }

    fn requires(&self) -> Requirement {
        match self.key_source {
            crate::config::X509KeySource::Device => Requirement {
                bit: capability::CSR,
                capability: "CSR",
                mode: "X.509 with a key generated on the device",
            },
            crate::config::X509KeySource::Station => Requirement {
                bit: capability::X509_CHAIN,
                capability: "X509_CHAIN",
                mode: "X.509 with a station-generated key",
            },
        }
    }

    fn obtain(
        &self,
        registration_id: &str,
        _existing: Option<&Enrollment>,
        device: &mut dyn DeviceOps,
        _inspection: Option<&Inspection>,
    ) -> Result<Credential> {
        if registration_id.len() > x509::MAX_CN {
            return Err(Error::CnTooLong {
                registration_id: registration_id.to_string(),
            });
        }
        let (minted, cred_type, key) = match self.key_source {
            crate::config::X509KeySource::Device => {
                let csr = device.generate_csr(self.key_type.code(), registration_id)?;
                (
                    self.mint_from_csr(&csr, registration_id)?,
                    CredentialType::X509DeviceKey,
                    None,
                )
            }
            crate::config::X509KeySource::Station => {
                let (m, key) = self.mint_with_key(registration_id)?;
                (m, CredentialType::X509StationKey, Some(key))
            }
        };
        let mut records = vec![
            (RecordId::CredentialType, SecretBytes(vec![cred_type as u8])),
            (
                RecordId::Credential,
                SecretBytes(minted.chain_pem.clone().into_bytes()),
            ),
        ];
        if let Some(key) = key {
            records.push((RecordId::PrivateKey, key));
        }
        Ok(Credential {
            kind: AttestationKind::X509,
            key_source: match self.key_source {
                crate::config::X509KeySource::Device => "device",
                crate::config::X509KeySource::Station => "station",
            },
            records,
            stored_primary: None,
            stored_secondary: None,
            group_key_id: None,
            fingerprint: minted.thumbprint[..8].to_string(),
            certificate: Some(minted),
            tpm: None,
            warnings: Vec::new(),
        })
    }

    fn still_valid(&self, existing: &Enrollment) -> bool {
        existing
            .certificate
            .as_deref()
            .is_some_and(|pem| self.issued(pem))
    }

    fn reproducible(&self) -> bool {
        false
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

fn fingerprint(key: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(key.as_bytes());
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

impl CredentialSource for symmetric::SymmetricKeySource {
    fn kind(&self) -> AttestationKind {
        AttestationKind::SymmetricKey
    }

    fn requires(&self) -> Requirement {
        Requirement {
            bit: capability::SYMMETRIC_KEY,
            capability: "SYMMETRIC_KEY",
            mode: "symmetric keys",
        }
    }

    fn obtain(
        &self,
        registration_id: &str,
        existing: Option<&Enrollment>,
        _device: &mut dyn DeviceOps,
        _inspection: Option<&Inspection>,
    ) -> Result<Credential> {
        let (primary, secondary, stored, group_key_id) = match self.mode {
            SymmetricKeys::GroupDerived => {
                let group = self
                    .primary
                    .as_ref()
                    .expect("loading refuses group-derived mode without a group key");
                let p = group.derive(registration_id);
                let s = self.secondary.as_ref().map(|g| g.derive(registration_id));
                (p, s, false, Some(group.id().to_string()))
            }
            SymmetricKeys::Individual => match existing.and_then(|e| e.primary_key.clone()) {
                Some(p) => (
                    p.0,
                    existing.and_then(|e| e.secondary_key.clone()).map(|s| s.0),
                    true,
                    None,
                ),
                None => (
                    symmetric::random_key()?,
                    Some(symmetric::random_key()?),
                    true,
                    None,
                ),
            },
        };
        let fingerprint = fingerprint(&primary);
        let mut records = vec![
            (
                RecordId::CredentialType,
                SecretBytes(vec![CredentialType::SymmetricKey as u8]),
            ),
            (
                RecordId::Credential,
                SecretBytes(primary.clone().into_bytes()),
            ),
        ];
        if let Some(s) = &secondary {
            records.push((
                RecordId::CredentialSecondary,
                SecretBytes(s.clone().into_bytes()),
            ));
        }
        Ok(Credential {
            kind: AttestationKind::SymmetricKey,
            key_source: match self.mode {
                SymmetricKeys::GroupDerived => "group-derived",
                SymmetricKeys::Individual => "individual",
            },
            records,
            stored_primary: stored.then_some(Secret(primary)),
            stored_secondary: if stored { secondary.map(Secret) } else { None },
            group_key_id,
            fingerprint,
            certificate: None,
            tpm: None,
            warnings: Vec::new(),
        })
    }

    fn still_valid(&self, existing: &Enrollment) -> bool {
        // A derived key is still right if it came from the configured group key.
        existing.primary_key.is_some()
            || self
                .primary
                .as_ref()
                .is_some_and(|g| existing.group_key_id.as_deref() == Some(g.id()))
    }

    fn reproducible(&self) -> bool {
        true
    }
}

impl CredentialSource for tpm::TpmSource {
    fn kind(&self) -> AttestationKind {
        AttestationKind::Tpm
    }

    fn requires(&self) -> Requirement {
        Requirement {
            bit: capability::TPM_EK,
            capability: "TPM",
            mode: "TPM attestation",
        }
    }

    fn inspect(&self, device: &mut dyn DeviceOps) -> Result<Option<Inspection>> {
        use crate::config::{TpmReach, TpmRegistrationId};
        let s = &self.section;
        let reading = match s.source {
            TpmReach::Tcti => tpm::read_ek_tcti(
                s.tcti.as_deref().unwrap_or_default(),
                s.ek_type,
                s.persist_ek,
                s.include_srk,
                s.ek_certificate != crate::config::EkCertPolicy::Off,
            )?,
            TpmReach::Device => {
                let r = device.read_ek(s.ek_type.code())?;
                tpm::EkReading {
                    public: r.public,
                    certificate: r.certificate,
                    srk: if s.include_srk { r.srk } else { None },
                    origin: "device",
                }
            }
        };
        let (material, warnings) = tpm::check(&reading, s.ek_certificate, &self.roots)?;
        Ok(Some(Inspection {
            registration_id: (s.registration_id == TpmRegistrationId::Ek)
                .then(|| tpm::registration_id(&reading.public)),
            tpm: Some(material),
            warnings,
        }))
    }

    fn obtain(
        &self,
        _registration_id: &str,
        _existing: Option<&Enrollment>,
        _device: &mut dyn DeviceOps,
        inspection: Option<&Inspection>,
    ) -> Result<Credential> {
        use base64::Engine;
        let material = inspection
            .and_then(|i| i.tpm.clone())
            .ok_or_else(|| Error::Usage("TPM credential without an EK reading".into()))?;
        let ek = base64::engine::general_purpose::STANDARD
            .decode(&material.endorsement_key)
            .expect("we encoded it");
        Ok(Credential {
            kind: AttestationKind::Tpm,
            key_source: "tpm",
            records: vec![
                (
                    RecordId::CredentialType,
                    SecretBytes(vec![CredentialType::Tpm as u8]),
                ),
                (RecordId::Credential, SecretBytes(ek)),
            ],
            stored_primary: None,
            stored_secondary: None,
            group_key_id: None,
            fingerprint: material.ek_hash[..8].to_string(),
            certificate: None,
            warnings: inspection.map(|i| i.warnings.clone()).unwrap_or_default(),
            tpm: Some(material),
        })
    }

    fn still_valid(&self, _existing: &Enrollment) -> bool {
        // The digest covers the EK: a device holding its recorded digest holds its EK.
        true
    }

    fn reproducible(&self) -> bool {
        true
    }
}
