//! Zephyr MCUmgr (SMP) against protocol v1 (`cargo bench --profile deb --bench smp`), against
//! the simulator on real ptys, printing medians and ratios:
//!
//! 1. wire efficiency: one 2048-byte file uploaded through the fs group at a simulated 115200
//!    baud (payload line time over elapsed time, bytes on the wire per payload byte), beside
//!    protocol v1 writing the same 2048-byte record;
//! 2. the same credential provisioned both ways at 115200 baud: whole-device time and bytes on
//!    the wire (symmetric key, group-derived);
//! 3. station overhead per device (total time minus time waiting on the line), un-throttled,
//!    SMP and v1, with the real on-disk database.
//!
//! Sizes: `SMP_DEVICES` (default 200). `SMP_ONLY` runs one part: `efficiency`, `device` or
//! `overhead`.

use provisioning_station::config::{self, DeviceProtocol};
use provisioning_station::device::smp::{self, SmpOptions};
use provisioning_station::device::transport::SerialTransport;
use provisioning_station::device::v1::Link;
use provisioning_station::device::v1::protocol::{RecordId, Timeouts};
use provisioning_station::device::{Device, open_serial};
use provisioning_station::sim::{self, SimConfig};
use provisioning_station::workflow::{DeviceInput, Workflow};
use std::path::Path;
use std::time::{Duration, Instant};

const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/group-key.txt");
const BAUD: u32 = 115_200;

fn config(dir: &Path, protocol: &str) -> config::Config {
    let text = format!(
        "[station]\nid = \"bench\"\nline = \"l1\"\ndatabase = \"station.db\"\nexport_dir = \"exports\"\n\
         [dps]\nid_scope = \"0ne00000001\"\nallocation_policy = \"hashed\"\niot_hubs = [\"hub.azure-devices.net\"]\n\
         [attestation]\nmode = \"symmetric\"\n[attestation.symmetric]\ngroup_key_file = \"{KEY}\"\n\
         [device]\nprotocol = \"{protocol}\"\n"
    );
    let mut c = config::load_str(&text, Path::new("bench.toml")).unwrap();
    c.base_dir = dir.to_path_buf();
    c
}

fn sim_config(dir: &Path, protocol: DeviceProtocol, baud: u32) -> SimConfig {
    let mut sc = SimConfig::new(dir.join("flash"));
    sc.protocol = protocol;
    sc.baud = baud;
    sc
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * 0.99).round() as usize]
}

fn efficiency() {
    let payload: Vec<u8> = (0..2048u32).map(|i| (i * 13 % 256) as u8).collect();
    let ideal = payload.len() as f64 * 10.0 / BAUD as f64;
    let dir = tempfile::tempdir().unwrap();
    let handle = sim::spawn(sim_config(dir.path(), DeviceProtocol::Smp, BAUD)).unwrap();
    let cfg = config(dir.path(), "smp");
    let mut dev = smp::open(&handle.path, SmpOptions::from_config(&cfg, BAUD).unwrap()).unwrap();
    dev.identify().unwrap();
    let (mut eff, mut wire) = (Vec::new(), 0);
    for _ in 0..10 {
        let (tx0, rx0) = dev.wire_bytes();
        let t = Instant::now();
        dev.client()
            .fs_file_upload("/lfs/bench.bin", &payload[..], payload.len() as u64, None)
            .unwrap();
        eff.push(ideal / t.elapsed().as_secs_f64());
        let (tx, rx) = dev.wire_bytes();
        wire = (tx - tx0 + rx - rx0) as usize;
    }
    println!(
        "SMP fs upload, 2048-byte file at {BAUD} baud (device buffer 1024): median {:.3} of line time \
         (min {:.3}); bytes on the wire {wire} = {:.3} per payload byte",
        median(eff.clone()),
        eff.iter().cloned().fold(f64::INFINITY, f64::min),
        wire as f64 / payload.len() as f64
    );
    drop(dev);
    drop(handle);

    let dir = tempfile::tempdir().unwrap();
    let handle = sim::spawn(sim_config(dir.path(), DeviceProtocol::V1, BAUD)).unwrap();
    let t = SerialTransport::open(&handle.path, BAUD).unwrap();
    let timeouts = Timeouts {
        response: Duration::from_millis(500),
        commit: Duration::from_millis(2000),
        keygen: Duration::from_millis(15000),
    };
    let mut link = Link::new(Box::new(t), BAUD, timeouts, 3);
    let (mut eff, mut wire) = (Vec::new(), 0);
    for _ in 0..10 {
        link.hello().unwrap();
        let (tx0, rx0) = (link.stats.tx_bytes, link.stats.rx_bytes);
        let t = Instant::now();
        link.write_record(RecordId::Credential as u8, &payload, |_, _| {})
            .unwrap();
        eff.push(ideal / t.elapsed().as_secs_f64());
        wire = (link.stats.tx_bytes - tx0 + link.stats.rx_bytes - rx0) as usize;
    }
    println!(
        "protocol v1 WRITE, 2048-byte record at {BAUD} baud (device frame body 1024): median {:.3} of line time; \
         bytes on the wire {wire} = {:.3} per payload byte",
        median(eff),
        wire as f64 / payload.len() as f64
    );
}

/// Provision `n` devices; (whole-device ms, overhead ms, wire bytes of the last device).
fn provision(protocol: DeviceProtocol, baud: u32, n: usize) -> (Vec<f64>, Vec<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let handle = sim::spawn(sim_config(dir.path(), protocol, baud)).unwrap();
    let cfg = config(dir.path(), protocol.as_str());
    let mut dev = open_serial(&cfg, &handle.path, baud.max(BAUD)).unwrap();
    let mut wf = Workflow::new(&cfg).unwrap();
    let input = DeviceInput::default();
    let (mut total, mut overhead) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let o = wf.provision(dev.as_mut(), &input, &mut |_| {}).unwrap();
        total.push(o.duration.as_secs_f64() * 1e3);
        overhead.push(o.overhead().as_secs_f64() * 1e3);
    }
    (total, overhead)
}

fn device() {
    let mut lines = Vec::new();
    for protocol in [DeviceProtocol::V1, DeviceProtocol::Smp] {
        let (total, _) = provision(protocol, BAUD, 5);
        lines.push((protocol, median(total)));
    }
    println!(
        "one device, symmetric group-derived, at {BAUD} baud: v1 median {:.1} ms, SMP median {:.1} ms (SMP/v1 = {:.2})",
        lines[0].1,
        lines[1].1,
        lines[1].1 / lines[0].1
    );
}

fn overhead() {
    let n: usize = std::env::var("SMP_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for protocol in [DeviceProtocol::V1, DeviceProtocol::Smp] {
        let (total, overhead) = provision(protocol, 0, n);
        println!(
            "station overhead per device, {} ({n} devices, un-throttled pty simulator, on-disk SQLite): \
             overhead median {:.3} ms, p99 {:.3} ms; whole device median {:.3} ms",
            protocol.as_str(),
            median(overhead.clone()),
            p99(overhead),
            median(total)
        );
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let only = std::env::var("SMP_ONLY").unwrap_or_default();
    let parts: [(&str, fn()); 3] = [
        ("efficiency", efficiency),
        ("device", device),
        ("overhead", overhead),
    ];
    for (name, part) in parts {
        if only.is_empty() || only == name {
            part();
        }
    }
}
