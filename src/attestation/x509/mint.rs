//! Minting device certificates: from a CSR made on the device, or for a key the station
//! generates; and the CSR checks.

use super::{BACKDATE, MAX_CN, Minted, StationCa, pem_certs, rfc3339, to_pem};
use crate::config::X509KeyType;
use crate::domain::SecretBytes;
use crate::error::{Error, ErrorCode, Result};
use ::time::OffsetDateTime;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};
use std::path::Path;
use x509_parser::prelude::*;

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

impl StationCa {
    /// Check `csr_der` (signature, subject CN = `registration_id`, key type = the configured
    /// one) and mint the device certificate for its key.
    pub fn mint_from_csr(&self, csr_der: &[u8], registration_id: &str) -> Result<Minted> {
        let parsed = check_csr(csr_der, registration_id, self.key_type)?;
        self.sign(&parsed.public_key, registration_id)
    }

    /// Generate a key pair on the station and mint its certificate. The key comes back as
    /// PKCS#8 DER in [`SecretBytes`] (zeroized on drop), to be written to the device only.
    pub fn mint_with_key(&self, registration_id: &str) -> Result<(Minted, SecretBytes)> {
        let key = self.key_type.generate().map_err(|e| Error::Csr {
            code: ErrorCode::X509MintFailed,
            message: format!("cannot generate a {} key: {e}", self.key_type.name()),
        })?;
        let minted = self.sign(&key, registration_id)?;
        Ok((minted, SecretBytes(key.serialize_der())))
    }

    fn sign(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        registration_id: &str,
    ) -> Result<Minted> {
        if registration_id.len() > MAX_CN {
            return Err(Error::CnTooLong {
                registration_id: registration_id.to_string(),
            });
        }
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::now_utc());
        let not_after = now + self.validity;
        if not_after > self.ca_not_after {
            return Err(Error::Csr {
                code: ErrorCode::X509CaValidityShort,
                message: "the CA expires before this certificate would; renew the CA".into(),
            });
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, registration_id);
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial()?);
        params.not_before = now - BACKDATE;
        params.not_after = not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| Error::Csr {
                code: ErrorCode::X509MintFailed,
                message: e.to_string(),
            })?;
        let der = cert.der().to_vec();
        let pem = to_pem(&der);
        Ok(Minted {
            chain_pem: format!("{pem}{}", self.chain_pem),
            pem,
            serial: params
                .serial_number
                .as_ref()
                .map(|s| crate::domain::hex(&s.to_bytes()))
                .unwrap_or_default(),
            thumbprint: crate::domain::hex(&Sha256::digest(&der)),
            not_before: rfc3339(params.not_before),
            not_after: rfc3339(not_after),
        })
    }

    /// Whether `cert_pem` was issued by this CA and is valid now.
    pub fn issued(&self, cert_pem: &str) -> bool {
        let Ok(ders) = pem_certs(cert_pem, Path::new("")) else {
            return false;
        };
        let Ok((_, leaf)) = X509Certificate::from_der(&ders[0]) else {
            return false;
        };
        let Ok((_, ca)) = X509Certificate::from_der(&self.ca_der) else {
            return false;
        };
        leaf.validity().is_valid() && leaf.verify_signature(Some(ca.public_key())).is_ok()
    }
}

/// The checks of protocol.md (GEN_CSR) on a device's CSR: it parses, its subject is exactly
/// CN = `registration_id`, its key is `key_type`, it is signed with that key type's one
/// algorithm and the signature verifies. The error says which check failed.
pub(crate) fn check_csr(
    csr_der: &[u8],
    registration_id: &str,
    key_type: X509KeyType,
) -> Result<CertificateSigningRequestParams> {
    let csr_error = |code: ErrorCode, message: String| Error::Csr { code, message };
    let (rest, csr) = X509CertificationRequest::from_der(csr_der).map_err(|e| {
        csr_error(
            ErrorCode::X509CsrInvalid,
            format!("the device's CSR does not parse: {e}"),
        )
    })?;
    if !rest.is_empty() {
        return Err(csr_error(
            ErrorCode::X509CsrInvalid,
            format!("{} bytes follow the CSR's DER", rest.len()),
        ));
    }
    let info = &csr.certification_request_info;
    let cns: Vec<&str> = info
        .subject
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .collect();
    if cns != [registration_id] {
        return Err(csr_error(
            ErrorCode::X509CsrSubjectMismatch,
            format!("the CSR's subject CN is {cns:?}, expected [\"{registration_id}\"]"),
        ));
    }
    // protocol.md: the subject is exactly one attribute, the CN.
    if info.subject.iter_attributes().count() != 1 {
        return Err(csr_error(
            ErrorCode::X509CsrSubjectMismatch,
            format!(
                "the CSR's subject is `{}`; it must be CN={registration_id} alone",
                info.subject
            ),
        ));
    }
    let found = csr_key_type(&info.subject_pki);
    if found != Some(key_type) {
        return Err(csr_error(
            ErrorCode::X509CsrKeyUnsupported,
            format!(
                "the CSR's key is {}; this station issues {} certificates",
                found.map_or_else(|| describe_key(&info.subject_pki), |k| k.name().to_string()),
                key_type.name()
            ),
        ));
    }
    // The certificate's key algorithm is taken from the CSR's signature algorithm: a P-256
    // key signing with SHA-384 (or the reverse) would give a certificate naming the wrong
    // curve. One signature algorithm per key type (protocol.md, GEN_CSR).
    let expected = expected_signature(key_type);
    if csr.signature_algorithm.algorithm != expected.0 {
        return Err(csr_error(
            ErrorCode::X509CsrInvalid,
            format!(
                "the CSR is signed with {}; a {} key must sign with {}",
                csr.signature_algorithm.algorithm,
                key_type.name(),
                expected.1
            ),
        ));
    }
    CertificateSigningRequestParams::from_der(&csr_der.to_vec().into()).map_err(|e| {
        csr_error(
            ErrorCode::X509CsrInvalid,
            format!(
                "the CSR's signature does not verify or it asks for unsupported extensions ({e})"
            ),
        )
    })
}

pub(super) fn random_serial() -> Result<SerialNumber> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::Csr {
        code: ErrorCode::X509MintFailed,
        message: format!("no randomness for the serial number: {e}"),
    })?;
    // Positive, and exactly 16 bytes long (no leading zero octet).
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&b))
}

/// The one CSR signature algorithm accepted for each key type, and its name.
fn expected_signature(
    key_type: crate::config::X509KeyType,
) -> (x509_parser::oid_registry::Oid<'static>, &'static str) {
    use crate::config::X509KeyType;
    use x509_parser::oid_registry as oids;
    match key_type {
        X509KeyType::P256 => (oids::OID_SIG_ECDSA_WITH_SHA256, "ecdsa-with-SHA256"),
        X509KeyType::P384 => (oids::OID_SIG_ECDSA_WITH_SHA384, "ecdsa-with-SHA384"),
        X509KeyType::Rsa2048 => (oids::OID_PKCS1_SHA256WITHRSA, "sha256WithRSAEncryption"),
    }
}

fn csr_key_type(spki: &SubjectPublicKeyInfo<'_>) -> Option<X509KeyType> {
    match spki.parsed().ok()? {
        x509_parser::public_key::PublicKey::RSA(rsa) if rsa.key_size() == 2048 => {
            Some(X509KeyType::Rsa2048)
        }
        x509_parser::public_key::PublicKey::EC(_) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some(OID_P256) => Some(X509KeyType::P256),
                Some(OID_P384) => Some(X509KeyType::P384),
                _ => None,
            }
        }
        _ => None,
    }
}

fn describe_key(spki: &SubjectPublicKeyInfo<'_>) -> String {
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => format!("RSA-{}", rsa.key_size()),
        Ok(x509_parser::public_key::PublicKey::EC(_)) => "an EC key on an unsupported curve".into(),
        _ => format!(
            "an unsupported key ({})",
            spki.algorithm.algorithm.to_id_string()
        ),
    }
}
