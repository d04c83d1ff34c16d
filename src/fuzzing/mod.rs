//! Entry points for coverage-guided fuzzing of every parser the outside world feeds: the byte
//! stream a device sends (frames, protocol v1 answers, MCUmgr answers), the CSR and EK a device hands over, the
//! DPS service's answers, and `station.toml` with its templates (`docs/fuzzing.md`).
//!
//! Each entry point takes raw bytes, runs the station's own parsing code on them and asserts
//! properties with `assert!` (not only "no panic"): a frame that decodes re-encodes to the same
//! bytes, no answer yields state the station acts on without a valid CRC, no input makes the
//! frame decoder allocate more than the largest frame it accepts, the decoder agrees with an
//! independent one written from `docs/protocol.md`. The cargo-fuzz targets in `fuzz/` call
//! these functions, and `tests/fuzz_corpora.rs` replays the corpora through them on stable Rust.
//!
//! This module only reads: it never opens a port, a file (beyond what a configuration names
//! relative to a directory that does not exist) or the network, and nothing below it imports it.

mod alloc;
mod config;
mod csr;
mod dps;
mod ek;
mod frames;
mod responses;
mod smp;

pub use alloc::{Counting, largest_allocation};
pub use config::config;
pub use csr::csr;
pub use dps::dps_answers;
pub use ek::ek;
pub use frames::frames;
pub use responses::responses;
pub use smp::smp;

/// A fuzz target: its name and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// The fuzz targets, by name: each is a directory of `fuzz/corpus/` and `fuzz/regressions/`
/// and a file of `fuzz/fuzz_targets/`.
pub const TARGETS: &[Target] = &[
    ("frames", frames),
    ("responses", responses),
    ("csr", csr),
    ("ek", ek),
    ("dps_answers", dps_answers),
    ("config", config),
    ("smp", smp),
];

/// Bytes read front to back by the entry points' own small input formats (documented in
/// `docs/fuzzing.md`), so that seeds can be written by hand.
struct Bytes<'a> {
    rest: &'a [u8],
}

impl<'a> Bytes<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// The next byte (0 when none is left).
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.rest.split_first().unwrap_or((&0, &[]));
        self.rest = rest;
        *first
    }

    /// A little-endian u16 (missing bytes read as 0).
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes.
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = rest;
        taken
    }

    /// A field prefixed by its u16 LE length.
    fn field(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.take(n)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }
}

/// CRC-32/ISO-HDLC computed bit by bit from its definition in `docs/protocol.md` (independent
/// of the `crc32fast` the station uses).
fn reference_crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_crc_has_the_documented_check_value() {
        assert_eq!(reference_crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn bytes_read_short_input_as_zeros() {
        let mut b = Bytes::new(&[1, 2]);
        assert_eq!(b.u16(), 0x0201);
        assert_eq!(b.u8(), 0);
        assert_eq!(b.field(), b"");
    }
}
