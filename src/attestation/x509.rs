//! X.509 attestation: the station's issuing CA, device certificates minted from a CSR generated
//! on the device (the default: the private key never leaves it) or from a key the station
//! generates and writes to the device, and the development CA for the simulator.
//!
//! The certificate profile is documented in `docs/x509.md`. Loading refuses a CA that cannot
//! issue what the station needs; the station never stores or logs a private key (a
//! station-generated key lives in [`SecretBytes`], zeroized on drop).

use super::{CredentialSource, Inspection, Requirement};
use crate::config::{X509KeySource, X509KeyType, X509Section};
use crate::device::{Capability, Device};
pub use crate::domain::Minted;
use crate::domain::{AttestationKind, Credential, Enrollment, SecretBytes};
use crate::error::{Error, ErrorCode, Result};
use ::time::{Duration, OffsetDateTime};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use x509_parser::prelude::*;

/// Longest subject CN (RFC 5280 upper bound `ub-common-name`); DPS uses the CN as the
/// registration ID.
pub const MAX_CN: usize = 64;

/// Clock-skew allowance: certificates are valid from a little before they are minted.
const BACKDATE: Duration = Duration::minutes(5);

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

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

fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        ca_error(
            ErrorCode::X509CaUnreadable,
            path,
            format!("cannot read {what}: {e}"),
        )
    })
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

fn asn1_to_offset(t: ASN1Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl StationCa {
    /// Load `[attestation.x509]`: the issuing CA certificate and key, and its chain. Refuses a
    /// key that does not match, a certificate that is not a CA or cannot sign certificates, a
    /// CA outside its validity, and a CA that expires before the device certificates would.
    pub fn load(section: &X509Section, resolve: impl Fn(&Path) -> PathBuf) -> Result<Self> {
        let cert_path = resolve(&section.ca_cert);
        let key_path = resolve(&section.ca_key);
        let cert_text = read(&cert_path, "the CA certificate")?;
        let ders = pem_certs(&cert_text, &cert_path)?;
        let ca_der = ders[0].clone();
        let (_, ca) = X509Certificate::from_der(&ca_der).map_err(|e| {
            ca_error(
                ErrorCode::X509CaUnreadable,
                &cert_path,
                format!("not a certificate: {e}"),
            )
        })?;

        let key_text = read(&key_path, "the CA private key")?;
        let key = KeyPair::from_pem(&key_text).map_err(|e| {
            ca_error(
                ErrorCode::X509CaUnreadable,
                &key_path,
                format!("not a PKCS#8, SEC1 or PKCS#1 private key in PEM ({e})"),
            )
        })?;
        let mut warnings = Vec::new();
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(&key_path)
                && m.permissions().mode() & 0o077 != 0
            {
                warnings.push(format!(
                    "CA key {} is readable by other users (mode {:o}); run: chmod 600 {}",
                    key_path.display(),
                    m.permissions().mode() & 0o777,
                    key_path.display()
                ));
            }
        }
        if ca.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(ca_error(
                ErrorCode::X509CaKeyMismatch,
                &key_path,
                format!(
                    "this key does not belong to the CA certificate {}",
                    cert_path.display()
                ),
            ));
        }
        let is_ca = ca
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(ca_error(
                ErrorCode::X509CaNotCa,
                &cert_path,
                "the certificate is not a CA (basicConstraints CA:TRUE missing)",
            ));
        }
        let can_sign = ca
            .key_usage()
            .ok()
            .flatten()
            .is_some_and(|ku| ku.value.key_cert_sign());
        if !can_sign {
            return Err(ca_error(
                ErrorCode::X509CaNoKeyCertSign,
                &cert_path,
                "the CA certificate's keyUsage does not include keyCertSign",
            ));
        }
        let now = OffsetDateTime::now_utc();
        let not_before = asn1_to_offset(ca.validity().not_before);
        let not_after = asn1_to_offset(ca.validity().not_after);
        if now < not_before {
            return Err(ca_error(
                ErrorCode::X509CaNotYetValid,
                &cert_path,
                format!("the CA is valid only from {}", rfc3339(not_before)),
            ));
        }
        if now > not_after {
            return Err(ca_error(
                ErrorCode::X509CaExpired,
                &cert_path,
                format!("the CA expired on {}", rfc3339(not_after)),
            ));
        }
        let validity = Duration::days(section.validity_days as i64);
        if now + validity > not_after {
            return Err(ca_error(
                ErrorCode::X509CaValidityShort,
                &cert_path,
                format!(
                    "the CA expires on {}, before device certificates valid for {} days would",
                    rfc3339(not_after),
                    section.validity_days
                ),
            ));
        }

        // The chain: the rest of the CA file, then the chain files, each signed by the next.
        let mut chain_ders: Vec<Vec<u8>> = ders;
        for p in &section.chain {
            let p = resolve(p);
            let text = read(&p, "a chain certificate")?;
            chain_ders.extend(pem_certs(&text, &p)?);
        }
        for pair in chain_ders.windows(2) {
            let (_, child) = X509Certificate::from_der(&pair[0])
                .map_err(|e| ca_error(ErrorCode::X509ChainInvalid, &cert_path, e.to_string()))?;
            let (_, parent) = X509Certificate::from_der(&pair[1])
                .map_err(|e| ca_error(ErrorCode::X509ChainInvalid, &cert_path, e.to_string()))?;
            if child.verify_signature(Some(parent.public_key())).is_err() {
                return Err(ca_error(
                    ErrorCode::X509ChainInvalid,
                    &cert_path,
                    format!(
                        "`{}` is not signed by `{}`",
                        child.subject(),
                        parent.subject()
                    ),
                ));
            }
        }
        let chain_pem: String = chain_ders.iter().map(|d| to_pem(d)).collect();
        let issuer = Issuer::from_ca_cert_der(&ca_der.clone().into(), key)
            .map_err(|e| ca_error(ErrorCode::X509CaUnreadable, &cert_path, e.to_string()))?;
        Ok(StationCa {
            issuer,
            ca_der,
            chain_pem,
            ca_not_after: not_after,
            validity,
            key_source: section.key_source,
            key_type: section.key_type,
            warnings,
        })
    }

    /// Check `csr_der` (signature, subject CN = `registration_id`, key type = the configured
    /// one) and mint the device certificate for its key.
    pub fn mint_from_csr(&self, csr_der: &[u8], registration_id: &str) -> Result<Minted> {
        let csr_error = |code: ErrorCode, message: String| Error::Csr { code, message };
        let (_, csr) = X509CertificationRequest::from_der(csr_der).map_err(|e| {
            csr_error(
                ErrorCode::X509CsrInvalid,
                format!("the device's CSR does not parse: {e}"),
            )
        })?;
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
        let found = csr_key_type(&info.subject_pki);
        if found != Some(self.key_type) {
            return Err(csr_error(
                ErrorCode::X509CsrKeyUnsupported,
                format!(
                    "the CSR's key is {}; this station issues {} certificates",
                    found.map_or_else(|| describe_key(&info.subject_pki), |k| k.name().to_string()),
                    self.key_type.name()
                ),
            ));
        }
        // The certificate's key algorithm is taken from the CSR's signature algorithm: a P-256
        // key signing with SHA-384 (or the reverse) would give a certificate naming the wrong
        // curve. One signature algorithm per key type (protocol.md, GEN_CSR).
        let expected = expected_signature(self.key_type);
        if csr.signature_algorithm.algorithm != expected.0 {
            return Err(csr_error(
                ErrorCode::X509CsrInvalid,
                format!(
                    "the CSR is signed with {}; a {} key must sign with {}",
                    csr.signature_algorithm.algorithm,
                    self.key_type.name(),
                    expected.1
                ),
            ));
        }
        let parsed = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into()).map_err(|e| {
            csr_error(
                ErrorCode::X509CsrInvalid,
                format!("the CSR's signature does not verify or it asks for unsupported extensions ({e})"),
            )
        })?;
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

fn random_serial() -> Result<SerialNumber> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::Csr {
        code: ErrorCode::X509MintFailed,
        message: format!("no randomness for the serial number: {e}"),
    })?;
    // Positive, and exactly 16 bytes long (no leading zero octet).
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&b))
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

/// Files `station ca init --dev` wrote.
#[derive(Debug, serde::Serialize)]
pub struct DevCa {
    pub root_cert: PathBuf,
    pub root_key: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
}

/// Create a development root and intermediate CA (ECDSA P-256) in `dir`, labelled as
/// development material. Refuses to overwrite existing files.
pub fn init_dev_ca(dir: &Path) -> Result<DevCa> {
    let paths = DevCa {
        root_cert: dir.join("dev-root.pem"),
        root_key: dir.join("dev-root.key"),
        ca_cert: dir.join("dev-intermediate.pem"),
        ca_key: dir.join("dev-intermediate.key"),
    };
    let file_err = |path: &Path, source: std::io::Error| Error::File {
        what: "cannot write development CA file",
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    for p in [
        &paths.root_cert,
        &paths.root_key,
        &paths.ca_cert,
        &paths.ca_key,
    ] {
        if p.exists() {
            return Err(Error::Usage(format!(
                "{} already exists; remove the development CA first or choose another directory",
                p.display()
            )));
        }
    }
    let mint_err = |e: rcgen::Error| Error::Csr {
        code: ErrorCode::X509MintFailed,
        message: e.to_string(),
    };
    let now = OffsetDateTime::now_utc();
    let ca_params = |cn: &str, years: i64, path_len: u8| -> Result<CertificateParams> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::OrganizationName,
            "DEVELOPMENT ONLY - not for production",
        );
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.serial_number = Some(random_serial()?);
        p.not_before = now - BACKDATE;
        p.not_after = now + Duration::days(365 * years);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.key_identifier_method = KeyIdMethod::Sha256;
        Ok(p)
    };
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(mint_err)?;
    let root_params = ca_params("Provisioning Station DEVELOPMENT Root CA", 25, 1)?;
    let root = root_params.self_signed(&root_key).map_err(mint_err)?;
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(mint_err)?;
    let mut inter_params = ca_params("Provisioning Station DEVELOPMENT Intermediate CA", 20, 0)?;
    inter_params.use_authority_key_identifier_extension = true;
    let root_issuer = Issuer::from_params(&root_params, &root_key);
    let inter = inter_params
        .signed_by(&ca_key, &root_issuer)
        .map_err(mint_err)?;
    let write = |path: &Path, text: &str, mode: u32| -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| file_err(path, e))?;
        f.write_all(text.as_bytes()).map_err(|e| file_err(path, e))
    };
    let label = "# DEVELOPMENT CA material made by `station ca init --dev`. Not for production.\n";
    write(&paths.root_cert, &format!("{label}{}", root.pem()), 0o644)?;
    write(
        &paths.root_key,
        &format!("{label}{}", root_key.serialize_pem()),
        0o600,
    )?;
    write(&paths.ca_cert, &format!("{label}{}", inter.pem()), 0o644)?;
    write(
        &paths.ca_key,
        &format!("{label}{}", ca_key.serialize_pem()),
        0o600,
    )?;
    Ok(paths)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::X509Section;

    struct Ca {
        dir: tempfile::TempDir,
        section: X509Section,
    }

    /// Write a CA made from `params` (and optionally a different key) and return its section.
    fn ca_with(params: CertificateParams, other_key: bool, sec1: bool) -> Ca {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let written = if other_key {
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
        } else {
            key
        };
        let key_pem = if sec1 {
            // SEC1 "EC PRIVATE KEY", as `openssl ecparam -genkey` writes it.
            let out = std::process::Command::new("openssl")
                .args(["pkey", "-traditional"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin
                        .take()
                        .unwrap()
                        .write_all(written.serialize_pem().as_bytes())?;
                    c.wait_with_output()
                })
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        } else {
            written.serialize_pem()
        };
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("ca.key"), key_pem).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("ca.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let section = X509Section {
            ca_cert: dir.path().join("ca.pem"),
            ca_key: dir.path().join("ca.key"),
            chain: vec![],
            key_source: X509KeySource::Device,
            key_type: X509KeyType::P256,
            validity_days: 365,
        };
        Ca { dir, section }
    }

    fn good_params() -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "Test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        p
    }

    fn code_of(ca: &Ca) -> ErrorCode {
        StationCa::load(&ca.section, |p| p.to_path_buf())
            .unwrap_err()
            .code()
    }

    #[test]
    fn loads_a_good_ca_with_pkcs8_or_sec1_key() {
        for sec1 in [false, true] {
            let ca = ca_with(good_params(), false, sec1);
            let loaded = StationCa::load(&ca.section, |p| p.to_path_buf()).unwrap();
            assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        }
    }

    #[test]
    fn refuses_each_unusable_ca_with_its_code() {
        assert_eq!(
            code_of(&ca_with(good_params(), true, false)),
            ErrorCode::X509CaKeyMismatch
        );
        let mut p = good_params();
        p.is_ca = IsCa::ExplicitNoCa;
        assert_eq!(code_of(&ca_with(p, false, false)), ErrorCode::X509CaNotCa);
        let mut p = good_params();
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        assert_eq!(
            code_of(&ca_with(p, false, false)),
            ErrorCode::X509CaNoKeyCertSign
        );
        let mut p = good_params();
        p.not_after = OffsetDateTime::now_utc() - Duration::hours(1);
        p.not_before = OffsetDateTime::now_utc() - Duration::days(10);
        assert_eq!(code_of(&ca_with(p, false, false)), ErrorCode::X509CaExpired);
        let mut p = good_params();
        p.not_before = OffsetDateTime::now_utc() + Duration::days(1);
        assert_eq!(
            code_of(&ca_with(p, false, false)),
            ErrorCode::X509CaNotYetValid
        );
        let mut p = good_params();
        p.not_after = OffsetDateTime::now_utc() + Duration::days(100);
        assert_eq!(
            code_of(&ca_with(p, false, false)),
            ErrorCode::X509CaValidityShort
        );
    }

    #[test]
    fn warns_when_the_ca_key_is_readable_by_others() {
        let ca = ca_with(good_params(), false, false);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            ca.dir.path().join("ca.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let loaded = StationCa::load(&ca.section, |p| p.to_path_buf()).unwrap();
        assert!(
            loaded.warnings[0].contains("chmod 600"),
            "{:?}",
            loaded.warnings
        );
    }

    fn csr(key: &KeyPair, cn: &str) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serialize_request(key).unwrap().der().to_vec()
    }

    #[test]
    fn minted_certificate_follows_the_profile() {
        let ca = ca_with(good_params(), false, false);
        let loaded = StationCa::load(&ca.section, |p| p.to_path_buf()).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let m = loaded
            .mint_from_csr(&csr(&key, "sn-0001"), "sn-0001")
            .unwrap();
        let der = &pem_certs(&m.pem, Path::new("")).unwrap()[0];
        let (_, c) = X509Certificate::from_der(der).unwrap();
        assert_eq!(
            c.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "sn-0001"
        );
        assert_eq!(c.raw_serial().len(), 16);
        assert!(c.raw_serial()[0] & 0x80 == 0, "serial is positive");
        let ku = c.key_usage().unwrap().unwrap();
        assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_cert_sign());
        let eku = c.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.client_auth && !eku.value.server_auth);
        let bc = c.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca);
        let ski = c
            .get_extension_unique(&oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
            .unwrap();
        let aki = c
            .get_extension_unique(&oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
            .unwrap();
        assert!(ski.is_some() && aki.is_some());
        assert_eq!(
            c.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        let days =
            (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86400;
        assert_eq!(days, 365, "validity_days plus the backdating margin");
        assert!(loaded.issued(&m.pem));
        assert_eq!(m.thumbprint, crate::domain::hex(&Sha256::digest(der)));
        assert!(m.chain_pem.starts_with(&m.pem));
    }

    #[test]
    fn refuses_bad_csrs() {
        let ca = ca_with(good_params(), false, false);
        let loaded = StationCa::load(&ca.section, |p| p.to_path_buf()).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let code = |csr: &[u8]| loaded.mint_from_csr(csr, "sn-0001").unwrap_err().code();
        let mut tampered = csr(&key, "sn-0001");
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(code(&tampered), ErrorCode::X509CsrInvalid);
        assert_eq!(
            code(&csr(&key, "sn-0002")),
            ErrorCode::X509CsrSubjectMismatch
        );
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert_eq!(code(&csr(&ed, "sn-0001")), ErrorCode::X509CsrKeyUnsupported);
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert_eq!(
            code(&csr(&p384, "sn-0001")),
            ErrorCode::X509CsrKeyUnsupported
        );
        assert_eq!(code(b"garbage"), ErrorCode::X509CsrInvalid);
        let long = "a".repeat(65);
        assert_eq!(
            loaded
                .mint_from_csr(&csr(&key, &long), &long)
                .unwrap_err()
                .code(),
            ErrorCode::X509CnTooLong
        );
    }

    #[test]
    fn station_keys_of_each_type_match_their_certificates() {
        let ca = ca_with(good_params(), false, false);
        for t in [X509KeyType::P256, X509KeyType::P384, X509KeyType::Rsa2048] {
            let mut section = ca.section.clone();
            section.key_type = t;
            section.key_source = X509KeySource::Station;
            let loaded = StationCa::load(&section, |p| p.to_path_buf()).unwrap();
            let (m, key) = loaded.mint_with_key("sn-1").unwrap();
            let kp = KeyPair::try_from(key.0.as_slice()).unwrap();
            let der = &pem_certs(&m.pem, Path::new("")).unwrap()[0];
            let (_, c) = X509Certificate::from_der(der).unwrap();
            assert_eq!(
                c.public_key().subject_public_key.data.as_ref(),
                kp.public_key_raw(),
                "{t:?}"
            );
        }
    }
}
