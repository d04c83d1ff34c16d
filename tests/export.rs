//! Export batches: validated against the DPS service API spec, at most 10 per bulk operation,
//! reproducible byte for byte, keys only in owner-readable files.

mod common;
use common::*;
use serde_json::{Value, json};

use std::os::unix::fs::PermissionsExt;

#[test]
fn the_vendored_spec_is_the_shared_one() {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/dps/service-2021-10-01.json");
    if let Ok(s) = std::fs::read_to_string(shared) {
        assert_eq!(s, include_str!("fixtures/dps-service-2021-10-01.json"));
    }
}

#[test]
fn the_strict_schema_rejects_what_dps_would() {
    let good = json!({"mode": "create", "enrollments": [{"registrationId": "sn-1", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "a2V5"}}}]});
    assert!(validate(&good).is_empty(), "{:?}", validate(&good));
    for bad in [
        json!({"mode": "create", "enrollments": [{"registrationId": "sn-1"}]}),
        json!({"mode": "upsert", "enrollments": []}),
        json!({"mode": "create", "enrollments": [{"registrationId": "SN-1", "attestation": {"type": "symmetricKey"}}]}),
        json!({"mode": "create", "enrollments": [{"registrationId": "sn-1", "attestation": {"type": "symmetricKey"}, "colour": 1}]}),
        json!({"mode": "create", "enrollments": [{"registrationId": "sn-1", "attestation": {"type": "symmetricKey"}, "etag": "x"}]}),
    ] {
        assert!(!validate(&bad).is_empty(), "accepted {bad}");
    }
}

fn provision(st: &StationDir, n: u32, first: u32) {
    let sim = st.simulator(&["--devices", &n.to_string(), "--first", &first.to_string()]);
    let out = st.station(&["provision", "--port", &sim.port, "--count", &n.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
}

fn export(st: &StationDir, args: &[&str]) -> Value {
    let mut a = vec!["--json", "export"];
    a.extend_from_slice(args);
    let out = st.station(&a);
    assert!(out.status.success(), "{}", text(&out));
    json_lines(&out).pop().unwrap()
}

#[test]
fn export_reports_progress_before_its_summary() {
    let st = StationDir::new();
    provision(&st, 3, 1);
    let out = st.station(&["--json", "export"]);
    assert!(out.status.success(), "{}", text(&out));
    let lines = json_lines(&out);
    let progress = lines
        .iter()
        .find(|e| e["event"] == "progress")
        .expect("a progress event");
    assert_eq!(progress["phase"], "export");
    assert_eq!(
        (progress["done"].as_u64(), progress["total"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(lines.last().unwrap()["count"], 3, "the summary comes last");
}

#[test]
fn export_is_valid_dps_bulk_json_in_tens_and_a_matching_csv() {
    let st = StationDir::new();
    provision(&st, 23, 1);
    let s = export(&st, &[]);
    assert_eq!(s["count"], 23);
    assert_eq!(s["bulk_operations"], 3);
    let json_path = s["json"].as_str().unwrap();
    let bodies: Value = serde_json::from_slice(&std::fs::read(json_path).unwrap()).unwrap();
    let bodies = bodies.as_array().unwrap();
    assert_eq!(
        bodies
            .iter()
            .map(|b| b["enrollments"].as_array().unwrap().len())
            .collect::<Vec<_>>(),
        [10, 10, 3]
    );
    let derive = |id: &str| {
        String::from_utf8(st.station(&["derive-key", "--registration-id", id]).stdout).unwrap()
    };
    for body in bodies {
        assert_eq!(body["mode"], "create");
        let errors = validate(body);
        assert!(errors.is_empty(), "{errors:#?}");
        for e in body["enrollments"].as_array().unwrap() {
            let id = e["registrationId"].as_str().unwrap();
            assert_eq!(
                e["attestation"]["symmetricKey"]["primaryKey"]
                    .as_str()
                    .unwrap(),
                derive(id).trim()
            );
            assert_eq!(
                e["reprovisionPolicy"],
                json!({"updateHubAssignment": true, "migrateDeviceData": false})
            );
            assert_eq!(
                e["iotHubs"],
                json!(["hub-a.azure-devices.net", "hub-b.azure-devices.net"])
            );
            assert_eq!(
                e["initialTwin"]["properties"]["desired"]["telemetryInterval"],
                30
            );
        }
    }
    assert_eq!(
        std::fs::metadata(json_path).unwrap().permissions().mode() & 0o777,
        0o600,
        "keys are owner-only"
    );

    let mut csv = csv::Reader::from_path(s["csv"].as_str().unwrap()).unwrap();
    let headers: Vec<String> = csv.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        headers[..3],
        ["registration_id", "device_serial", "firmware"]
    );
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 23);
    assert_eq!(&rows[0][0], "sim000001");
    assert_eq!(&rows[0][1], "SIM000001");
    assert_eq!(&rows[0][6], "test-station");
    assert_eq!(&rows[0][10], s["batch"].as_str().unwrap());

    // Everything is exported now; the rows say so.
    let again = st.station(&["--json", "export"]);
    assert!(
        json_lines(&again)
            .iter()
            .any(|e| e["event"] == "nothing_to_export")
    );
    let list = st.station(&["--json", "list", "--status", "exported", "--limit", "100"]);
    assert_eq!(
        json_lines(&list)
            .iter()
            .filter(|e| e["status"] == "exported")
            .count(),
        23
    );
}

#[test]
fn reexporting_a_batch_reproduces_identical_bytes_even_after_config_changes() {
    let st = StationDir::new();
    provision(&st, 12, 1);
    let s = export(&st, &[]);
    let (csv, json) = (
        s["csv"].as_str().unwrap().to_string(),
        s["json"].as_str().unwrap().to_string(),
    );
    let before = (std::fs::read(&csv).unwrap(), std::fs::read(&json).unwrap());
    std::fs::remove_file(&csv).unwrap();
    std::fs::remove_file(&json).unwrap();
    // Changing the DPS options later must not change what an existing batch contained.
    let cfg = std::fs::read_to_string(st.config())
        .unwrap()
        .replace("reprovision-and-reset", "never");
    std::fs::write(st.config(), cfg).unwrap();
    let r = export(&st, &["--batch", s["batch"].as_str().unwrap()]);
    assert_eq!(r["batch"], s["batch"]);
    assert_eq!(std::fs::read(&csv).unwrap(), before.0);
    assert_eq!(std::fs::read(&json).unwrap(), before.1);

    // A new batch takes only the new devices, with the new options.
    provision(&st, 3, 13);
    let n = export(&st, &[]);
    assert_eq!(n["count"], 3);
    let bodies: Value =
        serde_json::from_slice(&std::fs::read(n["json"].as_str().unwrap()).unwrap()).unwrap();
    let e = &bodies[0]["enrollments"][0];
    assert_eq!(e["registrationId"], "sim000013");
    assert_eq!(e["reprovisionPolicy"]["updateHubAssignment"], false);
    let list = st.station(&["--json", "export", "--list"]);
    assert_eq!(json_lines(&list).len(), 2);
}

#[test]
fn unknown_batch_is_a_clear_error() {
    let st = StationDir::new();
    let out = st.station(&["export", "--batch", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out).contains("export.batch_not_found"),
        "{}",
        text(&out)
    );
}

#[test]
fn exporting_with_a_different_group_key_is_refused() {
    let st = StationDir::new();
    provision(&st, 2, 1);
    let other = st.path().join("other-key.txt");
    std::fs::write(
        &other,
        "# TEST key\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
    )
    .unwrap();
    let cfg = std::fs::read_to_string(st.config())
        .unwrap()
        .replace(GROUP_KEY_FILE, other.to_str().unwrap());
    std::fs::write(st.config(), cfg).unwrap();
    let out = st.station(&["export"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out).contains("export.group_key_changed"),
        "{}",
        text(&out)
    );
    assert!(
        st.station(&["--json", "export", "--list"])
            .stdout
            .is_empty(),
        "no batch was recorded"
    );
    let leftovers: Vec<_> = std::fs::read_dir(st.path().join("exports"))
        .unwrap()
        .collect();
    assert!(
        leftovers.is_empty(),
        "no partial files are left: {leftovers:?}"
    );
}
