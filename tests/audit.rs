//! The audit trail and signed batch manifests: every tampering case is found, and a crash at
//! any moment never leaves a trail that fails to verify.

mod common;
use common::*;
use std::process::{Command, Stdio};

/// A station with `n` provisioned and exported devices.
fn station_with_batch(n: u32) -> (StationDir, serde_json::Value) {
    let st = StationDir::new();
    let sim = st.simulator(&["--devices", &n.to_string()]);
    let out = st.station(&["provision", "--port", &sim.port, "--count", &n.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let export = st.station(&["--json", "export"]);
    assert!(export.status.success(), "{}", text(&export));
    let summary = json_lines(&export).pop().unwrap();
    (st, summary)
}

/// `station audit verify`: (exit code, the problem when broken).
fn verify(st: &StationDir) -> (Option<i32>, String) {
    let out = st.station(&["--json", "audit", "verify"]);
    let report = json_lines(&out)
        .into_iter()
        .find(|e| e.get("entries").is_some())
        .unwrap_or_else(|| panic!("no report: {}", text(&out)));
    let problem = report["first_break"]["problem"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (out.status.code(), problem)
}

/// Change the database as someone with the sqlite3 tool and the trigger text would: the
/// triggers are dropped, `sql` runs, and the triggers are put back exactly as they were.
fn tamper_behind_the_triggers(st: &StationDir, sql: &str) {
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let triggers: Vec<(String, String)> = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!triggers.is_empty());
    for (name, _) in &triggers {
        conn.execute_batch(&format!("DROP TRIGGER {name}")).unwrap();
    }
    conn.execute_batch(sql).unwrap();
    for (_, sql) in &triggers {
        conn.execute_batch(sql).unwrap();
    }
}

#[test]
fn an_untouched_station_verifies_and_its_key_is_printed() {
    let (st, _) = station_with_batch(3);
    assert!(st.station(&["doctor"]).status.success());
    let (code, problem) = verify(&st);
    assert_eq!(code, Some(0), "{problem}");
    let key = st.station(&["audit", "key"]);
    assert!(String::from_utf8_lossy(&key.stdout).starts_with("-----BEGIN PUBLIC KEY-----"));
    let text_out = st.station(&["audit", "verify"]);
    assert!(
        text(&text_out).contains("audit trail intact"),
        "{}",
        text(&text_out)
    );
}

#[test]
fn a_change_made_with_another_sqlite_client_is_refused_by_the_trail() {
    let (st, _) = station_with_batch(1);
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let e = conn
        .execute("UPDATE attempts SET operator = 'mallory'", [])
        .unwrap_err();
    assert!(e.to_string().contains("audit_sha256"), "{e}");
}

#[test]
fn each_tampering_with_the_records_is_found() {
    for (sql, want) in [
        (
            "UPDATE enrollments SET device_serial = 'SIM999999' WHERE registration_id = 'sim000001'",
            "enrollments row 1 was changed outside the station",
        ),
        (
            "DELETE FROM attempts WHERE id = (SELECT MIN(id) FROM attempts)",
            "attempts row 1 was deleted outside the station",
        ),
        (
            "INSERT INTO attempts (registration_id, device_serial, outcome, station, operator, port, started_at, duration_ms) \
             VALUES ('rogue', 'ROGUE1', 'passed', 'test-station', 'x', 'p', '2026-11-30T00:00:00Z', 1)",
            "was inserted outside the station",
        ),
    ] {
        let (st, _) = station_with_batch(2);
        tamper_behind_the_triggers(&st, sql);
        let (code, problem) = verify(&st);
        assert_eq!(code, Some(1), "{sql}: {problem}");
        assert!(problem.contains(want), "{sql}: {problem}");
    }
}

#[test]
fn dropped_triggers_are_restored_and_reported() {
    let (st, _) = station_with_batch(1);
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    conn.execute_batch("DROP TRIGGER audit_attempts_update; UPDATE attempts SET operator = 'x';")
        .unwrap();
    drop(conn);
    let (code, problem) = verify(&st);
    assert_eq!(code, Some(1));
    assert!(problem.contains("audit triggers were removed"), "{problem}");
}

#[test]
fn each_tampering_with_the_trail_itself_is_found() {
    for (sql, want) in [
        (
            "UPDATE audit_log SET kind = 'doctor' WHERE seq = 3",
            "edited outside the station",
        ),
        ("DELETE FROM audit_log WHERE seq = 4", "entry 4 is missing"),
        (
            "UPDATE audit_log SET seq = -1 WHERE seq = 5; UPDATE audit_log SET seq = 5 WHERE seq = 6; \
             UPDATE audit_log SET seq = 6 WHERE seq = -1",
            "does not follow the one before it",
        ),
        (
            "UPDATE audit_signatures SET head_hash = 'x' WHERE id = 1",
            "signed head",
        ),
    ] {
        let (st, _) = station_with_batch(2);
        tamper_behind_the_triggers(&st, sql);
        let (code, problem) = verify(&st);
        assert_eq!(code, Some(1), "{sql}: {problem}");
        assert!(problem.contains(want), "{sql}: {problem}");
    }
}

#[test]
fn batch_files_and_manifests_are_checked_against_the_signature() {
    let (st, summary) = station_with_batch(3);
    let key = String::from_utf8(st.station(&["audit", "key"]).stdout).unwrap();
    let key_file = st.path().join("audit.pub");
    std::fs::write(&key_file, &key).unwrap();
    let dir = st.path().join("exports");
    let batch_verify = |args: &[&str]| {
        let mut a = vec!["batch", "verify", dir.to_str().unwrap()];
        a.extend_from_slice(args);
        st.station(&a)
    };
    let ok = batch_verify(&["--key", key_file.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", text(&ok));
    // An enrollment added to the JSON by hand.
    let json = std::path::PathBuf::from(summary["json"].as_str().unwrap());
    let original = std::fs::read(&json).unwrap();
    let mut bodies: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let mut rogue = bodies[0]["enrollments"][0].clone();
    rogue["registrationId"] = "rogue-device".into();
    bodies[0]["enrollments"].as_array_mut().unwrap().push(rogue);
    std::fs::write(&json, serde_json::to_vec(&bodies).unwrap()).unwrap();
    let bad = batch_verify(&["--key", key_file.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad).contains("differs from the manifest") || text(&bad).contains("bytes"),
        "{}",
        text(&bad)
    );
    std::fs::write(&json, &original).unwrap();
    // A manifest signed by another key (a forged one) is refused with the station's key.
    let manifest = std::path::PathBuf::from(summary["manifest"].as_str().unwrap());
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["count"] = 4.into();
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let forged = batch_verify(&["--key", key_file.to_str().unwrap()]);
    assert_eq!(forged.status.code(), Some(1));
    assert!(
        text(&forged).contains("signature does not verify"),
        "{}",
        text(&forged)
    );
}

#[test]
fn a_manifest_swapped_in_from_another_batch_is_refused() {
    let (st, first) = station_with_batch(2);
    let sim = st.simulator(&["--devices", "2", "--first", "10"]);
    assert!(
        st.station(&["provision", "--port", &sim.port, "--count", "2"])
            .status
            .success()
    );
    let second = json_lines(&st.station(&["--json", "export"]))
        .pop()
        .unwrap();
    let (a, b) = (
        std::path::PathBuf::from(first["manifest"].as_str().unwrap()),
        std::path::PathBuf::from(second["manifest"].as_str().unwrap()),
    );
    std::fs::copy(&a, &b).unwrap();
    let out = st.station(&["batch", "verify", b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("swapped in"), "{}", text(&out));
    // The CSV changed by hand is found too.
    let csv = std::path::PathBuf::from(first["csv"].as_str().unwrap());
    let edited = std::fs::read_to_string(&csv)
        .unwrap()
        .replace("SIM000001", "SIM000009");
    std::fs::write(&csv, edited).unwrap();
    let out = st.station(&["batch", "verify", a.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("differs from the manifest"),
        "{}",
        text(&out)
    );
}

#[test]
fn upload_refuses_a_batch_without_a_valid_manifest_until_it_is_recreated() {
    let (st, summary) = station_with_batch(2);
    let dps = common::dps_server::FakeDps::start();
    let cfg = std::fs::read_to_string(st.config()).unwrap()
        + &format!(
            "\n[upload]\nhost = \"{}\"\npolicy_key_file = \"{}/tests/fixtures/dps-policy-key.txt\"\nrate_per_minute = 1000\n",
            common::dps_server::DPS_HOST,
            env!("CARGO_MANIFEST_DIR")
        );
    std::fs::write(st.config(), cfg).unwrap();
    let manifest = std::path::PathBuf::from(summary["manifest"].as_str().unwrap());
    std::fs::remove_file(&manifest).unwrap();
    let out = st.station(&["--json", "upload", "--endpoint", &dps.url]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let refused = json_lines(&out)
        .into_iter()
        .find(|e| e["event"] == "batch_refused")
        .unwrap();
    assert_eq!(refused["code"], "audit.manifest_invalid");
    assert_eq!(dps.state.lock().unwrap().bulk_calls, 0, "nothing sent");
    // Re-created from the database (byte-identical files, the same signed manifest).
    let batch = summary["batch"].as_str().unwrap();
    assert!(st.station(&["export", "--batch", batch]).status.success());
    let again = st.station(&["--json", "upload", "--endpoint", &dps.url]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(dps.state.lock().unwrap().enrollments.len(), 2);
}

#[test]
fn killing_the_station_at_random_moments_never_breaks_the_trail() {
    let st = StationDir::new();
    let _sim = st.simulator(&["--baud", "57600"]);
    let port = _sim.port.clone();
    let mut seed: u64 = 0x5eed_a0d1;
    for _ in 0..8 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut child = Command::new(STATION)
            .args(["--config", st.config().to_str().unwrap()])
            .args(["--json", "provision", "--port", &port, "--count", "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150 + (seed >> 33) % 600));
        child.kill().unwrap();
        child.wait().unwrap();
        let (code, problem) = verify(&st);
        assert_eq!(code, Some(0), "after a kill: {problem}");
    }
}
