//! Frame layer of protocol v1: header + body + CRC-32, COBS-encoded between 0x00 delimiters.
//!
//! ```text
//! wire:  00 | COBS( type | seq | len_lo len_hi | body[len] | crc32 LE ) | 00
//! ```
//! The CRC is CRC-32/ISO-HDLC (zlib's) over type..body. COBS removes every 0x00 from the frame,
//! so a receiver resynchronises at the next 0x00 whatever came before (boot-log text, line
//! noise, half a frame). This module owns encoding and a streaming decoder; it knows nothing of
//! what the messages mean (see [`super::protocol`]).

/// The frame delimiter.
pub const DELIMITER: u8 = 0x00;
/// Bytes of header (type, seq, length) before the body.
pub const HEADER_LEN: usize = 4;
/// Bytes of CRC after the body.
pub const CRC_LEN: usize = 4;
/// Header and CRC together.
pub const OVERHEAD: usize = HEADER_LEN + CRC_LEN;
/// Largest body the length field can describe.
pub const MAX_BODY: usize = u16::MAX as usize;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub seq: u8,
    pub body: Vec<u8>,
}

/// Why a chunk between delimiters was not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// COBS code bytes point past the end: noise, or text without a frame.
    Cobs,
    /// Shorter than header + CRC.
    Short,
    /// Length field disagrees with the bytes received.
    Length,
    /// CRC mismatch: corrupted on the line.
    Crc,
    /// Longer than the receiver accepts before a delimiter arrived.
    Oversize,
}

/// Encode one frame for the wire (leading and trailing delimiter included).
pub fn encode(kind: u8, seq: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + OVERHEAD + body.len() / 254 + 4);
    encode_into(kind, seq, body, &mut out);
    out
}

/// Encode one frame, appending to `out`.
pub fn encode_into(kind: u8, seq: u8, body: &[u8], out: &mut Vec<u8>) {
    assert!(body.len() <= MAX_BODY, "frame body over 65535 bytes");
    let len = (body.len() as u16).to_le_bytes();
    let header = [kind, seq, len[0], len[1]];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(body);
    let crc = crc.finalize().to_le_bytes();
    out.push(DELIMITER);
    let mut enc = CobsEncoder::new(out);
    enc.push_all(&header);
    enc.push_all(body);
    enc.push_all(&crc);
    enc.finish();
    out.push(DELIMITER);
}

struct CobsEncoder<'a> {
    out: &'a mut Vec<u8>,
    code_at: usize,
    code: u8,
}

impl<'a> CobsEncoder<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        let code_at = out.len();
        out.push(0);
        Self {
            out,
            code_at,
            code: 1,
        }
    }

    fn push_all(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == 0 {
                self.close_block();
            } else {
                self.out.push(b);
                self.code += 1;
                if self.code == 0xFF {
                    self.close_block();
                }
            }
        }
    }

    fn close_block(&mut self) {
        self.out[self.code_at] = self.code;
        self.code_at = self.out.len();
        self.out.push(0);
        self.code = 1;
    }

    fn finish(self) {
        self.out[self.code_at] = self.code;
    }
}

/// Decode one COBS block (no delimiters) into `out`.
fn cobs_decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    out.clear();
    let mut i = 0;
    while i < src.len() {
        let code = src[i] as usize;
        if code == 0 || i + code > src.len() {
            return Err(FrameError::Cobs);
        }
        out.extend_from_slice(&src[i + 1..i + code]);
        i += code;
        if code < 0xFF && i < src.len() {
            out.push(0);
        }
    }
    Ok(())
}

/// Parse a COBS-decoded frame.
fn parse(raw: &[u8]) -> Result<Frame, FrameError> {
    if raw.len() < OVERHEAD {
        return Err(FrameError::Short);
    }
    let len = u16::from_le_bytes([raw[2], raw[3]]) as usize;
    if raw.len() != OVERHEAD + len {
        return Err(FrameError::Length);
    }
    let (data, crc) = raw.split_at(HEADER_LEN + len);
    if crc32fast::hash(data).to_le_bytes() != crc {
        return Err(FrameError::Crc);
    }
    Ok(Frame {
        kind: raw[0],
        seq: raw[1],
        body: data[HEADER_LEN..].to_vec(),
    })
}

/// The most bytes a frame with a body of `max_body` bytes occupies between its delimiters:
/// header, body and CRC, plus COBS's one byte per 254 and its leading code byte, plus slack.
/// A [`Decoder`] discards anything longer as [`FrameError::Oversize`].
pub fn max_wire(max_body: usize) -> usize {
    let raw = max_body + OVERHEAD;
    raw + raw / 254 + 2
}

/// Streaming decoder: feed bytes as they arrive, take frames and errors out.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    scratch: Vec<u8>,
    max_wire: usize,
    overflowed: bool,
}

impl Decoder {
    /// A decoder that accepts frames whose body is at most `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        // Both buffers at their final size: they never grow, so no input makes the decoder
        // allocate more than the largest frame it accepts (growing by doubling did).
        let max_wire = max_wire(max_body);
        Self {
            buf: Vec::with_capacity(max_wire),
            scratch: Vec::with_capacity(max_wire),
            max_wire,
            overflowed: false,
        }
    }

    /// Feed `bytes`; call `sink` with each frame or error found, in order.
    pub fn push(&mut self, bytes: &[u8], mut sink: impl FnMut(Result<Frame, FrameError>)) {
        let mut rest = bytes;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == DELIMITER) {
                None => {
                    self.append(rest);
                    return;
                }
                Some(at) => {
                    self.append(&rest[..at]);
                    rest = &rest[at + 1..];
                    if self.overflowed {
                        self.overflowed = false;
                        self.buf.clear();
                        sink(Err(FrameError::Oversize));
                    } else if !self.buf.is_empty() {
                        let r = cobs_decode(&self.buf, &mut self.scratch)
                            .and_then(|()| parse(&self.scratch));
                        self.buf.clear();
                        sink(r);
                    }
                }
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.buf.len() + bytes.len() > self.max_wire {
            self.overflowed = true;
            self.buf.clear();
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Forget any partial frame (e.g. after a reconnect).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.overflowed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(d: &mut Decoder, bytes: &[u8]) -> Vec<Result<Frame, FrameError>> {
        let mut v = Vec::new();
        d.push(bytes, |r| v.push(r));
        v
    }

    #[test]
    fn known_encoding() {
        // HELLO request, seq 1, body [01 01]: documented in docs/protocol.md.
        let wire = encode(0x01, 0x01, &[0x01, 0x01]);
        let hex: Vec<String> = wire.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex.join(" "),
            include_str!("../../../tests/fixtures/hello-frame.hex").trim()
        );
    }

    #[test]
    fn corrupted_byte_is_a_crc_error_and_next_frame_still_decodes() {
        let mut wire = encode(0x83, 7, b"hello world");
        wire[6] ^= 0x40;
        wire.extend(encode(0x83, 8, b"ok"));
        let mut d = Decoder::new(1024);
        let got = decode_all(&mut d, &wire);
        assert!(matches!(
            got[0],
            Err(FrameError::Crc | FrameError::Cobs | FrameError::Length)
        ));
        assert_eq!(
            got[1],
            Ok(Frame {
                kind: 0x83,
                seq: 8,
                body: b"ok".to_vec()
            })
        );
    }

    #[test]
    fn oversize_garbage_is_dropped() {
        let mut d = Decoder::new(16);
        let mut wire = vec![b'x'; 500];
        wire.extend(encode(1, 2, b"abc"));
        let got = decode_all(&mut d, &wire);
        assert_eq!(got[0], Err(FrameError::Oversize));
        assert_eq!(
            got[1],
            Ok(Frame {
                kind: 1,
                seq: 2,
                body: b"abc".to_vec()
            })
        );
    }

    /// Found by the `frames` fuzz target
    /// (fuzz/regressions/frames/frame-over-4096-bytes-in-reads-of-51): a chunk of more than
    /// 4096 bytes between delimiters grew the decoder's buffers by doubling to 8192 bytes, twice
    /// the largest frame it accepts.
    #[test]
    fn the_decoder_never_grows_past_the_largest_frame() {
        let limit = max_wire(4096);
        let mut d = Decoder::new(4096);
        let mut wire = encode(0x87, 3, &[0x5a; 4096]);
        wire.extend(vec![0x01; limit + 100]);
        wire.push(0);
        let mut got = Vec::new();
        for chunk in wire.chunks(51) {
            d.push(chunk, |r| got.push(r.map(|f| f.body.len())));
        }
        assert_eq!(got, [Ok(4096), Err(FrameError::Oversize)]);
        assert!(d.buf.capacity() <= limit && d.scratch.capacity() <= limit);
    }

    proptest! {
        #[test]
        fn any_payload_round_trips(kind: u8, seq: u8, body in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let wire = encode(kind, seq, &body);
            prop_assert!(!wire[1..wire.len() - 1].contains(&0));
            let mut d = Decoder::new(4096);
            let got = decode_all(&mut d, &wire);
            prop_assert_eq!(got, vec![Ok(Frame { kind, seq, body })]);
        }

        #[test]
        fn garbage_before_a_frame_is_skipped(
            garbage in proptest::collection::vec(any::<u8>(), 0..600),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            split in 0usize..1000,
        ) {
            let mut wire = garbage.clone();
            wire.extend(encode(0x85, 9, &body));
            let mut d = Decoder::new(1024);
            let split = split.min(wire.len());
            let mut got = decode_all(&mut d, &wire[..split]);
            got.extend(decode_all(&mut d, &wire[split..]));
            let frames: Vec<_> = got.into_iter().filter_map(|r| r.ok()).collect();
            // The real frame is always found; garbage may (rarely) parse as a frame only if it
            // carries a valid CRC, which the last frame must still follow.
            prop_assert_eq!(frames.last(), Some(&Frame { kind: 0x85, seq: 9, body }));
        }
    }
}
