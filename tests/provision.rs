//! End-to-end provisioning on the real binary against the simulator on a real pty.

mod common;
use common::*;

fn events(out: &std::process::Output) -> Vec<serde_json::Value> {
    json_lines(out)
}

#[test]
fn provisions_five_devices_and_database_matches_each_devices_flash() {
    let st = StationDir::new();
    let sim = st.simulator(&["--devices", "5"]);
    let out = st.station(&[
        "--json",
        "provision",
        "--port",
        &sim.port,
        "--count",
        "5",
        "--operator",
        "op-7",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let ev = events(&out);
    let passed: Vec<_> = ev.iter().filter(|e| e["event"] == "passed").collect();
    assert_eq!(passed.len(), 5);
    let ids: Vec<_> = passed
        .iter()
        .map(|e| e["registration_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "sim000001",
            "sim000002",
            "sim000003",
            "sim000004",
            "sim000005"
        ]
    );
    // Event order per device: connecting first, passed last, verified just before it.
    for chunk in ev.split(|e| e["event"] == "passed") {
        if chunk.is_empty() || chunk[0]["event"] == "summary" {
            continue;
        }
        assert_eq!(chunk[0]["event"], "connecting");
        let names: Vec<_> = chunk.iter().map(|e| e["event"].as_str().unwrap()).collect();
        let pos = |n: &str| {
            names
                .iter()
                .position(|x| *x == n)
                .unwrap_or_else(|| panic!("{n} missing in {names:?}"))
        };
        assert!(pos("identified") < pos("registration_id"));
        assert!(
            pos("recorded") < pos("writing"),
            "pending must be durable before writing"
        );
        assert!(pos("committed") < pos("verified"));
        assert_eq!(*names.last().unwrap(), "verified");
    }
    let rows = st.rows();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.2 == "provisioned"));
    st.assert_db_matches_flash();

    // The device holds exactly the DPS coordinates and the key DPS will derive.
    let flash: serde_json::Value =
        serde_json::from_slice(&std::fs::read(st.flash().join("SIM000003.json")).unwrap()).unwrap();
    let rec = |id: &str| String::from_utf8(hex(flash["records"][id].as_str().unwrap())).unwrap();
    assert_eq!(rec("1"), "0ne000TEST1");
    assert_eq!(rec("2"), "global.azure-devices-provisioning.net");
    assert_eq!(rec("3"), "sim000003");
    let key = st.station(&["derive-key", "--registration-id", "sim000003"]);
    assert_eq!(rec("5"), String::from_utf8_lossy(&key.stdout).trim());
    let attempts = st.attempts();
    assert_eq!(attempts.len(), 5);
    assert!(attempts.iter().all(|a| a.1 == "passed"));
}

#[test]
fn rerunning_a_provisioned_device_is_idempotent() {
    let st = StationDir::new();
    let sim = st.simulator(&["--devices", "1"]);
    let first = st.station(&["provision", "--port", &sim.port]);
    assert!(first.status.success(), "{}", text(&first));
    let again = st.station(&["--json", "provision", "--port", &sim.port]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        events(&again)
            .iter()
            .any(|e| e["event"] == "already_provisioned")
    );
    assert_eq!(st.rows().len(), 1);
    let flash: serde_json::Value =
        serde_json::from_slice(&std::fs::read(st.flash().join("SIM000001.json")).unwrap()).unwrap();
    assert_eq!(flash["commits"], 1, "nothing is rewritten on a re-run");
    st.assert_db_matches_flash();
}

#[test]
fn individual_keys_are_random_stored_and_reused_on_rerun() {
    let cfg = default_config().replace("keys = \"group-derived\"", "keys = \"individual\"");
    let st = StationDir::with_config(&cfg);
    let sim = st.simulator(&["--devices", "2"]);
    let out = st.station(&["provision", "--port", &sim.port, "--count", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let keys: Vec<(String, String, String)> = conn
        .prepare("SELECT device_serial, primary_key, secondary_key FROM enrollments ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0].1, keys[1].1);
    assert_ne!(keys[0].1, keys[0].2);
    for (serial, primary, secondary) in &keys {
        let flash: serde_json::Value = serde_json::from_slice(
            &std::fs::read(st.flash().join(format!("{serial}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            hex(flash["records"]["5"].as_str().unwrap()),
            primary.as_bytes()
        );
        assert_eq!(
            hex(flash["records"]["6"].as_str().unwrap()),
            secondary.as_bytes()
        );
    }
    // Same device again: the stored key is reused, so the device's digest still matches.
    let again = st.station(&["--json", "provision", "--port", &sim.port]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        json_lines(&again)
            .iter()
            .any(|e| e["event"] == "already_provisioned")
    );
    st.assert_db_matches_flash();
}

#[test]
fn scanned_serial_must_match_the_device() {
    let st = StationDir::new();
    let sim = st.simulator(&["--devices", "1"]);
    let wrong = st.station(&["provision", "--port", &sim.port, "--serial", "SIM999999"]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        text(&wrong).contains("device.serial_mismatch"),
        "{}",
        text(&wrong)
    );
    assert!(
        st.rows().is_empty(),
        "nothing is enrolled for a mismatched label"
    );
    let right = st.station(&["provision", "--port", &sim.port, "--serial", "sim000001"]);
    assert!(right.status.success(), "{}", text(&right));
}

#[test]
fn device_with_a_foreign_identity_needs_overwrite_permission() {
    let st = StationDir::new();
    let sim = st.simulator(&["--devices", "1", "--fault", "provisioned:foreign-device-9"]);
    let refused = st.station(&["provision", "--port", &sim.port]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("device.identity_conflict"),
        "{}",
        text(&refused)
    );
    assert!(text(&refused).contains("foreign-device-9"));
    let flash: serde_json::Value =
        serde_json::from_slice(&std::fs::read(st.flash().join("SIM000001.json")).unwrap()).unwrap();
    assert_eq!(
        hex(flash["records"]["3"].as_str().unwrap()),
        b"foreign-device-9"
    );
    assert!(st.rows().iter().all(|r| r.2 != "provisioned"));

    let allowed = st.station(&["provision", "--port", &sim.port, "--allow-overwrite"]);
    assert!(allowed.status.success(), "{}", text(&allowed));
    st.assert_db_matches_flash();
}

#[test]
fn two_devices_mapping_to_one_registration_id_are_refused() {
    let st = StationDir::new();
    let a = st.simulator(&["--devices", "1", "--serial-prefix", "DUP"]);
    assert!(
        st.station(&["provision", "--port", &a.port])
            .status
            .success()
    );
    drop(a);
    // Same label in lower case: DPS IDs are case-insensitive, so this is a duplicate.
    let b = st.simulator(&["--devices", "1", "--serial-prefix", "dup"]);
    let out = st.station(&["provision", "--port", &b.port]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("store.duplicate_registration"),
        "{}",
        text(&out)
    );
    let rows = st.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].1.as_str(), rows[0].2.as_str()),
        ("DUP000001", "provisioned")
    );
    assert!(
        !st.flash().join("dup000001.json").exists(),
        "the duplicate device was never written"
    );
}

#[test]
fn repository_station_toml_provisions_out_of_the_box() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root.join("station.toml"), dir.path().join("station.toml")).unwrap();
    std::fs::create_dir_all(dir.path().join("assets/demo")).unwrap();
    std::fs::copy(
        root.join("assets/demo/group-key.txt"),
        dir.path().join("assets/demo/group-key.txt"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(STATION)
            .current_dir(dir.path())
            .env_remove("STATION_CONFIG")
            .env_remove("STATION_GROUP_KEY")
            .args(args)
            .output()
            .unwrap()
    };
    let doctor = run(&["doctor"]);
    assert!(doctor.status.success(), "{}", text(&doctor));
    let out = run(&["provision", "--count", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out).matches("PASS").count(), 3);
    let export = run(&["export"]);
    assert!(export.status.success(), "{}", text(&export));
    // The CSV, the DPS bulk JSON and the signed manifest.
    assert_eq!(
        dir.path()
            .join("station-data/exports")
            .read_dir()
            .unwrap()
            .count(),
        3
    );
}
