//! The window with several fixtures (a gang): one tile per fixture, Start all, Retry on a
//! tile, scans routed by a fixture prefix, and eight tiles at 1024×768.

use super::*;
use provisioning_station::gui::fixture::{Banner, PortStatus};

/// `default_config()` with a `[[fixture]]` table per (id, port), labelled `Slot 1`, `Slot 2`…
fn gang_config(fixtures: &[(&str, &str)]) -> String {
    let mut cfg = default_config();
    for (n, (id, port)) in fixtures.iter().enumerate() {
        cfg += &format!(
            "\n[[fixture]]\nid = \"{id}\"\nlabel = \"Slot {}\"\nport = \"{port}\"\n",
            n + 1
        );
    }
    cfg
}

/// A station with `n` simulated fixtures `f1`…`fn`.
fn sim_gang(n: usize) -> StationDir {
    let ids: Vec<String> = (1..=n).map(|k| format!("f{k}")).collect();
    let fixtures: Vec<(&str, &str)> = ids.iter().map(|id| (id.as_str(), "sim")).collect();
    StationDir::with_config(&gang_config(&fixtures))
}

/// Log in, then wait until every fixture's port is open or has failed to open.
fn login_gang(h: &mut Harness<'static, StationApp>, operator: &str) {
    wait(h, 10, |h| {
        h.query_by_label("Operator ID (type or scan your badge)")
            .is_some()
    });
    let field = h.get_by_label("Operator ID (type or scan your badge)");
    field.focus();
    field.type_text(operator);
    h.step();
    h.key_press(egui::Key::Enter);
    wait(h, 20, |h| {
        h.state().operator.is_some()
            && h.state()
                .fixtures
                .iter()
                .all(|f| f.port != PortStatus::Opening)
    });
}

/// Fixture `i` has finished its device with PASS.
fn tile_passed(h: &Harness<'static, StationApp>, i: usize) -> bool {
    let f = &h.state().fixtures[i];
    !f.device.busy && matches!(f.device.banner, Some(Banner::Pass { .. }))
}

/// Fixture `i` has finished its device with FAIL and `code`.
fn tile_failed(h: &Harness<'static, StationApp>, i: usize, code: ErrorCode) -> bool {
    let f = &h.state().fixtures[i];
    !f.device.busy && matches!(&f.device.banner, Some(Banner::Fail(p)) if p.code == code)
}

/// Fixture `i` has not run a device.
fn tile_untouched(h: &Harness<'static, StationApp>, i: usize) -> bool {
    let f = &h.state().fixtures[i];
    !f.device.busy && f.device.banner.is_none()
}

/// Scan `text` into fixture `label`'s serial field and press Enter.
fn scan_into(h: &mut Harness<'static, StationApp>, label: &str, text: &str) {
    let name = format!("Serial number for {label}");
    let field = h.get_by_label(&name);
    field.focus();
    field.type_text(text);
    h.step();
    h.key_press(egui::Key::Enter);
}

#[test]
fn start_all_on_four_simulated_fixtures_passes_every_tile() {
    let st = sim_gang(4);
    let mut h = harness(&st);
    login_gang(&mut h, "op-4");
    assert!(has_text(&h, "Fixtures: 4 of 4 connected"));
    h.get_by_label("Start all").click();
    wait(&mut h, 60, |h| (0..4).all(|i| tile_passed(h, i)));
    assert_eq!(h.query_all_by_label("PASS").count(), 4);
    let mut serials: Vec<String> = st
        .rows()
        .into_iter()
        .filter(|r| r.2 == "provisioned")
        .map(|r| r.1)
        .collect();
    serials.sort();
    assert_eq!(
        serials,
        ["SIM000001", "SIM100001", "SIM200001", "SIM300001"]
    );
    // Each tile counts its own devices; the shift panel counts them all.
    assert!(
        h.state()
            .fixtures
            .iter()
            .all(|f| f.passed == 1 && f.failed == 0)
    );
    assert_eq!(h.query_all_by_label("Passed 1 · Failed 0").count(), 4);
    wait(&mut h, 10, |h| h.state().shift.passed == 4);
    h.step();
    assert!(has_text(&h, "Passed: 4   Failed: 0"));
    h.check_accessibility();
}

#[test]
fn a_device_fault_fails_one_tile_while_the_others_pass_and_retry_passes_it() {
    let flash = tempfile::tempdir().unwrap();
    let sim = Simulator::start(
        flash.path(),
        &[
            "--first",
            "900001",
            "--devices",
            "2",
            "--fault",
            "nak:commit:6",
            "--fault-device",
            "1",
        ],
    );
    let st = StationDir::with_config(&gang_config(&[
        ("f1", "sim"),
        ("f2", &sim.port),
        ("f3", "sim"),
        ("f4", "sim"),
    ]));
    let mut h = harness(&st);
    login_gang(&mut h, "op-1");
    h.get_by_label("Start all").click();
    wait(&mut h, 60, |h| {
        tile_failed(h, 1, ErrorCode::DeviceNak) && [0, 2, 3].iter().all(|&i| tile_passed(h, i))
    });
    assert_eq!(h.query_all_by_label("FAIL").count(), 1);
    assert_eq!(h.query_all_by_label("PASS").count(), 3);
    assert!(has_text(&h, "device.nak"));
    assert!(has_text(&h, "What to do: The device refused the step"));
    click_when_enabled(&mut h, "Retry Slot 2");
    wait(&mut h, 60, |h| tile_passed(h, 1));
    let f2 = &h.state().fixtures[1];
    assert_eq!((f2.passed, f2.failed), (1, 1));
    let statuses: Vec<String> = st
        .rows()
        .into_iter()
        .filter(|r| r.1.starts_with("SIM9"))
        .map(|r| r.2)
        .collect();
    assert_eq!(statuses, ["failed", "provisioned"]);
}

#[test]
fn a_fixture_whose_port_is_missing_shows_its_error_while_the_others_pass() {
    let st = StationDir::with_config(&gang_config(&[
        ("f1", "sim"),
        ("f2", "sim"),
        ("f3", "/dev/station-test-no-such-port"),
        ("f4", "sim"),
    ]));
    let mut h = harness(&st);
    login_gang(&mut h, "op-1");
    h.step();
    let PortStatus::Error(problem) = h.state().fixtures[2].port.clone() else {
        panic!("fixture f3 opened a port that does not exist");
    };
    assert_eq!(problem.code, ErrorCode::DevicePortUnavailable);
    assert!(has_text(
        &h,
        "Fixtures: 3 of 4 connected, 1 with a port error"
    ));
    assert!(h.query_by_label("OFFLINE").is_some());
    assert!(has_text(
        &h,
        &format!("device.port_unavailable: {}", problem.message)
    ));
    assert!(has_text(&h, "What to do: Check the fixture cable"));
    assert!(
        h.get_by_label("Start Slot 3")
            .accesskit_node()
            .is_disabled()
    );
    h.get_by_label("Start all").click();
    wait(&mut h, 60, |h| [0, 1, 3].iter().all(|&i| tile_passed(h, i)));
    assert!(tile_untouched(&h, 2));
    assert_eq!(st.rows().len(), 3);
}

#[test]
fn a_scan_with_a_fixture_prefix_goes_to_that_fixtures_tile() {
    let st = sim_gang(4);
    let mut h = harness(&st);
    login_gang(&mut h, "op-1");
    // Scanned into the first tile, the prefix sends it to fixture f3, as f3's scanned serial.
    scan_into(&mut h, "Slot 1", "f3:SIM200001");
    wait(&mut h, 60, |h| tile_passed(h, 2));
    assert!([0, 1, 3].iter().all(|&i| tile_untouched(&h, i)));
    let rows = st.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, "SIM200001");
    // `ID/SERIAL` too, and the scan really reaches f2's workflow: a wrong label fails there.
    scan_into(&mut h, "Slot 1", "f2/WRONG-LABEL");
    wait(&mut h, 60, |h| {
        tile_failed(h, 1, ErrorCode::DeviceSerialMismatch)
    });
    assert!(tile_untouched(&h, 0));
    // Without a prefix, a scan stays with the tile it was scanned into.
    scan_into(&mut h, "Slot 4", "SIM300001");
    wait(&mut h, 60, |h| tile_passed(h, 3));
    assert!(tile_untouched(&h, 0));
    assert!(st.rows().iter().any(|r| r.1 == "SIM300001"));
}

#[test]
fn at_1024x768_eight_tiles_fit_across_and_all_pass() {
    let st = sim_gang(8);
    let mut h = harness_sized(&st, [1024.0, 768.0]);
    login_gang(&mut h, "op-8");
    let shift = h.get_by_label("This shift").rect();
    for k in 1..=8 {
        let name = format!("Start Slot {k}");
        let r = h.get_by_label(&name).rect();
        assert!(
            r.left() >= 0.0 && r.right() <= shift.left(),
            "Start Slot {k} at {r:?} runs under the shift panel {shift:?}"
        );
    }
    let start_all = h.get_by_label("Start all").rect();
    assert!(h.ctx.content_rect().contains_rect(start_all));
    h.get_by_label("Start all").click();
    wait(&mut h, 60, |h| (0..8).all(|i| tile_passed(h, i)));
    assert_eq!(st.rows().len(), 8);
}
