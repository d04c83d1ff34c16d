//! The fault matrix: each fault the simulator injects ends in a correct PASS after bounded
//! retries, or in a clear failure with its code, never a false PASS; the database matches what
//! every device holds.

mod common;
use common::*;

/// Provision one device with `faults` and return (exit code, output text, JSON events).
fn run(st: &StationDir, faults: &[&str]) -> (Option<i32>, String, Vec<serde_json::Value>) {
    let mut args = vec!["--devices", "1"];
    for f in faults {
        args.push("--fault");
        args.push(f);
    }
    let sim = st.simulator(&args);
    let out = st.station(&["--json", "provision", "--port", &sim.port]);
    (out.status.code(), text(&out), json_lines(&out))
}

fn assert_pass(faults: &[&str]) {
    let st = StationDir::new();
    let (code, text, ev) = run(&st, faults);
    assert_eq!(code, Some(0), "{faults:?}: {text}");
    assert!(ev.iter().any(|e| e["event"] == "passed"));
    assert_eq!(st.rows()[0].2, "provisioned");
    st.assert_db_matches_flash();
}

fn assert_fail(faults: &[&str], code: &str) -> StationDir {
    let st = StationDir::new();
    let (exit, text, ev) = run(&st, faults);
    assert_eq!(exit, Some(1), "{faults:?}: {text}");
    assert!(
        !ev.iter().any(|e| e["event"] == "passed"),
        "false PASS under {faults:?}"
    );
    let failed = ev
        .iter()
        .find(|e| e["event"] == "failed")
        .expect("a failed event");
    assert_eq!(failed["code"], code, "{text}");
    assert!(!failed["remedy"].as_str().unwrap().is_empty());
    for r in st.rows() {
        assert_ne!(r.2, "provisioned", "{faults:?}");
        assert_eq!(r.3.as_deref(), Some(code));
    }
    let attempts = st.attempts();
    assert_eq!(attempts.last().unwrap().2.as_deref(), Some(code));
    st.assert_db_matches_flash();
    st
}

#[test]
fn boot_log_noise_is_skipped() {
    assert_pass(&["noise"]);
}

#[test]
fn corrupted_answers_are_retried() {
    assert_pass(&["corrupt:3"]);
}

#[test]
fn dropped_answers_are_retried() {
    assert_pass(&["drop:2"]);
}

#[test]
fn noise_corruption_and_drops_together_still_pass() {
    assert_pass(&["noise", "corrupt:4", "drop:5"]);
}

#[test]
fn device_stalling_mid_write_fails_with_timeout() {
    let st = assert_fail(&["stall:write"], "device.timeout");
    assert!(
        !st.flash().join("SIM000001.json").exists(),
        "nothing was committed"
    );
}

#[test]
fn device_stalling_at_commit_fails_with_timeout() {
    assert_fail(&["stall:commit"], "device.timeout");
}

#[test]
fn unplugged_mid_write_fails_as_disconnected() {
    let st = assert_fail(&["disconnect:write"], "device.disconnected");
    assert!(!st.flash().join("SIM000001.json").exists());
}

#[test]
fn nak_at_commit_fails_with_the_reason() {
    let st = StationDir::new();
    let (_, text, _) = run(&st, &["nak:commit:6"]);
    assert!(text.contains("device storage failure"), "{text}");
    assert_fail(&["nak:commit"], "device.nak");
}

#[test]
fn nak_on_write_fails() {
    assert_fail(&["nak:write:6"], "device.nak");
}

#[test]
fn device_storing_wrong_bytes_never_passes() {
    assert_fail(&["bad-storage"], "device.verify_mismatch");
}

#[test]
fn read_back_lost_after_commit_fails_then_rerun_completes() {
    let st = assert_fail(&["stall:read-digest"], "device.timeout");
    // The device committed but the read-back never came: the row is failed, not provisioned.
    // A re-run on a healthy line finds the identity already there and verifies it.
    let sim = st.simulator(&["--devices", "1"]);
    let out = st.station(&["--json", "provision", "--port", &sim.port]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        json_lines(&out)
            .iter()
            .any(|e| e["event"] == "already_provisioned")
    );
    st.assert_db_matches_flash();
}

#[test]
fn faults_on_one_device_do_not_touch_the_others() {
    let st = StationDir::new();
    let sim = st.simulator(&[
        "--devices",
        "3",
        "--fault",
        "bad-storage",
        "--fault-device",
        "2",
    ]);
    let out = st.station(&["--json", "provision", "--port", &sim.port, "--count", "3"]);
    assert_eq!(out.status.code(), Some(1));
    let statuses: Vec<_> = st.rows().into_iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(
        statuses,
        [
            ("sim000001".to_string(), "provisioned".to_string()),
            ("sim000002".to_string(), "failed".to_string()),
            ("sim000003".to_string(), "provisioned".to_string()),
        ]
    );
    st.assert_db_matches_flash();
}
