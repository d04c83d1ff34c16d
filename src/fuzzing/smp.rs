//! What an MCUmgr (SMP) device sends, as the station decodes it: any byte stream through
//! `mcumgr-toolkit`'s serial transport (the station's SMP client), the CBOR answers the station
//! asks for, and the identity manifest it reads back (`device::smp::layout`).
//!
//! Input format: byte 0 picks the read size the port hands out (1..=64), byte 1 which answer
//! type the packet's CBOR body is decoded as; the rest is the stream.

use crate::device::smp::layout::Manifest;
use mcumgr_toolkit::commands::{fs, os, settings};
use mcumgr_toolkit::transport::serial::{ConfigurableTimeout, SerialTransport};
use mcumgr_toolkit::transport::{SMP_TRANSFER_BUFFER_SIZE, Transport};
use std::io::{self, Read, Write};
use std::time::Duration;

/// A port that hands out `data` in reads of `step` bytes, then times out; writes vanish.
struct Replay<'a> {
    data: &'a [u8],
    step: usize,
    written: Vec<u8>,
}

impl Read for Replay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data.is_empty() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

impl Write for Replay<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ConfigurableTimeout for Replay<'_> {
    fn set_timeout(&mut self, _: Duration) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
}

/// Properties, for any `data`:
///
/// - the toolkit's serial transport never panics and yields only packets that fit its buffer;
/// - a packet it yields, framed again by [`frame`] (written from Zephyr's `smp_transport`
///   text, independently of the toolkit), comes back from a fresh transport unchanged;
/// - the answer types the station asks for decode from any body without panicking;
/// - a manifest that parses re-encodes to text that parses to the same manifest.
pub fn smp(data: &[u8]) {
    let (step, which, stream) = match data {
        [s, w, rest @ ..] => (*s as usize % 64 + 1, *w, rest),
        _ => return,
    };
    let mut transport = SerialTransport::new(Replay {
        data: stream,
        step,
        written: Vec::new(),
    });
    let mut buf = Box::new([0u8; SMP_TRANSFER_BUFFER_SIZE]);
    for _ in 0..4 {
        let Ok(packet) = transport.recv_raw_frame(&mut buf) else {
            break;
        };
        assert!(packet.len() <= SMP_TRANSFER_BUFFER_SIZE);
        let packet = packet.to_vec();
        let again = frame(&packet);
        let mut fresh = SerialTransport::new(Replay {
            data: &again,
            step: 64,
            written: Vec::new(),
        });
        let mut buf2 = Box::new([0u8; SMP_TRANSFER_BUFFER_SIZE]);
        let back = fresh.recv_raw_frame(&mut buf2).map(<[u8]>::to_vec);
        assert_eq!(
            back.ok(),
            Some(packet.clone()),
            "a packet re-framed decodes otherwise"
        );
        if let Some(body) = packet.get(8..) {
            decode_answer(which, body);
        }
    }
    if let Some(m) = Manifest::parse(stream) {
        assert_eq!(
            Manifest::parse(&m.encode()),
            Some(m),
            "a manifest re-encodes otherwise"
        );
    }
}

/// Decode `body` as the answer type `which` picks.
fn decode_answer(which: u8, body: &[u8]) {
    let r = io::Cursor::new(body);
    let _ = match which % 6 {
        0 => ciborium::from_reader::<os::MCUmgrParametersResponse, _>(r).map(drop),
        1 => ciborium::from_reader::<os::ApplicationInfoResponse, _>(r).map(drop),
        2 => ciborium::from_reader::<fs::FileChecksumResponse, _>(r).map(drop),
        3 => ciborium::from_reader::<fs::FileDownloadResponse, _>(r).map(drop),
        4 => ciborium::from_reader::<fs::FileUploadResponse, _>(r).map(drop),
        _ => ciborium::from_reader::<settings::ReadSettingResponse, _>(r).map(drop),
    };
}

/// SMP serial framing of `packet`: `len u16 BE | packet | CRC-16/XMODEM u16 BE`, base64, in
/// lines of at most 127 bytes (0x06 0x09 first, 0x04 0x14 after), each ending in a newline.
pub fn frame(packet: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let mut raw = ((packet.len() + 2) as u16).to_be_bytes().to_vec();
    raw.extend_from_slice(packet);
    raw.extend_from_slice(&crc16_xmodem(packet).to_be_bytes());
    let mut out = Vec::new();
    for (i, chunk) in raw.chunks(93).enumerate() {
        out.extend_from_slice(if i == 0 { &[0x06, 0x09] } else { &[0x04, 0x14] });
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(chunk)
                .as_bytes(),
        );
        out.push(b'\n');
    }
    out
}

/// CRC-16/XMODEM, bit by bit.
fn crc16_xmodem(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (0..8).fold(crc ^ ((b as u16) << 8), |c, _| {
            if c & 0x8000 != 0 {
                (c << 1) ^ 0x1021
            } else {
                c << 1
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds are answers the simulator gave: the transport must decode them, or the
    /// properties above would never be reached.
    #[test]
    fn a_recorded_simulator_answer_decodes_to_its_hash_answer() {
        let seed = include_bytes!("../../fuzz/corpus/smp/sim-hash");
        let mut t = SerialTransport::new(Replay {
            data: &seed[2..],
            step: 7,
            written: Vec::new(),
        });
        let mut buf = Box::new([0u8; SMP_TRANSFER_BUFFER_SIZE]);
        let packet = t.recv_raw_frame(&mut buf).unwrap().to_vec();
        let answer: fs::FileChecksumResponse =
            ciborium::from_reader(io::Cursor::new(&packet[8..])).unwrap();
        assert_eq!(answer.r#type, "sha256");
        assert_eq!(answer.len, 300);
        assert_eq!(
            frame(&packet),
            seed[2..].to_vec(),
            "the simulator frames as Zephyr does"
        );
    }
}
