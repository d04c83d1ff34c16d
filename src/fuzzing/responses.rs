//! Protocol v1 answers: every response decoder on any body, and the station's [`Link`] (the
//! code that turns a device's bytes into HELLO information, acknowledgements, digests, records,
//! CSRs and EKs) against a scripted device that may answer anything.

use super::Bytes;
use super::frames::reference;
use crate::config::TpmEkType;
use crate::device::Device;
use crate::device::transport::Transport;
use crate::device::v1::Link;
use crate::device::v1::frame::{self, Decoder, Frame};
use crate::device::v1::protocol::{
    self, NakCode, Request, STATION_MAX_BODY, Timeouts, decode_device_info, decode_digest,
    decode_ek, encode_device_info, encode_ek, kind,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// `data[0]` even: the decoders on `data[1..]`; odd: the link against the script `data[1..]`
/// (`docs/fuzzing.md` describes the format).
pub fn responses(data: &[u8]) {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => decoders(rest),
        Some((_, rest)) => link(rest),
        None => {}
    }
}

/// Each decoder accepts only what re-encodes to the bytes it read.
fn decoders(body: &[u8]) {
    if let Some(info) = decode_device_info(body) {
        let mut end = 8;
        let mut utf8 = true;
        for _ in 0..3 {
            let n = body[end] as usize;
            utf8 &= std::str::from_utf8(&body[end + 1..end + 1 + n]).is_ok();
            end += 1 + n;
        }
        if utf8 {
            assert_eq!(encode_device_info(&info), &body[..end], "HELLO re-encodes");
        }
    }
    if let Some(d) = decode_digest(body) {
        assert!(body.len() == 33 && body[0] <= 1);
        assert_eq!(body[0] == 1, d.provisioned);
        assert_eq!(&body[1..], d.digest);
    }
    if let Some((ek, cert, srk)) = decode_ek(body) {
        assert!(!ek.is_empty());
        assert_eq!(encode_ek(&ek, &cert, &srk), body, "READ_EK re-encodes");
    }
    if let Some((&k, rest)) = body.split_first()
        && let Some(r) = Request::decode(k, rest)
    {
        assert_eq!(r.kind(), k);
        assert_eq!(r.encode_body(), rest, "a request re-encodes");
    }
}

/// What the scripted device was asked and what reached the station.
#[derive(Default)]
struct Record {
    /// Requests received, as (type, seq).
    requests: Vec<(u8, u8)>,
    /// Everything delivered, one stream per period between input discards (HELLO).
    streams: Vec<Vec<u8>>,
}

impl Record {
    /// The CRC-valid frames that reached the station (by the reference decoder).
    fn intact(&self) -> Vec<Frame> {
        let limit = frame::max_wire(STATION_MAX_BODY);
        self.streams
            .iter()
            .flat_map(|s| reference(s, limit))
            .filter_map(Result::ok)
            .collect()
    }

    /// Whether a CRC-valid frame of type `answer` whose body passes `body` came under the
    /// sequence number of a `request`.
    fn answered_by(&self, request: u8, answer: u8, body: impl Fn(&[u8]) -> bool) -> bool {
        self.intact()
            .iter()
            .any(|f| f.kind == answer && body(&f.body) && self.requests.contains(&(request, f.seq)))
    }

    /// Whether a CRC-valid response to a `request` carried exactly `body`.
    fn answered(&self, request: u8, body: &[u8]) -> bool {
        self.answered_by(request, request | kind::RESPONSE, |b| b == body)
    }
}

/// A device that answers each request with the next step of a script.
struct Scripted {
    steps: VecDeque<(u8, Vec<u8>)>,
    pending: Vec<u8>,
    requests: Decoder,
    record: Arc<Mutex<Record>>,
}

impl Scripted {
    /// The bytes step `tag` puts on the line in answer to `req`.
    fn answer(req: &Frame, tag: u8, body: &[u8]) -> Vec<u8> {
        let response = req.kind | kind::RESPONSE;
        match tag % 8 {
            0 => frame::encode(response, req.seq, body),
            1 => frame::encode(kind::NAK, req.seq, body),
            2 => frame::encode(response, req.seq.wrapping_sub(1), body),
            3 => match body.split_first() {
                Some((&k, rest)) => frame::encode(k, req.seq, rest),
                None => frame::encode(kind::NAK, req.seq, body),
            },
            4 => {
                let mut wire = frame::encode(response, req.seq, body.get(2..).unwrap_or(&[]));
                let at = 1 + body.first().map_or(0, |&b| b as usize) % (wire.len() - 2);
                wire[at] ^= body.get(1).map_or(1, |&b| b | 1);
                wire
            }
            5 => body.to_vec(),
            6 => Vec::new(),
            _ => {
                let mut wire = b"\r\n[ 0.012] boot: provisioning agent\r\n".to_vec();
                wire.extend(frame::encode(response, req.seq, body));
                wire.extend(frame::encode(response, req.seq, body));
                wire
            }
        }
    }
}

impl Transport for Scripted {
    fn port_name(&self) -> &str {
        "fuzz"
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut sent = Vec::new();
        self.requests.push(bytes, |r| sent.extend(r.ok()));
        let Some(req) = sent.pop() else {
            return Ok(());
        };
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        record.requests.push((req.kind, req.seq));
        let (tag, body) = self.steps.pop_front().unwrap_or((6, Vec::new()));
        let wire = Scripted::answer(&req, tag, &body);
        // BUSY is waited out with real sleeps (50 ms to 1 s): a step that would put a BUSY NAK
        // on the line stays silent instead, so that every input runs in microseconds.
        // Only a frame the new bytes complete can be a new BUSY (what is on the line already was
        // checked when it was sent): the line from the last delimiter before them on.
        let tail = |b: &[u8]| {
            b.iter()
                .rposition(|&x| x == frame::DELIMITER)
                .map(|i| i + 1)
        };
        let stream = record.streams.last().map_or(&[][..], Vec::as_slice);
        let mut line = match tail(&self.pending) {
            Some(i) => self.pending[i..].to_vec(),
            None => {
                let mut l = stream[tail(stream).unwrap_or(0)..].to_vec();
                l.extend_from_slice(&self.pending);
                l
            }
        };
        line.extend_from_slice(&wire);
        let busy = reference(&line, usize::MAX)
            .into_iter()
            .flatten()
            .any(|f| f.kind == kind::NAK && f.body.first() == Some(&(NakCode::Busy as u8)));
        if !busy {
            self.pending.extend_from_slice(&wire);
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], _timeout: Duration) -> std::io::Result<usize> {
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        if record.streams.is_empty() {
            record.streams.push(Vec::new());
        }
        record
            .streams
            .last_mut()
            .expect("one stream")
            .extend(self.pending.drain(..n));
        Ok(n)
    }

    fn discard_input(&mut self) -> std::io::Result<()> {
        self.pending.clear();
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        record.streams.push(Vec::new());
        Ok(())
    }
}

/// Any error of the link is a device error (timeout, NAK, protocol, …), never a panic or an
/// internal one.
fn clean<T>(r: &crate::Result<T>) {
    if let Err(e) = r {
        assert!(
            e.code().as_str().starts_with("device."),
            "the link failed with {} ({e})",
            e.code().as_str()
        );
    }
}

// long: one scripted cycle, each step followed by the property it must keep
fn link(script: &[u8]) {
    let mut b = Bytes::new(script);
    let retries = (b.u8() % 3) as u32;
    let mut steps = VecDeque::new();
    while !b.rest.is_empty() && steps.len() < 64 {
        let tag = b.u8();
        steps.push_back((tag, b.field().to_vec()));
    }
    let record = Arc::new(Mutex::new(Record::default()));
    let transport = Scripted {
        steps,
        pending: Vec::new(),
        requests: Decoder::new(STATION_MAX_BODY),
        record: record.clone(),
    };
    // The scripted device answers at once: the link makes its first read within a few
    // microseconds, and a step that stays silent costs no more. (Zero would time out before the
    // answer is read: the link checks its deadline before it reads. A run preempted for longer
    // only loses that input's coverage: every property holds whatever the timing.)
    let timeouts = Timeouts {
        response: Duration::from_micros(5),
        commit: Duration::from_micros(5),
        keygen: Duration::from_micros(5),
    };
    let mut link = Link::new(Box::new(transport), u32::MAX, timeouts, retries).starting_after(0x40);
    let seen = || record.lock().unwrap_or_else(PoisonError::into_inner);

    let hello = link.hello();
    clean(&hello);
    if let Ok(info) = &hello {
        assert!(info.version == protocol::VERSION_MIN && info.max_body >= 64);
        let on_line = seen().intact().into_iter().any(|f| {
            f.kind == kind::HELLO | kind::RESPONSE
                && decode_device_info(&f.body).as_ref() == Some(info)
        });
        assert!(
            on_line,
            "HELLO information without a CRC-valid HELLO answer"
        );
    }
    for (record_id, data) in [(1u8, &b"0ne00000001"[..]), (5, &[0x41; 700][..])] {
        let w = link.write_record(record_id, data, |_, _| {});
        clean(&w);
        if w.is_ok() {
            let mut ack = vec![record_id];
            ack.extend_from_slice(&(data.len() as u32).to_le_bytes());
            assert!(seen().answered(kind::WRITE, &ack));
        }
    }
    for (k, state) in [
        (kind::COMMIT, link.commit(0)),
        (kind::READ_DIGEST, link.read_digest()),
    ] {
        clean(&state);
        if let Ok(d) = state {
            let mut body = vec![d.provisioned as u8];
            body.extend_from_slice(&d.digest);
            assert!(
                seen().answered(k, &body),
                "a digest the device did not send with a valid CRC"
            );
            assert!(k != kind::COMMIT || d.provisioned);
        }
    }
    let held = link.read_record(3);
    clean(&held);
    match &held {
        Ok(Some(bytes)) => assert!(seen().answered(kind::READ_RECORD, bytes)),
        Ok(None) => assert!(
            seen().answered_by(kind::READ_RECORD, kind::NAK, |b| b.first()
                == Some(&(NakCode::BadRecord as u8))),
            "\"no such record\" without a CRC-valid NAK"
        ),
        Err(_) => {}
    }
    let csr = link.gen_csr(1, "sn0001");
    clean(&csr);
    if let Ok(der) = &csr {
        assert!(seen().answered(kind::GEN_CSR, der));
    }
    let ek = Device::read_ek(&mut link, TpmEkType::Rsa2048);
    clean(&ek);
    if let Ok(ek) = &ek {
        let cert = ek.certificate.clone().unwrap_or_default();
        let srk = ek.srk.clone().unwrap_or_default();
        let body = encode_ek(&ek.public, &cert, &srk);
        assert!(seen().answered(kind::READ_EK, &body));
    }
    clean(&link.reset());
}
