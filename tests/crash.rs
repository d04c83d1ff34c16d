//! Kill the station mid-write (SIGKILL, no chance to clean up) and show the invariant holds:
//! the enrollment is pending, never exported, listed as unfinished, and a re-run completes it.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn killing_the_station_mid_write_leaves_a_pending_row_that_a_rerun_completes() {
    // A slow line so that the write is in progress when the kill lands.
    let cfg = default_config().replace("[serial]\n", "[serial]\nbaud = 1200\n");
    let st = StationDir::with_config(&cfg);
    let sim = st.simulator(&["--devices", "1", "--baud", "1200"]);
    let mut child = Command::new(STATION)
        .arg("--config")
        .arg(st.config())
        .args(["--json", "provision", "--port", &sim.port])
        .env_remove("STATION_GROUP_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push(v["event"].as_str().unwrap().to_string());
        if v["event"] == "writing" {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    assert_eq!(seen.last().map(String::as_str), Some("writing"), "{seen:?}");

    let rows = st.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].2, "pending",
        "the credential was recorded before any byte was written"
    );
    let flash = st.flash().join("SIM000001.json");
    assert!(
        !flash.exists(),
        "the device never committed a half-written identity"
    );

    let export = st.station(&["--json", "export"]);
    assert!(export.status.success(), "{}", text(&export));
    assert!(
        json_lines(&export)
            .iter()
            .any(|e| e["event"] == "nothing_to_export")
    );
    let list = st.station(&["list", "--status", "pending"]);
    assert!(text(&list).contains("unfinished"), "{}", text(&list));

    let rerun = st.station(&["provision", "--port", &sim.port]);
    assert!(rerun.status.success(), "{}", text(&rerun));
    assert_eq!(st.rows()[0].2, "provisioned");
    st.assert_db_matches_flash();
    drop(sim);
}

/// Tens of SIGKILLs at random moments (seeded, so a failure replays) while a station
/// provisions a stream of devices; after each kill, every identity a device holds is a
/// credential version the database holds, and every provisioned row matches its device. At the
/// end an uninterrupted run finishes every device.
fn crash_loop(st: &StationDir, kills: u32, seed: u64) {
    let sim = st.simulator(&["--devices", "6", "--baud", "57600"]);
    let mut rng = seed;
    let mut next = || {
        // xorshift64*: a reproducible sequence of kill delays.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for i in 0..kills {
        let mut child = Command::new(STATION)
            .arg("--config")
            .arg(st.config())
            .args(["provision", "--count", "6", "--port", &sim.port])
            .env_remove("STATION_GROUP_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = std::time::Duration::from_micros(next() % 120_000);
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        eprintln!("kill {i} after {delay:?}");
        st.assert_db_matches_flash();
        st.assert_every_device_credential_is_in_db();
    }
    let out = st.station(&["provision", "--count", "6", "--port", &sim.port]);
    // Devices a kill left on the fixture were finished; the rest of the stream follows.
    assert_ne!(out.status.code(), Some(3), "{}", text(&out));
    st.assert_db_matches_flash();
    st.assert_every_device_credential_is_in_db();
    assert!(
        st.rows().iter().any(|r| r.2 == "provisioned"),
        "{}",
        text(&out)
    );
    let unfinished: Vec<_> = st.rows().into_iter().filter(|r| r.2 == "pending").collect();
    assert!(
        unfinished.is_empty(),
        "the uninterrupted run left {unfinished:?}\n{}",
        text(&out)
    );
}

#[test]
fn crash_loop_symmetric_never_leaves_a_device_the_database_does_not_hold() {
    let cfg = default_config().replace("[serial]\n", "[serial]\nbaud = 57600\n");
    crash_loop(&StationDir::with_config(&cfg), 30, 0x5eed_0001);
}

#[test]
fn crash_loop_x509_never_leaves_a_device_the_database_does_not_hold() {
    for (key_source, seed) in [("device", 0x5eed_0002), ("station", 0x5eed_0003)] {
        let st = x509_station(key_source, "p256");
        let cfg = std::fs::read_to_string(st.config())
            .unwrap()
            .replace("[serial]\n", "[serial]\nbaud = 57600\n");
        std::fs::write(st.config(), cfg).unwrap();
        crash_loop(&st, 20, seed);
    }
}
