//! Regression tests for defects found by devices and a DPS written by others, by kill -9 and by
//! bad input. Each is named after the failure it pins; each ran against the real binary over a
//! real pty, and compares the device's flash with the database.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn provision(st: &StationDir, port: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--json", "provision", "--port", port];
    args.extend_from_slice(extra);
    st.station(&args)
}

fn failed_code(out: &std::process::Output) -> String {
    json_lines(out)
        .iter()
        .find(|e| e["event"] == "failed")
        .and_then(|e| e["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no failed event: {}", text(out)))
}

fn flash_digest(st: &StationDir, serial: &str) -> Option<String> {
    let path = st.flash().join(format!("{serial}.json"));
    let f: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).unwrap();
    Some(f["digest"].as_str().unwrap().to_string())
}

fn superseded(st: &StationDir) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let mut q = conn
        .prepare("SELECT registration_id, device_digest FROM superseded_enrollments")
        .unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Write a second (test) group key and point the configuration at it.
fn rotate_group_key(st: &StationDir) {
    let k2 = st.path().join("group-key-2.txt");
    std::fs::write(
        &k2,
        "# TEST key, rotated\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
    )
    .unwrap();
    let cfg = std::fs::read_to_string(st.config())
        .unwrap()
        .replace(GROUP_KEY_FILE, k2.to_str().unwrap());
    std::fs::write(st.config(), cfg).unwrap();
}

fn reworked_device_gets_no_false_pass(change: impl Fn(&StationDir)) {
    let st = StationDir::new();
    let sim = st.simulator(&["--devices", "1"]);
    let first = provision(&st, &sim.port, &[]);
    assert!(first.status.success(), "{}", text(&first));
    let k1 = st.rows()[0].4.clone().unwrap();
    // Rework: the device's flash is wiped; the station's configuration changed.
    drop(sim);
    std::fs::remove_file(st.flash().join("SIM000001.json")).unwrap();
    change(&st);
    let sim = st.simulator(&["--devices", "1"]);
    let again = provision(&st, &sim.port, &[]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert_eq!(failed_code(&again), "device.rekey_not_permitted");
    assert_eq!(st.rows()[0].2, "provisioned");
    assert_eq!(st.rows()[0].4.as_deref(), Some(k1.as_str()));
    assert_eq!(
        flash_digest(&st, "SIM000001"),
        None,
        "nothing was written to the device"
    );

    // With permission it is a re-key: the old version is kept, the new one recorded.
    let rekey = provision(&st, &sim.port, &["--allow-rekey"]);
    assert!(rekey.status.success(), "{}", text(&rekey));
    let row = &st.rows()[0];
    assert_eq!(row.2, "provisioned");
    assert_ne!(row.4.as_deref(), Some(k1.as_str()));
    assert_eq!(row.4, flash_digest(&st, "SIM000001"));
    assert_eq!(superseded(&st), [("sim000001".to_string(), k1)]);
    st.assert_db_matches_flash();
    st.assert_every_device_credential_is_in_db();
}

#[test]
fn false_pass_after_group_key_rotation_is_refused() {
    reworked_device_gets_no_false_pass(rotate_group_key);
}

#[test]
fn false_pass_after_id_scope_change_is_refused() {
    reworked_device_gets_no_false_pass(|st| {
        let cfg = std::fs::read_to_string(st.config())
            .unwrap()
            .replace("0ne000TEST1", "0ne000TEST2");
        std::fs::write(st.config(), cfg).unwrap();
    });
}

#[test]
fn device_holding_its_old_key_after_rotation_is_not_rewritten_without_permission() {
    let st = StationDir::new();
    let sim = st.simulator(&["--devices", "1"]);
    assert!(provision(&st, &sim.port, &[]).status.success());
    let before = flash_digest(&st, "SIM000001");
    rotate_group_key(&st);
    let again = provision(&st, &sim.port, &[]);
    assert_eq!(failed_code(&again), "device.rekey_not_permitted");
    assert!(text(&again).contains("group key"), "{}", text(&again));
    assert_eq!(flash_digest(&st, "SIM000001"), before);
    st.assert_db_matches_flash();
}

#[test]
fn device_holding_its_old_id_scope_is_not_passed_as_it_is() {
    // It holds exactly what the database recorded, but under the ID scope it was provisioned
    // with: passing it would send it to another DPS instance than the one configured now.
    let st = StationDir::new();
    let sim = st.simulator(&["--devices", "1"]);
    assert!(provision(&st, &sim.port, &[]).status.success());
    let before = flash_digest(&st, "SIM000001");
    let cfg = std::fs::read_to_string(st.config())
        .unwrap()
        .replace("0ne000TEST1", "0ne000TEST2");
    std::fs::write(st.config(), cfg).unwrap();
    let again = provision(&st, &sim.port, &[]);
    assert_eq!(failed_code(&again), "device.rekey_not_permitted");
    assert_eq!(flash_digest(&st, "SIM000001"), before);
    st.assert_db_matches_flash();
}

/// COMMIT succeeded but its read-back was lost (READ_DIGEST never answered): the row is
/// failed and holds certificate C1, which the device holds. A re-run whose COMMIT would be
/// refused must not replace C1 in the database.
#[test]
fn x509_certificate_survives_a_lost_read_back_and_a_refused_commit() {
    let st = x509_station("device", "p256");
    let sim = st.simulator(&["--devices", "1", "--fault", "stall:read-digest"]);
    let first = provision(&st, &sim.port, &[]);
    assert_eq!(failed_code(&first), "device.timeout", "{}", text(&first));
    assert_eq!(st.rows()[0].2, "failed");
    st.assert_every_device_credential_is_in_db();
    drop(sim);

    let sim = st.simulator(&["--devices", "1", "--fault", "nak:commit:6"]);
    let again = provision(&st, &sim.port, &[]);
    // The device already holds exactly the recorded certificate: verified, not re-issued.
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        json_lines(&again)
            .iter()
            .any(|e| e["event"] == "already_provisioned")
    );
    assert_eq!(st.rows()[0].2, "provisioned");
    st.assert_db_matches_flash();
    st.assert_every_device_credential_is_in_db();
}

#[test]
fn x509_rerun_after_a_commit_and_a_kill_reuses_the_committed_certificate() {
    // The crash between COMMIT and the database update, replayed: stop answering after the
    // COMMIT (the station fails the device), then re-run on a device that refuses COMMIT.
    for key_source in ["device", "station"] {
        let st = x509_station(key_source, "p256");
        let sim = st.simulator(&["--devices", "1", "--fault", "stall:read-digest"]);
        let _ = provision(&st, &sim.port, &[]);
        drop(sim);
        let sim = st.simulator(&["--devices", "1", "--fault", "nak:commit:6"]);
        let again = provision(&st, &sim.port, &[]);
        assert!(again.status.success(), "{key_source}: {}", text(&again));
        st.assert_db_matches_flash();
        st.assert_every_device_credential_is_in_db();
    }
}

#[test]
fn batch_committed_but_never_published_is_found_and_recreated() {
    let st = StationDir::new();
    let sim = st.simulator(&["--devices", "3"]);
    assert!(
        provision(&st, &sim.port, &["--count", "3"])
            .status
            .success()
    );
    let export = st.station(&["--json", "export"]);
    assert!(export.status.success(), "{}", text(&export));
    let lines = json_lines(&export);
    let summary = lines.last().unwrap();
    let csv = std::path::PathBuf::from(summary["csv"].as_str().unwrap());
    let json = std::path::PathBuf::from(summary["json"].as_str().unwrap());
    let (csv_bytes, json_bytes) = (std::fs::read(&csv).unwrap(), std::fs::read(&json).unwrap());
    let batch = summary["batch"].as_str().unwrap().to_string();
    // What a kill between the batch commit and the rename leaves: the temporary files only.
    let dir = csv.parent().unwrap();
    std::fs::rename(&csv, dir.join(format!(".{batch}.csv.tmp"))).unwrap();
    std::fs::remove_file(&json).unwrap();

    let list = st.station(&["list"]);
    assert!(
        text(&list).contains(&format!("station export --batch {batch}")),
        "{}",
        text(&list)
    );
    let doctor = st.station(&["doctor"]);
    assert_ne!(doctor.status.code(), Some(0), "{}", text(&doctor));
    assert!(
        text(&doctor).contains("exported batch"),
        "{}",
        text(&doctor)
    );

    let again = st.station(&["--json", "export"]);
    assert!(again.status.success(), "{}", text(&again));
    let events = json_lines(&again);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "batch_recreated" && e["batch"] == batch.as_str()),
        "{}",
        text(&again)
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "temporary_file_removed")
    );
    assert_eq!(std::fs::read(&csv).unwrap(), csv_bytes);
    assert_eq!(std::fs::read(&json).unwrap(), json_bytes);
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(st.station(&["doctor"]).status.success());
}

/// One device under `faults`; the code it fails with. Nothing is committed on the device.
fn fails_with(faults: &[&str], sim_args: &[&str]) -> (String, String) {
    let st = StationDir::new();
    let mut args = vec!["--devices", "1"];
    args.extend_from_slice(sim_args);
    for f in faults {
        args.extend_from_slice(&["--fault", f]);
    }
    let sim = st.simulator(&args);
    let started = std::time::Instant::now();
    let out = provision(&st, &sim.port, &[]);
    assert_eq!(out.status.code(), Some(1), "{faults:?}: {}", text(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{faults:?} took {:?}",
        started.elapsed()
    );
    assert!(!json_lines(&out).iter().any(|e| e["event"] == "passed"));
    st.assert_db_matches_flash();
    (failed_code(&out), text(&out))
}

#[test]
fn gen_csr_larger_than_max_body_is_refused_naming_the_limit() {
    let st = x509_station("device", "p256");
    // A 64-character registration ID (the CN) on a device accepting 64-byte bodies.
    let prefix = "A".repeat(58);
    let sim = st.simulator(&[
        "--devices",
        "1",
        "--max-body",
        "64",
        "--serial-prefix",
        &prefix,
    ]);
    let started = std::time::Instant::now();
    let out = provision(&st, &sim.port, &[]);
    assert_eq!(failed_code(&out), "device.request_too_large");
    assert!(text(&out).contains("at most 64"), "{}", text(&out));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn mode_the_device_does_not_advertise_is_refused() {
    let (code, msg) = fails_with(&[], &["--capabilities", "0x0"]);
    assert_eq!(code, "device.capability_missing");
    assert!(msg.contains("SYMMETRIC_KEY"), "{msg}");
    let st = x509_station("device", "p256");
    let sim = st.simulator(&["--devices", "1", "--capabilities", "0x1"]);
    let out = provision(&st, &sim.port, &[]);
    assert_eq!(failed_code(&out), "device.capability_missing");
    assert!(!st.flash().join("SIM000001.json").exists());
}

/// Each fault, alone, fails the device with `device.protocol` and a message naming `said`.
fn assert_protocol_errors(cases: &[(&str, &str)]) {
    for (fault, said) in cases {
        let (code, msg) = fails_with(&[fault], &[]);
        assert_eq!(code, "device.protocol", "{fault}: {msg}");
        assert!(msg.contains(said), "{fault}: {msg}");
    }
}

#[test]
fn reserved_or_missing_state_bytes_are_protocol_errors() {
    assert_protocol_errors(&[
        ("state:commit:0", "state 0"),
        ("state:read-digest:2", "reserved"),
    ]);
}

#[test]
fn wrong_answers_are_protocol_errors_naming_what_came_back() {
    assert_protocol_errors(&[
        ("wrong-type:commit", "0x85"),
        ("stale-seq:commit", "other frames"),
        ("empty-nak:write", "without a code byte"),
    ]);
}

#[test]
fn busy_device_is_waited_for_then_given_up_on() {
    let st = StationDir::new();
    let sim = st.simulator(&["--devices", "1", "--fault", "busy:write:3"]);
    let out = provision(&st, &sim.port, &[]);
    assert!(out.status.success(), "{}", text(&out));
    st.assert_db_matches_flash();
    let (code, _) = fails_with(&["busy:commit"], &[]);
    assert_eq!(code, "device.busy");
}

#[test]
fn one_unplug_is_one_failure() {
    for _ in 0..8 {
        let st = StationDir::new();
        let sim = st.simulator(&["--devices", "3", "--fault", "disconnect:write"]);
        let out = provision(&st, &sim.port, &["--count", "3"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let attempts = st.attempts();
        assert_eq!(attempts.len(), 1, "{attempts:?}\n{}", text(&out));
        assert_eq!(
            attempts[0].2.as_deref(),
            Some("device.disconnected"),
            "{}",
            text(&out)
        );
        st.assert_db_matches_flash();
    }
}

fn interrupt(signal: &str) {
    let cfg = default_config().replace("[serial]\n", "[serial]\nbaud = 2400\n");
    let st = StationDir::with_config(&cfg);
    let sim = st.simulator(&["--devices", "2", "--baud", "2400"]);
    let mut child = Command::new(STATION)
        .arg("--config")
        .arg(st.config())
        .args(["--json", "provision", "--count", "2", "--port", &sim.port])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("\"writing\"") {
            let kill = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()
                .unwrap();
            assert!(kill.success());
            break;
        }
    }
    let rest: Vec<serde_json::Value> = lines
        .map(|l| l.unwrap())
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    let summary = rest
        .iter()
        .find(|e| e["event"] == "summary")
        .expect("a summary");
    assert_eq!(summary["interrupted_by"], signal);
    let attempts = st.attempts();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].2.as_deref(), Some("station.interrupted"));
    assert!(
        !st.flash().join("SIM000001.json").exists(),
        "stopped before COMMIT"
    );
    st.assert_db_matches_flash();
    // The next run resumes the unfinished device and says so.
    let next = provision(&st, &sim.port, &[]);
    assert!(next.status.success(), "{}", text(&next));
    st.assert_db_matches_flash();
}

#[test]
fn sigint_abandons_the_device_cleanly_and_prints_the_summary() {
    interrupt("SIGINT");
}

#[test]
fn sigterm_abandons_the_device_cleanly_and_prints_the_summary() {
    interrupt("SIGTERM");
}

#[test]
fn database_is_owner_only_and_an_unwritable_one_fails_before_the_device() {
    use std::os::unix::fs::PermissionsExt;
    let st = StationDir::new();
    let sim = st.simulator(&["--devices", "2"]);
    assert!(provision(&st, &sim.port, &[]).status.success());
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", st.db().display());
        if let Ok(m) = std::fs::metadata(&path) {
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{path}");
        }
    }
    // Read-only for the account that runs the station (root ignores file modes: run the
    // station as `nobody` then).
    let root = unsafe_geteuid() == 0;
    std::fs::set_permissions(st.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(st.db(), std::fs::Permissions::from_mode(0o444)).unwrap();
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", STATION]);
        c
    } else {
        Command::new(STATION)
    };
    let out = cmd
        .arg("--config")
        .arg(st.config())
        .args(["--json", "provision", "--port", &sim.port])
        .env_remove("STATION_GROUP_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let events = json_lines(&out);
    assert!(
        !events.iter().any(|e| e["event"] == "connecting"),
        "talked to the device: {}",
        text(&out)
    );
    let error = events.iter().find(|e| e["code"] == "store.database");
    let message = error.expect("a store.database error")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(message.matches("database ").count(), 1, "{message}");
    assert!(!st.flash().join("SIM000002.json").exists());
}

fn unsafe_geteuid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn unfinished_devices_are_named_at_start() {
    let st = StationDir::new();
    let sim = st.simulator(&["--devices", "1", "--fault", "stall:commit"]);
    let first = provision(&st, &sim.port, &[]);
    assert_eq!(failed_code(&first), "device.timeout");
    // Leave it pending, as a crash would.
    let conn = writable_db(&st.db());
    conn.execute("UPDATE enrollments SET status = 'pending'", [])
        .unwrap();
    drop(conn);
    drop(sim);
    let sim = st.simulator(&["--devices", "1"]);
    let out = provision(&st, &sim.port, &[]);
    let events = json_lines(&out);
    let unfinished = events
        .iter()
        .position(|e| e["event"] == "unfinished")
        .expect("unfinished devices reported");
    assert_eq!(events[unfinished]["serials"][0], "SIM000001");
    let connecting = events.iter().position(|e| e["event"] == "connecting");
    assert!(Some(unfinished) < connecting);
}

#[test]
fn template_with_an_impossible_literal_is_refused_at_load() {
    let cfg = default_config().replace("template = \"{serial}\"", "template = \"{serial}!\"");
    let st = StationDir::with_config(&cfg);
    let out = st.station(&["derive-key", "--registration-id", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("registration.template"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("'!'"), "{}", text(&out));
}

#[test]
fn running_out_of_devices_says_so() {
    let cfg = default_config().replace("next_device_timeout_s = 5", "next_device_timeout_s = 1");
    let st = StationDir::with_config(&cfg);
    let sim = st.simulator(&["--devices", "1"]);
    let out = provision(&st, &sim.port, &["--count", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("device.no_next_device"), "{t}");
    assert!(t.contains("no new device answered"), "{t}");
    assert!(!t.contains("after 0 attempts"), "{t}");
}
