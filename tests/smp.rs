//! Zephyr MCUmgr (SMP) devices, end to end over real ptys: the station's SMP client
//! (`mcumgr-toolkit`) against the simulator's SMP server, in every attestation mode an SMP
//! device supports, through the fault matrix, after a kill mid-upload, beside protocol v1
//! fixtures in a gang; and the simulator against an independent client (Python's `smpclient`).

mod common;
use common::*;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The test configuration with SMP devices (files under /lfs/dps) and `extra` appended.
fn smp_config(extra: &str) -> String {
    default_config() + "\n[device]\nprotocol = \"smp\"\n" + extra
}

/// The identity files a simulated SMP device holds, by name.
fn device_files(flash: &Path, serial: &str) -> BTreeMap<String, Vec<u8>> {
    let dir = flash.join(serial).join("fs/lfs/dps");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// The digest line of a device's manifest, if it holds one.
fn manifest_digest(files: &BTreeMap<String, Vec<u8>>) -> Option<String> {
    let text = String::from_utf8(files.get("manifest")?.clone()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("digest "))
        .map(str::to_string)
}

/// Every record the manifest lists is on the device with the listed length and SHA-256.
fn assert_manifest_matches_files(files: &BTreeMap<String, Vec<u8>>) {
    let text = String::from_utf8(files["manifest"].clone()).unwrap();
    let mut listed = 0;
    for line in text.lines().skip(1).filter(|l| !l.starts_with("digest ")) {
        let f: Vec<&str> = line.split(' ').collect();
        let content = &files[f[0]];
        assert_eq!(content.len().to_string(), f[1], "{}", f[0]);
        assert_eq!(hex_of(&Sha256::digest(content)), f[2], "{}", f[0]);
        listed += 1;
    }
    assert!(listed >= 5, "{text}");
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn events(out: &std::process::Output, name: &str) -> Vec<Value> {
    json_lines(out)
        .into_iter()
        .filter(|e| e["event"] == name)
        .collect()
}

/// Provision the one device of a fresh `station simulate --protocol smp` with `sim_args`.
fn provision_smp(st: &StationDir, sim_args: &[&str]) -> (std::process::Output, Simulator) {
    let mut args = vec!["--protocol", "smp", "--devices", "1"];
    args.extend_from_slice(sim_args);
    let sim = st.simulator(&args);
    let out = st.station(&["--json", "provision", "--port", &sim.port]);
    (out, sim)
}

#[test]
fn group_derived_keys_go_to_files_with_a_manifest_the_database_matches_and_a_rerun_finds_them() {
    let st = StationDir::with_config(&smp_config(""));
    let (out, sim) = provision_smp(&st, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let identified = &events(&out, "identified")[0];
    assert_eq!(identified["protocol"], 0, "an SMP device says protocol 0");
    assert_eq!(identified["serial"], "SIM000001", "serial from /lfs/serial");
    let rows = st.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, "provisioned");
    let files = device_files(&st.flash(), "SIM000001");
    assert_eq!(
        manifest_digest(&files),
        rows[0].4,
        "the device holds what the database does"
    );
    assert_manifest_matches_files(&files);
    let derived = st.station(&["derive-key", "--registration-id", "sim000001"]);
    assert_eq!(
        String::from_utf8_lossy(&files["credential"]),
        String::from_utf8_lossy(&derived.stdout).trim()
    );
    assert_eq!(files["registration_id"], b"sim000001");
    assert_eq!(files["id_scope"], b"0ne000TEST1");
    assert!(!files.contains_key("private_key"));

    // The same device again: what it holds is found by hashing, nothing is written.
    let again = st.station(&["--json", "provision", "--port", &sim.port]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        events(&again, "already_provisioned").len(),
        1,
        "{}",
        text(&again)
    );
    assert!(events(&again, "writing").is_empty());
}

#[test]
fn individual_keys_and_settings_storage_pass_and_are_saved_as_settings_keys() {
    let cfg = smp_config(
        "\n[device.smp]\nstorage = \"settings\"\nserial_source = \"settings:device/serial\"\n",
    )
    .replace("keys = \"group-derived\"", "keys = \"individual\"");
    let st = StationDir::with_config(&cfg);
    let (out, sim) = provision_smp(&st, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let rows = st.rows();
    assert_eq!(rows[0].2, "provisioned");
    let saved: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(st.flash().join("SIM000001/settings")).unwrap())
            .unwrap();
    for key in [
        "dps/id_scope",
        "dps/registration_id",
        "dps/credential",
        "dps/manifest",
    ] {
        assert!(saved.contains_key(key), "{key} saved: {saved:?}");
    }
    let again = st.station(&["--json", "provision", "--port", &sim.port]);
    assert_eq!(
        events(&again, "already_provisioned").len(),
        1,
        "{}",
        text(&again)
    );
}

#[test]
fn x509_with_a_station_key_writes_the_key_as_a_file_and_device_keys_are_refused() {
    let st = x509_station("station", "p256");
    let cfg = std::fs::read_to_string(st.config()).unwrap() + "\n[device]\nprotocol = \"smp\"\n";
    std::fs::write(st.config(), cfg).unwrap();
    let (out, _sim) = provision_smp(&st, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let files = device_files(&st.flash(), "SIM000001");
    assert!(files["credential"].starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert_eq!(files["private_key"][0], 0x30, "PKCS#8 DER");
    assert_eq!(manifest_digest(&files), st.rows()[0].4);

    let st = x509_station("device", "p256");
    let cfg = std::fs::read_to_string(st.config()).unwrap() + "\n[device]\nprotocol = \"smp\"\n";
    std::fs::write(st.config(), cfg).unwrap();
    let (out, _sim) = provision_smp(&st, &[]);
    assert!(!out.status.success());
    let failed = &events(&out, "failed")[0];
    assert_eq!(failed["code"], "device.smp_unsupported", "{failed}");
    assert!(failed["message"].as_str().unwrap().contains("protocol v1"));
    assert!(st.rows().iter().all(|r| r.2 != "provisioned"));
}

#[test]
fn a_multi_chunk_upload_resumes_when_lost_answers_make_zephyr_refuse_the_resent_chunk() {
    // Every 3rd answer lost: a re-sent chunk finds the file already longer
    // (FS_MGMT_ERR_FILE_OFFSET_NOT_VALID) and the certificate chain's upload resumes.
    let st = x509_station("station", "p256");
    let cfg = std::fs::read_to_string(st.config()).unwrap() + "\n[device]\nprotocol = \"smp\"\n";
    std::fs::write(st.config(), cfg).unwrap();
    let (out, _sim) = provision_smp(&st, &["--fault", "drop:3"]);
    assert!(out.status.success(), "{}", text(&out));
    let files = device_files(&st.flash(), "SIM000001");
    assert!(files["credential"].len() > 1024, "more than one chunk");
    assert_eq!(manifest_digest(&files), st.rows()[0].4);
    assert_manifest_matches_files(&files);
}

#[test]
fn tpm_attestation_reads_the_ek_through_the_fixture_tcti_and_writes_it_over_smp() {
    use common::swtpm::{Manufacture, Swtpm};
    let tpm = Swtpm::start(Manufacture::EkWithCertificate);
    let roots: Vec<String> = tpm
        .roots()
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    let cfg = smp_config("").replace(
        "[attestation]\nmode = \"symmetric\"\n",
        &format!(
            "[attestation]\nmode = \"tpm\"\n\n[attestation.tpm]\ntcti = \"{}\"\nek_roots = [{}]\n",
            tpm.tcti,
            roots.join(", ")
        ),
    );
    let st = StationDir::with_config(&cfg);
    let (out, _sim) = provision_smp(&st, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let files = device_files(&st.flash(), "SIM000001");
    assert_eq!(files["credential_type"], [4], "TPM");
    assert!(files["credential"].len() > 64, "the EK's TPM2B_PUBLIC");
    assert_eq!(manifest_digest(&files), st.rows()[0].4);
}

#[test]
fn tpm_read_through_the_device_is_refused_before_anything_is_recorded() {
    let cfg = smp_config("").replace(
        "[attestation]\nmode = \"symmetric\"\n",
        "[attestation]\nmode = \"tpm\"\n\n[attestation.tpm]\nsource = \"device\"\nek_certificate = \"off\"\n",
    );
    let st = StationDir::with_config(&cfg);
    let (out, _sim) = provision_smp(&st, &[]);
    assert!(!out.status.success());
    let failed = &events(&out, "failed")[0];
    assert_eq!(failed["code"], "device.smp_unsupported", "{failed}");
    assert!(
        failed["message"].as_str().unwrap().contains("TCTI"),
        "{failed}"
    );
    assert!(st.rows().is_empty(), "nothing recorded");
}

#[test]
fn line_faults_are_survived_and_storage_faults_fail_without_a_good_record() {
    let slow = smp_config("").replace("commit_timeout_ms = 1000", "commit_timeout_ms = 2500");
    for (cfg, fault) in [
        (smp_config(""), "corrupt:3"),
        (smp_config(""), "drop:6"),
        (smp_config(""), "noise"),
        (slow, "slow-erase:900"),
    ] {
        let st = StationDir::with_config(&cfg);
        let (out, _sim) = provision_smp(&st, &["--fault", fault]);
        assert!(out.status.success(), "{fault}: {}", text(&out));
        let files = device_files(&st.flash(), "SIM000001");
        assert_eq!(manifest_digest(&files), st.rows()[0].4, "{fault}");
    }
    for (fault, code) in [
        ("fs-full:160", "device.smp_storage"),
        ("wrong-hash", "device.smp_hash_mismatch"),
    ] {
        let st = StationDir::with_config(&smp_config(""));
        let (out, _sim) = provision_smp(&st, &["--fault", fault]);
        assert!(!out.status.success(), "{fault}: {}", text(&out));
        assert_eq!(events(&out, "failed")[0]["code"], code, "{}", text(&out));
        let rows = st.rows();
        assert_eq!(rows.len(), 1, "recorded before the first file was written");
        assert_eq!(rows[0].2, "failed", "{fault}");
        let files = device_files(&st.flash(), "SIM000001");
        assert_eq!(
            manifest_digest(&files),
            None,
            "{fault}: no identity on the device"
        );
    }
}

#[test]
fn killing_the_station_mid_upload_leaves_a_pending_row_that_a_rerun_completes() {
    let st = StationDir::with_config(&smp_config(""));
    killed_mid_upload_then_rerun(&st);
    // X.509 with a station-made key: the key never enters the database, so the re-run cannot
    // send the recorded one again; it must still end with what the device holds recorded.
    let st = x509_station("station", "p256");
    let cfg = std::fs::read_to_string(st.config()).unwrap() + "\n[device]\nprotocol = \"smp\"\n";
    std::fs::write(st.config(), cfg).unwrap();
    killed_mid_upload_then_rerun(&st);
    let files = device_files(&st.flash(), "SIM000001");
    assert!(files["credential"].starts_with(b"-----BEGIN CERTIFICATE-----"));
    let certificate: String = rusqlite::Connection::open(st.db())
        .unwrap()
        .query_row(
            "SELECT public_material FROM enrollments WHERE status = 'provisioned'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        String::from_utf8_lossy(&files["credential"]).contains(certificate.trim()),
        "the device holds the certificate the database recorded"
    );
}

/// Kill the station after its third SMP write to the device at 4800 baud, check nothing half
/// written counts as an identity, then re-run: the device passes and the database holds what
/// the device holds.
fn killed_mid_upload_then_rerun(st: &StationDir) {
    let cfg = std::fs::read_to_string(st.config())
        .unwrap()
        .replace("[serial]\n", "[serial]\nbaud = 4800\n");
    std::fs::write(st.config(), cfg).unwrap();
    let sim = st.simulator(&["--protocol", "smp", "--devices", "1", "--baud", "4800"]);
    let mut child = Command::new(STATION)
        .arg("--config")
        .arg(st.config())
        .args(["--json", "provision", "--port", &sim.port])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut writes = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "writing" {
            writes += 1;
            if writes == 3 {
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(writes, 3, "killed mid-upload");
    assert_eq!(st.rows()[0].2, "pending", "recorded before the first file");
    let files = device_files(&st.flash(), "SIM000001");
    assert_eq!(
        manifest_digest(&files),
        None,
        "half the files are no identity"
    );

    let rerun = st.station(&["--json", "provision", "--port", &sim.port]);
    assert!(rerun.status.success(), "{}", text(&rerun));
    let rows = st.rows();
    assert_eq!(rows[0].2, "provisioned");
    let files = device_files(&st.flash(), "SIM000001");
    assert_eq!(manifest_digest(&files), rows[0].4);
    assert_manifest_matches_files(&files);
}

#[test]
fn a_power_cut_mid_upload_loses_nothing_and_a_rerun_after_power_on_finishes_the_device() {
    let cfg = smp_config("").replace("[serial]\n", "[serial]\nbaud = 4800\n");
    let st = StationDir::with_config(&cfg);
    let args = ["--protocol", "smp", "--devices", "1", "--baud", "4800"];
    let sim = st.simulator(&args);
    let mut child = Command::new(STATION)
        .arg("--config")
        .arg(st.config())
        .args(["--json", "provision", "--port", &sim.port])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut sim = Some(sim);
    let (mut writes, mut failed) = (0, None);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "writing" {
            writes += 1;
            if writes == 3 {
                // The device loses power: the simulator process dies, its files stay.
                drop(sim.take());
            }
        }
        if v["event"] == "failed" {
            failed = Some(v["code"].as_str().unwrap().to_string());
        }
    }
    child.wait().unwrap();
    assert_eq!(failed.as_deref(), Some("device.disconnected"));
    let rows = st.rows();
    assert_ne!(rows[0].2, "provisioned");
    assert_eq!(
        manifest_digest(&device_files(&st.flash(), "SIM000001")),
        None
    );

    let sim = st.simulator(&args);
    let rerun = st.station(&["--json", "provision", "--port", &sim.port]);
    assert!(rerun.status.success(), "{}", text(&rerun));
    let rows = st.rows();
    assert_eq!(rows[0].2, "provisioned");
    let files = device_files(&st.flash(), "SIM000001");
    assert_eq!(manifest_digest(&files), rows[0].4);
    assert_manifest_matches_files(&files);
}

#[test]
fn a_gang_of_v1_and_smp_fixtures_provisions_both_and_exports_valid_bulk_json() {
    let cfg = default_config()
        + "\n[[fixture]]\nid = \"v1\"\nport = \"sim\"\n\n[[fixture]]\nid = \"smp\"\nport = \"sim\"\nprotocol = \"smp\"\n";
    let st = StationDir::with_config(&cfg);
    let out = st.station(&["--json", "provision", "--all-fixtures", "--count", "4"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut protocols: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in events(&out, "identified") {
        let f = e["fixture"].as_str().unwrap().to_string();
        protocols
            .entry(f)
            .or_default()
            .push(e["protocol"].as_u64().unwrap());
    }
    assert!(protocols["v1"].iter().all(|p| *p == 1), "{protocols:?}");
    assert!(protocols["smp"].iter().all(|p| *p == 0), "{protocols:?}");
    let rows = st.rows();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.2 == "provisioned"), "{rows:?}");
    for r in rows.iter().filter(|r| r.1.starts_with("SIM1")) {
        let files = device_files(&st.flash().join("smp"), &r.1);
        assert_eq!(manifest_digest(&files), r.4, "{}", r.1);
    }
    let export = st.station(&["--json", "export"]);
    assert!(export.status.success(), "{}", text(&export));
    let summary = json_lines(&export).pop().unwrap();
    assert_eq!(summary["count"], 4);
    let bodies: Value =
        serde_json::from_slice(&std::fs::read(summary["json"].as_str().unwrap()).unwrap()).unwrap();
    for body in bodies.as_array().unwrap() {
        assert!(validate(body).is_empty(), "{:?}", validate(body));
    }
}

/// The Python in the virtual environment `make test` creates with `smpclient` (SMP_VENV
/// overrides where it is).
fn smp_python() -> PathBuf {
    let venv = std::env::var_os("SMP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/smp-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python virtual environment with smpclient at {}: run `make smp-venv` (make test does)",
        venv.display()
    );
    python
}

#[test]
fn an_independent_client_smpclient_uploads_a_file_and_reads_its_sha256() {
    let python = smp_python();
    let st = StationDir::new();
    let sim = st.simulator(&["--protocol", "smp", "--devices", "1"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smp/smpclient_upload.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([&sim.port, "/lfs/upload.bin", "1500"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(r["echo"], "smpclient");
    assert_eq!(r["device_type"], "sha256");
    assert_eq!(r["device_sha256"], r["sent_sha256"], "{r}");
    assert_eq!(r["len"], 1500);
    assert!(r["chunks"].as_u64().unwrap() >= 2, "{r}");
    let on_disk = std::fs::read(st.flash().join("SIM000001/fs/lfs/upload.bin")).unwrap();
    assert_eq!(hex_of(&Sha256::digest(&on_disk)), r["sent_sha256"]);
}
