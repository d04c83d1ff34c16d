//! The EK a device reports (READ_EK) or a TPM gives: TPM2B_PUBLIC bytes → the key, DPS's
//! `endorsementKey` encoding and the registration ID; the EK certificate (DER) against a root.

use super::Bytes;
use crate::attestation::registration_id::validate;
use crate::attestation::tpm::{EkKey, EkReading, check, ek_key, registration_id};
use crate::config::EkCertPolicy;
use crate::device::v1::protocol::{decode_ek, encode_ek};
use crate::error::ErrorCode;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tss_esapi::structures::{Public, PublicBuffer};
use tss_esapi::traits::{Marshall, UnMarshall};

/// Input: `policy u8` (0 require, 1 warn, 2 off, wrapping), `len u16 LE` and that many bytes
/// of a READ_EK answer body (EK, certificate, SRK: protocol.md §5), then the root bundle: DER
/// certificates, each after its `len u16 LE`.
///
/// Properties: a READ_EK body decodes only if it re-encodes to itself; an EK is accepted only
/// when its TPM2B_PUBLIC is canonical (re-marshalling it gives the same bytes, so DPS and the
/// device derive the same registration ID from it); its registration ID is a valid DPS one, 52
/// characters of lowercase base32; `endorsementKey` decodes back to the bytes; under `require`
/// a device passes only with a certificate that verified, for this very key; every refusal is
/// one of the TPM error codes.
pub fn ek(data: &[u8]) {
    let mut b = Bytes::new(data);
    let policy = match b.u8() % 3 {
        0 => EkCertPolicy::Require,
        1 => EkCertPolicy::Warn,
        _ => EkCertPolicy::Off,
    };
    let body = b.field();
    let mut roots = Vec::new();
    while !b.rest.is_empty() && roots.len() < 8 {
        roots.push(b.field().to_vec());
    }
    let Some((public, certificate, srk)) = decode_ek(body) else {
        return;
    };
    assert_eq!(encode_ek(&public, &certificate, &srk), body);
    let key = ek_key(&public);
    if let Ok(key) = &key {
        canonical(&public, key);
        let id = registration_id(&public);
        assert_eq!(id.len(), 52);
        assert!(validate(&id).is_ok(), "{id} is not a DPS registration ID");
    }
    let reading = EkReading {
        public: public.clone(),
        certificate: (!certificate.is_empty()).then_some(certificate),
        srk: (!srk.is_empty()).then_some(srk),
        origin: "device",
    };
    match check(&reading, policy, &roots) {
        Ok((material, _warnings)) => {
            assert!(key.is_ok(), "material for an EK that does not parse");
            assert_eq!(B64.decode(&material.endorsement_key).ok(), Some(public));
            match policy {
                EkCertPolicy::Require => assert_eq!(material.ek_cert_status, "verified"),
                EkCertPolicy::Off => assert_eq!(material.ek_cert_status, "not checked"),
                EkCertPolicy::Warn => {}
            }
            if material.ek_cert_status == "verified" {
                assert!(material.ek_cert_issuer.is_some());
            }
        }
        Err(e) => assert!(
            matches!(
                e.code(),
                ErrorCode::TpmBadEk | ErrorCode::TpmEkCertMissing | ErrorCode::TpmEkCertInvalid
            ),
            "an EK refused with {}",
            e.code().as_str()
        ),
    }
}

/// An accepted TPM2B_PUBLIC is exactly what marshalling its structure gives, and the key read
/// from it is the structure's.
fn canonical(public: &[u8], key: &EkKey) {
    let structure = PublicBuffer::unmarshall(public)
        .ok()
        .and_then(|b| Public::try_from(b).ok())
        .expect("an accepted EK unmarshals");
    let again = PublicBuffer::try_from(structure.clone())
        .and_then(|b| b.marshall())
        .expect("an accepted EK marshals");
    assert_eq!(again, public, "an accepted EK is not in canonical form");
    let same = match (&structure, key) {
        (Public::Rsa { unique, .. }, EkKey::Rsa { modulus }) => unique.value() == modulus,
        (Public::Ecc { unique, .. }, EkKey::Ecc { x, y }) => {
            unique.x().value() == x && unique.y().value() == y
        }
        _ => false,
    };
    assert!(same, "the EK's key is not the structure's");
}
