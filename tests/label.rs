//! Device labels on the real binary: a local TCP server plays the label printer (raw ZPL on a
//! socket, as a Zebra printer takes it) while the station provisions simulated devices.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A label printer on 127.0.0.1: every connection's bytes, one entry per connection.
struct Printer {
    port: u16,
    received: Arc<Mutex<Vec<String>>>,
}

impl Printer {
    /// A printer listening on a free port.
    fn start() -> Printer {
        Printer::listen(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// A printer coming up on `port` (which was free a moment ago).
    fn start_on(port: u16) -> Printer {
        Printer::listen(TcpListener::bind(("127.0.0.1", port)).unwrap())
    }

    fn listen(listener: TcpListener) -> Printer {
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut bytes = Vec::new();
                let _ = stream.read_to_end(&mut bytes);
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&bytes).into_owned());
            }
        });
        Printer { port, received }
    }

    /// A port nothing listens on (a printer that is switched off).
    fn down() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn address(&self) -> String {
        format!("zpl-tcp://127.0.0.1:{}", self.port)
    }

    /// What the printer received once `n` connections came in (or after a few seconds).
    fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.received.lock().unwrap().len() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Anything more (a duplicate) would arrive at once.
        std::thread::sleep(Duration::from_millis(200));
        self.received.lock().unwrap().clone()
    }
}

/// The test station with `[label]` printing on `printer`, retrying quickly, and `extra` keys.
fn label_station(printer: &str, extra: &str) -> StationDir {
    StationDir::with_config(&format!(
        "{}\n[label]\nenabled = true\nprinter = \"{printer}\"\nretry_ms = 100\ntimeout_ms = 2000\ndrain_s = 10\n{extra}",
        default_config()
    ))
}

/// The one `^XA` … `^XZ` label a connection carried; panics on anything else.
fn one_label(job: &str) -> &str {
    let body = job.trim();
    assert!(
        body.starts_with("^XA") && body.ends_with("^XZ"),
        "a job is one label ^XA…^XZ: {job:?}"
    );
    assert_eq!(body.matches("^XA").count(), 1, "one label per job: {job:?}");
    assert_eq!(body.matches("^XZ").count(), 1, "one label per job: {job:?}");
    assert!(!body.contains('{'), "every placeholder filled: {job:?}");
    body
}

fn events<'a>(ev: &'a [Value], name: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["event"] == name).collect()
}

#[test]
fn one_well_formed_zpl_job_per_pass_and_none_for_the_failed_device() {
    let printer = Printer::start();
    let st = label_station(&printer.address(), "");
    let sim = st.simulator(&[
        "--devices",
        "3",
        "--fault",
        "nak:commit:6",
        "--fault-device",
        "2",
    ]);
    let out = st.station(&["--json", "provision", "--port", &sim.port, "--count", "3"]);
    assert_eq!(out.status.code(), Some(1), "device 2 fails: {}", text(&out));
    let jobs = printer.wait_for(2);
    assert_eq!(
        jobs.len(),
        2,
        "one job per PASS, none for the FAIL: {jobs:?}"
    );
    for (job, n) in jobs.iter().zip(["000001", "000003"]) {
        let zpl = one_label(job);
        assert!(zpl.contains(&format!("^FDMA,sim{n}^FS")), "QR data: {zpl}");
        assert!(
            zpl.contains(&format!("^FDsim{n}^FS")),
            "registration ID: {zpl}"
        );
        for field in [
            format!("SN SIM{n}"),
            "sim-sensor 1.4.2".to_string(),
            "scope 0ne000TEST1".to_string(),
            "test-station".to_string(),
        ] {
            assert!(zpl.contains(&field), "{field} in {zpl}");
        }
    }
    let ev = json_lines(&out);
    let printed: Vec<_> = events(&ev, "label_printed")
        .iter()
        .map(|e| (e["registration_id"].clone(), e["fixture"].clone()))
        .collect();
    assert_eq!(
        printed,
        [
            (Value::from("sim000001"), Value::from("1")),
            (Value::from("sim000003"), Value::from("1"))
        ]
    );
    assert!(events(&ev, "label_failed").is_empty(), "{}", text(&out));
    let summary = events(&ev, "label_summary");
    assert_eq!(summary[0]["unprinted"], 0);
    assert_eq!(
        ev.last().unwrap()["event"],
        "summary",
        "the run's summary comes last"
    );
}

#[test]
fn printer_down_queues_labels_then_delivers_each_once_in_order() {
    let port = Printer::down();
    let st = label_station(&format!("zpl-tcp://127.0.0.1:{port}"), "");
    let sim = st.simulator(&["--devices", "3"]);
    let mut child = Command::new(STATION)
        .arg("--config")
        .arg(st.config())
        .args(["--json", "provision", "--port", &sim.port, "--count", "3"])
        .env_remove("STATION_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ev: Vec<Value> = Vec::new();
    let mut printer = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if e["event"] == "label_failed" && printer.is_none() {
            // The printer is down: the label waits in the queue. Now switch it on.
            assert_eq!(e["code"], "label.printer_unavailable", "{e}");
            assert_eq!(e["retrying"], true);
            assert_eq!(e["fixture"], "1");
            printer = Some(Printer::start_on(port));
        }
        ev.push(e);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "a printer never fails a device: {ev:?}");
    let printer = printer.expect("the first label found the printer down");
    let jobs = printer.wait_for(3);
    let ids: Vec<String> = jobs
        .iter()
        .map(|j| {
            let zpl = one_label(j);
            let at = zpl.find("^FDMA,").unwrap() + "^FDMA,".len();
            zpl[at..].split('^').next().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        ids,
        ["sim000001", "sim000002", "sim000003"],
        "each label once, in order"
    );
    assert_eq!(events(&ev, "passed").len(), 3);
    assert_eq!(events(&ev, "label_printed").len(), 3);
    assert!(
        events(&ev, "label_printed")[0]["attempts"]
            .as_u64()
            .unwrap()
            > 1
    );
    assert_eq!(events(&ev, "label_summary")[0]["unprinted"], 0);
}

#[test]
fn a_printer_that_stays_down_is_reported_and_the_devices_still_pass() {
    let port = Printer::down();
    let st = label_station(&format!("zpl-tcp://127.0.0.1:{port}"), "queue_limit = 1\n");
    let cfg = std::fs::read_to_string(st.config())
        .unwrap()
        .replace("drain_s = 10", "drain_s = 1");
    std::fs::write(st.config(), cfg).unwrap();
    let sim = st.simulator(&["--devices", "2"]);
    let out = st.station(&["--json", "provision", "--port", &sim.port, "--count", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let ev = json_lines(&out);
    assert_eq!(events(&ev, "passed").len(), 2);
    let failed = events(&ev, "label_failed");
    assert!(
        failed
            .iter()
            .any(|e| e["code"] == "label.printer_unavailable" && e["fixture"] == "1"),
        "{failed:?}"
    );
    // The queue holds one label; the second device's was refused, not blocked on.
    assert!(
        failed
            .iter()
            .any(|e| e["code"] == "label.queue_full" && e["registration_id"] == "sim000002"),
        "{failed:?}"
    );
    let unprinted: Vec<_> = events(&ev, "label_unprinted")
        .iter()
        .map(|e| e["registration_id"].clone())
        .collect();
    assert_eq!(unprinted, [Value::from("sim000001")]);
    assert_eq!(events(&ev, "label_summary")[0]["unprinted"], 1);
    // Text mode says what to do.
    let sim = st.simulator(&["--devices", "1", "--first", "7"]);
    let out = st.station(&["provision", "--port", &sim.port]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("station label reprint sim000007"), "{t}");
}

#[test]
fn reprint_sends_the_label_again_and_never_for_a_failed_device() {
    let printer = Printer::start();
    let st = label_station(&printer.address(), "");
    let sim = st.simulator(&[
        "--devices",
        "2",
        "--fault",
        "nak:commit:6",
        "--fault-device",
        "2",
    ]);
    let out = st.station(&["--json", "provision", "--port", &sim.port, "--count", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(printer.wait_for(1).len(), 1);
    let out = st.station(&["--json", "label", "reprint", "sim000001"]);
    assert!(out.status.success(), "{}", text(&out));
    let jobs = printer.wait_for(2);
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        one_label(&jobs[1]),
        one_label(&jobs[0]),
        "the same label again"
    );
    let out = st.station(&["--json", "label", "reprint", "sim000002"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(json_lines(&out)[0]["code"], "label.not_provisioned");
    assert_eq!(printer.wait_for(3).len(), 2, "nothing printed for a FAIL");
    // A printer that is off: the reprint says so.
    let cfg = std::fs::read_to_string(st.config()).unwrap().replace(
        &printer.address(),
        &format!("zpl-tcp://127.0.0.1:{}", Printer::down()),
    );
    std::fs::write(st.config(), cfg).unwrap();
    let out = st.station(&["--json", "label", "reprint", "sim000001"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(json_lines(&out)[0]["code"], "label.printer_unavailable");
}

/// Decode the QR code in a PNG.
fn qr_in_png(bytes: &[u8]) -> String {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code on the label");
    grids[0].decode().unwrap().1
}

#[test]
fn preview_png_decodes_to_the_configured_qr_data() {
    let st = StationDir::with_config(&format!(
        "{}\n[label]\nqr_data = \"https://example.com/d/{{registration_id}}?sn={{serial}}\"\n",
        default_config()
    ));
    let sim = st.simulator(&["--devices", "1"]);
    let out = st.station(&["provision", "--port", &sim.port]);
    assert!(out.status.success(), "{}", text(&out));
    let png = st.path().join("label.png");
    let zpl = st.path().join("label.zpl");
    let args = ["--json", "label", "preview", "sim000001", "--out"];
    let out = st.station(
        &[
            &args[..],
            &[png.to_str().unwrap(), "--zpl", zpl.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(
        qr_in_png(&bytes),
        "https://example.com/d/sim000001?sn=SIM000001"
    );
    let zpl = std::fs::read_to_string(&zpl).unwrap();
    assert!(zpl.contains("^FDMA,https://example.com/d/sim000001?sn=SIM000001^FS"));
    let out = st.station(&["--json", "label", "preview", "nobody", "--out", "x.png"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(json_lines(&out)[0]["code"], "label.not_provisioned");
}

/// `station list` on a station whose `[label]` is `label`: the error line.
fn load_error(st: &StationDir) -> String {
    let out = st.station(&["list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    text(&out)
}

#[test]
fn bad_templates_are_refused_at_load_with_file_and_line() {
    // Inline, multi-line: the line in station.toml that holds the placeholder.
    let cfg = format!(
        "{}\n[label]\ntemplate = \"\"\"\n^XA\n^FO10,10^A0N,20,20^FD{{serail}}^FS\n^XZ\n\"\"\"\n",
        default_config()
    );
    let line = cfg.lines().position(|l| l.contains("{serail}")).unwrap() + 1;
    let st = StationDir::with_config(&cfg);
    let err = load_error(&st);
    assert!(
        err.contains(&format!("station.toml:{line}:22: `label.template`")),
        "{err}"
    );
    assert!(err.contains("unknown placeholder `{serail}`"), "{err}");
    assert!(err.contains("config.invalid"), "{err}");

    // A template file: `^XA` never closed, at the file's own line.
    let st = StationDir::with_config(&format!(
        "{}\n[label]\ntemplate_file = \"label.zpl\"\n",
        default_config()
    ));
    std::fs::write(st.path().join("label.zpl"), "\n^XA\n^FDx^FS\n").unwrap();
    let err = load_error(&st);
    assert!(
        err.contains("label.zpl:2:1: `label.template_file`"),
        "{err}"
    );
    assert!(err.contains("never closed with ^XZ"), "{err}");
    std::fs::write(st.path().join("label.zpl"), "^XA\n^FDx^FS\n^XZ\n^XZ\n").unwrap();
    let err = load_error(&st);
    assert!(err.contains("label.zpl:4:1:"), "{err}");
    assert!(err.contains("^XZ closes no label"), "{err}");
    std::fs::remove_file(st.path().join("label.zpl")).unwrap();
    assert!(load_error(&st).contains("cannot read"));

    // The printer address and the QR data are checked too.
    let st = StationDir::with_config(&format!(
        "{}\n[label]\nenabled = true\nprinter = \"lpt1\"\n",
        default_config()
    ));
    assert!(load_error(&st).contains("zpl-tcp://host:9100"));
    let st = StationDir::with_config(&format!("{}\n[label]\nenabled = true\n", default_config()));
    assert!(load_error(&st).contains("`label.enabled`"));
    let st = StationDir::with_config(&format!(
        "{}\n[label]\nqr_data = \"{{id}}\"\n",
        default_config()
    ));
    assert!(load_error(&st).contains("unknown placeholder `{id}`"));
}

#[test]
fn file_and_cups_printers_take_one_label_per_pass() {
    let st = label_station("file:labels", "");
    let sim = st.simulator(&["--devices", "2"]);
    let out = st.station(&["--json", "provision", "--port", &sim.port, "--count", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut files: Vec<_> = std::fs::read_dir(st.path().join("labels"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    for (f, id) in files.iter().zip(["sim000001", "sim000002"]) {
        assert!(f.to_string_lossy().ends_with(&format!("-{id}.zpl")));
        let zpl = std::fs::read_to_string(f).unwrap();
        assert!(one_label(&zpl).contains(&format!("^FDMA,{id}^FS")));
    }

    // `cups:QUEUE` runs `lp -d QUEUE -o raw`: a stand-in `lp` keeps what it is given.
    let bin = tempfile::tempdir().unwrap();
    let spool = bin.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let lp = bin.path().join("lp");
    std::fs::write(
        &lp,
        format!(
            "#!/bin/sh\nn=$(ls {0} | wc -l)\necho \"$@\" > {0}/args-$n\ncat > {0}/job-$n\n",
            spool.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&lp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = std::fs::read_to_string(st.config())
        .unwrap()
        .replace("file:labels", "cups:Zebra_ZD421");
    std::fs::write(st.config(), cfg).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = Command::new(STATION)
        .arg("--config")
        .arg(st.config())
        .args(["--json", "label", "reprint", "sim000002"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let args = std::fs::read_to_string(spool.join("args-0")).unwrap();
    assert_eq!(args.trim(), "-d Zebra_ZD421 -o raw -t sim000002");
    let job = std::fs::read_to_string(spool.join("job-0")).unwrap();
    assert!(one_label(&job).contains("^FDMA,sim000002^FS"));
}

#[test]
fn gang_fixtures_each_get_their_labels_tagged_with_the_fixture() {
    let printer = Printer::start();
    let st = label_station(&printer.address(), "");
    let (_sim, ports) = Simulator::start_gang(&st.flash(), 2, &["--devices", "2"]);
    let mut cfg = std::fs::read_to_string(st.config()).unwrap();
    for (k, p) in ports.iter().enumerate() {
        cfg += &format!("\n[[fixture]]\nid = \"f{}\"\nport = \"{p}\"\n", k + 1);
    }
    std::fs::write(st.config(), cfg).unwrap();
    let out = st.station(&["--json", "provision", "--all-fixtures", "--count", "4"]);
    assert!(out.status.success(), "{}", text(&out));
    let ev = json_lines(&out);
    let mut passed: Vec<(Value, Value)> = events(&ev, "passed")
        .iter()
        .map(|e| (e["fixture"].clone(), e["registration_id"].clone()))
        .collect();
    let mut printed: Vec<(Value, Value)> = events(&ev, "label_printed")
        .iter()
        .map(|e| (e["fixture"].clone(), e["registration_id"].clone()))
        .collect();
    passed.sort_by_key(|p| p.1.to_string());
    printed.sort_by_key(|p| p.1.to_string());
    assert_eq!(passed.len(), 4);
    assert_eq!(printed, passed, "one label per PASS, on its fixture");
    let jobs = printer.wait_for(4);
    assert_eq!(jobs.len(), 4);
    jobs.iter().for_each(|j| {
        one_label(j);
    });
}
