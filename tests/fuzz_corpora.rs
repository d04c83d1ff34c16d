//! The fuzz corpora as ordinary tests: every file of `fuzz/corpus/<target>/` (the seeds) and
//! `fuzz/regressions/<target>/` (each input a fuzzer once crashed, kept fixed) goes through the
//! entry point its cargo-fuzz target calls (`provisioning_station::fuzzing`), with the same
//! counting allocator, so that `cargo test` on stable Rust checks the same properties the
//! nightly fuzzer checks (docs/fuzzing.md).

use provisioning_station::fuzzing::{self, Counting, TARGETS};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Run every corpus and regression input of `target`; name each that fails or is slow.
fn replay(target: &str) {
    let (_, entry) = TARGETS.iter().find(|(n, _)| *n == target).unwrap();
    let seeds = inputs("corpus", target);
    assert!(!seeds.is_empty(), "fuzz/corpus/{target}/ has no seed");
    let mut failed = Vec::new();
    for path in seeds.iter().chain(&inputs("regressions", target)) {
        let data = std::fs::read(path).unwrap();
        let started = Instant::now();
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            failed.push(format!("{}: fails", path.display()));
        } else if started.elapsed() > Duration::from_secs(2) {
            failed.push(format!("{}: took {:?}", path.display(), started.elapsed()));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn frames_corpus() {
    replay("frames");
}

#[test]
fn responses_corpus() {
    replay("responses");
}

#[test]
fn csr_corpus() {
    replay("csr");
}

#[test]
fn ek_corpus() {
    replay("ek");
}

#[test]
fn dps_answers_corpus() {
    replay("dps_answers");
}

#[test]
fn smp_corpus() {
    replay("smp");
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn every_entry_point_has_its_cargo_fuzz_target() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for (name, _) in TARGETS {
        let source = fuzz_dir().join(format!("fuzz_targets/{name}.rs"));
        let text = std::fs::read_to_string(&source).unwrap();
        assert!(
            text.contains(&format!("fuzzing::{name}(data)")),
            "{}",
            source.display()
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} in fuzz/Cargo.toml"
        );
    }
}

#[test]
fn the_counting_allocator_sees_an_allocation() {
    let (v, largest) = fuzzing::largest_allocation(|| vec![0u8; 12_345]);
    assert_eq!(v.len(), 12_345);
    assert_eq!(largest, Some(12_345));
}
