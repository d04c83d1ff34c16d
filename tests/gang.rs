//! Gang fixtures: several fixtures provisioned in parallel by one station, over real ptys.

mod common;
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Command, Stdio};

/// A station with one `[[fixture]]` per port (ids f1.., labels "Slot 1"..), a short wait for a
/// next device, and `extra` appended.
fn gang_station(dir_of: &StationDir, ports: &[String], extra: &str) {
    let mut cfg = default_config();
    for (k, p) in ports.iter().enumerate() {
        cfg += &format!(
            "\n[[fixture]]\nid = \"f{}\"\nlabel = \"Slot {}\"\nport = \"{p}\"\n",
            k + 1,
            k + 1
        );
    }
    cfg += extra;
    std::fs::write(dir_of.config(), cfg).unwrap();
}

fn by_fixture(out: &std::process::Output, event: &str) -> HashMap<String, Vec<Value>> {
    let mut m: HashMap<String, Vec<Value>> = HashMap::new();
    for e in json_lines(out).into_iter().filter(|e| e["event"] == event) {
        let f = e["fixture"].as_str().unwrap_or("").to_string();
        m.entry(f).or_default().push(e);
    }
    m
}

#[test]
fn eight_fixtures_provision_in_parallel_and_faults_stay_on_their_fixture() {
    let st = StationDir::new();
    // Fixtures 3 and 6: their second device NAKs the write (storage failure).
    let (_sim, ports) = Simulator::start_gang(
        &st.flash(),
        8,
        &[
            "--devices",
            "3",
            "--fault",
            "nak:write:6",
            "--fault-device",
            "2",
            "--fault-fixture",
            "3",
            "--fault-fixture",
            "6",
        ],
    );
    gang_station(&st, &ports, "");
    let out = st.station(&["--json", "provision", "--all-fixtures", "--count", "24"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "two devices failed: {}",
        text(&out)
    );
    let passed = by_fixture(&out, "passed");
    let failed = by_fixture(&out, "failed");
    for k in 1..=8 {
        let f = format!("f{k}");
        let (p, x) = (
            passed.get(&f).map_or(0, Vec::len),
            failed.get(&f).map_or(0, Vec::len),
        );
        if k == 3 || k == 6 {
            assert_eq!((p, x), (2, 1), "{f}");
            assert_eq!(failed[&f][0]["code"], "device.nak", "{f}");
        } else {
            assert_eq!((p, x), (3, 0), "{f}");
        }
        // Each fixture's devices are its own serial range.
        for e in &passed[&f] {
            let serial = e["serial"].as_str().unwrap();
            let n: u32 = serial["SIM".len()..].parse().unwrap();
            assert_eq!((n - 1) / 100_000, k - 1, "{serial} on {f}");
        }
    }
    let summaries = by_fixture(&out, "fixture_summary");
    assert_eq!(summaries.len(), 8);
    let total = json_lines(&out)
        .into_iter()
        .find(|e| e["event"] == "summary")
        .unwrap();
    assert_eq!(
        (
            total["passed"].as_u64(),
            total["failed"].as_u64(),
            total["not_run"].as_u64()
        ),
        (Some(22), Some(2), Some(0))
    );
    assert_eq!(
        st.rows().iter().filter(|r| r.2 == "provisioned").count(),
        22
    );
    st.assert_db_matches_flash();
    st.assert_every_device_credential_is_in_db();
}

#[test]
fn the_same_device_on_two_fixtures_at_once_proceeds_on_one_only() {
    // Two fixtures whose devices carry the same serial (two simulators from device 1),
    // slow enough that both are identified before either finishes.
    let st = StationDir::new();
    let a = Simulator::start(&st.flash().join("a"), &["--devices", "1", "--baud", "4800"]);
    let b = Simulator::start(&st.flash().join("b"), &["--devices", "1", "--baud", "4800"]);
    gang_station(&st, &[a.port.clone(), b.port.clone()], "");
    let out = st.station(&["--json", "provision", "--all-fixtures", "--count", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let passed = by_fixture(&out, "passed");
    let failed = by_fixture(&out, "failed");
    assert_eq!(
        passed.values().map(Vec::len).sum::<usize>(),
        1,
        "{}",
        text(&out)
    );
    let refused: Vec<&Value> = failed.values().flatten().collect();
    assert_eq!(refused.len(), 1, "{}", text(&out));
    assert_eq!(refused[0]["code"], "fixture.same_device");
    let winner = passed.keys().next().unwrap();
    assert!(
        refused[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("fixture {winner}")),
        "{}",
        refused[0]
    );
    // The enrollment is the winner's, provisioned; the refusal touched nothing but its attempt.
    let rows = st.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, "provisioned");
    let conn = rusqlite::Connection::open(st.db()).unwrap();
    let codes: Vec<Option<String>> = conn
        .prepare("SELECT error_code FROM attempts ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        codes.contains(&Some("fixture.same_device".into())),
        "{codes:?}"
    );
}

#[test]
fn killing_a_four_fixture_run_leaves_every_fixture_consistent() {
    let st = StationDir::new();
    let (_sim, ports) = Simulator::start_gang(&st.flash(), 4, &["--baud", "57600"]);
    gang_station(&st, &ports, "");
    for round in 0..4u64 {
        let mut child = Command::new(STATION)
            .args(["--config", st.config().to_str().unwrap()])
            .args(["--json", "provision", "--all-fixtures", "--count", "400"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Once this round has provisioned a device (so every round makes progress however
        // slow the machine), at different moments of the other fixtures' cycles.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let before = provisioned(&st);
        while provisioned(&st) <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round} made no progress"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(173 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        st.assert_every_device_credential_is_in_db();
        st.assert_db_matches_flash();
    }
    assert!(provisioned(&st) >= 4, "{:?}", st.rows());
}

fn provisioned(st: &StationDir) -> usize {
    st.rows().iter().filter(|r| r.2 == "provisioned").count()
}

#[test]
fn fixture_configuration_mistakes_are_named() {
    let st = StationDir::new();
    let check = |fixtures: &str, want: &[&str]| {
        std::fs::write(st.config(), default_config() + fixtures).unwrap();
        let out = st.station(&["provision"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        for w in want {
            assert!(text(&out).contains(w), "{w} not in {}", text(&out));
        }
    };
    check(
        "\n[[fixture]]\nid = \"a\"\nport = \"/dev/ttyUSB0\"\n[[fixture]]\nid = \"b\"\nport = \"/dev/ttyUSB0\"\n",
        &["fixture[1].port", "same port as fixture `a`"],
    );
    check(
        "\n[[fixture]]\nid = \"a\"\nlabel = \"Left\"\nport = \"sim\"\n[[fixture]]\nid = \"b\"\nlabel = \"Left\"\nport = \"sim\"\n",
        &["fixture[1].label", "`Left` is also fixture `a`'s label"],
    );
    check(
        "\n[[fixture]]\nid = \"a\"\nport = \"sim\"\n[[fixture]]\nid = \"a\"\nport = \"sim\"\n",
        &["fixture[1].id"],
    );
    check(
        "\n[[fixture]]\nid = \"a b\"\nport = \"sim\"\n",
        &["fixture[0].id", "letters, digits"],
    );
    std::fs::write(
        st.config(),
        default_config() + "\n[[fixture]]\nid = \"a\"\nport = \"sim\"\n",
    )
    .unwrap();
    let out = st.station(&["provision", "--fixture", "zz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no fixture `zz`") && text(&out).contains("fixtures: a"));
}

#[test]
fn one_fixture_of_a_gang_runs_alone_with_its_own_simulated_stream() {
    let st = StationDir::new();
    let cfg = default_config()
        + "\n[[fixture]]\nid = \"left\"\nport = \"sim\"\n[[fixture]]\nid = \"right\"\nport = \"sim\"\n";
    std::fs::write(st.config(), cfg).unwrap();
    let out = st.station(&["--json", "provision", "--fixture", "right", "--count", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let passed: Vec<Value> = json_lines(&out)
        .into_iter()
        .filter(|e| e["event"] == "passed")
        .collect();
    assert_eq!(passed.len(), 2);
    // The second `sim` fixture's stream starts 100000 devices on.
    assert_eq!(passed[0]["serial"], "SIM100001");
    assert!(passed.iter().all(|e| e["fixture"] == "right"));
}
