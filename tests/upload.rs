//! Upload to a local server playing DPS: signatures, bulk limits, retries, partial failures,
//! conflicts, dropped connections, interruption and resume, verification.

mod common;
use common::dps_server::{FakeDps, Fault};
use common::*;
use std::process::{Command, Stdio};

const POLICY_KEY_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dps-policy-key.txt"
);

fn station_with_upload(extra: &str) -> StationDir {
    let cfg = default_config()
        + &format!(
            "\n[upload]\nhost = \"my-dps.azure-devices-provisioning.net\"\npolicy_key_file = \"{POLICY_KEY_FILE}\"\n\
             rate_per_minute = 1000\ngive_up_after_s = 20\n{extra}"
        );
    StationDir::with_config(&cfg)
}

fn provision_and_export(st: &StationDir, n: u32) {
    let sim = st.simulator(&["--devices", &n.to_string()]);
    let out = st.station(&["provision", "--port", &sim.port, "--count", &n.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(st.station(&["export"]).status.success());
}

fn upload(st: &StationDir, dps: &FakeDps, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--json", "upload", "--endpoint", &dps.url];
    args.extend_from_slice(extra);
    st.station(&args)
}

fn statuses(st: &StationDir) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let mut stmt = conn
        .prepare("SELECT registration_id, status FROM uploads ORDER BY export_seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn uploads_every_exported_enrollment_exactly_once_in_calls_of_ten() {
    let st = station_with_upload("");
    provision_and_export(&st, 23);
    let dps = FakeDps::start();
    let out = upload(&st, &dps, &[]);
    assert!(out.status.success(), "{}", text(&out));
    {
        let s = dps.state.lock().unwrap();
        assert_eq!(s.bulk_calls, 3, "⌈23/10⌉ calls");
        assert!(
            s.invalid.is_empty(),
            "bodies the swagger refuses: {:?}",
            s.invalid
        );
        assert_eq!(s.unauthorized, 0);
        assert_eq!(s.enrollments.len(), 23);
        assert!(s.creates.values().all(|&c| c == 1));
        // DPS holds exactly the key the device was given.
        let key = String::from_utf8(
            st.station(&["derive-key", "--registration-id", "sim000007"])
                .stdout,
        )
        .unwrap();
        assert_eq!(
            s.enrollments["sim000007"]["attestation"]["symmetricKey"]["primaryKey"],
            key.trim()
        );
    }
    assert_eq!(statuses(&st).len(), 23);
    assert!(statuses(&st).iter().all(|(_, s)| s == "uploaded"));
    let finished = json_lines(&out)
        .into_iter()
        .find(|e| e["event"] == "upload_finished")
        .unwrap();
    assert_eq!(
        (finished["uploaded"].as_u64(), finished["requests"].as_u64()),
        (Some(23), Some(3))
    );
    // Nothing left: a second run sends nothing.
    let again = upload(&st, &dps, &[]);
    assert!(again.status.success());
    assert_eq!(dps.state.lock().unwrap().bulk_calls, 3);
}

#[test]
fn throttling_and_server_errors_are_retried_honouring_retry_after() {
    let st = station_with_upload("");
    provision_and_export(&st, 5);
    let dps = FakeDps::start();
    dps.push_fault(Fault::TooMany { retry_after_s: 1 });
    dps.push_fault(Fault::ServerError);
    let out = upload(&st, &dps, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let retries: Vec<_> = json_lines(&out)
        .into_iter()
        .filter(|e| e["event"] == "retry")
        .collect();
    assert_eq!(retries.len(), 2);
    assert_eq!(retries[0]["status"], 429);
    assert!(
        retries[0]["wait_ms"].as_u64().unwrap() >= 1000,
        "Retry-After honoured"
    );
    assert_eq!(retries[1]["status"], 500);
    assert!(statuses(&st).iter().all(|(_, s)| s == "uploaded"));
    assert!(dps.state.lock().unwrap().creates.values().all(|&c| c == 1));
}

#[test]
fn a_connection_dropped_after_dps_accepted_is_not_a_duplicate() {
    let st = station_with_upload("");
    provision_and_export(&st, 4);
    let dps = FakeDps::start();
    dps.push_fault(Fault::DropAfterAccepting);
    let out = upload(&st, &dps, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let s = dps.state.lock().unwrap();
    assert!(s.creates.values().all(|&c| c == 1), "{:?}", s.creates);
    assert_eq!(s.enrollments.len(), 4);
    drop(s);
    assert!(statuses(&st).iter().all(|(_, s)| s == "uploaded"));
}

#[test]
fn a_different_enrollment_in_dps_is_a_conflict_until_update_is_permitted() {
    let st = station_with_upload("");
    provision_and_export(&st, 3);
    let dps = FakeDps::start();
    dps.hold(serde_json::json!({
        "registrationId": "sim000002",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "c29tZW9uZSBlbHNlJ3Mga2V5IGZvciB0aGlzIGRldmljZQ=="}}
    }));
    let out = upload(&st, &dps, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let conflict = json_lines(&out)
        .into_iter()
        .find(|e| e["event"] == "conflict")
        .unwrap();
    assert_eq!(conflict["registration_id"], "sim000002");
    assert_eq!(conflict["error_code"], 409201);
    let st_now = statuses(&st);
    assert_eq!(st_now.iter().filter(|(_, s)| s == "uploaded").count(), 2);
    assert!(st_now.contains(&("sim000002".to_string(), "conflict".to_string())));

    let updated = upload(&st, &dps, &["--update"]);
    assert!(updated.status.success(), "{}", text(&updated));
    let key = String::from_utf8(
        st.station(&["derive-key", "--registration-id", "sim000002"])
            .stdout,
    )
    .unwrap();
    assert_eq!(
        dps.state.lock().unwrap().enrollments["sim000002"]["attestation"]["symmetricKey"]["primaryKey"],
        key.trim()
    );
    assert!(statuses(&st).iter().all(|(_, s)| s == "uploaded"));
}

#[test]
fn a_wrong_policy_key_is_refused_and_nothing_is_marked_uploaded() {
    let bad_key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad_key.path(), "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=\n").unwrap();
    let st = station_with_upload("");
    let cfg = std::fs::read_to_string(st.config())
        .unwrap()
        .replace(POLICY_KEY_FILE, bad_key.path().to_str().unwrap());
    std::fs::write(st.config(), cfg).unwrap();
    provision_and_export(&st, 2);
    let dps = FakeDps::start();
    let out = upload(&st, &dps, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("upload.unauthorized"), "{}", text(&out));
    assert!(
        !text(&out).contains("d3Jvbmcta2V5"),
        "the key is never printed"
    );
    assert!(statuses(&st).is_empty());
}

#[test]
fn a_service_that_keeps_failing_is_given_up_on_with_nothing_marked() {
    let st = station_with_upload("");
    let cfg = std::fs::read_to_string(st.config())
        .unwrap()
        .replace("give_up_after_s = 20", "give_up_after_s = 2");
    std::fs::write(st.config(), cfg).unwrap();
    provision_and_export(&st, 2);
    let dps = FakeDps::start();
    for _ in 0..20 {
        dps.push_fault(Fault::ServerError);
    }
    let out = upload(&st, &dps, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("upload.gave_up"), "{}", text(&out));
    assert!(statuses(&st).is_empty());
}

#[test]
fn killing_the_uploader_mid_run_and_rerunning_loses_and_duplicates_nothing() {
    let st = station_with_upload("");
    provision_and_export(&st, 60);
    let dps = FakeDps::start();
    dps.state.lock().unwrap().delay = std::time::Duration::from_millis(150);
    let mut child = Command::new(STATION)
        .args([
            "--config",
            st.config().to_str().unwrap(),
            "--json",
            "upload",
            "--endpoint",
            &dps.url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        if line.unwrap().contains("\"event\":\"bulk\"") {
            // Kill while the next call is in flight.
            std::thread::sleep(std::time::Duration::from_millis(100));
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    let partial = statuses(&st).len();
    assert!(
        partial > 0 && partial < 60,
        "killed mid-run: {partial} recorded"
    );
    dps.state.lock().unwrap().delay = std::time::Duration::ZERO;
    let out = upload(&st, &dps, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let s = dps.state.lock().unwrap();
    assert_eq!(s.enrollments.len(), 60);
    assert!(
        s.creates.values().all(|&c| c == 1),
        "nothing created twice: {:?}",
        s.creates
    );
    drop(s);
    assert_eq!(statuses(&st).len(), 60);
    assert!(statuses(&st).iter().all(|(_, s)| s == "uploaded"));
}

#[test]
fn verify_reads_back_and_lists_mismatches() {
    let st = station_with_upload("");
    provision_and_export(&st, 4);
    let dps = FakeDps::start();
    assert!(upload(&st, &dps, &[]).status.success());
    let ok = upload(&st, &dps, &["--verify"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let fin = json_lines(&ok)
        .into_iter()
        .find(|e| e["event"] == "verify_finished")
        .unwrap();
    assert_eq!(
        (fin["checked"].as_u64(), fin["matched"].as_u64()),
        (Some(4), Some(4))
    );
    {
        let mut s = dps.state.lock().unwrap();
        s.enrollments.get_mut("sim000003").unwrap()["attestation"]["symmetricKey"]["primaryKey"] =
            serde_json::json!("Y2hhbmdlZCBpbiB0aGUgcG9ydGFs");
        s.enrollments.remove("sim000004");
    }
    let bad = upload(&st, &dps, &["--verify"]);
    assert_eq!(bad.status.code(), Some(1));
    let mism: Vec<_> = json_lines(&bad)
        .into_iter()
        .filter(|e| e["event"] == "mismatch")
        .collect();
    assert_eq!(mism.len(), 2);
    assert_eq!(mism[0]["registration_id"], "sim000003");
    assert!(
        mism[1]["problem"]
            .as_str()
            .unwrap()
            .contains("does not hold")
    );
}

#[test]
fn dry_run_prints_redacted_requests_and_sends_nothing() {
    let st = station_with_upload("");
    provision_and_export(&st, 12);
    let dps = FakeDps::start();
    let out = upload(&st, &dps, &["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let reqs: Vec<_> = json_lines(&out)
        .into_iter()
        .filter(|e| e["event"] == "request")
        .collect();
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs[0]["authorization"]
            .as_str()
            .unwrap()
            .contains("sig=<redacted>")
    );
    assert_eq!(
        reqs[0]["body"]["enrollments"][0]["attestation"]["symmetricKey"]["primaryKey"],
        "<redacted>"
    );
    assert_eq!(reqs[0]["body"]["enrollments"].as_array().unwrap().len(), 10);
    let s = dps.state.lock().unwrap();
    assert_eq!(s.bulk_calls + s.get_calls, 0);
    drop(s);
    assert!(statuses(&st).is_empty());
}

#[test]
fn upload_without_an_upload_section_says_what_to_add() {
    let st = StationDir::new();
    let out = st.station(&["upload"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("upload.not_configured") && text(&out).contains("[upload]"));
}
