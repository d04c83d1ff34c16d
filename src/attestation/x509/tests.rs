use super::*;
use crate::config::X509Section;
use ::time::{Duration, OffsetDateTime};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use sha2::{Digest, Sha256};
use std::path::Path;
use x509_parser::prelude::*;

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
    let days = (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86400;
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

/// Found by the `csr` fuzz target's subject property on an adversarial seed (kept as
/// fuzz/regressions/csr/subject-with-an-organization): the
/// subject's CN was checked, not that it is the subject's one attribute (protocol.md, GEN_CSR).
#[test]
fn a_csr_whose_subject_has_more_than_the_cn_is_refused() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "sn-0001");
    p.distinguished_name
        .push(DnType::OrganizationName, "not the station's");
    let der = p.serialize_request(&key).unwrap().der().to_vec();
    let e = check_csr(&der, "sn-0001", X509KeyType::P256).unwrap_err();
    assert_eq!(e.code(), ErrorCode::X509CsrSubjectMismatch);
    assert!(e.to_string().contains("CN=sn-0001 alone"), "{e}");
    check_csr(&csr(&key, "sn-0001"), "sn-0001", X509KeyType::P256).unwrap();
}

/// Found by the `csr` fuzz target (fuzz/regressions/csr/bytes-after-the-der): a valid CSR
/// followed by more bytes was accepted, the rest ignored.
#[test]
fn a_csr_followed_by_more_bytes_is_refused() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut der = csr(&key, "sn-0001");
    check_csr(&der, "sn-0001", X509KeyType::P256).unwrap();
    der.push(0);
    let e = check_csr(&der, "sn-0001", X509KeyType::P256).unwrap_err();
    assert_eq!(e.code(), ErrorCode::X509CsrInvalid);
    assert!(e.to_string().contains("1 bytes follow"), "{e}");
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
