//! End-to-end benchmarks (`cargo bench --bench e2e`), printing medians and ratios:
//!
//! 1. station overhead per device (total time minus time waiting on the line) against the
//!    un-throttled simulator on a real pty, with the real on-disk database;
//! 2. payload efficiency of writing a 2 KiB record at a simulated 115200 baud;
//! 3. export of 1,000,000 enrollments (CSV + DPS bulk JSON), and the database size;
//! 4. X.509: certificates minted per second (single thread) against one `openssl` process chain
//!    per device as tutorials do it, and station overhead per device in x509 mode;
//! 5. upload to a local server playing DPS: enrollments per minute at the default rate limit,
//!    the request count for 10,000 enrollments, and the calls needed to verify 10,000
//!    unchanged enrollments (query pages, etags) against one call per enrollment;
//! 6. TPM: EK read per device against swtpm (persistent EK, created EK, with EK-certificate
//!    verification) against `tpm2_createek` + `tpm2_readpublic` on the same swtpm;
//! 7. GUI (needs `xvfb-run`): frame CPU time while scrolling the history of 1,000,000
//!    enrollments, launch to first frame, resident memory.
//!
//! 8. audit trail: what it adds to a device's database writes; verification of 1,000,000
//!    entries.
//! 9. fleet database (PostgreSQL started by the bench): claim round trip, sync throughput of 8
//!    writers, station overhead per device with `[fleet]` on and off (`benches/e2e/fleet.rs`).
//! 10. Central upload (`fleet-upload`): `station upload --fleet` for several stations' exported
//!     enrollments against one station uploading as many itself (`benches/e2e/fleet_upload.rs`;
//!     `E2E_FLEET_STATIONS`, `E2E_FLEET_UPLOAD`).
//!
//! Sizes: `E2E_DEVICES` (default 500), `E2E_EXPORT` (default 1000000), `E2E_AUDIT` (default
//! 1000000). `E2E_ONLY` runs one part: `overhead`, `efficiency`, `export`, `x509`, `upload`,
//! `tpm`, `gui`, `audit`, `fleet` or `fleet-upload`.

use provisioning_station::config;
use provisioning_station::device::transport::SerialTransport;
use provisioning_station::device::v1::Link;
use provisioning_station::device::v1::protocol::{RecordId, Timeouts};
use provisioning_station::dps::enrollment::DpsOptions;
use provisioning_station::dps::export;
use provisioning_station::sim::{self, SimConfig};
use provisioning_station::store::Store;
use provisioning_station::workflow::{DeviceInput, Workflow};
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "e2e/fleet.rs"]
mod fleet;
#[path = "e2e/fleet_upload.rs"]
mod fleet_upload;

const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/group-key.txt");

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(dir: &Path) -> config::Config {
    config_with(dir, "")
}

fn config_with(dir: &Path, extra: &str) -> config::Config {
    let text = format!(
        "[station]\nid = \"bench\"\nline = \"l1\"\ndatabase = \"station.db\"\nexport_dir = \"exports\"\n\
         [dps]\nid_scope = \"0ne00000001\"\nallocation_policy = \"hashed\"\niot_hubs = [\"hub.azure-devices.net\"]\n\
         [dps.initial_twin.tags]\nenvironment = \"production\"\n\
         [attestation]\nmode = \"symmetric\"\n[attestation.symmetric]\ngroup_key_file = \"{KEY}\"\n{extra}"
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
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    overhead_with(&cfg, dir.path(), "symmetric, group-derived");
}

fn overhead_with(cfg: &config::Config, dir: &Path, mode: &str) {
    let n = env_n("E2E_DEVICES", 500);
    let sim = sim::spawn(SimConfig::new(dir.join("flash"))).unwrap();
    let mut link = link(&sim.path, 115_200);
    let mut wf = Workflow::new(cfg).unwrap();
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
        "station overhead per device, {mode} ({n} devices, un-throttled pty simulator, on-disk SQLite FULL sync):\n  \
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

/// Fill the database with `n` provisioned enrollments (group-derived keys) directly.
fn fill(db: &Path, n: i64, key_id: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
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

fn keys_of(
    cfg: &config::Config,
) -> provisioning_station::attestation::symmetric::SymmetricKeySource {
    provisioning_station::attestation::symmetric::SymmetricKeySource::load(
        cfg.attestation.symmetric.as_ref().unwrap(),
        |p| cfg.resolve(p),
    )
    .unwrap()
}

fn upload() {
    use provisioning_station::config::UploadSection;
    use provisioning_station::dps::upload::{self, Dps, UploadOptions, VerifyOptions};
    let host = "bench-dps.azure-devices-provisioning.net";
    // Upload `n` enrollments (the upload reads back their etags); with `verify`, then verify
    // them with nothing changed since and count the calls.
    let run = |n: i64, rate_per_minute: u32, verify: bool| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let keys = keys_of(&cfg);
        let db = dir.path().join("station.db");
        let mut store = Store::open(&db).unwrap();
        fill(&db, n, keys.primary.as_ref().unwrap().id());
        export::export_new(
            &mut store,
            "bench",
            &DpsOptions::from_config(&cfg.dps),
            Some(&keys),
            &dir.path().join("x"),
            &mut |_| {},
        )
        .unwrap();
        let server = common::dps_server::FakeDps::start_for(host);
        let key_file = dir.path().join("policy.txt");
        std::fs::write(&key_file, common::dps_server::POLICY_KEY).unwrap();
        let section = UploadSection {
            host: host.into(),
            endpoint: None,
            policy_name: common::dps_server::POLICY.into(),
            policy_key_file: Some(key_file),
            policy_key_env: None,
            token_lifetime_s: 3600,
            rate_per_minute,
            give_up_after_s: 60,
            request_timeout_s: 30,
            query_page_size: 1000,
        };
        let mut dps = Dps::new(&cfg, &section, Some(&server.url)).unwrap();
        let t = Instant::now();
        let s = upload::upload(
            &mut store,
            &mut dps,
            Some(&keys),
            &UploadOptions::default(),
            section.query_page_size,
            &mut |_| {},
        )
        .unwrap();
        let secs = t.elapsed().as_secs_f64();
        let held = server.state.lock().unwrap().enrollments.len();
        assert_eq!((s.uploaded, held), (n as usize, n as usize));
        assert_eq!(s.etags_recorded, n as usize);
        let mut verify_calls = None;
        if verify {
            let opts = VerifyOptions {
                deep: false,
                page_size: section.query_page_size,
            };
            let before = dps.requests;
            let v = upload::verify(&mut store, &mut dps, Some(&keys), opts, &mut |_| {}).unwrap();
            assert_eq!(v.matched, n as usize);
            verify_calls = Some(dps.requests - before);
        }
        (s.requests, n as f64 * 60.0 / secs, verify_calls)
    };
    let default_rate = config::DEFAULT_UPLOAD_RATE_PER_MINUTE;
    let (req_2k, per_min, _) = run(2000, default_rate, false);
    println!(
        "upload to a local fake DPS (SAS checked, every body validated against the swagger):\n  \
         default rate limit ({default_rate} calls/min): {per_min:.0} enrollments/min (2,000 enrollments, {req_2k} calls incl. the etag read-back)"
    );
    let (req_10k, per_min, verify_calls) = run(10_000, 60_000, true);
    let calls = verify_calls.unwrap();
    println!(
        "  10,000 enrollments: {req_10k} calls (⌈N/10⌉ = 1000 bulk + query pages of the read-back), {per_min:.0} enrollments/min with the limit lifted\n  \
         verify 10,000 unchanged enrollments: {calls} calls = {:.2} % of one call per enrollment (target ≤ 5 %), {:.1} s at the default rate ({default_rate}/min; one GET each: {:.0} s)",
        calls as f64 * 100.0 / 10_000.0,
        calls as f64 * 60.0 / default_rate as f64,
        10_000.0 * 60.0 / default_rate as f64,
    );
}

/// The audit trail: what it adds to a device's database writes, and how fast a million
/// entries verify.
fn audit() {
    use provisioning_station::store::audit;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("station.db");
    let store = Store::open(&db).unwrap();
    // A device's writes as the workflow makes them, each its own durable transaction and a
    // cached statement as in the store: record pending, note the expected digest, mark
    // provisioned, record the attempt.
    let conn = rusqlite::Connection::open(&db).unwrap();
    audit::register_functions(&conn).unwrap();
    let device = |conn: &rusqlite::Connection, i: i64| {
        let id = format!("dev-{i:08}");
        conn.prepare_cached(
            "INSERT INTO enrollments (registration_id, device_serial, firmware, model, attestation_type, \
                key_source, group_key_id, status, station, line, operator, created_at, updated_at) \
             VALUES (?1, ?1, '1.4.2', 'm', 'symmetricKey', 'group-derived', 'g', 'pending', 's', 'l', 'o', 't', 't')",
        )
        .unwrap()
        .execute([&id])
        .unwrap();
        conn.prepare_cached(
            "UPDATE enrollments SET expected_digest = 'd' WHERE registration_id = ?1",
        )
        .unwrap()
        .execute([&id])
        .unwrap();
        conn.prepare_cached("UPDATE enrollments SET status = 'provisioned', device_digest = 'd', provisioned_at = 't', \
                export_seq = ?2 WHERE registration_id = ?1")
            .unwrap()
            .execute(rusqlite::params![id, i + 1])
        .unwrap();
        conn.prepare_cached("INSERT INTO attempts (registration_id, device_serial, outcome, station, operator, port, started_at, duration_ms) \
             VALUES (?1, ?1, 'passed', 's', 'o', 'p', 't', 1)")
            .unwrap()
            .execute([&id])
        .unwrap();
    };
    let per_device = |from: i64, n: i64| {
        let mut v: Vec<f64> = (from..from + n)
            .map(|i| {
                let t = Instant::now();
                device(&conn, i);
                ms(t.elapsed())
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let n = 1000;
    // Interleaved rounds, with and without the triggers (dropped on this connection only).
    let triggers: Vec<(String, String)> = conn
        .prepare(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'audit_%'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // With durable commits as the station makes them, then without fsync (the trail's own
    // work, apart from writing its page).
    for (k, sync) in ["FULL", "OFF"].into_iter().enumerate() {
        conn.pragma_update(None, "synchronous", sync).unwrap();
        let base = 100_000 * (k as i64 + 1);
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for round in 0..3 {
            with.push(per_device(base + round * 2 * n, n));
            for (name, _) in &triggers {
                conn.execute_batch(&format!("DROP TRIGGER {name}")).unwrap();
            }
            without.push(per_device(base + round * 2 * n + n, n));
            for (_, sql) in &triggers {
                conn.execute_batch(sql).unwrap();
            }
        }
        let (w, wo) = (median_ms(with), median_ms(without));
        if k == 0 {
            println!(
                "audit trail (on-disk SQLite, a device's 4 writes, median of 3 interleaved rounds of {n} devices):"
            );
        }
        println!(
            "  synchronous={sync}: {w:.3} ms per device with the trail, {wo:.3} ms without: {:.3} ms added (target <= 0.2 ms)",
            w - wo
        );
    }
    drop(conn);
    // A million entries: attempts inserted through the triggers, then a whole verification.
    let big = dir.path().join("big.db");
    drop(Store::open(&big).unwrap());
    let conn = rusqlite::Connection::open(&big).unwrap();
    audit::register_functions(&conn).unwrap();
    conn.execute_batch("PRAGMA synchronous = OFF").unwrap();
    let m = env_n("E2E_AUDIT", 1_000_000) as i64;
    conn.execute(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1) \
         INSERT INTO attempts (registration_id, device_serial, outcome, station, operator, port, started_at, duration_ms) \
         SELECT printf('dev-%08d', x), printf('SN%08d', x), 'passed', 's', 'o', 'p', 't', 1 FROM c",
        [m],
    )
    .unwrap();
    drop(conn);
    let store2 = Store::open(&big).unwrap();
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let r = store2.verify_audit(None, None).unwrap();
        times.push(t.elapsed().as_secs_f64());
        assert!(r.first_break.is_none(), "{:?}", r.first_break);
        assert!(r.entries >= m as u64);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "  verify {m} entries (and the {m} rows they log): median {:.2} s of 3 (target <= 5 s)",
        times[1]
    );
    drop(store);
}

fn export_million() {
    let n = env_n("E2E_EXPORT", 1_000_000) as i64;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let db = dir.path().join("station.db");
    let mut store = Store::open(&db).unwrap();
    let keys = keys_of(&cfg);
    let key_id = keys.primary.as_ref().unwrap().id().to_string();
    let t = Instant::now();
    fill(&db, n, &key_id);
    let filled = t.elapsed();
    let db_size = std::fs::metadata(&db).unwrap().len();
    let out = dir.path().join("exports");
    let options = DpsOptions::from_config(&cfg.dps);
    let t = Instant::now();
    let s = export::export_new(
        &mut store,
        "bench",
        &options,
        Some(&keys),
        &out,
        &mut |_| {},
    )
    .unwrap()
    .unwrap();
    let mut times = vec![t.elapsed().as_secs_f64()];
    for _ in 0..2 {
        let t = Instant::now();
        export::export_again(&store, &s.batch, Some(&keys), &out, &mut |_| {}).unwrap();
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
        filled.as_secs_f64(),
        csv as f64 / 1048576.0,
        json as f64 / 1048576.0,
        s.bulk_operations
    );
}

fn x509() {
    use provisioning_station::attestation::x509::{StationCa, init_dev_ca};
    use provisioning_station::config::{X509KeySource, X509KeyType, X509Section};
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    init_dev_ca(&ca_dir).unwrap();
    let section = |key_type, key_source| X509Section {
        ca_cert: ca_dir.join("dev-intermediate.pem"),
        ca_key: ca_dir.join("dev-intermediate.key"),
        chain: vec![ca_dir.join("dev-root.pem")],
        key_source,
        key_type,
        validity_days: 365,
    };
    let rate = |key_type: X509KeyType, n: usize| {
        let ca = StationCa::load(&section(key_type, X509KeySource::Station), |p| {
            p.to_path_buf()
        })
        .unwrap();
        let t = Instant::now();
        for i in 0..n {
            ca.mint_with_key(&format!("dev-{i}")).unwrap();
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    let csr_rate = |key_type: X509KeyType, n: usize| {
        let ca = StationCa::load(&section(key_type, X509KeySource::Device), |p| {
            p.to_path_buf()
        })
        .unwrap();
        let csrs: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| {
                let id = format!("dev-{i}");
                let key = key_type.generate().unwrap();
                let mut p = rcgen::CertificateParams::default();
                p.distinguished_name
                    .push(rcgen::DnType::CommonName, id.as_str());
                (id, p.serialize_request(&key).unwrap().der().to_vec())
            })
            .collect();
        let t = Instant::now();
        for (id, csr) in &csrs {
            ca.mint_from_csr(csr, id).unwrap();
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    // `with_keygen`: certGen.sh's create_device_certificate (new key, CSR, CA-signed
    // certificate); without: only signing a CSR the device made (`openssl x509 -req`).
    let openssl = |key_args: &[&str], n: usize, with_keygen: bool| {
        let work = dir.path().join("openssl");
        std::fs::create_dir_all(&work).unwrap();
        let run = |args: &[&str]| {
            let st = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&work)
                .output()
                .unwrap();
            assert!(
                st.status.success(),
                "{}",
                String::from_utf8_lossy(&st.stderr)
            );
        };
        let ca_cert = ca_dir.join("dev-intermediate.pem");
        let ca_key = ca_dir.join("dev-intermediate.key");
        let mut genkey = vec!["genpkey", "-out", "dev.key"];
        genkey.extend_from_slice(key_args);
        if !with_keygen {
            run(&genkey);
            run(&[
                "req", "-new", "-key", "dev.key", "-subj", "/CN=dev", "-out", "dev.csr",
            ]);
        }
        let t = Instant::now();
        for i in 0..n {
            if with_keygen {
                run(&genkey);
                let subj = format!("/CN=dev-{i}");
                run(&[
                    "req", "-new", "-key", "dev.key", "-subj", &subj, "-out", "dev.csr",
                ]);
            }
            run(&[
                "x509",
                "-req",
                "-in",
                "dev.csr",
                "-CA",
                ca_cert.to_str().unwrap(),
                "-CAkey",
                ca_key.to_str().unwrap(),
                "-CAcreateserial",
                "-days",
                "365",
                "-sha256",
                "-out",
                "dev.pem",
            ]);
        }
        n as f64 / t.elapsed().as_secs_f64()
    };
    let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let rsa_args = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
    let p256 = rate(X509KeyType::P256, 2000);
    let rsa = rate(X509KeyType::Rsa2048, 40);
    let csr_p256 = csr_rate(X509KeyType::P256, 2000);
    let csr_rsa = csr_rate(X509KeyType::Rsa2048, 300);
    let o_p256 = openssl(&ec, 40, true);
    let o_rsa = openssl(&rsa_args, 20, true);
    let o_csr_p256 = openssl(&ec, 40, false);
    let o_csr_rsa = openssl(&rsa_args, 40, false);
    println!(
        "X.509 certificates minted per second, single thread (P-256 development CA), against one openssl \
         process per step per device:\n  \
         from a device CSR (station-side: verify + sign), P-256: {csr_p256:.0}/s vs {o_csr_p256:.1}/s = {:.0}x\n  \
         from a device CSR, RSA-2048: {csr_rsa:.0}/s vs {o_csr_rsa:.1}/s = {:.0}x\n  \
         station-generated P-256 key + certificate: {p256:.0}/s vs {o_p256:.1}/s = {:.0}x\n  \
         station-generated RSA-2048 key + certificate: {rsa:.1}/s vs {o_rsa:.1}/s = {:.1}x (RSA key generation dominates both)",
        csr_p256 / o_csr_p256,
        csr_rsa / o_csr_rsa,
        p256 / o_p256,
        rsa / o_rsa
    );
    let extra = format!(
        "[attestation.x509]\nca_cert = \"{0}/dev-intermediate.pem\"\nca_key = \"{0}/dev-intermediate.key\"\nchain = [\"{0}/dev-root.pem\"]\n",
        ca_dir.display()
    );
    let mut cfg = config_with(dir.path(), &extra);
    cfg.attestation.mode = config::AttestationMode::X509;
    overhead_with(&cfg, dir.path(), "x509, P-256 key generated on the device");
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn tpm() {
    use common::swtpm::{Manufacture, Swtpm};
    use provisioning_station::attestation::tpm;
    use provisioning_station::config::{EkCertPolicy, TpmEkType};
    let time = |n: usize, mut f: Box<dyn FnMut() + '_>| -> f64 {
        median_ms(
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    ms(t.elapsed())
                })
                .collect(),
        )
    };
    let with_cert = Swtpm::start(Manufacture::EkWithCertificate);
    let roots = tpm::load_roots(&with_cert.roots(), |p| p.to_path_buf()).unwrap();
    let tcti = with_cert.tcti.clone();
    let persistent = time(
        30,
        Box::new(|| {
            tpm::read_ek_tcti(&tcti, TpmEkType::Rsa2048, false, false, false).unwrap();
        }),
    );
    let verified = time(
        30,
        Box::new(|| {
            let r = tpm::read_ek_tcti(&tcti, TpmEkType::Rsa2048, false, false, true).unwrap();
            let (m, _) = tpm::check(&r, EkCertPolicy::Require, &roots).unwrap();
            assert_eq!(m.ek_cert_status, "verified");
        }),
    );
    let tools = |args: &[&str], tcti: &str| {
        let st = std::process::Command::new(args[0])
            .args(&args[1..])
            .args(["-T", tcti])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ek.ctx");
    let out = dir.path().join("ek.pub");
    let (ctx, out) = (ctx.to_str().unwrap(), out.to_str().unwrap());
    let theirs_persistent = time(
        10,
        Box::new(|| tools(&["tpm2_readpublic", "-c", "0x81010001", "-o", out], &tcti)),
    );
    let blank = Swtpm::start(Manufacture::Blank);
    let btcti = blank.tcti.clone();
    let created = time(
        10,
        Box::new(|| {
            let r = tpm::read_ek_tcti(&btcti, TpmEkType::Rsa2048, false, false, false).unwrap();
            assert_eq!(r.origin, "created");
        }),
    );
    let theirs_created = time(
        10,
        Box::new(|| {
            tools(
                &["tpm2_createek", "-c", ctx, "-G", "rsa", "-u", out],
                &btcti,
            );
            tools(&["tpm2_readpublic", "-c", ctx, "-o", out], &btcti);
            tools(&["tpm2_flushcontext", "-t"], &btcti);
        }),
    );
    println!(
        "TPM EK read per device against swtpm (median):\n  \
         persistent EK: {persistent:.2} ms = {:.2}x of tpm2_createek + tpm2_readpublic ({theirs_created:.2} ms); \
         {:.2}x of tpm2_readpublic of the persistent EK alone ({theirs_persistent:.2} ms)\n  \
         persistent EK + EK certificate read and verified: {verified:.2} ms = {:.2}x\n  \
         created from the TCG template: {created:.2} ms = {:.2}x of tpm2_createek + tpm2_readpublic \
         (+ tpm2_flushcontext, needed without a resource manager)",
        persistent / theirs_created,
        persistent / theirs_persistent,
        verified / theirs_created,
        created / theirs_created
    );
}

fn gui() {
    if std::process::Command::new("xvfb-run")
        .arg("--help")
        .output()
        .is_err()
    {
        println!("GUI: skipped (xvfb-run is not installed; `make bench` installs it)");
        return;
    }
    let n = env_n("E2E_EXPORT", 1_000_000) as i64;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let keys = keys_of(&cfg);
    let db = dir.path().join("station.db");
    drop(Store::open(&db).unwrap());
    fill(&db, n, keys.primary.as_ref().unwrap().id());
    let toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/station.toml"))
        .unwrap()
        .replace("station-data/station.db", db.to_str().unwrap())
        .replace(
            "assets/demo/group-key.txt",
            concat!(env!("CARGO_MANIFEST_DIR"), "/assets/demo/group-key.txt"),
        )
        .replace("station-data/", &format!("{}/", dir.path().display()));
    let config_path = dir.path().join("station.toml");
    std::fs::write(&config_path, toml).unwrap();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let out = std::process::Command::new("xvfb-run")
            .args([
                "-a",
                "-s",
                "-screen 0 1280x800x24",
                env!("CARGO_BIN_EXE_station"),
                "--config",
            ])
            .arg(&config_path)
            .env("STATION_GUI_BENCH", "300")
            .env("STATION_OPERATOR", "bench")
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with('{'))
            .map(str::to_string);
        match line {
            Some(l) => runs.push(serde_json::from_str::<serde_json::Value>(&l).unwrap()),
            None => {
                println!(
                    "GUI: the window did not report ({})",
                    String::from_utf8_lossy(&out.stderr)
                );
                return;
            }
        }
    }
    let med = |k: &str| {
        median_ms(
            runs.iter()
                .map(|r| r[k].as_f64().unwrap_or(f64::NAN))
                .collect(),
        )
    };
    println!(
        "GUI under Xvfb (Mesa llvmpipe, glow), history of {} enrollments scrolled 37 rows a frame, median of 3 runs:\n  \
         frame CPU time median {:.2} ms, p99 {:.2} ms; launch to first frame {:.0} ms; resident memory {:.0} MB \
         ({:.0} MB the process's own, {:.0} MB mapped files such as the GL driver)",
        runs[0]["history_rows"],
        med("frame_cpu_median_ms"),
        med("frame_cpu_p99_ms"),
        med("launch_to_first_frame_ms"),
        med("rss_mb"),
        med("rss_anon_mb"),
        med("rss_file_mb")
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing: run only when
    // asked to bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let only = std::env::var("E2E_ONLY").unwrap_or_default();
    let parts: [(&str, fn()); 10] = [
        ("overhead", overhead_per_device),
        ("efficiency", payload_efficiency),
        ("export", export_million),
        ("x509", x509),
        ("upload", upload),
        ("tpm", tpm),
        ("gui", gui),
        ("audit", audit),
        ("fleet", fleet::fleet),
        ("fleet-upload", fleet_upload::fleet_upload),
    ];
    for (name, part) in parts {
        if only.is_empty() || only == name {
            part();
        }
    }
}
