//! End-to-end benchmarks (`cargo bench --bench e2e`), printing medians and ratios:
//!
//! 1. station overhead per device (total time minus time waiting on the line) against the
//!    un-throttled simulator on a real pty, with the real on-disk database;
//! 2. payload efficiency of writing a 2 KiB record at a simulated 115200 baud;
//! 3. export of 1,000,000 enrollments (CSV + DPS bulk JSON), and the database size.
//!
//! Sizes: `E2E_DEVICES` (default 500), `E2E_EXPORT` (default 1000000).

use provisioning_station::config;
use provisioning_station::device::link::Link;
use provisioning_station::device::protocol::{RecordId, Timeouts};
use provisioning_station::device::sim::{self, SimConfig};
use provisioning_station::device::transport::SerialTransport;
use provisioning_station::dps::enrollment::DpsOptions;
use provisioning_station::dps::export;
use provisioning_station::store::Store;
use provisioning_station::workflow::{DeviceInput, Workflow};
use std::path::Path;
use std::time::{Duration, Instant};

const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/group-key.txt");

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(dir: &Path) -> config::Config {
    let text = format!(
        "[station]\nid = \"bench\"\nline = \"l1\"\ndatabase = \"station.db\"\nexport_dir = \"exports\"\n\
         [dps]\nid_scope = \"0ne00000001\"\nallocation_policy = \"hashed\"\niot_hubs = [\"hub.azure-devices.net\"]\n\
         [dps.initial_twin.tags]\nenvironment = \"production\"\n\
         [attestation]\nmode = \"symmetric\"\n[attestation.symmetric]\ngroup_key_file = \"{KEY}\"\n"
    );
    let mut c = config::load_str(&text, Path::new("bench.toml")).unwrap();
    c.base_dir = dir.to_path_buf();
    c
}

fn link(path: &str, baud: u32) -> Link {
    let t = SerialTransport::open(path, baud).unwrap();
    let timeouts = Timeouts {
        response: Duration::from_millis(500),
        commit: Duration::from_millis(2000),
        keygen: Duration::from_millis(15000),
    };
    Link::new(Box::new(t), baud, timeouts, 3)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn overhead_per_device() {
    let n = env_n("E2E_DEVICES", 500);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let sim = sim::spawn(SimConfig::new(dir.path().join("flash"))).unwrap();
    let mut link = link(&sim.path, 115_200);
    let mut wf = Workflow::new(&cfg).unwrap();
    let input = DeviceInput::default();
    let (mut total, mut overhead) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let o = wf.provision(&mut link, &input, &mut |_| {}).unwrap();
        total.push(ms(o.duration));
        overhead.push(ms(o.overhead()));
    }
    total.sort_by(f64::total_cmp);
    overhead.sort_by(f64::total_cmp);
    println!(
        "station overhead per device ({n} devices, un-throttled pty simulator, on-disk SQLite FULL sync):\n  \
         overhead median {:.3} ms, p99 {:.3} ms; whole device median {:.3} ms, p99 {:.3} ms",
        percentile(&overhead, 0.5),
        percentile(&overhead, 0.99),
        percentile(&total, 0.5),
        percentile(&total, 0.99)
    );
    drop(sim);
}

fn payload_efficiency() {
    let baud = 115_200;
    let dir = tempfile::tempdir().unwrap();
    let mut sc = SimConfig::new(dir.path().join("flash"));
    sc.baud = baud;
    let sim = sim::spawn(sc).unwrap();
    let mut link = link(&sim.path, baud);
    let record: Vec<u8> = (0..2048u32).map(|i| (i * 13 % 256) as u8).collect();
    let ideal = 2048.0 * 10.0 / baud as f64;
    let mut eff = Vec::new();
    let mut wire = 0;
    for _ in 0..10 {
        link.hello().unwrap();
        let (tx0, rx0) = (link.stats.tx_bytes, link.stats.rx_bytes);
        let t = Instant::now();
        link.write_record(RecordId::Credential as u8, &record, |_, _| {})
            .unwrap();
        let elapsed = t.elapsed().as_secs_f64();
        wire = (link.stats.tx_bytes - tx0 + link.stats.rx_bytes - rx0) as usize;
        eff.push(ideal / elapsed);
    }
    eff.sort_by(f64::total_cmp);
    println!(
        "payload efficiency, 2048-byte record at {baud} baud (device frame body 1024): median {:.3} of line time \
         (min {:.3}, max {:.3}); bytes on the wire {wire} for 2048 payload = {:.3}",
        percentile(&eff, 0.5),
        eff[0],
        eff[eff.len() - 1],
        2048.0 / wire as f64
    );
}

fn export_million() {
    let n = env_n("E2E_EXPORT", 1_000_000) as i64;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let db = dir.path().join("station.db");
    let mut store = Store::open(&db).unwrap();
    let keys = provisioning_station::attestation::symmetric::SymmetricKeySource::load(
        cfg.attestation.symmetric.as_ref().unwrap(),
        |p| cfg.resolve(p),
    )
    .unwrap();
    let key_id = keys.primary.as_ref().unwrap().id().to_string();
    let t = Instant::now();
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA synchronous = OFF").unwrap();
        conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1) \
             INSERT INTO enrollments (registration_id, device_serial, firmware, model, attestation_type, \
                key_source, group_key_id, device_digest, status, station, line, operator, created_at, \
                updated_at, provisioned_at, export_seq) \
             SELECT printf('dev-%08d', x), printf('SN%08d', x), '1.4.2', 'sensor-x', 'symmetricKey', \
                'group-derived', ?2, lower(hex(randomblob(32))), 'provisioned', 'bench', 'l1', 'op-1', \
                '2026-11-29T18:00:00Z', '2026-11-29T18:00:00Z', '2026-11-29T18:00:00Z', x FROM c",
            rusqlite::params![n, key_id],
        )
        .unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    let fill = t.elapsed();
    let db_size = std::fs::metadata(&db).unwrap().len();
    let out = dir.path().join("exports");
    let options = DpsOptions::from_config(&cfg.dps);
    let t = Instant::now();
    let s = export::export_new(&mut store, "bench", &options, Some(&keys), &out)
        .unwrap()
        .unwrap();
    let mut times = vec![t.elapsed().as_secs_f64()];
    for _ in 0..2 {
        let t = Instant::now();
        export::export_again(&store, &s.batch, Some(&keys), &out).unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    let csv = std::fs::metadata(&s.csv).unwrap().len();
    let json = std::fs::metadata(&s.json).unwrap().len();
    let first = times[0];
    times.sort_by(f64::total_cmp);
    println!(
        "export of {n} enrollments (CSV + DPS bulk JSON, group-derived keys re-derived): first {:.2} s, median of 3 {:.2} s\n  \
         database {:.1} MiB ({:.0} B/enrollment, filled in {:.1} s); CSV {:.1} MiB; JSON {:.1} MiB in {} bulk operations",
        first,
        times[1],
        db_size as f64 / 1048576.0,
        db_size as f64 / n as f64,
        fill.as_secs_f64(),
        csv as f64 / 1048576.0,
        json as f64 / 1048576.0,
        s.bulk_operations
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run only when
    // asked to bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    overhead_per_device();
    payload_efficiency();
    export_million();
}
