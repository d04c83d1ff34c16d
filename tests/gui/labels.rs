//! Device labels in the window (`[label]`): a PASS prints one label and the shift panel shows
//! its preview, a printer that is down shows on the tile while the device passes all the same,
//! and Reprint in a device's details prints it again.

use super::*;
use provisioning_station::gui::app::UiCommand;
use provisioning_station::gui::fixture::{Banner, PortStatus};
use std::path::Path;

/// `default_config()` printing labels on `printer`, retrying quickly, with `extra` after it.
fn label_config(printer: &str, extra: &str) -> String {
    format!(
        "{}\n[label]\nenabled = true\nprinter = \"{printer}\"\nretry_ms = 100\ntimeout_ms = 2000\n{extra}",
        default_config()
    )
}

/// The `.zpl` files the file printer wrote into `dir`.
fn label_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".zpl"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A port nothing listens on: a label printer that is switched off.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Log in, Start the one fixture, wait for its PASS.
fn pass_one_device(h: &mut Harness<'static, StationApp>) {
    login(h, "op-1");
    h.get_by_label("Start").click();
    wait(h, 60, |h| h.query_by_label("PASS").is_some());
}

#[test]
fn a_pass_prints_exactly_one_label_file_and_shows_its_preview() {
    let printed = tempfile::tempdir().unwrap();
    let printer = format!("file:{}", printed.path().display());
    let st = StationDir::with_config(&label_config(&printer, ""));
    let mut h = harness(&st);
    pass_one_device(&mut h);
    wait(&mut h, 20, |h| {
        has_text(h, "Label printed: sim000001")
            && h.query_by_label("Last label: sim000001").is_some()
    });
    let preview = h.get_by_label("Last label: sim000001");
    assert_eq!(
        preview.accesskit_node().role(),
        egui::accesskit::Role::Image
    );
    assert!(
        preview.rect().width() > 50.0,
        "the label is drawn large enough to read"
    );
    let files = label_files(printed.path());
    assert_eq!(files.len(), 1, "one label per PASS: {files:?}");
    assert!(files[0].contains("sim000001"), "{files:?}");
    let zpl = std::fs::read_to_string(printed.path().join(&files[0])).unwrap();
    assert!(zpl.contains("^FDsim000001^FS"), "{zpl}");
    // Nothing else arrives later (no second copy of the same label).
    std::thread::sleep(Duration::from_millis(300));
    h.step();
    assert_eq!(label_files(printed.path()).len(), 1);
    h.check_accessibility();
}

#[test]
fn a_printer_that_is_down_shows_on_the_tile_while_the_device_passes() {
    let printer = format!("zpl-tcp://127.0.0.1:{}", closed_port());
    let fixtures = "\n[[fixture]]\nid = \"f1\"\nlabel = \"Slot 1\"\nport = \"sim\"\n\
                    \n[[fixture]]\nid = \"f2\"\nlabel = \"Slot 2\"\nport = \"sim\"\n";
    let st = StationDir::with_config(&label_config(&printer, fixtures));
    let mut h = harness(&st);
    wait(&mut h, 10, |h| {
        h.query_by_label("Operator ID (type or scan your badge)")
            .is_some()
    });
    let field = h.get_by_label("Operator ID (type or scan your badge)");
    field.focus();
    field.type_text("op-2");
    h.step();
    h.key_press(egui::Key::Enter);
    wait(&mut h, 20, |h| {
        h.state().operator.is_some()
            && h.state()
                .fixtures
                .iter()
                .all(|f| matches!(f.port, PortStatus::Connected(_)))
    });
    h.get_by_label("Start Slot 1").click();
    wait(&mut h, 60, |h| {
        let f = &h.state().fixtures[0];
        !f.device.busy
            && matches!(f.device.banner, Some(Banner::Pass { .. }))
            && has_text(h, "Label error label.printer_unavailable")
    });
    assert_eq!(h.query_all_by_label("PASS").count(), 1, "the device passed");
    assert!(has_text(&h, "Label — what to do:"));
    assert!(has_text(&h, "1 waiting"), "the label waits in the queue");
    let rows = st.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, "provisioned", "a printer never fails a device");
    // The shift panel names the printer and its error too.
    assert!(has_text(
        &h,
        &format!("Printer {printer}: label.printer_unavailable")
    ));
    h.check_accessibility();
}

#[test]
fn reprint_from_the_history_details_writes_a_second_label_file() {
    let printed = tempfile::tempdir().unwrap();
    let printer = format!("file:{}", printed.path().display());
    let st = StationDir::with_config(&label_config(&printer, ""));
    let mut h = harness(&st);
    pass_one_device(&mut h);
    wait(&mut h, 20, |h| has_text(h, "Label printed: sim000001"));
    assert_eq!(label_files(printed.path()).len(), 1);
    // What a click on the device's history row asks for.
    h.state_mut()
        .apply(UiCommand::ShowDetails("sim000001".into()));
    wait(&mut h, 10, |h| h.query_by_label("Reprint label").is_some());
    click_when_enabled(&mut h, "Reprint label");
    wait(&mut h, 20, |h| {
        has_text(h, &format!("Label reprinted on {printer}"))
    });
    let files = label_files(printed.path());
    assert_eq!(files.len(), 2, "the reprint is a second file: {files:?}");
    assert!(files.iter().all(|f| f.contains("sim000001")), "{files:?}");
    // The fixture's own count is of PASS labels; the reprint does not change it.
    assert!(has_text(&h, "Label printed: sim000001"));
    assert!(h.query_by_label("Last label: sim000001").is_some());
}

#[test]
fn a_failed_device_prints_no_label_and_its_retry_prints_one() {
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
    let printed = tempfile::tempdir().unwrap();
    let printer = format!("file:{}", printed.path().display());
    let cfg =
        label_config(&printer, "").replace("port = \"sim\"", &format!("port = \"{}\"", sim.port));
    let st = StationDir::with_config(&cfg);
    let mut h = harness(&st);
    login(&mut h, "op-1");
    h.get_by_label("Start").click();
    wait(&mut h, 60, |h| h.query_by_label("FAIL").is_some());
    std::thread::sleep(Duration::from_millis(300));
    h.step();
    assert!(
        label_files(printed.path()).is_empty(),
        "no label after a FAIL"
    );
    assert!(has_text(&h, "Label: none printed yet"));
    click_when_enabled(&mut h, "Retry");
    wait(&mut h, 60, |h| {
        h.query_by_label("PASS").is_some() && has_text(h, "Label printed: sim")
    });
    assert_eq!(label_files(printed.path()).len(), 1);
}
