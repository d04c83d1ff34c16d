//! SMP's serial framing, as Zephyr's UART/console transport speaks it (the device side):
//! a packet `len u16 BE | SMP header + CBOR body | CRC-16/XMODEM u16 BE` is base64-encoded
//! and cut into lines of at most 127 bytes, the first starting 0x06 0x09, each next one
//! 0x04 0x14, each ending in a newline. Anything else on the line (console output) is skipped.
//!
//! Written from Zephyr's `smp_transport` documentation, independently of the station's client
//! (which is `mcumgr-toolkit`'s), so the two check each other.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The start of a packet's first line.
pub const START: [u8; 2] = [0x06, 0x09];
/// The start of each continuation line.
pub const CONTINUATION: [u8; 2] = [0x04, 0x14];
/// Longest line sent, marker and newline included (Zephyr `MCUMGR_SERIAL_MAX_FRAME`).
pub const MAX_LINE: usize = 127;
/// Longest line accepted: clients may use a 128-byte line with its newline.
const MAX_LINE_IN: usize = 512;

/// CRC-16/XMODEM (CCITT polynomial 0x1021, initial value 0), as SMP serial framing uses.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Why a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A line that is not base64.
    Base64,
    /// The CRC does not match.
    Crc,
    /// The length says less than a CRC, or more than the device buffers.
    Length,
    /// A continuation line with no packet started, or a line too long.
    Stray,
}

/// Reassembles packets from a byte stream.
#[derive(Debug)]
pub struct Decoder {
    line: Vec<u8>,
    packet: Vec<u8>,
    /// Bytes the packet in progress still needs after its length field; `None`: none started.
    want: Option<usize>,
    max_packet: usize,
}

impl Decoder {
    /// A decoder for packets of at most `max_packet` bytes (SMP header + body).
    pub fn new(max_packet: usize) -> Self {
        Self {
            line: Vec::with_capacity(MAX_LINE_IN),
            packet: Vec::with_capacity(max_packet + 4),
            want: None,
            max_packet,
        }
    }

    /// Feed bytes; `out` gets each complete packet (SMP header + body) or why one was dropped.
    pub fn push(&mut self, bytes: &[u8], out: &mut dyn FnMut(Result<Vec<u8>, FrameError>)) {
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() < MAX_LINE_IN {
                    self.line.push(b);
                } else if self.line.len() == MAX_LINE_IN {
                    self.line.push(b);
                    self.want = None;
                    out(Err(FrameError::Stray));
                }
                continue;
            }
            let line = std::mem::take(&mut self.line);
            if line.len() <= MAX_LINE_IN {
                self.line_done(&line, out);
            }
            self.line = line;
            self.line.clear();
        }
    }

    fn line_done(&mut self, line: &[u8], out: &mut dyn FnMut(Result<Vec<u8>, FrameError>)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (first, rest) = match line {
            [0x06, 0x09, rest @ ..] => (true, rest),
            [0x04, 0x14, rest @ ..] => (false, rest),
            _ => return, // console text
        };
        if !first && self.want.is_none() {
            return out(Err(FrameError::Stray));
        }
        let Ok(data) = STANDARD.decode(rest) else {
            self.want = None;
            return out(Err(FrameError::Base64));
        };
        let mut data = &data[..];
        if first {
            self.packet.clear();
            let [h, l, tail @ ..] = data else {
                self.want = None;
                return out(Err(FrameError::Length));
            };
            let len = u16::from_be_bytes([*h, *l]) as usize;
            if len < 2 || len > self.max_packet + 2 {
                self.want = None;
                return out(Err(FrameError::Length));
            }
            self.want = Some(len);
            data = tail;
        }
        let want = self.want.unwrap_or(0);
        if self.packet.len() + data.len() > want {
            self.want = None;
            return out(Err(FrameError::Length));
        }
        self.packet.extend_from_slice(data);
        if self.packet.len() == want {
            self.want = None;
            let (body, crc) = self.packet.split_at(want - 2);
            if crc16(body) != u16::from_be_bytes([crc[0], crc[1]]) {
                return out(Err(FrameError::Crc));
            }
            out(Ok(body.to_vec()));
        }
    }
}

/// The lines carrying `packet` (SMP header + body).
pub fn encode(packet: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(packet.len() + 4);
    raw.extend_from_slice(&((packet.len() + 2) as u16).to_be_bytes());
    raw.extend_from_slice(packet);
    raw.extend_from_slice(&crc16(packet).to_be_bytes());
    // Base64 of up to 93 bytes is 124 characters: with the marker and newline, 127.
    let per_line = (MAX_LINE - 3) / 4 * 3;
    let mut out = Vec::with_capacity(raw.len() * 4 / 3 + raw.len() / per_line * 3 + 8);
    for (i, chunk) in raw.chunks(per_line).enumerate() {
        out.extend_from_slice(if i == 0 { &START } else { &CONTINUATION });
        out.extend_from_slice(STANDARD.encode(chunk).as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(wire: &[u8]) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut d = Decoder::new(2048);
        let mut got = Vec::new();
        d.push(wire, &mut |r| got.push(r));
        got
    }

    #[test]
    fn crc_is_xmodem() {
        // The CRC-16/XMODEM check value.
        assert_eq!(crc16(b"123456789"), 0x31c3);
    }

    #[test]
    fn long_packets_span_lines_of_at_most_127_bytes_and_come_back_whole() {
        let packet: Vec<u8> = (0..700u32).map(|i| (i * 7) as u8).collect();
        let wire = encode(&packet);
        let lines: Vec<&[u8]> = wire
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert!(lines.len() > 5);
        assert!(lines.iter().all(|l| l.len() < MAX_LINE));
        assert!(lines[1].starts_with(&CONTINUATION));
        let noisy = [b"boot: ok\r\n".as_slice(), &wire].concat();
        assert_eq!(decode_all(&noisy), vec![Ok(packet)]);
    }

    #[test]
    fn a_flipped_byte_is_a_crc_error_and_the_next_packet_still_decodes() {
        let mut wire = encode(b"\x02\x00\x00\x00\x00\x00\x00\x00\xa0");
        wire[6] = if wire[6] == b'A' { b'B' } else { b'A' };
        wire.extend(encode(b"\x00\x08\x00\x00\x00\x01\x00\x00\xa0"));
        let got = decode_all(&wire);
        assert_eq!(got.len(), 2);
        assert!(got[0].is_err());
        assert!(got[1].is_ok());
    }
}
