//! X.509 attestation end to end: development CA, CSR from the simulated device over a real
//! pty, chains that `openssl verify` accepts, export against the DPS spec, refusals.

mod common;
use common::*;
use std::process::Command;

fn flash(st: &StationDir, serial: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(st.flash().join(format!("{serial}.json"))).unwrap())
        .unwrap()
}

fn record(f: &serde_json::Value, id: &str) -> Vec<u8> {
    hex(f["records"][id].as_str().unwrap())
}

fn openssl_verify(st: &StationDir, chain_pem: &[u8]) -> String {
    let leaf = st.path().join("leaf.pem");
    std::fs::write(&leaf, chain_pem).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(st.path().join("ca/dev-root.pem"))
        .arg("-untrusted")
        .arg(st.path().join("ca/dev-intermediate.pem"))
        .arg(&leaf)
        .output()
        .expect("openssl is installed (make test installs it)");
    text(&out)
}

#[test]
fn device_generated_keys_give_chains_openssl_accepts() {
    let st = x509_station("device", "p256");
    let sim = st.simulator(&["--devices", "3"]);
    let out = st.station(&["--json", "provision", "--port", &sim.port, "--count", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    st.assert_db_matches_flash();
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    for n in 1..=3 {
        let serial = format!("SIM00000{n}");
        let f = flash(&st, &serial);
        assert_eq!(
            record(&f, "4"),
            [2],
            "credential type: X.509 with device key"
        );
        assert!(
            f["records"].get("7").is_none(),
            "no private key crossed the wire"
        );
        assert!(
            f["device_key"].is_string(),
            "the device generated and kept its key"
        );
        let chain = record(&f, "5");
        let verdict = openssl_verify(&st, &chain);
        assert!(verdict.contains(": OK"), "{verdict}");
        // The chain holds leaf, intermediate and root, leaf first.
        assert_eq!(
            String::from_utf8_lossy(&chain)
                .matches("BEGIN CERTIFICATE")
                .count(),
            3
        );
        let (pem, serial_hex, thumb): (String, String, String) = conn
            .query_row(
                "SELECT public_material, cert_serial, cert_thumbprint FROM enrollments WHERE device_serial = ?1",
                [&serial],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert!(
            String::from_utf8_lossy(&chain).starts_with(&pem),
            "the database holds the device certificate"
        );
        assert_eq!(serial_hex.len(), 32);
        assert_eq!(thumb.len(), 64);
    }
    // Export: x509 enrollments that validate against the DPS spec (see tests/export.rs for the
    // strict schema; here the shape).
    let export = st.station(&["--json", "export"]);
    let s = json_lines(&export).pop().unwrap();
    let bodies: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s["json"].as_str().unwrap()).unwrap()).unwrap();
    let errors = validate(&bodies[0]);
    assert!(errors.is_empty(), "{errors:#?}");
    let e = &bodies[0]["enrollments"][0];
    assert_eq!(e["attestation"]["type"], "x509");
    let cert = e["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"]
        .as_str()
        .unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    let mut csv = csv::Reader::from_path(s["csv"].as_str().unwrap()).unwrap();
    let h = csv.headers().unwrap().clone();
    let row = csv.records().next().unwrap().unwrap();
    let col = |name: &str| row[h.iter().position(|x| x == name).unwrap()].to_string();
    assert_eq!(col("attestation_type"), "x509");
    assert_eq!(col("cert_serial").len(), 32);
    assert!(col("cert_not_after").ends_with('Z') && col("cert_not_before") < col("cert_not_after"));
}

#[test]
fn station_generated_keys_are_written_once_and_never_stored() {
    let st = x509_station("station", "rsa2048");
    let sim = st.simulator(&["--devices", "1"]);
    let out = st.station(&["provision", "--port", &sim.port]);
    assert!(out.status.success(), "{}", text(&out));
    let f = flash(&st, "SIM000001");
    assert_eq!(
        record(&f, "4"),
        [3],
        "credential type: X.509 with station key"
    );
    let key_der = record(&f, "7");
    let chain = record(&f, "5");
    assert!(openssl_verify(&st, &chain).contains(": OK"));
    // The key on the device belongs to the certificate.
    let key_path = st.path().join("key.der");
    std::fs::write(&key_path, &key_der).unwrap();
    let pubkey_of_key = Command::new("openssl")
        .args(["pkey", "-inform", "DER", "-pubout", "-in"])
        .arg(&key_path)
        .output()
        .unwrap();
    let pubkey_of_cert = Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(st.path().join("leaf.pem"))
        .output()
        .unwrap();
    assert!(pubkey_of_key.status.success());
    assert_eq!(pubkey_of_key.stdout, pubkey_of_cert.stdout);
    // The database never holds a private key.
    let dump = Command::new("sqlite3").arg(st.db()).arg(".dump").output();
    if let Ok(dump) = dump {
        assert!(!String::from_utf8_lossy(&dump.stdout).contains("PRIVATE KEY"));
    }
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let keys: (Option<String>, Option<String>) = conn
        .query_row(
            "SELECT primary_key, secondary_key FROM enrollments",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(keys, (None, None));
}

fn assert_csr_refused(fault: &str, code: &str) {
    let st = x509_station("device", "p256");
    let sim = st.simulator(&["--devices", "1", "--fault", fault]);
    let out = st.station(&["--json", "provision", "--port", &sim.port]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ev = json_lines(&out);
    assert!(!ev.iter().any(|e| e["event"] == "passed"));
    assert_eq!(
        ev.iter().find(|e| e["event"] == "failed").unwrap()["code"],
        code,
        "{}",
        text(&out)
    );
    assert!(st.rows().iter().all(|r| r.2 != "provisioned"));
    assert!(
        !st.flash().join("SIM000001.json").exists(),
        "nothing was committed to the device"
    );
}

#[test]
fn tampered_csr_is_refused() {
    assert_csr_refused("csr-tamper", "x509.csr_invalid");
}

#[test]
fn csr_with_the_wrong_cn_is_refused() {
    assert_csr_refused("csr-cn:someone-else", "x509.csr_subject_mismatch");
}

#[test]
fn csr_with_an_unsupported_key_is_refused() {
    assert_csr_refused("csr-key:ed25519", "x509.csr_key_unsupported");
}

#[test]
fn rerun_is_idempotent_and_reissue_needs_permission_and_keeps_old_batches() {
    let st = x509_station("device", "p256");
    let sim = st.simulator(&["--devices", "1"]);
    assert!(
        st.station(&["provision", "--port", &sim.port])
            .status
            .success()
    );
    let first = flash(&st, "SIM000001");
    let again = st.station(&["--json", "provision", "--port", &sim.port]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        json_lines(&again)
            .iter()
            .any(|e| e["event"] == "already_provisioned")
    );
    assert_eq!(flash(&st, "SIM000001")["commits"], first["commits"]);
    let batch = json_lines(&st.station(&["--json", "export"]))
        .pop()
        .unwrap();
    let old_json = std::fs::read(batch["json"].as_str().unwrap()).unwrap();

    let reissue = st.station(&[
        "--json",
        "provision",
        "--port",
        &sim.port,
        "--allow-reissue",
    ]);
    assert!(reissue.status.success(), "{}", text(&reissue));
    let second = flash(&st, "SIM000001");
    assert_ne!(
        second["records"]["5"], first["records"]["5"],
        "a new certificate"
    );
    st.assert_db_matches_flash();

    // Without permission, a device that lost its identity is not silently re-issued.
    std::fs::remove_file(st.flash().join("SIM000001.json")).unwrap();
    drop(sim);
    let sim = st.simulator(&["--devices", "1"]);
    let refused = st.station(&["--json", "provision", "--port", &sim.port]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("x509.reissue_not_permitted"),
        "{}",
        text(&refused)
    );

    // The first batch still re-exports byte for byte; the re-issued version goes in the next.
    std::fs::remove_file(batch["json"].as_str().unwrap()).unwrap();
    let again = st.station(&[
        "--json",
        "export",
        "--batch",
        batch["batch"].as_str().unwrap(),
    ]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        std::fs::read(batch["json"].as_str().unwrap()).unwrap(),
        old_json
    );
    let next = json_lines(&st.station(&["--json", "export"]))
        .pop()
        .unwrap();
    assert_eq!(next["count"], 1);
    let list = json_lines(&st.station(&["--json", "list"]));
    assert_eq!(list.last().unwrap()["counts"]["exported"], 1);
}

#[test]
fn a_ca_key_that_does_not_match_refuses_to_start() {
    let st = x509_station("device", "p256");
    std::fs::copy(
        st.path().join("ca/dev-intermediate.pem"),
        st.path().join("other.pem"),
    )
    .unwrap();
    // Use the root certificate with the intermediate's key.
    let cfg = std::fs::read_to_string(st.config())
        .unwrap()
        .replace("ca/dev-intermediate.pem", "ca/dev-root.pem");
    std::fs::write(st.config(), cfg).unwrap();
    let out = st.station(&["provision", "--port", "/dev/null"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("x509.ca_key_mismatch"),
        "{}",
        text(&out)
    );
    let doctor = st.station(&["doctor"]);
    assert_eq!(doctor.status.code(), Some(2));
    assert!(text(&doctor).contains("x509.ca_key_mismatch") && text(&doctor).contains("fix:"));
}

#[test]
fn registration_ids_longer_than_a_cn_are_refused_before_touching_the_device() {
    let st = x509_station("device", "p256");
    let cfg = std::fs::read_to_string(st.config()).unwrap().replace(
        "template = \"{serial}\"",
        &format!("template = \"{}-{{serial}}\"", "x".repeat(60)),
    );
    std::fs::write(st.config(), cfg).unwrap();
    let sim = st.simulator(&["--devices", "1"]);
    let out = st.station(&["provision", "--port", &sim.port]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("x509.cn_too_long"), "{}", text(&out));
    assert!(!st.flash().join("SIM000001.json").exists());
}
