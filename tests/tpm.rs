//! TPM attestation against a real TPM simulator (swtpm): EK encoding cross-checked with
//! tpm2-tools and an independent registration-ID computation, EK-certificate policy, the full
//! provisioning flow (station-side TCTI and device-reported), duplicate EKs.

mod common;
use base64::Engine;
use common::swtpm::{Manufacture, Swtpm};
use common::*;
use std::process::Command;

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn tpm_read(tpm: &Swtpm, roots: &[std::path::PathBuf]) -> serde_json::Value {
    let mut cmd = Command::new(STATION);
    cmd.args(["--json", "tpm", "read", "--tcti", &tpm.tcti]);
    for r in roots {
        cmd.arg("--roots").arg(r);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    json_lines(&out).pop().unwrap()
}

fn tpm2_tool(tpm: &Swtpm, args: &[&str]) -> std::process::Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .args(["-T", &tpm.tcti])
        .output()
        .expect("tpm2-tools are installed (make test installs them)");
    assert!(out.status.success(), "{}", text(&out));
    out
}

#[test]
fn ek_bytes_equal_tpm2_readpublic_and_the_registration_id_an_independent_computation() {
    let tpm = Swtpm::start(Manufacture::EkWithCertificate);
    let read = tpm_read(&tpm, &[]);
    let ours = b64(read["endorsement_key"].as_str().unwrap());
    let theirs_path = tpm.dir.path().join("ek.pub");
    tpm2_tool(
        &tpm,
        &[
            "tpm2_readpublic",
            "-c",
            "0x81010001",
            "-o",
            theirs_path.to_str().unwrap(),
        ],
    );
    let theirs = std::fs::read(&theirs_path).unwrap();
    assert_eq!(ours, theirs, "TPM2B_PUBLIC, size prefix included");
    assert_eq!(
        &ours[..2],
        &[0x01, 0x3a],
        "RSA-2048 EK: 316 bytes starting 0x013A"
    );
    assert_eq!(ours.len(), 316);
    let py = Command::new("python3")
        .args([
            "-c",
            "import base64,hashlib,sys; print(base64.b32encode(hashlib.sha256(open(sys.argv[1],'rb').read()).digest()).decode().lower().rstrip('='))",
        ])
        .arg(&theirs_path)
        .output()
        .unwrap();
    assert_eq!(
        read["registration_id"],
        String::from_utf8_lossy(&py.stdout).trim()
    );
    assert_eq!(read["ek_origin"], "persistent");
}

#[test]
fn an_ek_created_from_the_tcg_template_equals_tpm2_createek_and_persists_only_when_permitted() {
    let tpm = Swtpm::start(Manufacture::Blank);
    let read = tpm_read(&tpm, &[]);
    assert_eq!(read["ek_origin"], "created");
    let ours = b64(read["endorsement_key"].as_str().unwrap());
    let ek_pub = tpm.dir.path().join("createek.pub");
    let ctx = tpm.dir.path().join("ek.ctx");
    tpm2_tool(
        &tpm,
        &[
            "tpm2_createek",
            "-c",
            ctx.to_str().unwrap(),
            "-G",
            "rsa",
            "-u",
            ek_pub.to_str().unwrap(),
        ],
    );
    assert_eq!(
        ours,
        std::fs::read(&ek_pub).unwrap(),
        "same TCG default template as tpm2_createek"
    );
    // Not persisted by a read: nothing at 0x81010001.
    let probe = Command::new("tpm2_readpublic")
        .args(["-c", "0x81010001", "-T", &tpm.tcti])
        .output()
        .unwrap();
    assert!(!probe.status.success(), "a read never persists an EK");
}

fn tpm_station(tpm: &Swtpm, extra: &str) -> StationDir {
    tpm_station_with_roots(tpm, &tpm.roots(), extra)
}

fn tpm_station_with_roots(tpm: &Swtpm, roots: &[std::path::PathBuf], extra: &str) -> StationDir {
    let roots: Vec<String> = roots
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    let cfg = default_config().replace(
        "[attestation]\nmode = \"symmetric\"\n",
        &format!(
            "[attestation]\nmode = \"tpm\"\n\n[attestation.tpm]\ntcti = \"{}\"\nek_roots = [{}]\n{extra}\n",
            tpm.tcti,
            roots.join(", ")
        ),
    );
    StationDir::with_config(&cfg)
}

fn provision_one(
    st: &StationDir,
    sim_args: &[&str],
) -> (std::process::Output, Vec<serde_json::Value>) {
    let mut args = vec!["--devices", "1"];
    args.extend_from_slice(sim_args);
    let sim = st.simulator(&args);
    let out = st.station(&["--json", "provision", "--port", &sim.port]);
    let ev = json_lines(&out);
    (out, ev)
}

#[test]
fn full_flow_in_tpm_mode_over_the_pty_simulator_exports_a_valid_tpm_enrollment() {
    let tpm = Swtpm::start(Manufacture::EkWithCertificate);
    let st = tpm_station(&tpm, "");
    let (out, ev) = provision_one(&st, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let read = tpm_read(&tpm, &tpm.roots());
    assert_eq!(read["ek_certificate"], "verified");
    let id = read["registration_id"].as_str().unwrap();
    assert!(
        ev.iter()
            .any(|e| e["event"] == "passed" && e["registration_id"] == id)
    );
    let flash: serde_json::Value =
        serde_json::from_slice(&std::fs::read(st.flash().join("SIM000001.json")).unwrap()).unwrap();
    assert_eq!(
        hex(flash["records"]["3"].as_str().unwrap()),
        id.as_bytes(),
        "the device presents the EK-derived ID"
    );
    assert_eq!(hex(flash["records"]["4"].as_str().unwrap()), [4]);
    assert_eq!(
        hex(flash["records"]["5"].as_str().unwrap()),
        b64(read["endorsement_key"].as_str().unwrap())
    );
    st.assert_db_matches_flash();
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let (status, issuer, cert): (String, String, String) = conn
        .query_row(
            "SELECT ek_cert_status, ek_cert_issuer, ek_certificate FROM enrollments",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(status, "verified");
    assert!(issuer.contains("swtpm-localca"));
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));

    let export = st.station(&["--json", "export"]);
    let s = json_lines(&export).pop().unwrap();
    assert!(export.status.success(), "{}", text(&export));
    let bodies: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s["json"].as_str().unwrap()).unwrap()).unwrap();
    let errors = validate(&bodies[0]);
    assert!(errors.is_empty(), "{errors:#?}");
    let e = &bodies[0]["enrollments"][0];
    assert_eq!(e["attestation"]["type"], "tpm");
    assert_eq!(
        e["attestation"]["tpm"]["endorsementKey"],
        read["endorsement_key"]
    );
    assert_eq!(e["registrationId"], id);
}

#[test]
fn device_reported_ek_is_verified_the_same_way() {
    let tpm = Swtpm::start(Manufacture::EkWithCertificate);
    let st = tpm_station(&tpm, "source = \"device\"");
    let (out, ev) = provision_one(&st, &["--tpm", &tpm.tcti]);
    assert!(out.status.success(), "{}", text(&out));
    let read = tpm_read(&tpm, &[]);
    assert!(
        ev.iter()
            .any(|e| e["event"] == "passed" && e["registration_id"] == read["registration_id"])
    );
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let status: String = conn
        .query_row("SELECT ek_cert_status FROM enrollments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "verified");
}

#[test]
fn a_foreign_root_fails_the_ek_certificate_under_require() {
    let tpm = Swtpm::start(Manufacture::EkWithCertificate);
    let other = Swtpm::start(Manufacture::EkWithCertificate);
    // Roots of another "manufacturer": the other simulator's local CA.
    let st = tpm_station(&tpm, "");
    let cfg = std::fs::read_to_string(st.config()).unwrap();
    let mine: Vec<String> = tpm
        .roots()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let theirs: Vec<String> = other
        .roots()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    std::fs::write(
        st.config(),
        cfg.replace(&mine[0], &theirs[0])
            .replace(&mine[1], &theirs[1]),
    )
    .unwrap();
    let (out, ev) = provision_one(&st, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!ev.iter().any(|e| e["event"] == "passed"));
    assert_eq!(
        ev.iter().find(|e| e["event"] == "failed").unwrap()["code"],
        "tpm.ek_cert_invalid"
    );
    assert!(st.rows().is_empty(), "nothing enrolled");
    assert!(!st.flash().join("SIM000001.json").exists());
}

#[test]
fn a_tpm_without_ek_certificate_fails_under_require_and_passes_with_a_recorded_warning_under_warn()
{
    let tpm = Swtpm::start(Manufacture::EkOnly);
    // A manufacturer bundle from another simulator: this TPM has no certificate at all.
    let maker = Swtpm::start(Manufacture::EkWithCertificate);
    let st = tpm_station_with_roots(&tpm, &maker.roots(), "");
    let (out, ev) = provision_one(&st, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed = ev.iter().find(|e| e["event"] == "failed");
    assert_eq!(
        failed.unwrap_or_else(|| panic!("{}", text(&out)))["code"],
        "tpm.ek_cert_missing"
    );

    let st = tpm_station_with_roots(&tpm, &maker.roots(), "ek_certificate = \"warn\"");
    let (out, ev) = provision_one(&st, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let warning = ev
        .iter()
        .find(|e| e["event"] == "warning")
        .expect("a warning event");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("no EK certificate")
    );
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let status: String = conn
        .query_row("SELECT ek_cert_status FROM enrollments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        status, "missing",
        "the warning is recorded with the enrollment"
    );
}

#[test]
fn the_same_ek_under_a_second_registration_id_is_refused() {
    let tpm = Swtpm::start(Manufacture::EkWithCertificate);
    let st = tpm_station(&tpm, "registration_id = \"template\"");
    let sim = st.simulator(&["--devices", "2"]);
    let out = st.station(&["--json", "provision", "--port", &sim.port, "--count", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ev = json_lines(&out);
    assert!(
        ev.iter()
            .any(|e| e["event"] == "passed" && e["registration_id"] == "sim000001")
    );
    let failed = ev.iter().find(|e| e["event"] == "failed").unwrap();
    assert_eq!(failed["code"], "tpm.duplicate_ek");
    assert!(failed["message"].as_str().unwrap().contains("sim000001"));
    let rows = st.rows();
    assert_eq!(rows.len(), 1, "the second device got no enrollment");
}

#[test]
fn doctor_checks_the_tpm_and_the_root_bundle() {
    let tpm = Swtpm::start(Manufacture::EkWithCertificate);
    let st = tpm_station(&tpm, "");
    let out = st.station(&["doctor"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("answers"), "{}", text(&out));
    let cfg = std::fs::read_to_string(st.config()).unwrap().replace(
        &tpm.roots()[0].display().to_string(),
        "/nonexistent/roots.pem",
    );
    std::fs::write(st.config(), cfg).unwrap();
    let bad = st.station(&["doctor"]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        text(&bad).contains("tpm.roots_unreadable"),
        "{}",
        text(&bad)
    );
}
