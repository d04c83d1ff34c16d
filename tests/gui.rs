//! The station window, driven headless with egui_kittest by accessible label, against the
//! simulator on a real pty and the real on-disk database.

mod common;
use common::*;
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use provisioning_station::config;
use provisioning_station::gui::app::StationApp;
use std::time::{Duration, Instant};

fn harness(st: &StationDir) -> Harness<'static, StationApp> {
    let cfg = config::load(Some(&st.config())).unwrap();
    Harness::builder()
        .with_size([1280.0, 800.0])
        .build_eframe(move |cc| StationApp::new(&cc.egui_ctx, cfg))
}

/// Step frames until `done` holds, for at most `secs` seconds.
fn wait(
    h: &mut Harness<'static, StationApp>,
    secs: u64,
    mut done: impl FnMut(&mut Harness<'static, StationApp>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        h.step();
        if done(h) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting in the GUI: operator {:?} (typed {:?}), port {:?}, banner {:?}, shift {:?}, history {:?}, db {:?}",
            h.state().operator,
            h.state().operator_input,
            h.state().port,
            h.state().device.banner,
            h.state().shift,
            h.state().history.total,
            h.state().db_error
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn login(h: &mut Harness<'static, StationApp>, operator: &str) {
    wait(h, 10, |h| {
        h.query_by_label("Operator ID (type or scan your badge)")
            .is_some()
    });
    let field = h.get_by_label("Operator ID (type or scan your badge)");
    field.focus();
    field.type_text(operator);
    h.step();
    h.key_press(egui::Key::Enter);
    wait(h, 10, |h| {
        h.state().operator.is_some() && h.query_by_label_contains("Fixture: connected").is_some()
    });
}

fn station_on(port: &str) -> StationDir {
    StationDir::with_config(
        &default_config().replace("port = \"sim\"", &format!("port = \"{port}\"")),
    )
}

#[test]
fn start_with_the_simulator_shows_pass_and_records_the_device() {
    let st = StationDir::new();
    let mut h = harness(&st);
    login(&mut h, "op-7");
    h.get_by_label("Start").click();
    wait(&mut h, 60, |h| h.query_by_label("PASS").is_some());
    assert!(h.query_all_by_label_contains("sim000001").next().is_some());
    let rows = st.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, "provisioned");
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let op: String = conn
        .query_row("SELECT operator FROM attempts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        op, "op-7",
        "the logged-in operator is recorded with the attempt"
    );
    // The shift panel counts it.
    wait(&mut h, 10, |h| h.state().shift.passed == 1);
}

#[test]
fn a_device_fault_shows_fail_with_the_remedy_and_retry_works() {
    let flash = tempfile::tempdir().unwrap();
    let sim = Simulator::start(
        flash.path(),
        &[
            "--devices",
            "2",
            "--fault",
            "nak:commit:6",
            "--fault-device",
            "1",
        ],
    );
    let st = station_on(&sim.port);
    let mut h = harness(&st);
    login(&mut h, "op-1");
    h.get_by_label("Start").click();
    wait(&mut h, 60, |h| h.query_by_label("FAIL").is_some());
    assert!(h.query_all_by_label_contains("device.nak").next().is_some());
    assert!(
        h.query_by_label_contains("What to do: The device refused the step")
            .is_some()
    );
    h.get_by_label("Retry").click();
    wait(&mut h, 60, |h| h.query_by_label("PASS").is_some());
    let statuses: Vec<String> = st.rows().into_iter().map(|r| r.2).collect();
    assert_eq!(statuses, ["failed", "provisioned"]);
}

#[test]
fn a_scanned_barcode_followed_by_enter_starts_the_device() {
    let flash = tempfile::tempdir().unwrap();
    let sim = Simulator::start(flash.path(), &["--devices", "1"]);
    let st = station_on(&sim.port);
    let mut h = harness(&st);
    login(&mut h, "op-1");
    let field = h.get_by_label("Serial number");
    field.focus();
    field.type_text("SIM000001");
    h.step();
    h.key_press(egui::Key::Enter);
    wait(&mut h, 60, |h| h.query_by_label("PASS").is_some());
    assert_eq!(st.rows()[0].1, "SIM000001");
    // A label that is not the device's is refused: the scan really went to the workflow.
    let field = h.get_by_label("Serial number");
    field.focus();
    field.type_text("WRONG-LABEL");
    h.step();
    h.key_press(egui::Key::Enter);
    wait(&mut h, 60, |h| h.query_by_label("FAIL").is_some());
    assert!(
        h.query_all_by_label_contains("device.serial_mismatch")
            .next()
            .is_some()
    );
}

#[test]
fn history_search_finds_a_device_and_export_writes_the_batch() {
    let st = StationDir::new();
    let mut h = harness(&st);
    login(&mut h, "op-1");
    for n in 1..=3 {
        wait(&mut h, 60, |h| !h.state().device.busy);
        h.get_by_label("Start").click();
        let id = format!("sim00000{n}");
        wait(&mut h, 60, |h| {
            h.query_by_label("PASS").is_some()
                && h.query_all_by_label_contains(&id).next().is_some()
        });
    }
    wait(&mut h, 10, |h| h.state().history.total == Some(3));
    let search = h.get_by_label("Search serial or registration ID");
    search.focus();
    search.type_text("sim000002");
    wait(&mut h, 10, |h| {
        h.state().history.total == Some(1) && h.query_by_label("SIM000002").is_some()
    });
    assert!(
        h.query_by_label("SIM000003").is_none(),
        "only the match is listed"
    );

    h.get_by_label("Export batch").click();
    wait(&mut h, 60, |h| {
        h.query_all_by_label_contains("enrollments")
            .next()
            .is_some()
    });
    let files: Vec<_> = std::fs::read_dir(st.path().join("exports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".dps.json"))
    );
}

#[test]
fn the_upload_button_sends_exported_devices_to_dps() {
    let dps = common::dps_server::FakeDps::start();
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dps-policy-key.txt"
    );
    let cfg = default_config()
        + &format!(
            "\n[upload]\nhost = \"my-dps.azure-devices-provisioning.net\"\nendpoint = \"{}\"\npolicy_key_file = \"{key}\"\n",
            dps.url
        );
    let st = StationDir::with_config(&cfg);
    let mut h = harness(&st);
    login(&mut h, "op-1");
    h.get_by_label("Start").click();
    wait(&mut h, 60, |h| h.query_by_label("PASS").is_some());
    h.get_by_label("Export batch").click();
    wait(&mut h, 60, |h| {
        h.query_all_by_label_contains("enrollments")
            .next()
            .is_some()
    });
    h.get_by_label("Upload to DPS").click();
    wait(&mut h, 60, |h| {
        h.query_all_by_label_contains("Uploaded 1, conflicts 0")
            .next()
            .is_some()
    });
    assert!(
        dps.state
            .lock()
            .unwrap()
            .enrollments
            .contains_key("sim000001")
    );
}
