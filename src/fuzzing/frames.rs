//! The frame receiver: any byte stream a device can send, through the station's streaming
//! [`Decoder`] with its real limit ([`STATION_MAX_BODY`]).

use super::{largest_allocation, reference_crc32};
use crate::device::v1::frame::{self, DELIMITER, Decoder, Frame, FrameError, HEADER_LEN, OVERHEAD};
use crate::device::v1::protocol::STATION_MAX_BODY;

/// Properties, for any `data` (the whole stream; its first byte also picks how the second pass
/// splits it):
///
/// - the decoder agrees, frame for frame and error for error, with a reference decoder written
///   from `docs/protocol.md` (its C `cobs_decode`, a bitwise CRC), however the stream is split
///   into reads — so resynchronisation loses nothing and invents nothing;
/// - every frame it yields re-encodes to exactly the bytes it came from;
/// - every frame has a body within the station's limit, and no single allocation made while
///   decoding exceeds the largest frame the station accepts on the wire.
///
/// That the work is linear in the stream (no quadratic resynchronisation) is measured by
/// `device::v1::frame`'s unit tests on worst-case streams and bounded here by the fuzzer's
/// per-input timeout.
pub fn frames(data: &[u8]) {
    let limit = frame::max_wire(STATION_MAX_BODY);
    let expected = reference(data, limit);
    let mut decoder = Decoder::new(STATION_MAX_BODY);
    // Room for every result up front, so that only the decoder allocates while it is measured.
    let mut whole = Vec::with_capacity(expected.len() + 1);
    let ((), largest) = largest_allocation(|| decoder.push(data, |r| whole.push(r)));
    if let Some(largest) = largest {
        assert!(
            largest <= limit,
            "decoding allocated {largest} bytes at once; the largest frame is {limit} bytes"
        );
    }
    assert_eq!(whole, expected, "the decoder disagrees with the reference");

    let step = data.first().map_or(1, |b| *b as usize % 67 + 1);
    let mut split = Vec::with_capacity(expected.len() + 1);
    let mut decoder = Decoder::new(STATION_MAX_BODY);
    let ((), largest) = largest_allocation(|| {
        for chunk in data.chunks(step) {
            decoder.push(chunk, |r| split.push(r));
        }
    });
    if let Some(largest) = largest {
        assert!(
            largest <= limit,
            "decoding reads of {step} bytes allocated {largest} bytes at once; the largest frame is {limit} bytes"
        );
    }
    assert_eq!(split, expected, "reads of {step} bytes decode differently");

    let segments = data
        .split(|&b| b == DELIMITER)
        .take(data.iter().filter(|&&b| b == DELIMITER).count())
        .filter(|s| !s.is_empty());
    for (segment, result) in segments.zip(&whole) {
        if let Ok(f) = result {
            assert!(f.body.len() <= STATION_MAX_BODY);
            let wire = frame::encode(f.kind, f.seq, &f.body);
            assert_eq!(
                &wire[1..wire.len() - 1],
                segment,
                "a frame re-encodes to other bytes than it came from"
            );
        }
    }
}

/// What `docs/protocol.md` §2 says a receiver makes of `data`: each chunk between delimiters
/// (the last, unterminated one is still being collected) is nothing if empty, an overflow if
/// longer than `limit`, else a frame or the reason it is none.
pub(super) fn reference(data: &[u8], limit: usize) -> Vec<Result<Frame, FrameError>> {
    let terminated = data.iter().filter(|&&b| b == DELIMITER).count();
    data.split(|&b| b == DELIMITER)
        .take(terminated)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.len() > limit {
                return Err(FrameError::Oversize);
            }
            let raw = cobs_decode(s).ok_or(FrameError::Cobs)?;
            if raw.len() < OVERHEAD {
                return Err(FrameError::Short);
            }
            let len = u16::from_le_bytes([raw[2], raw[3]]) as usize;
            if raw.len() != OVERHEAD + len {
                return Err(FrameError::Length);
            }
            let crc = u32::from_le_bytes(raw[HEADER_LEN + len..].try_into().expect("4 bytes"));
            if reference_crc32(&raw[..HEADER_LEN + len]) != crc {
                return Err(FrameError::Crc);
            }
            Ok(Frame {
                kind: raw[0],
                seq: raw[1],
                body: raw[HEADER_LEN..HEADER_LEN + len].to_vec(),
            })
        })
        .collect()
}

/// `cobs_decode` of `docs/protocol.md`, line for line.
fn cobs_decode(src: &[u8]) -> Option<Vec<u8>> {
    let (mut i, mut out) = (0, Vec::with_capacity(src.len()));
    while i < src.len() {
        let code = src[i] as usize;
        if code == 0 || i + code > src.len() {
            return None;
        }
        out.extend_from_slice(&src[i + 1..i + code]);
        i += code;
        if code < 0xFF && i < src.len() {
            out.push(0);
        }
    }
    Some(out)
}
