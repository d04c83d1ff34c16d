//! Part `fleet-upload` of the end-to-end bench: `station upload --fleet` (the fleet upload
//! lock, the mirror of every station's exported versions, the one uploader, the write-back to
//! `fleet.uploads`) against one station uploading the same number of enrollments itself, both
//! to the local fake DPS with the rate limit lifted, on a throwaway PostgreSQL cluster.

use super::common::dps_server::{FakeDps, POLICY, POLICY_KEY};
use super::common::postgres::Postgres;
use super::{config_with, env_n, keys_of};
use provisioning_station::config::{Config, UploadSection};
use provisioning_station::dps::enrollment::DpsOptions;
use provisioning_station::dps::export;
use provisioning_station::dps::upload::{self, Dps, UploadOptions};
use provisioning_station::fleet;
use provisioning_station::store::Store;
use std::path::Path;
use std::time::Instant;

const SECONDARY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/secondary-group-key.txt"
);
const HOST: &str = "bench-dps.azure-devices-provisioning.net";

fn extra(url: &str) -> String {
    format!(
        "secondary_group_key_file = \"{SECONDARY}\"\n[fleet]\nurl = \"{url}\"\nsslmode = \"disable\"\nuploads = \"fleet\"\n"
    )
}

/// `n` provisioned group-derived enrollments `<prefix>-NNNNNNNN` of station `id`, exported.
fn station(dir: &Path, url: &str, id: &str, n: i64) -> (Config, Store) {
    let sub = dir.join(id);
    std::fs::create_dir_all(&sub).unwrap();
    let mut cfg = config_with(&sub, &extra(url));
    cfg.station.id = id.into();
    let keys = keys_of(&cfg);
    let db = cfg.database_path();
    let mut store = Store::open(&db).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    provisioning_station::store::audit::register_functions(&conn).unwrap();
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1) \
             INSERT INTO enrollments (registration_id, device_serial, firmware, model, \
                attestation_type, key_source, group_key_id, device_digest, status, station, line, \
                operator, created_at, updated_at, provisioned_at, export_seq) \
             SELECT printf('%s-%08d', ?3, x), printf('SN%08d', x), '1.4.2', 'sensor-x', \
                'symmetricKey', 'group-derived', ?2, lower(hex(randomblob(32))), 'provisioned', \
                ?3, 'l1', 'op-1', '2026-11-29T18:00:00Z', '2026-11-29T18:00:00Z', \
                '2026-11-29T18:00:00Z', x FROM c",
        rusqlite::params![n, keys.primary.as_ref().unwrap().id(), id],
    )
    .unwrap();
    store.fleet_join().unwrap();
    export::export_new(
        &mut store,
        "bench",
        &DpsOptions::from_config(&cfg.dps),
        Some(&keys),
        &sub.join("x"),
        &mut |_| {},
    )
    .unwrap();
    (cfg, store)
}

fn dps(dir: &Path, cfg: &Config, server: &FakeDps) -> (Dps, u32) {
    let key_file = dir.join("policy.txt");
    std::fs::write(&key_file, POLICY_KEY).unwrap();
    let section = UploadSection {
        host: HOST.into(),
        endpoint: None,
        policy_name: POLICY.into(),
        policy_key_file: Some(key_file),
        policy_key_env: None,
        token_lifetime_s: 3600,
        rate_per_minute: 60_000,
        give_up_after_s: 60,
        request_timeout_s: 30,
        query_page_size: 1000,
    };
    (Dps::new(cfg, &section, Some(&server.url)).unwrap(), 1000)
}

pub fn fleet_upload() {
    let stations = env_n("E2E_FLEET_STATIONS", 4) as i64;
    let total = env_n("E2E_FLEET_UPLOAD", 10_000) as i64;
    let per = total / stations;
    let pg = Postgres::start();
    let url = pg.database("bench_upload");
    let dir = tempfile::tempdir().unwrap();
    let office = config_with(dir.path(), &extra(&url));
    fleet::schema::init(&mut fleet::connect(&office).unwrap()).unwrap();
    for s in 0..stations {
        let (cfg, mut store) = station(dir.path(), &url, &format!("s{s}"), per);
        let mut c = fleet::connect(&cfg).unwrap();
        fleet::sync::push(&mut c, &mut store, &cfg, 500).unwrap();
    }
    let keys = keys_of(&office);
    let server = FakeDps::start_for(HOST);
    let (mut client, page) = dps(dir.path(), &office, &server);
    let t = Instant::now();
    let f = fleet::upload::upload_fleet(
        &office,
        &mut client,
        Some(&keys),
        &UploadOptions::default(),
        page,
        &mut |_| {},
    )
    .unwrap();
    let central = t.elapsed().as_secs_f64();
    assert_eq!(f.upload.uploaded as i64, per * stations);
    assert_eq!(
        server.state.lock().unwrap().enrollments.len() as i64,
        per * stations
    );

    let one = tempfile::tempdir().unwrap();
    let (cfg, mut store) = station(one.path(), &url, "single", per * stations);
    let server = FakeDps::start_for(HOST);
    let (mut client, page) = dps(one.path(), &cfg, &server);
    let t = Instant::now();
    let s = upload::upload(
        &mut store,
        &mut client,
        Some(&keys),
        &UploadOptions::default(),
        page,
        &mut |_| {},
    )
    .unwrap();
    let single = t.elapsed().as_secs_f64();
    assert_eq!(s.uploaded as i64, per * stations);
    let n = (per * stations) as f64;
    println!(
        "central upload (`upload --fleet`, {stations} stations × {per}, rate limit lifted): {:.2} s = {:.0} enrollments/min \
         (lock + mirror + upload + write-back of {} results)\n  \
         one station uploading the same {n} itself: {:.2} s = {:.0} enrollments/min; central / single time = {:.2}",
        central,
        n * 60.0 / central,
        f.written_back,
        single,
        n * 60.0 / single,
        central / single
    );
}
