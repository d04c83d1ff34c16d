//! The station window, driven headless with egui_kittest by accessible label, against the
//! simulator on a real pty and the real on-disk database.

mod common;
/// The fleet database's state in the header (`[fleet]`).
#[path = "gui/fleet.rs"]
mod fleet;
/// Several fixtures (a gang): the tiles.
#[path = "gui/gang.rs"]
mod gang;
/// Device labels (`[label]`): printing after a PASS, the preview, the printer's error, reprint.
#[path = "gui/labels.rs"]
mod labels;
use common::*;
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use provisioning_station::ErrorCode;
use provisioning_station::config;
use provisioning_station::domain::event::{
    Phase, Progress, RegistrationState, RegistrationSummary, UploadSummary, VerifySummary,
};
use provisioning_station::gui::app::StationApp;
use provisioning_station::gui::jobs_view::RegistrationCheck;
use provisioning_station::station::{JobOutcome, Problem};
use std::time::{Duration, Instant};

fn harness(st: &StationDir) -> Harness<'static, StationApp> {
    harness_sized(st, [1280.0, 800.0])
}

/// The window on `st`'s station.toml in a screen of `size` pixels.
fn harness_sized(st: &StationDir, size: [f32; 2]) -> Harness<'static, StationApp> {
    let cfg = config::load(Some(&st.config())).unwrap();
    Harness::builder()
        .with_size(size)
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
            "timed out waiting in the GUI: operator {:?} (typed {:?}), fixtures (label, port, banner) {:?}, shift {:?}, history {:?}, db {:?}",
            h.state().operator,
            h.state().operator_input,
            h.state()
                .fixtures
                .iter()
                .map(|f| (&f.label, &f.port, &f.device.banner))
                .collect::<Vec<_>>(),
            h.state().shift,
            h.state().history.total,
            h.state().db_error
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Click the button `label` once it is enabled: a result shows (a FAIL banner, an export's
/// summary) a moment before its worker is free again and the buttons come back.
fn click_when_enabled(h: &mut Harness<'static, StationApp>, label: &str) {
    wait(h, 60, |h| {
        h.query_by_label(label)
            .is_some_and(|b| !b.accesskit_node().is_disabled())
    });
    h.get_by_label(label).click();
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
    let conn = common::read_only(&st.db()).unwrap();
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
    click_when_enabled(&mut h, "Retry");
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
        wait(&mut h, 60, |h| !h.state().fixtures[0].device.busy);
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

    click_when_enabled(&mut h, "Export batch");
    wait(&mut h, 60, |h| {
        h.query_all_by_label_contains("enrollments")
            .next()
            .is_some()
    });
    let files: Vec<_> = std::fs::read_dir(st.path().join("exports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // The batch's CSV and DPS JSON (whatever else an export writes beside them).
    for suffix in [".csv", ".dps.json"] {
        assert_eq!(
            files
                .iter()
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .count(),
            1,
            "{suffix} in {files:?}"
        );
    }
}

/// A station that uploads to the DPS at `endpoint`.
fn uploading_station(endpoint: &str) -> StationDir {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dps-policy-key.txt"
    );
    let cfg = default_config()
        + &format!(
            "\n[upload]\nhost = \"my-dps.azure-devices-provisioning.net\"\nendpoint = \"{endpoint}\"\npolicy_key_file = \"{key}\"\n"
        );
    StationDir::with_config(&cfg)
}

#[test]
fn the_upload_button_sends_exported_devices_to_dps() {
    let dps = common::dps_server::FakeDps::start();
    let st = uploading_station(&dps.url);
    let mut h = harness(&st);
    login(&mut h, "op-1");
    h.get_by_label("Start").click();
    wait(&mut h, 60, |h| h.query_by_label("PASS").is_some());
    click_when_enabled(&mut h, "Export batch");
    wait(&mut h, 60, |h| {
        h.query_all_by_label_contains("enrollments")
            .next()
            .is_some()
    });
    click_when_enabled(&mut h, "Upload to DPS");
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
    // Verify against the same DPS: the device has registered on hub-a.
    dps.register(
        "sim000001",
        serde_json::json!({"status": "assigned", "assignedHub": "hub-a.azure-devices.net"}),
    );
    click_when_enabled(&mut h, "Verify with DPS");
    wait(&mut h, 60, |h| {
        h.query_all_by_label_contains("Verified 1: 1 match, 0 mismatch")
            .next()
            .is_some()
    });
    assert!(
        h.query_all_by_label_contains("hub-a.azure-devices.net")
            .next()
            .is_some()
    );
    assert_eq!(dps.state.lock().unwrap().registration_calls, 1);
}

/// A DPS failure as the jobs thread reports it.
fn problem(code: ErrorCode, message: &str) -> Problem {
    Problem {
        code,
        message: message.into(),
        remedy: code.remedy(),
    }
}

fn has_text(h: &Harness<'static, StationApp>, text: &str) -> bool {
    h.query_all_by_label_contains(text).next().is_some()
}

#[test]
fn progress_shows_a_bar_with_phase_and_counts_until_the_job_ends() {
    let dps = common::dps_server::FakeDps::start();
    let st = uploading_station(&dps.url);
    let mut h = harness(&st);
    login(&mut h, "op-1");
    let progress = Progress {
        done: 250,
        requests: 25,
        ok: 240,
        failed: 10,
        eta_s: Some(65),
        ..Progress::new(Phase::Upload, 1000)
    };
    h.state_mut().inject_outcome(JobOutcome::Event(
        provisioning_station::domain::Event::Progress(progress),
    ));
    h.step();
    let bar = h.get_by_role_and_label(
        egui::accesskit::Role::ProgressIndicator,
        "Uploading 250/1000 (25 %)",
    );
    assert_eq!(bar.accesskit_node().numeric_value(), Some(25.0));
    assert!(has_text(
        &h,
        "25 calls · 240 accepted · 0 conflicts · 10 failed · 1m05s left"
    ));

    let summary = UploadSummary {
        requests: 100,
        uploaded: 990,
        failed: 10,
        ..Default::default()
    };
    h.state_mut()
        .inject_outcome(JobOutcome::Uploaded(Ok(summary)));
    h.step();
    assert!(
        h.query_by_role(egui::accesskit::Role::ProgressIndicator)
            .is_none()
    );
    assert!(!has_text(&h, "240 accepted"));
    assert!(has_text(
        &h,
        "Uploaded 990, conflicts 0, failed 10 (100 requests)"
    ));

    // An export's progress shows under Export, and goes with its outcome too.
    let export = Progress {
        done: 200,
        ok: 200,
        ..Progress::new(Phase::Export, 1000)
    };
    h.state_mut().inject_outcome(JobOutcome::Event(
        provisioning_station::domain::Event::Progress(export),
    ));
    h.step();
    assert!(h.query_by_label("Exporting 200/1000 (20 %)").is_some());
    assert!(has_text(
        &h,
        "200 written · 0 failed · estimating time left"
    ));
    h.state_mut().inject_outcome(JobOutcome::Exported(Ok(None)));
    h.step();
    assert!(
        h.query_by_role(egui::accesskit::Role::ProgressIndicator)
            .is_none()
    );
    assert!(has_text(&h, "Nothing to export"));
}

#[test]
fn verification_with_mismatches_and_failed_registrations_says_so_in_red() {
    let dps = common::dps_server::FakeDps::start();
    let st = uploading_station(&dps.url);
    let mut h = harness(&st);
    login(&mut h, "op-1");
    assert!(h.query_by_label("Verify with DPS").is_some());
    let verify = VerifySummary {
        requests: 12,
        checked: 100,
        matched: 97,
        mismatched: 3,
        missing: 1,
        ..Default::default()
    };
    let registrations = RegistrationSummary {
        requests: 100,
        checked: 100,
        assigned: [
            ("hub-a.azure-devices.net".to_string(), 80),
            ("hub-b.azure-devices.net".to_string(), 10),
        ]
        .into(),
        assigning: 1,
        failed: 2,
        never_seen: 7,
        ..Default::default()
    };
    h.state_mut()
        .inject_outcome(JobOutcome::Verified(Ok((verify, registrations.clone()))));
    h.step();
    assert!(has_text(
        &h,
        "Attention: 3 enrollments differ from DPS (1 not held by DPS), 2 devices failed to register"
    ));
    assert!(has_text(
        &h,
        "Verified 100: 97 match, 3 mismatch (1 not held by DPS)"
    ));
    assert!(has_text(
        &h,
        "Registered 90 of 100: never seen 7, failed 2, assigning 1, unassigned 0, disabled 0"
    ));
    assert!(has_text(&h, "80 on hub-a.azure-devices.net"));
    assert!(has_text(&h, "10 on hub-b.azure-devices.net"));

    // All matched, devices not up yet: amber, not red.
    let clean = VerifySummary {
        checked: 100,
        matched: 100,
        ..Default::default()
    };
    let waiting = RegistrationSummary {
        checked: 100,
        never_seen: 100,
        ..Default::default()
    };
    h.state_mut()
        .inject_outcome(JobOutcome::Verified(Ok((clean, waiting))));
    h.step();
    assert!(!has_text(&h, "Attention"));
    assert!(has_text(
        &h,
        "Not up yet: 100 devices not assigned to a hub (100 never seen"
    ));

    h.state_mut()
        .inject_outcome(JobOutcome::Verified(Err(problem(
            ErrorCode::UploadHttp,
            "GET https://dps/enrollments: connection refused",
        ))));
    h.step();
    assert!(has_text(
        &h,
        "Verification stopped: GET https://dps/enrollments: connection refused [upload.http] — Check the network"
    ));
    assert!(!has_text(&h, "Not up yet"));
}

#[test]
fn device_details_check_registration_shows_what_dps_says() {
    let dps = common::dps_server::FakeDps::start();
    let st = uploading_station(&dps.url);
    let mut h = harness(&st);
    login(&mut h, "op-1");
    h.state_mut().history.details = Some(("sim000001".into(), None, Vec::new()));
    // A new window is sized in its first frame and shown from the next.
    wait(&mut h, 10, |h| {
        h.query_by_label("Check registration in DPS").is_some()
    });
    // The real jobs thread answers: the station never uploaded this device.
    click_when_enabled(&mut h, "Check registration in DPS");
    wait(&mut h, 30, |h| {
        matches!(
            h.state().jobs_view.registrations.get("sim000001"),
            Some(RegistrationCheck::Answered(_))
        )
    });
    h.step();
    assert!(has_text(&h, "This device is not uploaded to DPS yet."));

    let assigned = RegistrationState {
        status: "assigned".into(),
        assigned_hub: Some("hub-a.azure-devices.net".into()),
        device_id: Some("sim000001".into()),
        error: None,
        last_updated: Some("2025-03-04T05:06:07Z".into()),
    };
    let answer = |state| JobOutcome::Registration("sim000001".into(), Ok(Some(state)));
    h.state_mut().inject_outcome(answer(assigned));
    h.step();
    assert!(has_text(
        &h,
        "Registered: assigned to hub-a.azure-devices.net as device sim000001, last update 2025-03-04T05:06:07Z"
    ));

    // Another device's answer does not show here.
    let other = RegistrationState {
        status: "not_registered".into(),
        ..Default::default()
    };
    h.state_mut().inject_outcome(JobOutcome::Registration(
        "sim000002".into(),
        Ok(Some(other.clone())),
    ));
    h.step();
    assert!(!has_text(&h, "DPS has not seen this device register yet"));
    h.state_mut().inject_outcome(answer(other));
    h.step();
    assert!(has_text(&h, "DPS has not seen this device register yet"));

    let failed = RegistrationState {
        status: "failed".into(),
        error: Some("401002: the device's key is not the enrollment's".into()),
        ..Default::default()
    };
    h.state_mut().inject_outcome(answer(failed));
    h.step();
    assert!(has_text(
        &h,
        "Registration failed: 401002: the device's key is not the enrollment's"
    ));

    h.state_mut().inject_outcome(JobOutcome::Registration(
        "sim000001".into(),
        Err(problem(ErrorCode::UploadUnauthorized, "DPS answered 401")),
    ));
    h.step();
    assert!(has_text(
        &h,
        "Registration check failed: DPS answered 401 [upload.unauthorized] — Check [upload] host"
    ));
}

#[test]
fn at_1024x768_start_the_pass_banner_and_the_history_are_on_screen() {
    let st = StationDir::new();
    let mut h = harness_sized(&st, [1024.0, 768.0]);
    login(&mut h, "op-1");
    h.get_by_label("Start").click();
    wait(&mut h, 60, |h| h.query_by_label("PASS").is_some());
    wait(&mut h, 10, |h| h.state().history.total == Some(1));
    let screen = h.ctx.content_rect();
    let rect = |h: &Harness<'static, StationApp>, label: &str| h.get_by_label(label).rect();
    let start = rect(&h, "Start");
    let pass = rect(&h, "PASS");
    let history = rect(&h, "History");
    let shift = rect(&h, "This shift");
    let row = rect(&h, "SIM000001");
    for (what, r) in [
        ("Start", start),
        ("PASS", pass),
        ("History", history),
        ("This shift", shift),
        ("the history row", row),
    ] {
        assert!(
            screen.contains_rect(r),
            "{what} at {r:?} is outside the window {screen:?}"
        );
    }
    assert!(
        start.right() <= shift.left(),
        "Start {start:?} runs under the shift panel {shift:?}"
    );
    assert!(
        pass.bottom() <= history.top(),
        "PASS {pass:?} runs under the history {history:?}"
    );
}
