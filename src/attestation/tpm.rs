//! TPM attestation: the device's endorsement key (EK), read from the fixture's TCTI
//! ([`crate::device::tpm`]) or reported by the device, checked and encoded as DPS expects, its
//! registration ID, and EK-certificate verification against the TPM manufacturers' roots.

use super::{CredentialSource, Inspection, Requirement};
use crate::config::{EkCertPolicy, TpmSection};
use crate::device::{Capability, Device};
use crate::domain::{AttestationKind, Credential, Enrollment, TpmMaterial};
use crate::error::{Error, ErrorCode, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use std::path::Path;
use x509_parser::prelude::*;

use crate::device::tpm::tpm_error;
pub use crate::device::tpm::{
    EK_HANDLE, EkKey, EkReading, SRK_HANDLE, ek_key, probe, read_ek_tcti,
};

/// The Azure C SDK's default registration ID for a TPM: lowercase RFC 4648 base32 (no padding)
/// of SHA-256 over the TPM2B_PUBLIC bytes of the EK.
pub fn registration_id(ek_tpm2b_public: &[u8]) -> String {
    data_encoding::BASE32_NOPAD
        .encode(&Sha256::digest(ek_tpm2b_public))
        .to_ascii_lowercase()
}

/// Load a bundle of TPM manufacturer roots and intermediates (PEM files, several certificates
/// each).
pub fn load_roots(
    paths: &[std::path::PathBuf],
    resolve: impl Fn(&Path) -> std::path::PathBuf,
) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for p in paths {
        let path = resolve(p);
        let text = std::fs::read(&path).map_err(|e| {
            tpm_error(
                ErrorCode::TpmRootsUnreadable,
                format!("EK root bundle {}: {e}", path.display()),
            )
        })?;
        let before = out.len();
        for pem in Pem::iter_from_buffer(&text) {
            let pem = pem.map_err(|e| {
                tpm_error(
                    ErrorCode::TpmRootsUnreadable,
                    format!("{}: {e}", path.display()),
                )
            })?;
            if pem.label == "CERTIFICATE" {
                out.push(pem.contents);
            }
        }
        if out.len() == before {
            return Err(tpm_error(
                ErrorCode::TpmRootsUnreadable,
                format!("{} holds no certificate", path.display()),
            ));
        }
    }
    Ok(out)
}

/// Verify an EK certificate: its public key is the EK, and it chains to a root of `bundle`.
/// Returns the certificate's issuer; the error says why it does not verify.
pub fn verify_ek_certificate(
    der: &[u8],
    ek: &EkKey,
    bundle: &[Vec<u8>],
) -> std::result::Result<String, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("the EK certificate does not parse: {e}"))?;
    let key_matches = match (cert.public_key().parsed(), ek) {
        (Ok(x509_parser::public_key::PublicKey::RSA(rsa)), EkKey::Rsa { modulus }) => {
            strip_zeros(rsa.modulus) == strip_zeros(modulus)
        }
        (Ok(x509_parser::public_key::PublicKey::EC(point)), EkKey::Ecc { x, y }) => {
            let mut want = vec![0x04];
            want.extend_from_slice(x);
            want.extend_from_slice(y);
            point.data() == want.as_slice()
        }
        _ => false,
    };
    if !key_matches {
        return Err("the EK certificate's public key is not this TPM's EK".into());
    }
    if !cert.validity().is_valid() {
        return Err("the EK certificate is outside its validity period".into());
    }
    let issuer = cert.issuer().to_string();
    let parsed: Vec<X509Certificate<'_>> = bundle
        .iter()
        .filter_map(|d| X509Certificate::from_der(d).ok().map(|(_, c)| c))
        .collect();
    let mut current = cert;
    for _ in 0..8 {
        let parent = parsed.iter().find(|p| {
            p.subject().as_raw() == current.issuer().as_raw()
                && current.verify_signature(Some(p.public_key())).is_ok()
        });
        let Some(parent) = parent else {
            return Err(format!(
                "no certificate in the root bundle signed `{}`",
                current.issuer()
            ));
        };
        if parent.subject().as_raw() == parent.issuer().as_raw() {
            return Ok(issuer);
        }
        current = parent.clone();
    }
    Err("the EK certificate chain is too long".into())
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&x| x == 0).count();
    &b[n..]
}

/// A reading checked against the EK-certificate policy. Warnings (policy `warn`) come back for
/// the operator and the record.
pub fn check(
    reading: &EkReading,
    policy: EkCertPolicy,
    roots: &[Vec<u8>],
) -> Result<(TpmMaterial, Vec<String>)> {
    let key = ek_key(&reading.public)?;
    let mut warnings = Vec::new();
    let (status, issuer) = match (&reading.certificate, policy) {
        (_, EkCertPolicy::Off) => ("not checked".to_string(), None),
        (None, _) => ("missing".to_string(), None),
        (Some(der), _) => match verify_ek_certificate(der, &key, roots) {
            Ok(issuer) => ("verified".to_string(), Some(issuer)),
            Err(reason) => (format!("invalid: {reason}"), None),
        },
    };
    if status == "missing" || status.starts_with("invalid") {
        let message = if status == "missing" {
            "the TPM has no EK certificate at its NV index".to_string()
        } else {
            format!("EK certificate {status}")
        };
        match policy {
            EkCertPolicy::Require => {
                let code = if status == "missing" {
                    ErrorCode::TpmEkCertMissing
                } else {
                    ErrorCode::TpmEkCertInvalid
                };
                return Err(tpm_error(code, message));
            }
            EkCertPolicy::Warn => warnings.push(message),
            EkCertPolicy::Off => {}
        }
    }
    let ek_certificate = reading.certificate.as_ref().map(|der| {
        let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in B64.encode(der).as_bytes().chunks(64) {
            s.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            s.push('\n');
        }
        s.push_str("-----END CERTIFICATE-----\n");
        s
    });
    Ok((
        TpmMaterial {
            public: reading.public.clone(),
            endorsement_key: B64.encode(&reading.public),
            storage_root_key: reading.srk.as_ref().map(|s| B64.encode(s)),
            ek_hash: crate::domain::hex(&Sha256::digest(&reading.public)),
            ek_certificate,
            ek_cert_issuer: issuer,
            ek_cert_status: status,
        },
        warnings,
    ))
}

/// `[attestation.tpm]`, loaded: where EKs are read and the roots to verify their certificates.
#[derive(Debug, Clone)]
pub struct TpmSource {
    pub section: TpmSection,
    pub roots: Vec<Vec<u8>>,
}

impl TpmSource {
    pub fn load(
        section: &TpmSection,
        resolve: impl Fn(&Path) -> std::path::PathBuf,
    ) -> Result<Self> {
        let roots = if section.ek_certificate == EkCertPolicy::Off {
            Vec::new()
        } else {
            load_roots(&section.ek_roots, resolve)?
        };
        Ok(Self {
            section: section.clone(),
            roots,
        })
    }
}

impl CredentialSource for TpmSource {
    fn kind(&self) -> AttestationKind {
        AttestationKind::Tpm
    }

    fn requires(&self) -> Requirement {
        Requirement {
            capability: Capability::TpmEk,
            mode: "TPM attestation",
        }
    }

    fn inspect(&self, device: &mut dyn Device) -> Result<Option<Inspection>> {
        use crate::config::{TpmReach, TpmRegistrationId};
        let s = &self.section;
        let reading = match s.source {
            TpmReach::Tcti => read_ek_tcti(
                s.tcti.as_deref().unwrap_or_default(),
                s.ek_type,
                s.persist_ek,
                s.include_srk,
                s.ek_certificate != EkCertPolicy::Off,
            )?,
            TpmReach::Device => {
                let r = device.read_ek(s.ek_type)?;
                EkReading {
                    public: r.public,
                    certificate: r.certificate,
                    srk: if s.include_srk { r.srk } else { None },
                    origin: "device",
                }
            }
        };
        let (material, warnings) = check(&reading, s.ek_certificate, &self.roots)?;
        Ok(Some(Inspection {
            registration_id: (s.registration_id == TpmRegistrationId::Ek)
                .then(|| registration_id(&reading.public)),
            tpm: Some(material),
            warnings,
        }))
    }

    fn obtain(
        &self,
        _registration_id: &str,
        _existing: Option<&Enrollment>,
        _device: &mut dyn Device,
        inspection: Option<&Inspection>,
    ) -> Result<Credential> {
        let material = inspection
            .and_then(|i| i.tpm.clone())
            .ok_or_else(|| Error::Internal {
                message: "TPM credential asked for without an EK reading".into(),
            })?;
        Ok(Credential::Tpm(material))
    }

    fn still_valid(&self, _existing: &Enrollment) -> bool {
        // The digest covers the EK: a device holding its recorded digest holds its EK.
        true
    }

    fn reproducible(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_id_is_lowercase_unpadded_base32_of_sha256() {
        // Independent computation: Python base64.b32encode(hashlib.sha256(b"abc").digest())
        // .decode().lower().rstrip("=").
        assert_eq!(
            registration_id(b"abc"),
            "xj4bnp4pahh6uqkbidpf3lrceoyagyndsylxvhfucd7wd4qacwwq"
        );
        assert_eq!(registration_id(b"abc").len(), 52);
    }

    /// Found by the `ek` fuzz target (fuzz/regressions/ek/size-prefix-covering-bytes-the-
    /// structure-does-not-hold): a TPM2B_PUBLIC whose RSA unique size was cut to 0 and whose
    /// size prefix still covered the old modulus was accepted as an EK with an empty modulus,
    /// its registration ID taken from bytes the structure does not hold.
    #[test]
    fn an_ek_with_bytes_its_structure_does_not_hold_is_refused() {
        let input = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/ek/size-prefix-covering-bytes-the-structure-does-not-hold"
        ))
        .unwrap();
        // The fuzz input: policy, then a READ_EK body whose first field is the EK.
        let body = &input[3..];
        let n = u16::from_le_bytes([body[0], body[1]]) as usize;
        let e = ek_key(&body[2..2 + n]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::TpmBadEk);
        assert!(e.to_string().contains("not the 60 bytes"), "{e}");
    }

    #[test]
    fn malformed_ek_is_refused() {
        assert_eq!(
            ek_key(&[0x00, 0x05, 1, 2]).unwrap_err().code(),
            ErrorCode::TpmBadEk
        );
        assert_eq!(
            ek_key(&[0x00, 0x02, 0xff, 0xff]).unwrap_err().code(),
            ErrorCode::TpmBadEk
        );
    }
}
