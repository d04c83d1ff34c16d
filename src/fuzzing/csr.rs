//! The CSR a device sends for GEN_CSR: DER bytes → a verified CSR or a clean refusal.

use super::Bytes;
use crate::attestation::x509::{MAX_CN, check_csr};
use crate::config::X509KeyType;
use crate::error::{Error, ErrorCode};
use rcgen::PublicKeyData;
use x509_parser::prelude::*;

/// Input: `key_type u8` (1 P-256, 2 P-384, 3 RSA-2048, as GEN_CSR carries it; others wrap
/// around), `cn_len u8`, the registration ID asked for, then the CSR's DER.
///
/// Properties: the station's checks ([`check_csr`]) accept a CSR only when an independent
/// reading (x509-parser, its own signature verification) finds the whole input to be one CSR
/// whose only subject attribute is CN = the registration ID, with a key of the type asked for,
/// signed with that type's algorithm by that key; any refusal is one of the three CSR error
/// codes of protocol.md.
pub fn csr(data: &[u8]) {
    let mut b = Bytes::new(data);
    let key_type = match b.u8() % 3 {
        0 => X509KeyType::Rsa2048,
        1 => X509KeyType::P256,
        _ => X509KeyType::P384,
    };
    let cn_len = b.u8() as usize % (MAX_CN + 1);
    let Ok(registration_id) = std::str::from_utf8(b.take(cn_len)) else {
        return;
    };
    let der = b.rest();
    match check_csr(der, registration_id, key_type) {
        Ok(params) => accepted(der, registration_id, key_type, &params),
        Err(Error::Csr { code, .. }) => assert!(
            matches!(
                code,
                ErrorCode::X509CsrInvalid
                    | ErrorCode::X509CsrKeyUnsupported
                    | ErrorCode::X509CsrSubjectMismatch
            ),
            "a CSR refused with {}",
            code.as_str()
        ),
        Err(e) => panic!("a CSR refused with a non-CSR error: {e}"),
    }
}

fn accepted(
    der: &[u8],
    registration_id: &str,
    key_type: X509KeyType,
    params: &rcgen::CertificateSigningRequestParams,
) {
    let (rest, csr) = X509CertificationRequest::from_der(der).expect("an accepted CSR parses");
    assert!(rest.is_empty(), "bytes after an accepted CSR's DER");
    csr.verify_signature()
        .expect("an accepted CSR's signature verifies");
    let info = &csr.certification_request_info;
    let attributes: Vec<_> = info.subject.iter_attributes().collect();
    assert_eq!(
        attributes.len(),
        1,
        "an accepted CSR's subject has one attribute"
    );
    assert_eq!(
        attributes[0].attr_type(),
        &x509_parser::oid_registry::OID_X509_COMMON_NAME
    );
    assert_eq!(attributes[0].as_str().ok(), Some(registration_id));
    let (algorithm, curve) = match key_type {
        X509KeyType::P256 => ("1.2.840.10045.4.3.2", Some("1.2.840.10045.3.1.7")),
        X509KeyType::P384 => ("1.2.840.10045.4.3.3", Some("1.3.132.0.34")),
        X509KeyType::Rsa2048 => ("1.2.840.113549.1.1.11", None),
    };
    assert_eq!(csr.signature_algorithm.algorithm.to_id_string(), algorithm);
    let spki = &info.subject_pki;
    match (spki.parsed(), curve) {
        (Ok(x509_parser::public_key::PublicKey::RSA(rsa)), None) => {
            assert_eq!(rsa.key_size(), 2048)
        }
        (Ok(x509_parser::public_key::PublicKey::EC(_)), Some(curve)) => {
            let named = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            assert_eq!(named.map(|o| o.to_id_string()).as_deref(), Some(curve));
        }
        (other, _) => panic!("an accepted CSR's key is {:?}", other.is_ok()),
    }
    assert_eq!(
        params.public_key.der_bytes(),
        spki.subject_public_key.data.as_ref(),
        "the key certified is the key that signed"
    );
}
