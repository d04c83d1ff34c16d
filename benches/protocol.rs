//! Micro-benchmarks of the per-device CPU work: framing, digests, key derivation.

use criterion::{Criterion, criterion_group, criterion_main};
use provisioning_station::attestation::symmetric::GroupKey;
use provisioning_station::device::v1::frame::{Decoder, encode};
use provisioning_station::device::v1::protocol::records_digest;
use std::hint::black_box;

fn frames(c: &mut Criterion) {
    let body: Vec<u8> = (0..2048u32).map(|i| (i * 7 % 251) as u8).collect();
    c.bench_function("frame encode 2 KiB", |b| {
        b.iter(|| encode(0x02, 7, black_box(&body)))
    });
    let wire = encode(0x02, 7, &body);
    c.bench_function("frame decode 2 KiB", |b| {
        let mut d = Decoder::new(4096);
        b.iter(|| {
            let mut n = 0;
            d.push(black_box(&wire), |r| {
                n += r.map(|f| f.body.len()).unwrap_or(0)
            });
            n
        })
    });
    let records: Vec<(u8, Vec<u8>)> = vec![
        (1, b"0ne00000001".to_vec()),
        (2, b"global.azure-devices-provisioning.net".to_vec()),
        (3, b"sim000001".to_vec()),
        (4, vec![1]),
        (5, b"qJfYnHoOjFbL8Yt65SdH1UF51GjM8cimehkyTUAOXt0=".to_vec()),
    ];
    c.bench_function("records digest", |b| {
        b.iter(|| records_digest(records.iter().map(|(i, v)| (*i, v.as_slice()))))
    });
}

fn keys(c: &mut Criterion) {
    let key = GroupKey::from_base64(
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==",
        "bench",
    )
    .unwrap();
    c.bench_function("derive device key", |b| {
        b.iter(|| key.derive(black_box("sim000001")))
    });
}

criterion_group!(benches, frames, keys);
criterion_main!(benches);
