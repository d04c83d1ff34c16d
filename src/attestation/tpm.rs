//! TPM attestation: the device's endorsement key (EK), read through tss-esapi from the fixture's
//! TCTI or reported by the device over serial (READ_EK), encoded as DPS expects, its
//! registration ID, and EK-certificate verification against the TPM manufacturers' roots.
//!
//! DPS wants `endorsementKey` = base64 of the EK public area as **TPM2B_PUBLIC** (big-endian,
//! with its 2-byte size prefix). The EK used is the one persisted at 0x81010001; if there is
//! none, the TCG default EK template (which matches the manufacturer's EK certificate, unlike
//! the Azure C SDK's template). Persisting a created EK needs `persist_ek = true`.

use crate::config::{EkCertPolicy, TpmEkType, TpmSection};
use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::str::FromStr;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ek};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::{
    dynamic_handles::Persistent, ecc::EccCurve, key_bits::RsaKeyBits, resource_handles::Provision,
    session_handles::AuthSession,
};
use tss_esapi::structures::{Public, PublicBuffer};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use x509_parser::prelude::*;

/// Persistent handle of the EK (TCG).
pub const EK_HANDLE: u32 = 0x8101_0001;
/// Persistent handle of the SRK (TCG).
pub const SRK_HANDLE: u32 = 0x8100_0001;

impl TpmEkType {
    /// The byte READ_EK carries for this EK type.
    pub fn code(self) -> u8 {
        match self {
            TpmEkType::Rsa2048 => 1,
            TpmEkType::EccP256 => 2,
        }
    }

    fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            TpmEkType::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            TpmEkType::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
        }
    }
}

/// The EK's public key, for comparing with its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkKey {
    Rsa { modulus: Vec<u8> },
    Ecc { x: Vec<u8>, y: Vec<u8> },
}

/// What was read from a TPM.
#[derive(Debug, Clone)]
pub struct EkReading {
    /// TPM2B_PUBLIC of the EK (size prefix included), exactly as DPS wants it before base64.
    pub public: Vec<u8>,
    /// The EK certificate (DER) from its NV index, if present.
    pub certificate: Option<Vec<u8>>,
    /// TPM2B_PUBLIC of the SRK at 0x81000001, if asked for and present.
    pub srk: Option<Vec<u8>>,
    /// Where the EK came from: `persistent`, `created` or `created-and-persisted`.
    pub origin: &'static str,
}

/// The Azure C SDK's default registration ID for a TPM: lowercase RFC 4648 base32 (no padding)
/// of SHA-256 over the TPM2B_PUBLIC bytes of the EK.
pub fn registration_id(ek_tpm2b_public: &[u8]) -> String {
    data_encoding::BASE32_NOPAD
        .encode(&Sha256::digest(ek_tpm2b_public))
        .to_ascii_lowercase()
}

fn tpm_error(code: &'static str, message: impl Into<String>) -> Error {
    Error::Tpm {
        code,
        message: message.into(),
    }
}

/// The EK's public key from its TPM2B_PUBLIC bytes (also validates the encoding).
pub fn ek_key(tpm2b_public: &[u8]) -> Result<EkKey> {
    let bad = |m: String| {
        tpm_error(
            "tpm.bad_ek",
            format!("the EK is not a valid TPM2B_PUBLIC: {m}"),
        )
    };
    if tpm2b_public.len() < 2
        || u16::from_be_bytes([tpm2b_public[0], tpm2b_public[1]]) as usize + 2 != tpm2b_public.len()
    {
        return Err(bad("its size prefix does not match its length".into()));
    }
    let buffer = PublicBuffer::unmarshall(tpm2b_public).map_err(|e| bad(e.to_string()))?;
    let public = Public::try_from(buffer).map_err(|e| bad(e.to_string()))?;
    match public {
        Public::Rsa { unique, .. } => Ok(EkKey::Rsa {
            modulus: unique.value().to_vec(),
        }),
        Public::Ecc { unique, .. } => Ok(EkKey::Ecc {
            x: unique.x().value().to_vec(),
            y: unique.y().value().to_vec(),
        }),
        _ => Err(bad("not an RSA or ECC key".into())),
    }
}

fn tpm2b(public: Public) -> Result<Vec<u8>> {
    PublicBuffer::try_from(public)
        .and_then(|b| b.marshall())
        .map_err(|e| tpm_error("tpm.bad_ek", format!("cannot encode the EK: {e}")))
}

/// Read the EK (and optionally the SRK and the EK certificate) through a TCTI such as
/// `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, `mssim:...` or `tabrmd:...`.
pub fn read_ek_tcti(
    tcti: &str,
    ek_type: TpmEkType,
    persist: bool,
    include_srk: bool,
    want_certificate: bool,
) -> Result<EkReading> {
    let unreachable =
        |e: tss_esapi::Error| tpm_error("tpm.unreachable", format!("TPM at `{tcti}`: {e}"));
    let conf = TctiNameConf::from_str(tcti).map_err(unreachable)?;
    let mut ctx = tss_esapi::Context::new(conf).map_err(unreachable)?;
    // Ask which handles exist first, so that reading an absent one is neither an error
    // (tpm2-tss logs those to stderr) nor a wasted round trip.
    let present = |ctx: &mut tss_esapi::Context, first: u32| -> Vec<u32> {
        match ctx.get_capability(tss_esapi::constants::CapabilityType::Handles, first, 64) {
            Ok((tss_esapi::structures::CapabilityData::Handles(list), _)) => list
                .into_inner()
                .into_iter()
                .filter_map(|h| match h {
                    TpmHandle::Persistent(p) => Some(u32::from(p)),
                    TpmHandle::NvIndex(n) => Some(u32::from(n)),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    let persistent_handles = present(&mut ctx, 0x8100_0000);
    let persistent = |ctx: &mut tss_esapi::Context, handle: u32| -> Option<Public> {
        if !persistent_handles.contains(&handle) {
            return None;
        }
        let h = PersistentTpmHandle::new(handle).ok()?;
        let obj = ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(h)))
            .ok()?;
        let public = ctx
            .read_public(KeyHandle::from(obj))
            .ok()
            .map(|(p, _, _)| p);
        let _ = ctx.tr_close(&mut obj.clone());
        public
    };
    let (public, origin) = match persistent(&mut ctx, EK_HANDLE) {
        Some(p) => (p, "persistent"),
        None => {
            let handle =
                ek::create_ek_object_2(&mut ctx, ek_type.selection(), None).map_err(|e| {
                    tpm_error(
                        "tpm.no_ek",
                        format!("no EK at 0x81010001 and creating one failed: {e}"),
                    )
                })?;
            let (public, _, _) = ctx.read_public(handle).map_err(unreachable)?;
            let origin = if persist {
                let target = PersistentTpmHandle::new(EK_HANDLE).map_err(unreachable)?;
                ctx.execute_with_session(Some(AuthSession::Password), |c| {
                    c.evict_control(
                        Provision::Owner,
                        ObjectHandle::from(handle),
                        Persistent::Persistent(target),
                    )
                })
                .map_err(|e| {
                    tpm_error(
                        "tpm.persist_failed",
                        format!("cannot persist the EK at 0x81010001: {e}"),
                    )
                })?;
                "created-and-persisted"
            } else {
                "created"
            };
            let _ = ctx.flush_context(ObjectHandle::from(handle));
            (public, origin)
        }
    };
    let nv_index = match ek_type {
        TpmEkType::Rsa2048 => 0x01c0_0002,
        TpmEkType::EccP256 => 0x01c0_000a,
    };
    let certificate = if want_certificate && present(&mut ctx, 0x0100_0000).contains(&nv_index) {
        ek::retrieve_ek_pubcert(&mut ctx, ek_type.selection()).ok()
    } else {
        None
    };
    let srk = if include_srk {
        persistent(&mut ctx, SRK_HANDLE).map(tpm2b).transpose()?
    } else {
        None
    };
    Ok(EkReading {
        public: tpm2b(public)?,
        certificate,
        srk,
        origin,
    })
}

/// Check that a TPM answers at `tcti`.
pub fn probe(tcti: &str) -> Result<()> {
    let unreachable =
        |e: tss_esapi::Error| tpm_error("tpm.unreachable", format!("TPM at `{tcti}`: {e}"));
    let conf = TctiNameConf::from_str(tcti).map_err(unreachable)?;
    let mut ctx = tss_esapi::Context::new(conf).map_err(unreachable)?;
    ctx.get_random(8).map(|_| ()).map_err(unreachable)
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
                "tpm.roots_unreadable",
                format!("EK root bundle {}: {e}", path.display()),
            )
        })?;
        let before = out.len();
        for pem in Pem::iter_from_buffer(&text) {
            let pem = pem.map_err(|e| {
                tpm_error("tpm.roots_unreadable", format!("{}: {e}", path.display()))
            })?;
            if pem.label == "CERTIFICATE" {
                out.push(pem.contents);
            }
        }
        if out.len() == before {
            return Err(tpm_error(
                "tpm.roots_unreadable",
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

/// The TPM material of an enrollment.
#[derive(Debug, Clone)]
pub struct TpmMaterial {
    /// base64 TPM2B_PUBLIC of the EK: DPS `endorsementKey`.
    pub endorsement_key: String,
    /// base64 TPM2B_PUBLIC of the SRK: DPS `storageRootKey`.
    pub storage_root_key: Option<String>,
    /// SHA-256 of the EK bytes (hex), to refuse the same EK under two registration IDs.
    pub ek_hash: String,
    pub ek_certificate: Option<String>,
    pub ek_cert_issuer: Option<String>,
    /// `verified`, `missing`, `invalid: <reason>` or `not checked`.
    pub ek_cert_status: String,
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
                    "tpm.ek_cert_missing"
                } else {
                    "tpm.ek_cert_invalid"
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
            endorsement_key: B64.encode(&reading.public),
            storage_root_key: reading.srk.as_ref().map(|s| B64.encode(s)),
            ek_hash: crate::device::protocol::hex(&Sha256::digest(&reading.public)),
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

    #[test]
    fn malformed_ek_is_refused() {
        assert_eq!(
            ek_key(&[0x00, 0x05, 1, 2]).unwrap_err().code(),
            "tpm.bad_ek"
        );
        assert_eq!(
            ek_key(&[0x00, 0x02, 0xff, 0xff]).unwrap_err().code(),
            "tpm.bad_ek"
        );
    }
}
