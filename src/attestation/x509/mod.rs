//! X.509 attestation: the station's issuing CA, device certificates minted from a CSR generated
//! on the device (the default: the private key never leaves it) or from a key the station
//! generates and writes to the device, and the development CA for the simulator.
//!
//! The certificate profile is documented in `docs/x509.md`. Loading refuses a CA that cannot
//! issue what the station needs; the station never stores or logs a private key (a
//! station-generated key lives in [`SecretBytes`](crate::domain::SecretBytes), zeroized on drop).

mod dev_ca;
mod load;
mod mint;
#[cfg(test)]
mod tests;

pub use dev_ca::{DevCa, init_dev_ca};
pub(crate) use mint::check_csr;

use super::{CredentialSource, Inspection, Requirement};
use crate::config::{X509KeySource, X509KeyType};
use crate::device::{Capability, Device};
pub use crate::domain::Minted;
use crate::domain::{AttestationKind, Credential, Enrollment};
use crate::error::{Error, ErrorCode, Result};
use ::time::{Duration, OffsetDateTime};
use rcgen::{Issuer, KeyPair};
use std::path::Path;
use x509_parser::prelude::*;

/// Longest subject CN (RFC 5280 upper bound `ub-common-name`); DPS uses the CN as the
/// registration ID.
pub const MAX_CN: usize = 64;

/// Clock-skew allowance: certificates are valid from a little before they are minted.
const BACKDATE: Duration = Duration::minutes(5);

impl X509KeyType {
    pub fn name(self) -> &'static str {
        match self {
            X509KeyType::P256 => "ECDSA P-256",
            X509KeyType::P384 => "ECDSA P-384",
            X509KeyType::Rsa2048 => "RSA-2048",
        }
    }

    /// Generate a key pair of this type.
    pub fn generate(self) -> std::result::Result<KeyPair, rcgen::Error> {
        match self {
            X509KeyType::P256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            X509KeyType::P384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            X509KeyType::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        }
    }
}

/// The station's issuing CA, loaded and checked.
pub struct StationCa {
    issuer: Issuer<'static, KeyPair>,
    ca_der: Vec<u8>,
    /// Issuing CA and chain, PEM, in order up to the root.
    chain_pem: String,
    ca_not_after: OffsetDateTime,
    validity: Duration,
    pub key_source: X509KeySource,
    pub key_type: X509KeyType,
    /// Things an engineer should fix that do not stop the station (e.g. key file permissions).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for StationCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StationCa")
            .field("key_source", &self.key_source)
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

fn ca_error(code: ErrorCode, path: &Path, message: impl Into<String>) -> Error {
    Error::Ca {
        code,
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// All certificates (DER) in a PEM text.
fn pem_certs(text: &str, path: &Path) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for pem in Pem::iter_from_buffer(text.as_bytes()) {
        let pem =
            pem.map_err(|e| ca_error(ErrorCode::X509CaUnreadable, path, format!("bad PEM: {e}")))?;
        if pem.label == "CERTIFICATE" {
            out.push(pem.contents);
        }
    }
    if out.is_empty() {
        return Err(ca_error(
            ErrorCode::X509CaUnreadable,
            path,
            "no CERTIFICATE in the file",
        ));
    }
    Ok(out)
}

fn to_pem(der: &[u8]) -> String {
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(der)
    };
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&::time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl CredentialSource for StationCa {
    fn kind(&self) -> AttestationKind {
        AttestationKind::X509
    }

    fn requires(&self) -> Requirement {
        match self.key_source {
            X509KeySource::Device => Requirement {
                capability: Capability::Csr,
                mode: "X.509 with a key generated on the device",
            },
            X509KeySource::Station => Requirement {
                capability: Capability::X509Chain,
                mode: "X.509 with a station-generated key",
            },
        }
    }

    fn obtain(
        &self,
        registration_id: &str,
        _existing: Option<&Enrollment>,
        device: &mut dyn Device,
        _inspection: Option<&Inspection>,
    ) -> Result<Credential> {
        if registration_id.len() > MAX_CN {
            return Err(Error::CnTooLong {
                registration_id: registration_id.to_string(),
            });
        }
        Ok(match self.key_source {
            X509KeySource::Device => {
                let csr = device.generate_csr(self.key_type, registration_id)?;
                Credential::X509 {
                    certificate: self.mint_from_csr(&csr, registration_id)?,
                    private_key: None,
                }
            }
            X509KeySource::Station => {
                let (certificate, key) = self.mint_with_key(registration_id)?;
                Credential::X509 {
                    certificate,
                    private_key: Some(key),
                }
            }
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
