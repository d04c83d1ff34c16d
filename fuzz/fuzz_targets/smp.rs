//! `provisioning_station::fuzzing::smp` under libFuzzer; the properties live there, so that
//! `tests/fuzz_corpora.rs` replays this target's corpus through the same code on stable Rust.
#![no_main]

use libfuzzer_sys::fuzz_target;
use provisioning_station::fuzzing;

#[global_allocator]
static ALLOCATOR: fuzzing::Counting = fuzzing::Counting;

fuzz_target!(|data: &[u8]| fuzzing::smp(data));
