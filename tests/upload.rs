//! Upload to a local server playing DPS: signatures, bulk limits, retries, partial failures,
//! conflicts, dropped connections, interruption and resume, verification.

mod common;
use common::dps_server::{FakeDps, Fault};
use common::*;
use serde_json::json;
use std::collections::HashMap;

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
        (Some(23), Some(4)),
        "3 bulk calls and one query page reading back the etags"
    );
    assert_eq!(finished["etags_recorded"], 23);
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
fn a_failed_bulk_answer_without_errors_marks_only_what_dps_holds() {
    let st = station_with_upload("");
    provision_and_export(&st, 5);
    let dps = FakeDps::start();
    // DPS stores 3 of the 5 and answers {"isSuccessful": false, "errors": []}.
    dps.push_fault(Fault::FailedWithoutErrors { accept: 3 });
    let out = upload(&st, &dps, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let now = statuses(&st);
    assert_eq!(
        now.iter().filter(|(_, s)| s == "uploaded").count(),
        3,
        "{now:?}"
    );
    assert_eq!(
        now.iter().filter(|(_, s)| s == "failed").count(),
        2,
        "{now:?}"
    );
    for (id, s) in &now {
        let held = dps.state.lock().unwrap().enrollments.contains_key(id);
        assert_eq!(
            s == "uploaded",
            held,
            "{id} marked {s}, held by DPS: {held}"
        );
    }
    assert!(
        dps.state.lock().unwrap().mechanism_calls >= 5,
        "each item asked about"
    );
    // The next run sends the two DPS did not take, once.
    let again = upload(&st, &dps, &[]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(statuses(&st).iter().all(|(_, s)| s == "uploaded"));
    let s = dps.state.lock().unwrap();
    assert_eq!(s.enrollments.len(), 5);
    assert!(s.creates.values().all(|&c| c == 1), "{:?}", s.creates);
}

#[test]
fn a_per_item_error_fails_that_item_alone() {
    let st = station_with_upload("");
    provision_and_export(&st, 4);
    let dps = FakeDps::start();
    dps.push_fault(Fault::ItemError {
        registration_id: "sim000002".into(),
        error_code: 400004,
        error_status: "Endorsement key is invalid".into(),
    });
    let out = upload(&st, &dps, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed = finished(&out, "item_failed");
    assert_eq!(
        (&failed["registration_id"], &failed["error_code"]),
        (&json!("sim000002"), &json!(400004))
    );
    let now = statuses(&st);
    assert!(now.contains(&("sim000002".to_string(), "failed".to_string())));
    assert_eq!(now.iter().filter(|(_, s)| s == "uploaded").count(), 3);
}

#[test]
fn both_symmetric_keys_are_sent_and_the_random_secondary_is_kept() {
    let st = station_with_upload("");
    provision_and_export(&st, 3);
    let dps = FakeDps::start();
    assert!(upload(&st, &dps, &[]).status.success());
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let stored: String = conn
        .query_row(
            "SELECT secondary_key FROM enrollments WHERE registration_id = 'sim000001'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let s = dps.state.lock().unwrap();
    for e in s.enrollments.values() {
        let k = &e["attestation"]["symmetricKey"];
        let (p, q) = (
            k["primaryKey"].as_str().unwrap(),
            k["secondaryKey"].as_str(),
        );
        let q = q.expect("secondaryKey is always sent");
        assert_eq!(q.len(), 44, "base64 of 32 random bytes");
        assert_ne!(p, q);
    }
    assert_eq!(
        s.enrollments["sim000001"]["attestation"]["symmetricKey"]["secondaryKey"],
        stored.as_str()
    );
}

#[test]
fn an_enrollment_recorded_without_a_secondary_key_gets_one_kept_for_dps() {
    // What an older station recorded: a derived primary and no secondary key.
    let st = station_with_upload("");
    provision_and_export(&st, 2);
    {
        let conn = writable_db(&st.db());
        conn.execute_batch(
            "DROP TRIGGER enrollments_provisioned_are_immutable; \
             UPDATE enrollments SET secondary_key = NULL;",
        )
        .unwrap();
    }
    let dps = FakeDps::start();
    assert!(upload(&st, &dps, &[]).status.success());
    let sent = |id: &str| {
        dps.state.lock().unwrap().enrollments[id]["attestation"]["symmetricKey"]["secondaryKey"]
            .as_str()
            .map(str::to_string)
    };
    let first = sent("sim000001").expect("a secondary key is sent");
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let kept: String = conn
        .query_row(
            "SELECT k.secondary_key FROM dps_secondary_keys k JOIN enrollments e \
             ON e.export_seq = k.export_seq WHERE e.registration_id = 'sim000001'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(first, kept);
    // The same key is compared (and would be sent) again: --deep reads every attestation.
    let v = upload(&st, &dps, &["--verify", "--deep"]);
    assert!(v.status.success(), "{}", text(&v));
    assert_eq!(finished(&v, "verify_finished")["matched"], 2);
}

#[test]
fn the_token_is_for_the_configured_dps_host_not_the_endpoint() {
    // The server answers on 127.0.0.1:<port> but accepts only tokens for DPS_HOST.
    let st = station_with_upload("");
    provision_and_export(&st, 2);
    let dps = FakeDps::start();
    assert!(upload(&st, &dps, &[]).status.success());
    assert_eq!(dps.state.lock().unwrap().unauthorized, 0);
    let other = FakeDps::start_for("another-dps.azure-devices-provisioning.net");
    let out = upload(&st, &other, &["--verify"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("upload.unauthorized"));
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    let st = station_with_upload("");
    provision_and_export(&st, 2);
    let dps = FakeDps::start();
    dps.push_fault(Fault::TooManyUntilDate { seconds: 3 });
    let out = upload(&st, &dps, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let retry = finished(&out, "retry");
    assert_eq!(retry["status"], 429);
    // A date has one-second resolution: at least 2 s of the 3 remain when it is read.
    assert!(retry["wait_ms"].as_u64().unwrap() >= 2000, "{retry}");
    assert!(statuses(&st).iter().all(|(_, s)| s == "uploaded"));
}

#[test]
fn upload_reports_progress_with_counts_and_time_left() {
    let st = station_with_upload("");
    provision_and_export(&st, 25);
    let dps = FakeDps::start();
    let out = upload(&st, &dps, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let progress: Vec<_> = json_lines(&out)
        .into_iter()
        .filter(|e| e["event"] == "progress" && e["phase"] == "upload")
        .collect();
    assert_eq!(progress.len(), 3, "one per bulk call");
    assert_eq!(progress[0]["done"], 10);
    assert!(progress[0]["eta_s"].is_u64());
    let last = progress.last().unwrap();
    assert_eq!(
        (last["done"].as_u64(), last["total"].as_u64()),
        (Some(25), Some(25))
    );
    assert_eq!(last["ok"], 25);
    // Text mode, not a terminal: plain lines, no carriage returns.
    let st2 = station_with_upload("");
    provision_and_export(&st2, 12);
    let t = st2.station(&["upload", "--endpoint", &FakeDps::start().url]);
    let stdout = String::from_utf8_lossy(&t.stdout).into_owned();
    assert!(t.status.success(), "{}", text(&t));
    assert!(!stdout.contains('\r'), "{stdout}");
    assert!(stdout.contains("Uploading     10/12  83%"), "{stdout}");
    assert!(stdout.contains("Uploading     12/12 100%"), "{stdout}");
}

#[test]
fn the_same_keys_with_other_settings_are_a_conflict_not_an_upload() {
    let st = station_with_upload("");
    provision_and_export(&st, 2);
    // DPS already holds sim000002 with exactly our keys, but disabled and on another hub.
    let primary = String::from_utf8(
        st.station(&["derive-key", "--registration-id", "sim000002"])
            .stdout,
    )
    .unwrap();
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let secondary: String = conn
        .query_row(
            "SELECT secondary_key FROM enrollments WHERE registration_id = 'sim000002'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let dps = FakeDps::start();
    dps.hold(json!({
        "registrationId": "sim000002",
        "attestation": {"type": "symmetricKey",
            "symmetricKey": {"primaryKey": primary.trim(), "secondaryKey": secondary}},
        "provisioningStatus": "disabled",
        "iotHubs": ["old-hub.azure-devices.net"],
    }));
    let out = upload(&st, &dps, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let c = finished(&out, "conflict");
    assert_eq!(c["registration_id"], "sim000002");
    let why = c["error_status"].as_str().unwrap();
    assert!(
        why.contains("provisioningStatus") && why.contains("iotHubs"),
        "{why}"
    );
    assert!(!why.contains(primary.trim()) && !why.contains(&secondary));
    assert!(statuses(&st).contains(&("sim000002".to_string(), "conflict".to_string())));
    // --update makes DPS hold what the station recorded.
    assert!(upload(&st, &dps, &["--update"]).status.success());
    assert_eq!(
        dps.shown("sim000002").unwrap()["provisioningStatus"],
        "enabled"
    );
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

/// Found while writing the `dps_answers` fuzz target: the client added the Retry-After wait to
/// the time already spent, and `Retry-After: 18446744073709551615` after a second of retries
/// overflowed that addition (a panic) instead of being a wait too long to honour.
#[test]
fn a_retry_after_too_large_to_add_is_given_up_on_not_a_panic() {
    let st = station_with_upload("");
    provision_and_export(&st, 1);
    let dps = FakeDps::start();
    // Backoffs of at least 0.25, 0.5 and 1 s: more than a second has passed when it comes.
    for _ in 0..3 {
        dps.push_fault(Fault::ServerError);
    }
    dps.push_fault(Fault::TooMany {
        retry_after_s: u64::MAX,
    });
    let out = upload(&st, &dps, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("upload.gave_up"), "{}", text(&out));
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
    assert!(statuses(&st).is_empty());
}

#[test]
fn killing_the_uploader_mid_run_and_rerunning_loses_and_duplicates_nothing() {
    let st = station_with_upload("");
    provision_and_export(&st, 60);
    let dps = FakeDps::start();
    // Killed while its second bulk call is in flight.
    let config = st.config();
    dps.kill_uploader_mid_call(&[
        "--config",
        config.to_str().unwrap(),
        "--json",
        "upload",
        "--endpoint",
        &dps.url,
    ]);
    let partial = statuses(&st).len();
    assert!(
        partial > 0 && partial < 60,
        "killed mid-run: {partial} recorded"
    );
    dps.let_go();
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
fn verify_reports_every_field_dps_holds_differently() {
    let st = station_with_upload("");
    provision_and_export(&st, 5);
    let dps = FakeDps::start();
    assert!(upload(&st, &dps, &[]).status.success());
    let ok = upload(&st, &dps, &["--verify"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let fin = finished(&ok, "verify_finished");
    assert_eq!(
        (fin["checked"].as_u64(), fin["matched"].as_u64()),
        (Some(5), Some(5))
    );
    let portal_key = "Y2hhbmdlZCBpbiB0aGUgcG9ydGFsIGJ5IHNvbWVvbmU=";
    dps.modify("sim000001", |e| e["provisioningStatus"] = json!("disabled"));
    dps.modify("sim000002", |e| {
        e["iotHubs"] = json!(["other-hub.azure-devices.net"]);
        // Configured: re-provision and reset (true, false).
        e["reprovisionPolicy"] = json!({"updateHubAssignment": false, "migrateDeviceData": true});
        e["allocationPolicy"] = json!("static");
    });
    dps.modify("sim000003", |e| {
        e["attestation"]["symmetricKey"]["primaryKey"] = json!(portal_key)
    });
    dps.modify("sim000004", |e| {
        e["initialTwin"]["tags"]["environment"] = json!("test")
    });
    dps.state.lock().unwrap().enrollments.remove("sim000005");
    let bad = upload(&st, &dps, &["--verify"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        !text(&bad).contains(portal_key),
        "key values are never printed"
    );
    let mism: HashMap<String, Vec<String>> = json_lines(&bad)
        .into_iter()
        .filter(|e| e["event"] == "mismatch")
        .map(|e| {
            let d = e["differences"].as_array().unwrap();
            (
                e["registration_id"].as_str().unwrap().to_string(),
                d.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(mism.len(), 5, "{mism:?}");
    assert_eq!(
        mism["sim000001"],
        vec![r#"provisioningStatus: sent "enabled", DPS holds "disabled""#]
    );
    let fields = |id: &str| -> Vec<String> {
        mism[id]
            .iter()
            .map(|d| d.split([':', ' ']).next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        sorted(fields("sim000002")),
        sorted(vec![
            "allocationPolicy".into(),
            "iotHubs".into(),
            "reprovisionPolicy.migrateDeviceData".into(),
            "reprovisionPolicy.updateHubAssignment".into(),
        ])
    );
    assert_eq!(
        mism["sim000003"],
        vec!["attestation.symmetricKey.primaryKey differs"]
    );
    assert_eq!(fields("sim000004"), vec!["initialTwin.tags.environment"]);
    assert_eq!(mism["sim000005"], vec!["DPS does not hold this enrollment"]);
    let fin = finished(&bad, "verify_finished");
    assert_eq!(
        (fin["mismatched"].as_u64(), fin["missing"].as_u64()),
        (Some(5), Some(1))
    );
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn finished(out: &std::process::Output, event: &str) -> serde_json::Value {
    json_lines(out)
        .into_iter()
        .find(|e| e["event"] == event)
        .unwrap_or_else(|| panic!("no {event}: {}", text(out)))
}

#[test]
fn verifying_unchanged_enrollments_reads_query_pages_not_attestations() {
    let st = station_with_upload("query_page_size = 10\n");
    provision_and_export(&st, 25);
    let dps = FakeDps::start();
    let up = upload(&st, &dps, &[]);
    assert!(up.status.success(), "{}", text(&up));
    assert_eq!(finished(&up, "upload_finished")["etags_recorded"], 25);
    let calls = |dps: &FakeDps| {
        let s = dps.state.lock().unwrap();
        (s.query_calls, s.mechanism_calls, s.get_calls)
    };
    let before = calls(&dps);
    let v = upload(&st, &dps, &["--verify"]);
    assert!(v.status.success(), "{}", text(&v));
    let after = calls(&dps);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (3, 0, 0),
        "25 unchanged enrollments: 3 pages of 10, no attestation read, no GET"
    );
    let fin = finished(&v, "verify_finished");
    assert_eq!(
        (fin["requests"].as_u64(), fin["matched"].as_u64()),
        (Some(3), Some(25))
    );
    // One changed enrollment: its attestation alone is read again.
    dps.modify("sim000007", |e| {
        e["initialTwin"]["tags"]["environment"] = json!("production")
    });
    let once = upload(&st, &dps, &["--verify"]);
    assert!(once.status.success(), "{}", text(&once));
    assert_eq!(finished(&once, "verify_finished")["attestation_reads"], 1);
    // --deep reads every attestation.
    let deep = upload(&st, &dps, &["--verify", "--deep"]);
    assert!(deep.status.success(), "{}", text(&deep));
    assert_eq!(finished(&deep, "verify_finished")["attestation_reads"], 25);
}

#[test]
fn registrations_say_which_devices_came_up_where() {
    let st = station_with_upload("");
    provision_and_export(&st, 5);
    let dps = FakeDps::start();
    assert!(upload(&st, &dps, &[]).status.success());
    dps.register(
        "sim000001",
        json!({"status": "assigned", "assignedHub": "hub-a.azure-devices.net", "deviceId": "sim000001"}),
    );
    dps.register(
        "sim000002",
        json!({"status": "assigned", "assignedHub": "hub-b.azure-devices.net", "deviceId": "sim000002"}),
    );
    dps.register(
        "sim000003",
        json!({"status": "failed", "errorCode": 401002, "errorMessage": "The device is unauthorized"}),
    );
    let out = upload(&st, &dps, &["--verify", "--registrations"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed registration is a finding: {}",
        text(&out)
    );
    let r = finished(&out, "registrations_finished");
    assert_eq!(r["checked"], 5);
    assert_eq!(
        r["assigned"],
        json!({"hub-a.azure-devices.net": 1, "hub-b.azure-devices.net": 1})
    );
    assert_eq!(
        (r["failed"].as_u64(), r["never_seen"].as_u64()),
        (Some(1), Some(2))
    );
    let failed = finished(&out, "registration");
    assert_eq!(failed["registration_id"], "sim000003");
    assert_eq!(failed["error"], "401002: The device is unauthorized");
    assert_eq!(dps.state.lock().unwrap().registration_calls, 5);
    // Recorded with the enrollment.
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let hub: String = conn
        .query_row(
            "SELECT assigned_hub FROM uploads WHERE registration_id = 'sim000002'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(hub, "hub-b.azure-devices.net");
    // Text mode summarises per hub.
    let t = st.station(&[
        "upload",
        "--endpoint",
        &dps.url,
        "--verify",
        "--registrations",
    ]);
    let t = text(&t);
    assert!(t.contains("2 registered, 2 never seen, 1 failed"), "{t}");
    assert!(t.contains("1 on hub-a.azure-devices.net"), "{t}");
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
