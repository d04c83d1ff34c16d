//! The command line's contract: exit codes, JSON lines, derive-key, doctor, help.

mod common;
use common::*;

#[test]
fn derive_key_matches_an_independent_computation() {
    // tests/fixtures/derive-sn-0001.txt was computed with Python's hmac module from the test
    // group key (see the unit test in src/attestation/symmetric.rs).
    let st = StationDir::new();
    let out = st.station(&["derive-key", "--registration-id", "sn-0001"]);
    assert!(out.status.success(), "{}", text(&out));
    let expected = include_str!("fixtures/derive-sn-0001.txt").trim();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
    let json = st.station(&["--json", "derive-key", "--registration-id", "sn-0001"]);
    assert_eq!(json_lines(&json)[0]["derived_key"], expected);
}

#[test]
fn derive_key_refuses_an_invalid_registration_id_with_the_rule() {
    let st = StationDir::new();
    let out = st.station(&["derive-key", "--registration-id", "Bad ID"]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("registration.invalid_id") && t.contains("not allowed"),
        "{t}"
    );
}

#[test]
fn errors_in_json_mode_are_one_json_line() {
    let st = StationDir::new();
    let out = st.station(&["--json", "export", "--batch", "missing"]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["event"], "error");
    assert_eq!(lines[0]["code"], "export.batch_not_found");
    assert!(lines[0]["remedy"].as_str().unwrap().len() > 10);
}

#[test]
fn a_port_that_cannot_be_opened_is_an_environment_error() {
    let st = StationDir::new();
    let out = st.station(&["provision", "--port", "/dev/ttyNOPE0"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("device.port_unavailable") && text(&out).contains("/dev/ttyNOPE0"));
}

#[test]
fn doctor_passes_on_a_good_station_and_names_fixes_on_a_bad_one() {
    let st = StationDir::new();
    let ok = st.station(&["doctor"]);
    assert!(ok.status.success(), "{}", text(&ok));
    for check in ["config", "credential", "database", "export dir", "port"] {
        assert!(text(&ok).contains(check), "{check} missing: {}", text(&ok));
    }
    let cfg = std::fs::read_to_string(st.config())
        .unwrap()
        .replace("port = \"sim\"", "port = \"/dev/ttyNOPE0\"");
    std::fs::write(st.config(), cfg).unwrap();
    let bad = st.station(&["--json", "doctor"]);
    assert_eq!(bad.status.code(), Some(3));
    let port = json_lines(&bad)
        .into_iter()
        .find(|c| c["check"] == "port")
        .unwrap();
    assert_eq!(port["ok"], false);
    assert!(port["fix"].as_str().unwrap().contains("port"));
}

#[test]
fn list_shows_counts_and_searches() {
    let st = StationDir::new();
    let sim = st.simulator(&["--devices", "3"]);
    assert!(
        st.station(&["provision", "--port", &sim.port, "--count", "3"])
            .status
            .success()
    );
    let out = st.station(&["--json", "list", "--search", "SIM000002"]);
    let lines = json_lines(&out);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["registration_id"] == "sim000002")
            .count(),
        1
    );
    assert_eq!(lines.last().unwrap()["counts"]["provisioned"], 3);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("primary_key"),
        "keys never listed"
    );
}

#[test]
fn help_lists_the_commands_and_no_subcommand_opens_the_window() {
    let out = std::process::Command::new(STATION)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("provision"));
    // Without a display the window cannot open: a clear environment error, not a crash.
    let st = StationDir::new();
    let out = std::process::Command::new(STATION)
        .args(["--config", st.config().to_str().unwrap()])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("cannot open the station window"),
        "{}",
        text(&out)
    );
}

#[test]
fn simulate_rejects_an_unknown_fault() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(STATION)
        .args([
            "simulate",
            "--flash",
            dir.path().to_str().unwrap(),
            "--fault",
            "gremlins",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unknown fault `gremlins`"));
}
