//! Central upload (`station upload --fleet`, docs/fleet.md) on a real PostgreSQL (a throwaway
//! cluster) and the local DPS: stations export, one host uploads every station's enrollments
//! exactly once; one run at a time; a run that stopped midway resumes without doubling; the
//! stations refuse per-station upload and key modes whose keys only they hold.

mod common;
use common::dps_server::FakeDps;
use common::postgres::Postgres;
use common::*;
use serde_json::Value;

const POLICY_KEY_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dps-policy-key.txt"
);
const SECONDARY_GROUP_KEY_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/secondary-group-key.txt"
);

/// The upload lock's keys (src/fleet/upload.rs).
const LOCK: &str = "1718383984, 1";

/// A station `id` (simulated devices from `first`) in the fleet at `url`, with `[upload]`;
/// `symmetric` replaces the `[attestation.symmetric]` keys line, `fleet` adds `[fleet]` keys.
fn config(url: &str, id: &str, first: u32, symmetric: &str, fleet: &str) -> String {
    let cfg = default_config()
        .replace("id = \"test-station\"", &format!("id = \"{id}\""))
        .replace(
            "[simulator]\nflash_dir = \"flash\"",
            &format!("[simulator]\nflash_dir = \"flash\"\nfirst = {first}"),
        )
        .replace("keys = \"group-derived\"", symmetric);
    format!(
        "{cfg}\n[upload]\nhost = \"my-dps.azure-devices-provisioning.net\"\n\
         policy_key_file = \"{POLICY_KEY_FILE}\"\nrate_per_minute = 1000\ngive_up_after_s = 20\n\
         \n[fleet]\nurl = \"{url}\"\nsslmode = \"disable\"\nconnect_timeout_s = 1\n{fleet}"
    )
}

fn derived_with_secondary() -> String {
    format!("keys = \"group-derived\"\nsecondary_group_key_file = \"{SECONDARY_GROUP_KEY_FILE}\"")
}

fn ok(st: &StationDir, args: &[&str]) -> Vec<Value> {
    let out = st.station(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    json_lines(&out)
}

/// Provision `n` devices, export them, and send everything to the fleet database.
fn provision_export_sync(st: &StationDir, n: u32) {
    ok(st, &["--json", "provision", "--count", &n.to_string()]);
    ok(st, &["--json", "export"]);
    ok(st, &["--json", "fleet", "sync"]);
}

fn count(pg: &Postgres, db: &str, sql: &str) -> i64 {
    pg.client(db).query_one(sql, &[]).unwrap().get(0)
}

fn fleet_upload(st: &StationDir, dps: &FakeDps) -> std::process::Output {
    st.station(&["--json", "upload", "--fleet", "--endpoint", &dps.url])
}

fn event<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event in {lines:?}"))
}

#[test]
fn one_host_uploads_every_stations_enrollments_once_one_run_at_a_time_and_resumes() {
    let pg = Postgres::shared();
    let url = pg.database("fleet_upload");
    let db = "fleet_upload";
    let fleet = "uploads = \"fleet\"";
    let a = StationDir::with_config(&config(&url, "a1", 1, &derived_with_secondary(), fleet));
    let b = StationDir::with_config(&config(&url, "b1", 5001, &derived_with_secondary(), fleet));
    // A station that uploads for itself, with keys only it holds: the fleet run leaves it be.
    let c = StationDir::with_config(&config(&url, "c1", 9001, "keys = \"individual\"", ""));
    // The back office: the same binary, the group keys, no devices.
    let office =
        StationDir::with_config(&config(&url, "office", 1, &derived_with_secondary(), fleet));
    ok(&a, &["--json", "fleet", "init"]);
    provision_export_sync(&a, 12);
    provision_export_sync(&b, 7);
    provision_export_sync(&c, 2);
    let dps = FakeDps::start();

    // Per-station upload refuses, naming the central command; nothing reaches DPS.
    let out = a.station(&["--json", "upload", "--endpoint", &dps.url]);
    assert!(!out.status.success(), "{}", text(&out));
    let e = json_lines(&out).pop().unwrap();
    assert_eq!(e["code"], "upload.fleet_owns", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("station upload --fleet"),
        "{e}"
    );
    assert_eq!(dps.state.lock().unwrap().bulk_calls, 0);

    // A run holding the lock (a session of another host): the second refuses, sends nothing.
    let mut holder = pg.client(db);
    holder
        .batch_execute(&format!(
            "SET application_name = 'station other-host'; SELECT pg_advisory_lock({LOCK})"
        ))
        .unwrap();
    let out = fleet_upload(&office, &dps);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let e = json_lines(&out).pop().unwrap();
    assert_eq!(e["code"], "fleet.upload_busy", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("station other-host"),
        "{e}"
    );
    assert_eq!(dps.state.lock().unwrap().bulk_calls, 0);
    // The other host finishes and gives the lock back (a dropped client's session ends on the
    // server a moment later, which a run started at once can still find holding it).
    holder
        .batch_execute(&format!("SELECT pg_advisory_unlock({LOCK})"))
        .unwrap();
    drop(holder);

    let lines = ok(
        &office,
        &["--json", "upload", "--fleet", "--endpoint", &dps.url],
    );
    {
        let s = dps.state.lock().unwrap();
        assert_eq!(
            s.enrollments.len(),
            19,
            "both stations' enrollments, not c1's"
        );
        assert!(s.creates.values().all(|&n| n == 1), "{:?}", s.creates);
        assert_eq!(
            s.bulk_calls, 2,
            "19 enrollments of two stations in ⌈19/10⌉ calls"
        );
        assert!(s.invalid.is_empty(), "{:?}", s.invalid);
        assert!(s.enrollments.keys().all(|k| !k.starts_with("sim0090")));
    }
    // DPS holds the key each device was given, re-derived on the office host.
    let key = String::from_utf8(ok_raw(
        &b,
        &["derive-key", "--registration-id", "sim005003"],
    ))
    .unwrap();
    assert_eq!(
        dps.state.lock().unwrap().enrollments["sim005003"]["attestation"]["symmetricKey"]["primaryKey"],
        key.trim()
    );
    let summary = event(&lines, "fleet_upload");
    assert_eq!(summary["skipped"], 2, "c1's individual keys: {summary}");
    let skipped: Vec<&Value> = lines
        .iter()
        .filter(|e| e["event"] == "fleet_upload_skipped")
        .collect();
    assert!(
        skipped
            .iter()
            .all(|e| e["station"] == "c1" && e["reason"].as_str().unwrap().contains("individual")),
        "{skipped:?}"
    );
    let uploaded =
        "SELECT count(*) FROM fleet.uploads WHERE status = 'uploaded' AND uploaded_by = 'office'";
    assert_eq!(count(pg, db, uploaded), 19);
    // The upload host's own audit trail records the run.
    let detail: String = rusqlite::Connection::open(office.db())
        .unwrap()
        .query_row(
            "SELECT detail FROM audit_log WHERE kind = 'fleet_upload' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let detail: Value = serde_json::from_str(&detail).unwrap();
    assert_eq!(detail["upload"]["uploaded"], 19, "{detail}");

    // Again: nothing left to send.
    ok(
        &office,
        &["--json", "upload", "--fleet", "--endpoint", &dps.url],
    );
    assert_eq!(dps.state.lock().unwrap().bulk_calls, 2);

    // A run killed after DPS accepted and the mirror recorded, before the fleet heard: the
    // next run writes the results back and sends nothing.
    pg.client(db)
        .batch_execute("DELETE FROM fleet.uploads WHERE station = 'b1'")
        .unwrap();
    // A dry run says so and writes nothing back (nor to DPS).
    let lines = ok(
        &office,
        &[
            "--json",
            "upload",
            "--fleet",
            "--dry-run",
            "--endpoint",
            &dps.url,
        ],
    );
    assert_eq!(event(&lines, "fleet_upload")["written_back"], 0);
    assert_eq!(count(pg, db, uploaded), 12);
    assert_eq!(dps.state.lock().unwrap().bulk_calls, 2);
    let lines = ok(
        &office,
        &["--json", "upload", "--fleet", "--endpoint", &dps.url],
    );
    assert_eq!(event(&lines, "fleet_upload")["written_back"], 7);
    assert_eq!(dps.state.lock().unwrap().bulk_calls, 2);
    assert_eq!(count(pg, db, uploaded), 19);

    // Killed after DPS accepted, before the mirror recorded it: sent again, DPS answers that it
    // holds it, the look-up finds it held as sent, and it counts uploaded, once.
    let mirror = office.db().with_extension("db.fleet-upload.db");
    writable_db(&mirror)
        .execute_batch("DELETE FROM uploads WHERE registration_id LIKE 'sim00000%'")
        .unwrap();
    pg.client(db)
        .batch_execute("DELETE FROM fleet.uploads WHERE registration_id LIKE 'sim00000%'")
        .unwrap();
    ok(
        &office,
        &["--json", "upload", "--fleet", "--endpoint", &dps.url],
    );
    {
        let s = dps.state.lock().unwrap();
        assert_eq!(s.bulk_calls, 3, "the 9 unrecorded ones in one call");
        assert_eq!(s.enrollments.len(), 19);
        assert!(
            s.creates.values().all(|&n| n == 1),
            "never doubled: {:?}",
            s.creates
        );
    }
    assert_eq!(count(pg, db, uploaded), 19);

    // The fleet's status shows the uploads per station.
    let status = ok(&office, &["--json", "fleet", "status"]);
    let stations = status[0]["fleet"]["stations"].as_array().unwrap();
    let row = |id: &str| {
        stations
            .iter()
            .find(|s| s["station"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            row("a1")["uploaded"].clone(),
            row("a1")["not_uploaded"].clone()
        ),
        (12.into(), 0.into())
    );
    assert_eq!(
        (
            row("b1")["uploaded"].clone(),
            row("b1")["upload_failed"].clone()
        ),
        (7.into(), 0.into())
    );
    assert_eq!(row("c1")["not_uploaded"], 2);
}

fn ok_raw(st: &StationDir, args: &[&str]) -> Vec<u8> {
    let out = st.station(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    out.stdout
}

#[test]
fn a_station_whose_keys_only_it_holds_refuses_central_upload_at_config_check() {
    let url = "postgresql://postgres@127.0.0.1:1/none";
    let fleet = "uploads = \"fleet\"";
    for (keys, says) in [
        ("keys = \"individual\"", "individual symmetric keys"),
        ("keys = \"group-derived\"", "no secondary group key"),
    ] {
        let st = StationDir::with_config(&config(url, "s1", 1, keys, fleet));
        let out = st.station(&["--json", "list"]);
        assert_eq!(out.status.code(), Some(2), "{keys}: {}", text(&out));
        let e = json_lines(&out).pop().unwrap();
        assert_eq!(e["code"], "config.invalid", "{e}");
        let m = e["message"].as_str().unwrap();
        assert!(m.contains("fleet.uploads") && m.contains(says), "{m}");
    }
    // The same keys with per-station uploads, and derived keys with a secondary group key.
    for (keys, fleet) in [
        ("keys = \"individual\"".to_string(), ""),
        (derived_with_secondary(), fleet),
    ] {
        let st = StationDir::with_config(&config(url, "s1", 1, &keys, fleet));
        let out = st.station(&["--json", "list"]);
        assert!(out.status.success(), "{keys} {fleet}: {}", text(&out));
    }
}

#[test]
fn a_central_upload_killed_mid_run_resumes_with_nothing_lost_or_doubled() {
    let pg = Postgres::shared();
    let url = pg.database("fleet_upload_kill");
    let db = "fleet_upload_kill";
    let fleet = "uploads = \"fleet\"";
    let keys = derived_with_secondary();
    let a = StationDir::with_config(&config(&url, "a1", 1, &keys, fleet));
    let b = StationDir::with_config(&config(&url, "b1", 5001, &keys, fleet));
    ok(&a, &["--json", "fleet", "init"]);
    provision_export_sync(&a, 30);
    provision_export_sync(&b, 25);
    let dps = FakeDps::start();
    // SIGKILL while its second bulk call is in flight.
    let config = a.config();
    dps.kill_uploader_mid_call(&[
        "--config",
        config.to_str().unwrap(),
        "--json",
        "upload",
        "--fleet",
        "--endpoint",
        &dps.url,
    ]);
    let accepted = dps.state.lock().unwrap().enrollments.len();
    assert!(
        accepted > 0 && accepted < 55,
        "killed mid-run: DPS holds {accepted}"
    );
    let uploaded = "SELECT count(*) FROM fleet.uploads WHERE status = 'uploaded'";
    assert_eq!(
        count(pg, db, uploaded),
        0,
        "the killed run wrote nothing back"
    );
    dps.let_go();
    // The killed run's lock goes with its session (the server notices the closed socket).
    let mut out = fleet_upload(&b, &dps);
    for _ in 0..50 {
        let busy = json_lines(&out)
            .last()
            .is_some_and(|e| e["code"] == "fleet.upload_busy");
        if !busy {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = fleet_upload(&b, &dps);
    }
    assert!(out.status.success(), "{}", text(&out));
    let s = dps.state.lock().unwrap();
    assert_eq!(s.enrollments.len(), 55);
    assert!(
        s.creates.values().all(|&n| n == 1),
        "never doubled: {:?}",
        s.creates
    );
    drop(s);
    assert_eq!(count(pg, db, uploaded), 55, "none lost");
    assert_eq!(
        count(
            pg,
            db,
            "SELECT count(DISTINCT station) FROM fleet.uploads WHERE uploaded_by = 'b1'"
        ),
        2
    );
}

/// A group-derived enrollment made without a secondary group key got a random secondary key
/// that only its station holds (and wrote to the device): the upload host, which derives a
/// secondary from its own secondary group key, must not send it with another one.
#[test]
fn an_enrollment_whose_random_secondary_key_only_its_station_holds_is_not_sent_centrally() {
    let pg = Postgres::shared();
    let url = pg.database("fleet_upload_secondary");
    let fleet = "uploads = \"fleet\"";
    // Uploads for itself: its secondaries are random (no secondary group key).
    let d = StationDir::with_config(&config(&url, "d1", 7001, "keys = \"group-derived\"", ""));
    let e = StationDir::with_config(&config(&url, "e1", 8001, &derived_with_secondary(), fleet));
    let office =
        StationDir::with_config(&config(&url, "office", 1, &derived_with_secondary(), fleet));
    ok(&d, &["--json", "fleet", "init"]);
    provision_export_sync(&d, 3);
    provision_export_sync(&e, 2);
    let dps = FakeDps::start();
    let out = fleet_upload(&office, &dps);
    assert!(out.status.success(), "{}", text(&out));
    let lines = json_lines(&out);
    let skipped: Vec<&Value> = lines
        .iter()
        .filter(|e| e["event"] == "fleet_upload_skipped")
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .all(|e| e["station"] == "d1"
                && e["reason"].as_str().unwrap().contains("made at random")),
        "{skipped:?}"
    );
    let held: Vec<String> = dps
        .state
        .lock()
        .unwrap()
        .enrollments
        .keys()
        .cloned()
        .collect();
    assert_eq!(held.len(), 2, "only e1's derived enrollments: {held:?}");
    assert!(held.iter().all(|k| k.starts_with("sim0080")), "{held:?}");
}

#[test]
fn the_documented_roles_and_grants_work_with_passwords_over_tls() {
    // docs/fleet.md "Setting up the server", step by step, on a server that takes TLS only and
    // asks every role but the test's superuser for its password (scram-sha-256).
    let (ca, cert, key) = common::postgres::server_certificate();
    let pg = Postgres::start_tls(&cert, &key);
    pg.database("roles");
    let db = "roles";
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("factory-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    pg.client("postgres")
        .batch_execute(
            "CREATE ROLE fleet_owner LOGIN PASSWORD 'owner-test-password';
             GRANT CREATE ON DATABASE roles TO fleet_owner;
             CREATE ROLE station LOGIN PASSWORD 'station-test-password';",
        )
        .unwrap();
    let password_file = |name: &str, password: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{password}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        format!("password_file = \"{}\"\n", p.display())
    };
    let as_role = |id: &str, first: u32, role: &str, password: &str| {
        let url = format!("postgresql://{role}@127.0.0.1:{}/{db}", pg.port);
        let fleet = format!(
            "uploads = \"fleet\"\nca_file = \"{}\"\n{password}",
            ca_file.display()
        );
        StationDir::with_config(
            &config(&url, id, first, &derived_with_secondary(), &fleet)
                .replace("sslmode = \"disable\"\n", ""),
        )
    };

    // The owner creates the schema, its password in the environment.
    let owner = as_role(
        "owner",
        1,
        "fleet_owner",
        "password_env = \"FLEET_OWNER_PASSWORD\"\n",
    );
    let init = |password: &str| {
        std::process::Command::new(STATION)
            .args(["--config", owner.config().to_str().unwrap()])
            .args(["--json", "fleet", "init"])
            .env("FLEET_OWNER_PASSWORD", password)
            .output()
            .unwrap()
    };
    let refused = init("not-the-password");
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    let e = json_lines(&refused).pop().unwrap();
    assert_eq!(e["code"], "fleet.auth", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("password"),
        "a wrong password is named: {e}"
    );
    let out = init("owner-test-password");
    assert!(out.status.success(), "{}", text(&out));
    // Then the grants, as the owner.
    pg.client(db)
        .batch_execute(
            "SET ROLE fleet_owner;
             GRANT USAGE ON SCHEMA fleet TO station;
             GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA fleet TO station;
             GRANT EXECUTE ON FUNCTION fleet.claim(text, text, text, text) TO station;
             GRANT EXECUTE ON FUNCTION fleet.release(text, text, text) TO station;
             REVOKE INSERT, UPDATE ON fleet.releases FROM station;",
        )
        .unwrap();

    // A station with the station role (password in a file) claims, provisions and syncs.
    let a = as_role(
        "a1",
        1,
        "station",
        &password_file("a1-password", "station-test-password"),
    );
    provision_export_sync(&a, 3);
    let synced = "SELECT count(*) FROM fleet.enrollments WHERE station = 'a1'";
    assert_eq!(count(&pg, db, synced), 3);
    // The role may call fleet.release() (it runs as the owner; without the grant: permission
    // denied, fleet.server).
    let out = a.station(&[
        "--json",
        "fleet",
        "release",
        "sim000999",
        "--reason",
        "test",
    ]);
    let e = json_lines(&out).pop().unwrap();
    assert_eq!(e["code"], "fleet.release_refused", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("no station holds"),
        "{e}"
    );
    // The upload host, with the same grants, uploads them.
    let office = as_role(
        "office",
        1,
        "station",
        &password_file("office-password", "station-test-password"),
    );
    let dps = FakeDps::start();
    let out = fleet_upload(&office, &dps);
    assert!(out.status.success(), "{}", text(&out));
    let uploaded = "SELECT count(*) FROM fleet.uploads WHERE status = 'uploaded'";
    assert_eq!(count(&pg, db, uploaded), 3);
    assert_eq!(dps.state.lock().unwrap().enrollments.len(), 3);

    // No password at all, where the server asks for one: fleet.auth as well.
    let nopw = as_role("n1", 7001, "station", "");
    let out = nopw.station(&["--json", "provision", "--count", "1"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let e = json_lines(&out).pop().unwrap();
    assert_eq!(e["code"], "fleet.auth", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("asks for a password"),
        "{e}"
    );
    // A wrong password in the file is not "offline" (the default offline = "allow" would
    // provision on and never sync): refused before any device, saying why.
    let b = as_role(
        "b1",
        5001,
        "station",
        &password_file("b1-password", "wrong"),
    );
    let out = b.station(&["--json", "provision", "--count", "1"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let e = json_lines(&out).pop().unwrap();
    assert_eq!(e["code"], "fleet.auth", "{e}");
    assert!(e["message"].as_str().unwrap().contains("password"), "{e}");
    assert!(b.rows().is_empty());
    assert!(
        !json_lines(&out).iter().any(|e| e["event"] == "writing"),
        "nothing was written to a device"
    );
}
