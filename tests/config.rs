//! Every bad configuration names file:line:column, the key, and what is expected; the process
//! exits 2 and touches nothing.

mod common;
use common::*;

/// Apply `edit` to the default config, run `doctor`-free `list`, and check the error.
fn expect_error(from: &str, to: &str, line_col: &str, key: &str, says: &str) {
    let cfg = default_config();
    assert!(cfg.contains(from), "test edit `{from}` not found");
    let st = StationDir::with_config(&cfg.replacen(from, to, 1));
    let out = st.station(&["list"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("config.invalid"), "{err}");
    assert!(
        err.contains(&format!("station.toml:{line_col}")),
        "expected position {line_col}: {err}"
    );
    assert!(
        err.contains(&format!("`{key}`")),
        "expected key {key}: {err}"
    );
    assert!(err.contains(says), "expected `{says}`: {err}");
    assert!(err.contains("fix:"), "{err}");
    assert!(!st.db().exists(), "a bad config touches nothing");
}

#[test]
fn unknown_key_is_named_with_its_position() {
    expect_error(
        "line = \"line-t\"\n",
        "line = \"line-t\"\ncolour = \"blue\"\n",
        "5:1",
        "station.colour",
        "unknown field `colour`",
    );
}

#[test]
fn bad_enum_value_lists_the_allowed_ones() {
    expect_error(
        "allocation_policy = \"hashed\"",
        "allocation_policy = \"roundrobin\"",
        "10:21",
        "dps.allocation_policy",
        "hashed",
    );
}

#[test]
fn wrong_type_is_reported() {
    expect_error(
        "retries = 3",
        "retries = \"three\"",
        "34:11",
        "serial.retries",
        "invalid type",
    );
}

#[test]
fn missing_required_key_is_reported() {
    expect_error(
        "id_scope = \"0ne000TEST1\"\n",
        "",
        "8:1",
        "dps",
        "missing field `id_scope`",
    );
}

#[test]
fn invalid_id_scope_is_reported_at_its_line() {
    expect_error(
        "id_scope = \"0ne000TEST1\"",
        "id_scope = \"0ne 000\"",
        "9:1",
        "dps.id_scope",
        "ID scope",
    );
}

#[test]
fn unknown_template_placeholder_is_reported() {
    expect_error(
        "template = \"{serial}\"",
        "template = \"{serail}\"",
        "21:1",
        "registration.template",
        "{serail}",
    );
}

#[test]
fn template_without_a_per_device_value_is_refused() {
    expect_error(
        "template = \"{serial}\"",
        "template = \"{line}\"",
        "21:1",
        "registration.template",
        "every device",
    );
}

#[test]
fn bad_port_is_reported() {
    expect_error(
        "port = \"sim\"",
        "port = \"COM3\"",
        "31:1",
        "serial.port",
        "/dev/ttyUSB0",
    );
}

#[test]
fn auto_port_needs_usb_ids() {
    expect_error(
        "port = \"sim\"",
        "port = \"auto\"",
        "30:1",
        "serial.usb_ids",
        "VID:PID",
    );
}

#[test]
fn malformed_usb_id_is_reported() {
    expect_error(
        "port = \"sim\"",
        "port = \"auto\"\nusb_ids = [\"0403-6001\"]",
        "32:1",
        "serial.usb_ids",
        "0403-6001",
    );
}

#[test]
fn static_allocation_needs_exactly_one_hub() {
    expect_error(
        "allocation_policy = \"hashed\"",
        "allocation_policy = \"static\"",
        "11:1",
        "dps.iot_hubs",
        "exactly one hub",
    );
}

#[test]
fn group_derived_keys_need_a_key_source() {
    let cfg = default_config();
    let line = cfg
        .lines()
        .find(|l| l.starts_with("group_key_file"))
        .unwrap()
        .to_string();
    expect_error(
        &line,
        "",
        "27:1",
        "attestation.symmetric.keys",
        "group_key_file or group_key_env",
    );
}

#[test]
fn missing_key_file_is_a_secret_error_that_does_not_leak() {
    let cfg = default_config().replace(GROUP_KEY_FILE, "/nonexistent/key.txt");
    let st = StationDir::with_config(&cfg);
    let out = st.station(&["provision", "--port", "/dev/null"]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("config.secret") && t.contains("/nonexistent/key.txt"),
        "{t}"
    );
}

#[test]
fn group_key_from_environment_wins_and_is_never_printed() {
    let st = StationDir::new();
    let cfg = std::fs::read_to_string(st.config()).unwrap().replace(
        "keys = \"group-derived\"",
        "keys = \"group-derived\"\ngroup_key_env = \"TEST_GROUP_KEY\"",
    );
    std::fs::write(st.config(), cfg).unwrap();
    let key = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    let from_env = std::process::Command::new(STATION)
        .args([
            "--config",
            st.config().to_str().unwrap(),
            "derive-key",
            "--registration-id",
            "sn-1",
        ])
        .env("TEST_GROUP_KEY", key)
        .output()
        .unwrap();
    let from_file = st.station(&["derive-key", "--registration-id", "sn-1"]);
    assert!(from_env.status.success() && from_file.status.success());
    assert_ne!(from_env.stdout, from_file.stdout);
    assert!(!text(&from_env).contains(key));
    let bad = std::process::Command::new(STATION)
        .args([
            "--config",
            st.config().to_str().unwrap(),
            "derive-key",
            "--registration-id",
            "sn-1",
        ])
        .env("TEST_GROUP_KEY", "secret-but-not-base64!")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad).contains("TEST_GROUP_KEY") && !text(&bad).contains("secret-but-not-base64"),
        "{}",
        text(&bad)
    );
}

#[test]
fn station_config_env_selects_the_file_and_a_missing_file_is_clear() {
    let st = StationDir::new();
    let out = std::process::Command::new(STATION)
        .args(["list"])
        .env("STATION_CONFIG", st.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let missing = std::process::Command::new(STATION)
        .args(["list"])
        .env("STATION_CONFIG", "/nonexistent/station.toml")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing).contains("config.unreadable")
            && text(&missing).contains("/nonexistent/station.toml")
    );
}
