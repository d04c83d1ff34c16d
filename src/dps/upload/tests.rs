use super::*;
use serde_json::json;

#[test]
fn attestation_comparison_per_kind() {
    let sent = json!({"registrationId": "a", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "k1"}}});
    let same = json!({"registrationId": "A", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "k1", "secondaryKey": "dps-made"}}});
    assert!(
        same_attestation(&sent, &same, None).is_ok(),
        "a secondary key DPS generated is not ours to compare"
    );
    let other = json!({"registrationId": "a", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "k2"}}});
    assert!(
        same_attestation(&sent, &other, None)
            .unwrap_err()
            .contains("primaryKey")
    );
    let tpm = json!({"registrationId": "a", "attestation": {"type": "tpm"}});
    assert!(same_attestation(&sent, &tpm, None).is_err());
    let x = json!({"registrationId": "a", "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "PEM"}}}}});
    let info = json!({"registrationId": "a", "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"info": {"sha256Thumbprint": "ABCD"}}}}}});
    assert!(same_attestation(&x, &info, Some("abcd")).is_ok());
    assert!(same_attestation(&x, &info, Some("abce")).is_err());
}

#[test]
fn dry_run_redaction_removes_every_key() {
    let mut v = json!({"enrollments": [{"attestation": {"symmetricKey": {"primaryKey": "s1", "secondaryKey": "s2"}}}]});
    redact_keys(&mut v);
    assert!(!v.to_string().contains("s1") && !v.to_string().contains("\"s2\""));
}

#[test]
fn bulk_body_is_a_valid_operation() {
    let p = Prepared {
        seq: 1,
        registration_id: "a".into(),
        json: br#"{"registrationId":"a"}"#.to_vec(),
        thumbprint: None,
    };
    let v: Value = serde_json::from_slice(&bulk_body(&[&p, &p], "create")).unwrap();
    assert_eq!(v["mode"], "create");
    assert_eq!(v["enrollments"].as_array().unwrap().len(), 2);
}
