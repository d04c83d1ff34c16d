//! Messages of device protocol v1 (`docs/protocol.md` is the normative text for firmware).
//!
//! The station sends requests; the device answers each with exactly one response carrying the
//! same sequence number, whose type is the request type with bit 7 set, or NAK (0xFF). A
//! repeated sequence number is a retry: the device replays its last response without acting
//! twice. This module is pure data: encoding and decoding of bodies, no I/O.

use crate::config::{TpmEkType, X509KeyType};
pub use crate::domain::record::records_digest;
pub use crate::domain::{CredentialType, RecordId, hex};
use std::time::Duration;

/// Protocol versions this station speaks.
pub const VERSION_MIN: u8 = 1;
pub const VERSION_MAX: u8 = 1;

/// The largest frame body this station sends or accepts.
pub const STATION_MAX_BODY: usize = 4096;

/// The smallest `max_body` a device may report (protocol.md §5, HELLO).
pub const MIN_DEVICE_MAX_BODY: usize = 64;

/// Bytes of a WRITE body before the data: record, offset u32, total u32.
pub const WRITE_HEADER_LEN: usize = 9;

/// Message types.
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const WRITE: u8 = 0x02;
    pub const COMMIT: u8 = 0x03;
    pub const READ_DIGEST: u8 = 0x04;
    pub const READ_RECORD: u8 = 0x05;
    pub const RESET: u8 = 0x06;
    /// Device-side key generation; answers with a CSR.
    pub const GEN_CSR: u8 = 0x07;
    /// Report the TPM's endorsement key (and certificate, SRK).
    pub const READ_EK: u8 = 0x08;
    /// Reserved: lock provisioning.
    pub const LOCK: u8 = 0x09;
    /// Response bit.
    pub const RESPONSE: u8 = 0x80;
    pub const NAK: u8 = 0xFF;
}

/// Capability bits reported in HELLO: the station's capability word, carried unchanged.
pub mod capability {
    use crate::device::Capability;
    pub const SYMMETRIC_KEY: u32 = Capability::SymmetricKey.bit();
    pub const X509_CHAIN: u32 = Capability::X509Chain.bit();
    pub const CSR: u32 = Capability::Csr.bit();
    pub const TPM_EK: u32 = Capability::TpmEk.bit();
    pub const LOCK: u32 = Capability::Lock.bit();
}

/// COMMIT flags.
pub mod commit_flag {
    /// Replace an identity the device already holds.
    pub const REPLACE: u8 = 1 << 0;
}

/// NAK reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NakCode {
    BadFrame = 0x01,
    UnknownCommand = 0x02,
    BadLength = 0x03,
    BadRecord = 0x04,
    OutOfOrder = 0x05,
    StorageFailure = 0x06,
    AlreadyProvisioned = 0x07,
    Busy = 0x08,
    UnsupportedVersion = 0x09,
    AccessDenied = 0x0A,
    Incomplete = 0x0B,
    NoSession = 0x0C,
}

impl NakCode {
    pub fn from_u8(v: u8) -> Option<Self> {
        use NakCode::*;
        Some(match v {
            0x01 => BadFrame,
            0x02 => UnknownCommand,
            0x03 => BadLength,
            0x04 => BadRecord,
            0x05 => OutOfOrder,
            0x06 => StorageFailure,
            0x07 => AlreadyProvisioned,
            0x08 => Busy,
            0x09 => UnsupportedVersion,
            0x0A => AccessDenied,
            0x0B => Incomplete,
            0x0C => NoSession,
            _ => return None,
        })
    }

    /// Plain words for a NAK code (any byte).
    pub fn describe(code: u8) -> &'static str {
        use NakCode::*;
        match Self::from_u8(code) {
            Some(BadFrame) => "malformed request",
            Some(UnknownCommand) => "unknown command",
            Some(BadLength) => "bad length",
            Some(BadRecord) => "unknown or read-protected record",
            Some(OutOfOrder) => "write chunk out of order",
            Some(StorageFailure) => "device storage failure",
            Some(AlreadyProvisioned) => "device already holds an identity",
            Some(Busy) => "device busy",
            Some(UnsupportedVersion) => "unsupported protocol version",
            Some(AccessDenied) => "access denied",
            Some(Incomplete) => "records missing for commit",
            Some(NoSession) => "no session (HELLO first)",
            None => "unknown NAK code",
        }
    }
}

/// Time allowed for a response, before line time is added.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub response: Duration,
    pub commit: Duration,
    /// GEN_CSR: key generation on a microcontroller can take seconds (RSA).
    pub keygen: Duration,
}

/// What the device says about itself in its HELLO response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HelloInfo {
    pub version: u8,
    pub max_body: u16,
    pub capabilities: u32,
    pub provisioned: bool,
    pub serial: String,
    pub firmware: String,
    pub model: String,
}

/// Digest state from READ_DIGEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestState {
    pub provisioned: bool,
    pub digest: [u8; 32],
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello {
        min: u8,
        max: u8,
    },
    Write {
        record: u8,
        offset: u32,
        total: u32,
        data: Vec<u8>,
    },
    Commit {
        flags: u8,
    },
    ReadDigest,
    ReadRecord {
        record: u8,
    },
    Reset,
    GenCsr {
        key_type: u8,
        common_name: String,
    },
    ReadEk {
        ek_type: u8,
    },
}

impl Request {
    pub fn kind(&self) -> u8 {
        match self {
            Request::Hello { .. } => kind::HELLO,
            Request::Write { .. } => kind::WRITE,
            Request::Commit { .. } => kind::COMMIT,
            Request::ReadDigest => kind::READ_DIGEST,
            Request::ReadRecord { .. } => kind::READ_RECORD,
            Request::Reset => kind::RESET,
            Request::GenCsr { .. } => kind::GEN_CSR,
            Request::ReadEk { .. } => kind::READ_EK,
        }
    }

    /// Command name for messages.
    pub fn name(&self) -> &'static str {
        command_name(self.kind())
    }

    pub fn encode_body(&self) -> Vec<u8> {
        match self {
            Request::Hello { min, max } => vec![*min, *max],
            Request::Write {
                record,
                offset,
                total,
                data,
            } => {
                let mut b = Vec::with_capacity(WRITE_HEADER_LEN + data.len());
                b.push(*record);
                b.extend_from_slice(&offset.to_le_bytes());
                b.extend_from_slice(&total.to_le_bytes());
                b.extend_from_slice(data);
                b
            }
            Request::Commit { flags } => vec![*flags],
            Request::ReadDigest | Request::Reset => Vec::new(),
            Request::ReadRecord { record } => vec![*record],
            Request::ReadEk { ek_type } => vec![*ek_type],
            Request::GenCsr {
                key_type,
                common_name,
            } => {
                let mut b = vec![*key_type];
                b.extend_from_slice(common_name.as_bytes());
                b
            }
        }
    }

    /// Decode a request (device side). `None` for an unknown type or malformed body.
    pub fn decode(kind: u8, body: &[u8]) -> Option<Request> {
        Some(match (kind, body.len()) {
            (kind::HELLO, 2) => Request::Hello {
                min: body[0],
                max: body[1],
            },
            (kind::WRITE, n) if n >= WRITE_HEADER_LEN => Request::Write {
                record: body[0],
                offset: u32::from_le_bytes(body[1..5].try_into().ok()?),
                total: u32::from_le_bytes(body[5..9].try_into().ok()?),
                data: body[9..].to_vec(),
            },
            (kind::COMMIT, 1) => Request::Commit { flags: body[0] },
            (kind::READ_DIGEST, 0) => Request::ReadDigest,
            (kind::READ_RECORD, 1) => Request::ReadRecord { record: body[0] },
            (kind::RESET, 0) => Request::Reset,
            (kind::READ_EK, 1) => Request::ReadEk { ek_type: body[0] },
            (kind::GEN_CSR, n) if n >= 2 => Request::GenCsr {
                key_type: body[0],
                common_name: String::from_utf8(body[1..].to_vec()).ok()?,
            },
            _ => return None,
        })
    }
}

/// Command name of a request type.
pub fn command_name(k: u8) -> &'static str {
    match k & !kind::RESPONSE {
        kind::HELLO => "HELLO",
        kind::WRITE => "WRITE",
        kind::COMMIT => "COMMIT",
        kind::READ_DIGEST => "READ_DIGEST",
        kind::READ_RECORD => "READ_RECORD",
        kind::RESET => "RESET",
        kind::GEN_CSR => "GEN_CSR",
        kind::READ_EK => "READ_EK",
        _ => "UNKNOWN",
    }
}

/// Encode a HELLO response body.
pub fn encode_device_info(d: &HelloInfo) -> Vec<u8> {
    let mut b = vec![d.version];
    b.extend_from_slice(&d.max_body.to_le_bytes());
    b.extend_from_slice(&d.capabilities.to_le_bytes());
    b.push(d.provisioned as u8);
    for s in [&d.serial, &d.firmware, &d.model] {
        let bytes = &s.as_bytes()[..s.len().min(255)];
        b.push(bytes.len() as u8);
        b.extend_from_slice(bytes);
    }
    b
}

/// Decode a HELLO response body. `provisioned` is 0 or 1; any other value is malformed, as a
/// reserved digest state is.
pub fn decode_device_info(b: &[u8]) -> Option<HelloInfo> {
    if b.len() < 8 || b[7] > 1 {
        return None;
    }
    let mut i = 8;
    let mut strings = Vec::with_capacity(3);
    for _ in 0..3 {
        let n = *b.get(i)? as usize;
        let s = b.get(i + 1..i + 1 + n)?;
        strings.push(String::from_utf8_lossy(s).into_owned());
        i += 1 + n;
    }
    let model = strings.pop()?;
    let firmware = strings.pop()?;
    let serial = strings.pop()?;
    Some(HelloInfo {
        version: b[0],
        max_body: u16::from_le_bytes([b[1], b[2]]),
        capabilities: u32::from_le_bytes(b[3..7].try_into().ok()?),
        provisioned: b[7] != 0,
        serial,
        firmware,
        model,
    })
}

/// Decode a READ_DIGEST / COMMIT response body: state byte (0 none, 1 committed; others
/// reserved) + 32-byte digest.
pub fn decode_digest(b: &[u8]) -> Option<DigestState> {
    if b.len() != 33 || b[0] > 1 {
        return None;
    }
    Some(DigestState {
        provisioned: b[0] != 0,
        digest: b[1..].try_into().ok()?,
    })
}

/// Encode a READ_EK response: three length-prefixed (u16 LE) fields: EK TPM2B_PUBLIC, EK
/// certificate (DER, may be empty), SRK TPM2B_PUBLIC (may be empty).
pub fn encode_ek(public: &[u8], certificate: &[u8], srk: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(6 + public.len() + certificate.len() + srk.len());
    for f in [public, certificate, srk] {
        b.extend_from_slice(&(f.len() as u16).to_le_bytes());
        b.extend_from_slice(f);
    }
    b
}

/// Decode a READ_EK response into (EK, certificate, SRK).
pub fn decode_ek(b: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let mut fields = Vec::with_capacity(3);
    let mut i = 0;
    for _ in 0..3 {
        let n = u16::from_le_bytes([*b.get(i)?, *b.get(i + 1)?]) as usize;
        fields.push(b.get(i + 2..i + 2 + n)?.to_vec());
        i += 2 + n;
    }
    if i != b.len() || fields[0].is_empty() {
        return None;
    }
    let srk = fields.pop()?;
    let cert = fields.pop()?;
    Some((fields.pop()?, cert, srk))
}

/// The byte GEN_CSR carries for a key type.
pub fn key_type_code(k: X509KeyType) -> u8 {
    match k {
        X509KeyType::P256 => 1,
        X509KeyType::P384 => 2,
        X509KeyType::Rsa2048 => 3,
    }
}

/// The key type a GEN_CSR byte names.
pub fn key_type_from_code(c: u8) -> Option<X509KeyType> {
    Some(match c {
        1 => X509KeyType::P256,
        2 => X509KeyType::P384,
        3 => X509KeyType::Rsa2048,
        _ => return None,
    })
}

/// The byte READ_EK carries for an EK type.
pub fn ek_type_code(t: TpmEkType) -> u8 {
    match t {
        TpmEkType::Rsa2048 => 1,
        TpmEkType::EccP256 => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Hello { min: 1, max: 1 },
            Request::Write {
                record: 5,
                offset: 1007,
                total: 2048,
                data: vec![1, 2, 0, 3],
            },
            Request::Commit {
                flags: commit_flag::REPLACE,
            },
            Request::ReadDigest,
            Request::ReadRecord { record: 3 },
            Request::Reset,
            Request::GenCsr {
                key_type: 1,
                common_name: "sn-1".into(),
            },
        ] {
            assert_eq!(Request::decode(r.kind(), &r.encode_body()), Some(r.clone()));
        }
        assert_eq!(Request::decode(kind::HELLO, &[1]), None);
        assert_eq!(Request::decode(0x42, &[]), None);
    }

    #[test]
    fn device_info_round_trips_and_rejects_truncation() {
        let d = HelloInfo {
            version: 1,
            max_body: 1024,
            capabilities: capability::SYMMETRIC_KEY,
            provisioned: false,
            serial: "SN0001".into(),
            firmware: "2.4.1".into(),
            model: "sensor-x".into(),
        };
        let b = encode_device_info(&d);
        assert_eq!(decode_device_info(&b), Some(d));
        assert_eq!(decode_device_info(&b[..b.len() - 1]), None);
    }

    /// Found by the `responses` fuzz target (fuzz/regressions/responses/hello-provisioned-byte-4):
    /// a `provisioned` byte of 4 was read as "holds an identity" and re-encoded as 1.
    #[test]
    fn a_hello_whose_provisioned_byte_is_neither_0_nor_1_is_malformed() {
        let mut b = encode_device_info(&HelloInfo {
            version: 1,
            max_body: 1024,
            capabilities: capability::SYMMETRIC_KEY,
            provisioned: true,
            serial: "SN0001".into(),
            firmware: "1".into(),
            model: "m".into(),
        });
        assert!(decode_device_info(&b).unwrap().provisioned);
        for v in [2, 4, 0xFF] {
            b[7] = v;
            assert_eq!(decode_device_info(&b), None, "provisioned byte {v}");
        }
    }

    #[test]
    fn digest_is_order_independent_and_length_framed() {
        let a = records_digest([(1u8, &b"ab"[..]), (2, &b"c"[..])]);
        let b = records_digest([(2u8, &b"c"[..]), (1, &b"ab"[..])]);
        let c = records_digest([(1u8, &b"a"[..]), (2, &b"bc"[..])]);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
