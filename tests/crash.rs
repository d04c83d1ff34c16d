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
