//! Loading and checking the station's issuing CA (`[attestation.x509]`).

use super::{StationCa, ca_error, pem_certs, rfc3339, to_pem};
use crate::config::X509Section;
use crate::error::{ErrorCode, Result};
use ::time::{Duration, OffsetDateTime};
use rcgen::{Issuer, KeyPair};
use std::path::{Path, PathBuf};
use x509_parser::prelude::*;

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

        let key = read_key(&key_path)?;
        let warnings = key_permission_warnings(&key_path);
        check_key_matches(&ca, &key, &cert_path, &key_path)?;
        check_can_issue(&ca, &cert_path)?;
        let validity = Duration::days(section.validity_days as i64);
        let not_after = check_validity(&ca, &cert_path, validity, section.validity_days)?;

        let chain_pem = chain_pem(ders, &section.chain, &resolve, &cert_path)?;
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

fn asn1_to_offset(t: ASN1Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The CA private key, in any PEM form rcgen reads.
fn read_key(key_path: &Path) -> Result<KeyPair> {
    let key_text = read(key_path, "the CA private key")?;
    KeyPair::from_pem(&key_text).map_err(|e| {
        ca_error(
            ErrorCode::X509CaUnreadable,
            key_path,
            format!("not a PKCS#8, SEC1 or PKCS#1 private key in PEM ({e})"),
        )
    })
}

/// A warning when the CA key file is readable by anyone but its owner.
fn key_permission_warnings(key_path: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut warnings = Vec::new();
    if let Ok(m) = std::fs::metadata(key_path)
        && m.permissions().mode() & 0o077 != 0
    {
        warnings.push(format!(
            "CA key {} is readable by other users (mode {:o}); run: chmod 600 {}",
            key_path.display(),
            m.permissions().mode() & 0o777,
            key_path.display()
        ));
    }
    warnings
}

fn check_key_matches(
    ca: &X509Certificate<'_>,
    key: &KeyPair,
    cert_path: &Path,
    key_path: &Path,
) -> Result<()> {
    if ca.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(ca_error(
            ErrorCode::X509CaKeyMismatch,
            key_path,
            format!(
                "this key does not belong to the CA certificate {}",
                cert_path.display()
            ),
        ));
    }
    Ok(())
}

/// The certificate is a CA (basicConstraints CA:TRUE) allowed to sign certificates.
fn check_can_issue(ca: &X509Certificate<'_>, cert_path: &Path) -> Result<()> {
    let is_ca = ca
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(ca_error(
            ErrorCode::X509CaNotCa,
            cert_path,
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
            cert_path,
            "the CA certificate's keyUsage does not include keyCertSign",
        ));
    }
    Ok(())
}

/// The CA is valid now and stays valid for `validity` (`validity_days`) from now. Returns the
/// CA's notAfter.
fn check_validity(
    ca: &X509Certificate<'_>,
    cert_path: &Path,
    validity: Duration,
    validity_days: u32,
) -> Result<OffsetDateTime> {
    let now = OffsetDateTime::now_utc();
    let not_before = asn1_to_offset(ca.validity().not_before);
    let not_after = asn1_to_offset(ca.validity().not_after);
    if now < not_before {
        return Err(ca_error(
            ErrorCode::X509CaNotYetValid,
            cert_path,
            format!("the CA is valid only from {}", rfc3339(not_before)),
        ));
    }
    if now > not_after {
        return Err(ca_error(
            ErrorCode::X509CaExpired,
            cert_path,
            format!("the CA expired on {}", rfc3339(not_after)),
        ));
    }
    if now + validity > not_after {
        return Err(ca_error(
            ErrorCode::X509CaValidityShort,
            cert_path,
            format!(
                "the CA expires on {}, before device certificates valid for {} days would",
                rfc3339(not_after),
                validity_days
            ),
        ));
    }
    Ok(not_after)
}

/// The chain as PEM: the rest of the CA file, then the chain files, each signed by the next.
fn chain_pem(
    ca_file_ders: Vec<Vec<u8>>,
    chain: &[PathBuf],
    resolve: &impl Fn(&Path) -> PathBuf,
    cert_path: &Path,
) -> Result<String> {
    let mut chain_ders: Vec<Vec<u8>> = ca_file_ders;
    for p in chain {
        let p = resolve(p);
        let text = read(&p, "a chain certificate")?;
        chain_ders.extend(pem_certs(&text, &p)?);
    }
    for pair in chain_ders.windows(2) {
        check_signed_by(&pair[0], &pair[1], cert_path)?;
    }
    Ok(chain_ders.iter().map(|d| to_pem(d)).collect())
}

/// `child_der` is signed by `parent_der`.
fn check_signed_by(child_der: &[u8], parent_der: &[u8], cert_path: &Path) -> Result<()> {
    let (_, child) = X509Certificate::from_der(child_der)
        .map_err(|e| ca_error(ErrorCode::X509ChainInvalid, cert_path, e.to_string()))?;
    let (_, parent) = X509Certificate::from_der(parent_der)
        .map_err(|e| ca_error(ErrorCode::X509ChainInvalid, cert_path, e.to_string()))?;
    if child.verify_signature(Some(parent.public_key())).is_err() {
        return Err(ca_error(
            ErrorCode::X509ChainInvalid,
            cert_path,
            format!(
                "`{}` is not signed by `{}`",
                child.subject(),
                parent.subject()
            ),
        ));
    }
    Ok(())
}
