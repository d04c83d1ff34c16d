//! The fleet database on a real PostgreSQL (a throwaway cluster, tests/common/postgres.rs)
//! with real `station` processes: schema, claims, the outbox sync, the offline policy,
//! conflicts, crashes. docs/fleet.md.

mod common;
use common::postgres::Postgres;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A station `id` on `line` whose built-in simulator starts at device `first`, in the fleet at
/// `url`, with `extra` appended (more `[fleet]` keys, or `[[fixture]]` tables).
fn fleet_config(url: &str, id: &str, line: &str, first: u32, extra: &str) -> String {
    let cfg = default_config()
        .replace("id = \"test-station\"", &format!("id = \"{id}\""))
        .replace("line = \"line-t\"", &format!("line = \"{line}\""))
        .replace(
            "[simulator]\nflash_dir = \"flash\"",
            &format!("[simulator]\nflash_dir = \"flash\"\nfirst = {first}"),
        );
    format!(
        "{cfg}\n[fleet]\nurl = \"{url}\"\nsslmode = \"disable\"\nconnect_timeout_s = 1\n{extra}"
    )
}

fn station(url: &str, id: &str, line: &str, first: u32, extra: &str) -> StationDir {
    StationDir::with_config(&fleet_config(url, id, line, first, extra))
}

fn init(st: &StationDir) {
    let out = st.station(&["fleet", "init"]);
    assert!(out.status.success(), "fleet init: {}", text(&out));
}

fn count(pg: &Postgres, db: &str, sql: &str) -> i64 {
    pg.client(db).query_one(sql, &[]).unwrap().get(0)
}

fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|e| e["event"] == event).collect()
}

/// Registration IDs provisioned in a station's database.
fn provisioned(st: &StationDir) -> BTreeSet<String> {
    st.rows()
        .into_iter()
        .filter(|r| r.2 == "provisioned")
        .map(|r| r.0)
        .collect()
}

/// Entries still queued in a station's outbox.
fn queued(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("SELECT count(*) FROM fleet_outbox", [], |r| r.get(0))
        .unwrap()
}

/// A URL where nothing listens (the server is away).
fn nowhere() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("postgresql://postgres@127.0.0.1:{port}/none")
}

#[test]
fn a_station_refuses_a_missing_or_newer_fleet_schema_before_any_device() {
    let pg = Postgres::shared();
    let url = pg.database("schema_versions");
    let a = station(&url, "a1", "A", 1, "");
    let out = a.station(&["--json", "provision", "--count", "1"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        json_lines(&out).last().unwrap()["code"],
        "fleet.schema_missing"
    );
    init(&a);
    let again = a.station(&["--json", "fleet", "init"]);
    assert_eq!(
        json_lines(&again)[0]["version"],
        provisioning_station::fleet::schema::VERSION,
        "init twice: {}",
        text(&again)
    );
    pg.client("schema_versions")
        .execute("UPDATE fleet.schema_version SET version = 99", &[])
        .unwrap();
    for args in [
        &["--json", "provision", "--count", "1"][..],
        &["--json", "fleet", "init"],
        &["--json", "fleet", "status"],
    ] {
        let out = a.station(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", text(&out));
        let e = json_lines(&out).pop().unwrap();
        assert_eq!(e["code"], "fleet.schema_too_new", "{args:?}: {e}");
        assert!(e["message"].as_str().unwrap().contains("version 99"), "{e}");
    }
    assert!(a.rows().is_empty(), "no device was touched");
}

#[test]
fn provisioned_devices_reach_the_fleet_once_without_their_keys() {
    let pg = Postgres::shared();
    let url = pg.database("sync_once");
    let a = StationDir::with_config(
        &fleet_config(&url, "a1", "A", 1, "")
            .replace("keys = \"group-derived\"", "keys = \"individual\""),
    );
    init(&a);
    let out = a.station(&["--json", "provision", "--count", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let lines = json_lines(&out);
    let fleet = events(&lines, "fleet");
    assert_eq!(fleet[0]["online"], true, "{}", text(&out));
    assert_eq!(fleet[0]["pending"], 0, "{}", text(&out));
    let db = "sync_once";
    assert_eq!(count(pg, db, "SELECT count(*) FROM fleet.enrollments"), 3);
    assert_eq!(
        count(
            pg,
            db,
            "SELECT count(*) FROM fleet.attempts WHERE outcome = 'passed'"
        ),
        3
    );
    assert_eq!(
        count(
            pg,
            db,
            "SELECT count(*) FROM fleet.claims WHERE station = 'a1'"
        ),
        3
    );
    // Individual keys are in the station's database, never in the fleet's.
    let local_keys: i64 = rusqlite::Connection::open(a.db())
        .unwrap()
        .query_row(
            "SELECT count(*) FROM enrollments WHERE primary_key IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(local_keys, 3);
    let records: Vec<String> = pg
        .client(db)
        .query("SELECT record::text FROM fleet.enrollments", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for r in &records {
        assert!(
            !r.contains("primary_key") && !r.contains("secondary_key"),
            "{r}"
        );
    }
    let central: BTreeSet<String> = pg
        .client(db)
        .query("SELECT registration_id FROM fleet.enrollments", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(central, provisioned(&a));
    let status = |st: &StationDir| {
        let out = st.station(&["--json", "fleet", "status"]);
        assert!(out.status.success(), "{}", text(&out));
        json_lines(&out).remove(0)
    };
    assert_eq!(status(&a)["fleet"]["stations"][0]["not_uploaded"], 3);
    // The batch and what DPS accepted reach it too; syncing again sends nothing twice.
    assert!(a.station(&["export"]).status.success());
    let out = a.station(&["--json", "fleet", "sync"]);
    assert_eq!(json_lines(&out)[0]["sent"], 1, "the batch: {}", text(&out));
    let dps = common::dps_server::FakeDps::start();
    let mut cfg = std::fs::read_to_string(a.config()).unwrap();
    cfg += &format!(
        "\n[upload]\nhost = \"my-dps.azure-devices-provisioning.net\"\npolicy_key_file = \"{}/tests/fixtures/dps-policy-key.txt\"\n",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::write(a.config(), cfg).unwrap();
    let out = a.station(&["upload", "--endpoint", &dps.url]);
    assert!(out.status.success(), "{}", text(&out));
    let out = a.station(&["--json", "fleet", "sync"]);
    assert_eq!(
        json_lines(&out)[0]["sent"],
        3,
        "three upload results: {}",
        text(&out)
    );
    let out = a.station(&["--json", "fleet", "sync"]);
    assert_eq!(json_lines(&out)[0]["sent"], 0, "{}", text(&out));
    assert_eq!(count(pg, db, "SELECT count(*) FROM fleet.batches"), 1);
    assert_eq!(count(pg, db, "SELECT count(*) FROM fleet.enrollments"), 3);
    assert_eq!(
        count(
            pg,
            db,
            "SELECT count(*) FROM fleet.uploads WHERE status = 'uploaded'"
        ),
        3
    );
    let s = &status(&a);
    assert_eq!(s["fleet"]["stations"][0]["not_uploaded"], 0, "{s}");
    assert_eq!(s["fleet"]["stations"][0]["station"], "a1", "{s}");
    assert_eq!(s["fleet"]["stations"][0]["enrollments"], 3, "{s}");
    assert_eq!(s["fleet"]["lines"][0]["line"], "A", "{s}");
    assert_eq!(s["fleet"]["lines"][0]["passed"], 3, "{s}");
    assert_eq!(s["fleet"]["lines"][0]["yield_percent"], 100.0, "{s}");
    assert_eq!(s["this_station"]["pending"], 0, "{s}");
}

#[test]
fn a_registration_id_another_station_holds_fails_the_device_naming_that_station() {
    let pg = Postgres::shared();
    let url = pg.database("claims_held");
    let a = station(&url, "a1", "A", 1, "");
    let b = station(&url, "b1", "B", 3, "");
    init(&a);
    assert!(a.station(&["provision", "--count", "4"]).status.success());
    // A refused device stays in the fixture until the operator takes it off: one try each.
    let mut failed = Vec::new();
    for first in [3, 4] {
        std::fs::write(b.config(), fleet_config(&url, "b1", "B", first, "")).unwrap();
        let out = b.station(&["--json", "provision", "--count", "1"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let lines = json_lines(&out);
        let f = events(&lines, "failed");
        assert_eq!(f.len(), 1, "{}", text(&out));
        failed.push(f[0].clone());
    }
    for f in &failed {
        assert_eq!(f["code"], "fleet.claimed", "{f}");
        let m = f["message"].as_str().unwrap();
        assert!(m.contains("station a1 on line A"), "{m}");
    }
    let failed_ids: BTreeSet<&str> = failed
        .iter()
        .map(|f| f["registration_id"].as_str().unwrap())
        .collect();
    assert_eq!(failed_ids.len(), 2);
    assert!(
        failed_ids.iter().all(|id| provisioned(&a).contains(*id)),
        "{failed_ids:?}"
    );
    std::fs::write(b.config(), fleet_config(&url, "b1", "B", 5, "")).unwrap();
    let out = b.station(&["--json", "provision", "--count", "2"]);
    assert!(
        out.status.success(),
        "devices 5 and 6 are free: {}",
        text(&out)
    );
    // Nothing was recorded or written for the refused devices.
    assert_eq!(provisioned(&b).len(), 2);
    assert!(provisioned(&b).is_disjoint(&provisioned(&a)));
    assert_eq!(
        b.rows().len(),
        2,
        "no pending or failed rows for refused devices"
    );
    b.assert_every_device_credential_is_in_db();
    // The station holding a claim provisions the same device again (a replaced fixture).
    std::fs::remove_dir_all(a.flash()).unwrap();
    let out = a.station(&["--json", "provision", "--count", "1"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// A station of four built-in simulated fixtures.
fn gang(url: &str, id: &str, line: &str) -> StationDir {
    let fixtures: String = (1..=4)
        .map(|k| format!("\n[[fixture]]\nid = \"f{k}\"\nport = \"sim\"\n"))
        .collect();
    station(url, id, line, 1, &fixtures)
}

#[test]
fn two_stations_of_four_fixtures_on_the_same_serials_provision_each_serial_once() {
    let pg = Postgres::shared();
    let url = pg.database("two_gangs");
    let a = gang(&url, "a1", "A");
    let b = gang(&url, "b1", "B");
    init(&a);
    let run = |st: &StationDir| {
        Command::new(STATION)
            .arg("--config")
            .arg(st.config())
            .args(["--json", "provision", "--all-fixtures", "--count", "24"])
            .env_remove("STATION_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ra, rb) = (run(&a), run(&b));
    let (oa, ob) = (
        ra.wait_with_output().unwrap(),
        rb.wait_with_output().unwrap(),
    );
    let (pa, pb) = (provisioned(&a), provisioned(&b));
    assert!(
        pa.is_disjoint(&pb),
        "provisioned on both: {:?}",
        pa.intersection(&pb).collect::<Vec<_>>()
    );
    let mut refused = 0;
    for (out, other, theirs) in [(&oa, "a1", &pb), (&ob, "b1", &pa)] {
        let lines = json_lines(out);
        for f in events(&lines, "failed") {
            assert_eq!(f["code"], "fleet.claimed", "{f}");
            let id = f["registration_id"].as_str().unwrap();
            let holder = if other == "a1" { "b1" } else { "a1" };
            assert!(
                f["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("station {holder}")),
                "{f}"
            );
            assert!(
                theirs.contains(id),
                "{id} refused but not provisioned on {holder}"
            );
            refused += 1;
        }
    }
    assert!(refused > 0, "the two stations met on some serial");
    a.assert_every_device_credential_is_in_db();
    b.assert_every_device_credential_is_in_db();
    let db = "two_gangs";
    assert_eq!(
        count(pg, db, "SELECT count(*) FROM fleet.enrollments") as usize,
        pa.len() + pb.len()
    );
    assert_eq!(count(pg, db, "SELECT count(*) FROM fleet.conflicts"), 0);
    let holders: BTreeMap<String, String> = pg
        .client(db)
        .query("SELECT registration_id, station FROM fleet.claims", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for id in &pa {
        assert_eq!(
            holders.get(&id.to_lowercase()).map(String::as_str),
            Some("a1"),
            "{id}"
        );
    }
    for id in &pb {
        assert_eq!(
            holders.get(&id.to_lowercase()).map(String::as_str),
            Some("b1"),
            "{id}"
        );
    }
}

#[test]
fn with_the_server_down_mid_shift_stations_go_on_and_catch_up_exactly_once() {
    let pg = Postgres::start();
    let url = pg.database("downtime");
    let a = station(&url, "a1", "A", 1, "");
    init(&a);
    assert!(a.station(&["provision", "--count", "2"]).status.success());
    pg.halt();
    std::fs::write(a.config(), fleet_config(&url, "a1", "A", 10, "")).unwrap();
    let out = a.station(&["--json", "provision", "--count", "3"]);
    assert!(out.status.success(), "offline = allow: {}", text(&out));
    let lines = json_lines(&out);
    assert_eq!(events(&lines, "passed").len(), 3);
    assert!(
        events(&lines, "warning").iter().any(|w| w["message"]
            .as_str()
            .unwrap()
            .contains("fleet database unreachable")),
        "{}",
        text(&out)
    );
    assert_eq!(events(&lines, "fleet")[0]["online"], false);
    assert!(queued(&a.db()) >= 6, "3 enrollments and 3 attempts queued");
    let out = a.station(&["--json", "fleet", "status"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(json_lines(&out)[0]["code"], "fleet.unreachable");
    // offline = "refuse": the device fails before anything is written to it.
    let b = station(&url, "b1", "B", 50, "offline = \"refuse\"\n");
    let out = b.station(&["--json", "provision", "--count", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        events(&json_lines(&out), "failed")[0]["code"],
        "fleet.unreachable"
    );
    assert!(provisioned(&b).is_empty());
    b.assert_every_device_credential_is_in_db();
    assert!(
        b.flash_devices()
            .iter()
            .all(|(_, f)| f["records"].as_object().is_none_or(|r| r.is_empty()))
    );
    pg.resume();
    let out = a.station(&["--json", "fleet", "sync"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json_lines(&out)[0]["pending"], 0);
    assert_eq!(queued(&a.db()), 0);
    let again = a.station(&["--json", "fleet", "sync"]);
    assert_eq!(json_lines(&again)[0]["sent"], 0);
    assert_eq!(
        count(&pg, "downtime", "SELECT count(*) FROM fleet.enrollments"),
        5
    );
    assert_eq!(
        count(
            &pg,
            "downtime",
            "SELECT count(*) FROM fleet.attempts WHERE station = 'a1'"
        ),
        5
    );
}

#[test]
fn an_id_provisioned_offline_on_two_stations_is_flagged_on_both_and_never_merged() {
    let pg = Postgres::start();
    let url = pg.database("offline_conflict");
    let a = station(&url, "a1", "A", 1, "");
    let b = station(&url, "b1", "B", 1, "");
    init(&a);
    assert!(a.station(&["provision", "--count", "2"]).status.success());
    pg.halt();
    let out = b.station(&["--json", "provision", "--count", "2"]);
    assert!(out.status.success(), "offline = allow: {}", text(&out));
    pg.resume();
    let out = b.station(&["--json", "fleet", "sync"]);
    assert!(out.status.success(), "{}", text(&out));
    let db = "offline_conflict";
    assert_eq!(
        count(&pg, db, "SELECT count(*) FROM fleet.enrollments"),
        4,
        "both versions kept"
    );
    assert_eq!(
        count(
            &pg,
            db,
            "SELECT count(*) FROM fleet.claims WHERE station = 'a1'"
        ),
        2
    );
    assert_eq!(
        count(
            &pg,
            db,
            "SELECT count(*) FROM fleet.conflicts WHERE station = 'b1' AND holder = 'a1' AND holder_line = 'A'"
        ),
        2
    );
    for st in [&a, &b] {
        let out = st.station(&["--json", "fleet", "status"]);
        let s = &json_lines(&out)[0];
        assert_eq!(s["fleet"]["conflicts"].as_array().unwrap().len(), 2, "{s}");
        for row in s["fleet"]["stations"].as_array().unwrap() {
            assert_eq!(row["conflicts"], 2, "flagged on both stations: {s}");
        }
    }
    let out = a.station(&["fleet", "status"]);
    assert!(
        text(&out).contains("2 conflicts (never merged"),
        "{}",
        text(&out)
    );
}

/// Copy a station's database files (the state a crash would leave).
fn snapshot(db: &Path, to: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let from = format!("{}{ext}", db.display());
        if Path::new(&from).exists() {
            std::fs::copy(&from, format!("{}{ext}", to.display())).unwrap();
        } else {
            let _ = std::fs::remove_file(format!("{}{ext}", to.display()));
        }
    }
}

#[test]
fn a_station_killed_between_send_and_mark_sends_nothing_twice_and_loses_nothing() {
    let pg = Postgres::shared();
    let url = pg.database("killed_sync");
    let a = station(&nowhere(), "a1", "A", 1, "sync_batch = 7\n");
    let out = a.station(&["--json", "provision", "--count", "20"]);
    assert!(out.status.success(), "offline: {}", text(&out));
    let total = queued(&a.db());
    assert_eq!(total, 40, "20 enrollments and 20 attempts queued");
    std::fs::write(
        a.config(),
        fleet_config(&url, "a1", "A", 1, "sync_batch = 7\n"),
    )
    .unwrap();
    init(&a);
    // The window itself: the server committed, the station never marked.
    let before = a.path().join("before.db");
    snapshot(&a.db(), &before);
    assert!(a.station(&["fleet", "sync"]).status.success());
    snapshot(&before, &a.db());
    assert_eq!(
        queued(&a.db()),
        total,
        "the station's state as the crash left it"
    );
    let out = a.station(&["--json", "fleet", "sync"]);
    assert_eq!(json_lines(&out)[0]["sent"], 0, "{}", text(&out));
    assert_eq!(queued(&a.db()), 0);
    let db = "killed_sync";
    assert_eq!(count(pg, db, "SELECT count(*) FROM fleet.enrollments"), 20);
    assert_eq!(count(pg, db, "SELECT count(*) FROM fleet.attempts"), 20);
    // And SIGKILL at arbitrary moments of a sync in progress.
    pg.client(db)
        .batch_execute("TRUNCATE fleet.enrollments, fleet.attempts, fleet.claims, fleet.stations")
        .unwrap();
    snapshot(&before, &a.db());
    for delay_ms in [5, 15, 30, 60] {
        let mut child = Command::new(STATION)
            .arg("--config")
            .arg(a.config())
            .args(["fleet", "sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(a.station(&["fleet", "sync"]).status.success());
    assert_eq!(queued(&a.db()), 0);
    assert_eq!(count(pg, db, "SELECT count(*) FROM fleet.enrollments"), 20);
    assert_eq!(count(pg, db, "SELECT count(*) FROM fleet.attempts"), 20);
    assert_eq!(count(pg, db, "SELECT sent_seq FROM fleet.stations"), 40);
    // A server restored from an older backup (here: emptied) gets everything again.
    pg.client(db)
        .batch_execute("TRUNCATE fleet.enrollments, fleet.attempts, fleet.claims, fleet.stations")
        .unwrap();
    assert!(a.station(&["fleet", "sync"]).status.success());
    assert_eq!(count(pg, db, "SELECT count(*) FROM fleet.enrollments"), 20);
    assert_eq!(count(pg, db, "SELECT count(*) FROM fleet.attempts"), 20);
    assert_eq!(queued(&a.db()), 0);
}

/// A CA and a certificate for 127.0.0.1 / localhost signed by it: (CA PEM, cert PEM, key PEM).
#[test]
fn sslmode_require_speaks_tls_and_checks_the_servers_certificate() {
    let (ca, cert, key) = common::postgres::server_certificate();
    let pg = Postgres::start_tls(&cert, &key);
    let url = pg.database("tls");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("factory-ca.pem"), &ca).unwrap();
    let with = |extra: &str| {
        let cfg = fleet_config(&url, "a1", "A", 1, "").replace("sslmode = \"disable\"\n", "");
        StationDir::with_config(&(cfg + extra))
    };
    let ca_key = format!(
        "ca_file = \"{}\"\n",
        dir.path().join("factory-ca.pem").display()
    );
    let a = with(&ca_key);
    init(&a);
    let out = a.station(&["--json", "provision", "--count", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        count(&pg, "tls", "SELECT count(*) FROM fleet.enrollments"),
        1
    );
    // Without the factory CA the certificate is not trusted; in clear the server refuses the
    // role (no pg_hba.conf entry without encryption). Neither is "offline".
    for (extra, code, says) in [
        ("", "fleet.auth", "certificate is not trusted"),
        ("sslmode = \"disable\"\n", "fleet.auth", "pg_hba.conf"),
    ] {
        let b = with(extra);
        let out = b.station(&["--json", "fleet", "status"]);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        let e = &json_lines(&out)[0];
        assert_eq!(e["code"], code, "{e}");
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{extra:?}: {e}"
        );
    }
}

/// A claimer for station `id` on `line` in the fleet at `url`.
fn claimer(url: &str, id: &str, line: &str) -> provisioning_station::fleet::Claimer {
    let dir = std::env::temp_dir();
    let cfg = provisioning_station::config::load_str(
        &fleet_config(url, id, line, 1, ""),
        &dir.join("station.toml"),
    )
    .unwrap();
    provisioning_station::fleet::Claimer::new(&cfg).unwrap()
}

#[test]
fn of_stations_claiming_one_id_at_the_same_moment_exactly_one_wins() {
    let pg = Postgres::shared();
    let url = pg.database("claim_race");
    init(&station(&url, "s0", "A", 1, ""));
    for round in 0..5 {
        let id = format!("race-{round}");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|k| {
                let (url, id, barrier) = (url.clone(), id.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut c = claimer(&url, &format!("s{k}"), "A");
                    barrier.wait();
                    c.claim(&id, None)
                        .map_err(|e| (e.code().as_str(), e.to_string()))
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "{results:?}");
        let holder: String = pg
            .client("claim_race")
            .query_one(
                "SELECT station FROM fleet.claims WHERE registration_id = $1",
                &[&id],
            )
            .unwrap()
            .get(0);
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(r.0, "fleet.claimed");
            assert!(
                r.1.contains(&format!("station {holder} on line A")),
                "{r:?}"
            );
        }
    }
}

#[test]
fn an_ek_claimed_under_one_registration_id_is_refused_under_another_and_leaves_no_claim() {
    let pg = Postgres::shared();
    let url = pg.database("key_claims");
    init(&station(&url, "a1", "A", 1, ""));
    let (mut a, mut b) = (claimer(&url, "a1", "A"), claimer(&url, "b1", "B"));
    a.claim("dev-1", Some("ek:00ff")).unwrap();
    // The holder may claim again (a device run twice); another ID with the same EK may not,
    // on this station or another.
    a.claim("dev-1", Some("ek:00ff")).unwrap();
    for (c, station) in [(&mut a, "a1"), (&mut b, "b1")] {
        let e = c.claim("dev-2", Some("ek:00ff")).unwrap_err();
        assert_eq!(e.code().as_str(), "fleet.claimed", "{station}: {e}");
        let m = e.to_string();
        assert!(
            m.contains("ek:00ff") && m.contains("dev-1") && m.contains("station a1 on line A"),
            "{m}"
        );
    }
    let left: i64 = pg
        .client("key_claims")
        .query_one(
            "SELECT count(*) FROM fleet.claims WHERE registration_id = 'dev-2'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "a refused key claim leaves no ID claim behind");
    b.claim("DEV-3", Some("x509:abcd")).unwrap();
    let e = a.claim("dev-3", None).unwrap_err();
    assert!(
        e.to_string().contains("station b1 on line B"),
        "IDs are claimed without case: {e}"
    );
}

#[test]
fn a_partition_between_the_claim_and_the_commit_loses_nothing_and_flags_nothing() {
    use std::io::{BufRead, BufReader};
    let pg = Postgres::start();
    let url = pg.database("partition");
    let a = station(&url, "a1", "A", 1, "");
    init(&a);
    // A slow line: the server goes away while the credential is being written, after the
    // claim succeeded and before the device commits.
    let sim = a.simulator(&["--devices", "1", "--baud", "2400"]);
    let cfg = fleet_config(&url, "a1", "A", 1, "").replace("[serial]\n", "[serial]\nbaud = 2400\n");
    std::fs::write(a.config(), cfg).unwrap();
    let mut child = Command::new(STATION)
        .arg("--config")
        .arg(a.config())
        .args(["--json", "provision", "--port", &sim.port])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "writing" && !seen.iter().any(|e: &Value| e["event"] == "writing") {
            assert_eq!(
                count(&pg, "partition", "SELECT count(*) FROM fleet.claims"),
                1
            );
            pg.halt();
        }
        seen.push(v);
    }
    assert!(child.wait().unwrap().success(), "{seen:?}");
    assert!(seen.iter().any(|e| e["event"] == "passed"), "{seen:?}");
    let fleet = seen.iter().find(|e| e["event"] == "fleet").unwrap();
    assert_eq!(fleet["online"], false, "{fleet}");
    assert!(fleet["pending"].as_i64().unwrap() >= 2, "{fleet}");
    pg.resume();
    assert!(a.station(&["fleet", "sync"]).status.success());
    assert_eq!(
        count(&pg, "partition", "SELECT count(*) FROM fleet.enrollments"),
        1
    );
    assert_eq!(
        count(&pg, "partition", "SELECT count(*) FROM fleet.conflicts"),
        0
    );
    assert_eq!(
        count(
            &pg,
            "partition",
            "SELECT count(*) FROM fleet.claims WHERE station = 'a1'"
        ),
        1
    );
}

#[test]
fn a_claim_is_released_only_by_its_station_and_only_while_the_id_was_never_provisioned() {
    let pg = Postgres::shared();
    let url = pg.database("releases");
    let a = station(&url, "a1", "A", 1, "");
    let b = station(&url, "b1", "B", 1, "");
    init(&a);
    // Station a1 claimed device 1 (and its EK) and the device then failed there.
    claimer(&url, "a1", "A")
        .claim("sim000001", Some("ek:00ff"))
        .unwrap();
    let out = b.station(&["--json", "provision", "--count", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let release = |st: &StationDir, reason: &str| {
        st.station(&[
            "--json",
            "fleet",
            "release",
            "SIM000001",
            "--reason",
            reason,
        ])
    };
    let refused = |out: &std::process::Output, says: &str| {
        assert_eq!(out.status.code(), Some(3), "{}", text(out));
        let e = json_lines(out).pop().unwrap();
        assert_eq!(e["code"], "fleet.release_refused", "{e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{says}: {e}");
    };
    // Only the holder releases it, and says why.
    refused(&release(&b, "rework"), "station a1 (line A) holds it");
    let out = release(&a, " ");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = release(&a, "moved to line B for rework");
    assert!(out.status.success(), "{}", text(&out));
    let r = json_lines(&out).pop().unwrap();
    assert_eq!(r["event"], "fleet_release", "{r}");
    assert_eq!(r["registration_id"], "sim000001");
    assert_eq!(
        r["keys"],
        serde_json::json!(["ek:00ff"]),
        "its EK claim went too"
    );
    let kept: (String, String, String) = {
        let row = pg
            .client("releases")
            .query_one(
                "SELECT registration_id, station, reason FROM fleet.releases",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(
        kept,
        (
            "sim000001".into(),
            "a1".into(),
            "moved to line B for rework".into()
        )
    );
    let audit: String = rusqlite::Connection::open(a.db())
        .unwrap()
        .query_row(
            "SELECT subject FROM audit_log WHERE kind = 'fleet_release'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(audit, "sim000001");
    refused(&release(&a, "again"), "no station holds a claim on it");

    // Station b1 provisions the device now; nobody can release that claim.
    let out = b.station(&["--json", "provision", "--count", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    refused(&release(&a, "rework"), "station b1 (line B) holds it");
    refused(&release(&b, "rework"), "this station provisioned it");
    // Nor can b1 with its local database lost, once its enrollment reached the fleet.
    assert!(b.station(&["fleet", "sync"]).status.success());
    let b_reinstalled = station(&url, "b1", "B", 1, "");
    refused(
        &release(&b_reinstalled, "rework"),
        "station b1 provisioned it",
    );
    let claims = "SELECT count(*) FROM fleet.claims WHERE registration_id = 'sim000001'";
    assert_eq!(count(pg, "releases", claims), 1);

    // A device being written (here: the station killed mid-write, its row pending) keeps its
    // claim: release would let another station give a second device the identity.
    let c = station(&url, "c1", "C", 1, "");
    let sim = c.simulator(&["--devices", "1", "--baud", "1200", "--first", "9"]);
    let mut child = Command::new(STATION)
        .args(["--config", c.config().to_str().unwrap()])
        .args(["--json", "provision", "--port", &sim.port])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        if line.unwrap().contains("\"event\":\"writing\"") {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    let pending = c.rows();
    assert_eq!(pending[0].2, "pending", "{pending:?}");
    let id = pending[0].0.as_str();
    refused(
        &c.station(&["--json", "fleet", "release", id, "--reason", "rework"]),
        "being written here",
    );
}
