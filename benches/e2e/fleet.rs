//! Part `fleet` of the end-to-end bench: the fleet database on a throwaway PostgreSQL
//! cluster on loopback (tests/common/postgres.rs).
//!
//! - the claim's round trip (`SELECT fleet.claim(...)`, one per device), median and p99;
//! - sync throughput: 8 sync writers (a station database and a server connection each, one
//!   thread each) sending queued enrollments into one PostgreSQL at once, in total;
//! - station overhead per device with `[fleet]` (claims + the sync thread running) against
//!   without.

use super::common::postgres::Postgres;
use super::{config_with, env_n, ms, overhead_with, percentile};
use provisioning_station::fleet::{self, Claimer};
use provisioning_station::store::Store;
use std::time::Instant;

fn fleet_toml(url: &str) -> String {
    format!("[fleet]\nurl = \"{url}\"\nsslmode = \"disable\"\n")
}

pub fn fleet() {
    let pg = Postgres::start();
    let url = pg.database("bench");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(dir.path(), &fleet_toml(&url));
    fleet::schema::init(&mut fleet::connect(&cfg).unwrap()).unwrap();
    claims(&cfg);
    sync_throughput(&url);
    let off = tempfile::tempdir().unwrap();
    overhead_with(
        &config_with(off.path(), ""),
        off.path(),
        "symmetric, no [fleet]",
    );
    let on = tempfile::tempdir().unwrap();
    let mut cfg = config_with(on.path(), &fleet_toml(&url));
    cfg.station.id = "bench-on".into();
    let sync = fleet::SyncHandle::start(&cfg).unwrap();
    overhead_with(
        &cfg,
        on.path(),
        "symmetric, [fleet] on (claim + sync thread)",
    );
    let s = sync.finish(std::time::Duration::from_secs(10));
    println!(
        "  (fleet sync after the run: online {}, {} queued)",
        s.online, s.pending
    );
}

fn claims(cfg: &provisioning_station::config::Config) {
    let n = env_n("E2E_CLAIMS", 5000);
    let mut claimer = Claimer::new(cfg).unwrap();
    let mut rtt = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("claim-bench-{i:07}");
        let t = Instant::now();
        claimer.claim(&id, Some(&format!("ek:{i:064x}"))).unwrap();
        rtt.push(ms(t.elapsed()));
    }
    rtt.sort_by(f64::total_cmp);
    println!(
        "fleet claim round trip ({n} claims, ID + EK key, loopback TCP, fsync off): median {:.3} ms, p99 {:.3} ms",
        percentile(&rtt, 0.5),
        percentile(&rtt, 0.99)
    );
}

/// Fill a station database's outbox with `n` enrollments as the triggers write them.
fn queued_station(dir: &std::path::Path, station: &str, n: usize) -> Store {
    let mut store = Store::open(&dir.join(format!("{station}.db"))).unwrap();
    store.fleet_join().unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.join(format!("{station}.db"))).unwrap();
    conn.execute_batch("BEGIN").unwrap();
    {
        let mut stmt = conn
            .prepare("INSERT INTO fleet_outbox (kind, payload) VALUES ('enrollment', ?1)")
            .unwrap();
        for i in 0..n {
            let payload = serde_json::json!({
                "registration_id": format!("{station}-sn{i:07}"), "device_serial": format!("SN{i:07}"),
                "firmware": "1.4.2", "model": "bench", "attestation_type": "symmetricKey",
                "key_source": "group-derived", "group_key_id": "a1b2c3d4", "public_material": null,
                "device_digest": format!("{i:064x}"), "station": station, "line": "l1", "operator": "",
                "created_at": "2026-11-30T06:00:00Z", "provisioned_at": "2026-11-30T06:00:01Z",
                "export_seq": i + 1, "cert_serial": null, "cert_thumbprint": null,
                "cert_not_before": null, "cert_not_after": null, "storage_root_key": null,
                "ek_hash": null, "ek_certificate": null, "ek_cert_issuer": null, "ek_cert_status": null
            });
            stmt.execute([payload.to_string()]).unwrap();
        }
    }
    conn.execute_batch("COMMIT").unwrap();
    Store::open(&dir.join(format!("{station}.db"))).unwrap()
}

fn sync_throughput(url: &str) {
    let writers = 8;
    let n = env_n("E2E_FLEET_SYNC", 25_000);
    let dir = tempfile::tempdir().unwrap();
    let stations: Vec<_> = (0..writers)
        .map(|w| {
            let id = format!("w{w}");
            let mut cfg = config_with(dir.path(), &fleet_toml(url));
            cfg.station.id = id.clone();
            let store = queued_station(dir.path(), &id, n);
            (cfg, store)
        })
        .collect();
    let start = Instant::now();
    let threads: Vec<_> = stations
        .into_iter()
        .map(|(cfg, mut store)| {
            std::thread::spawn(move || {
                let mut client = fleet::connect(&cfg).unwrap();
                let batch = cfg.fleet.as_ref().unwrap().sync_batch;
                fleet::sync::push(&mut client, &mut store, &cfg, batch).unwrap()
            })
        })
        .collect();
    let sent: u64 = threads.into_iter().map(|t| t.join().unwrap().sent).sum();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fleet sync throughput: {writers} writers x {n} queued enrollments into one PostgreSQL (batches of 500, \
         claims and conflict checks included): {sent} in {secs:.2} s = {:.0} enrollments/s in total",
        sent as f64 / secs
    );
}
