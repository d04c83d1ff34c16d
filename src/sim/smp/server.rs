//! The SMP server: an 8-byte header and a CBOR body in, the answer out, dispatched to the os
//! ([`os`]), fs ([`super::fs`]) and settings ([`super::settings`]) groups as Zephyr's MCUmgr
//! answers them: the answer's op is the request's plus one, its header echoes the group,
//! sequence number and command id, and errors are `{"rc": N}` (SMP v1) or
//! `{"err": {"group": G, "rc": N}}` (SMP v2 group errors).

use super::SmpSim;
use super::cbor::{
    GROUP_FS, GROUP_OS, GROUP_SETTINGS, MGMT_ERR_EINVAL, MGMT_ERR_ENOENT, MGMT_ERR_ENOTSUP,
    MGMT_ERR_EUNKNOWN, OP_READ, OP_WRITE, Reply, text,
};
use ciborium::Value;

/// An SMP header (Zephyr `struct smp_hdr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub op: u8,
    /// 0: SMP v1, 1: SMP v2.
    pub version: u8,
    pub flags: u8,
    pub len: u16,
    pub group: u16,
    pub seq: u8,
    pub id: u8,
}

impl Header {
    pub fn parse(b: &[u8]) -> Option<Header> {
        let b: &[u8; 8] = b.get(..8)?.try_into().ok()?;
        Some(Header {
            op: b[0] & 0x07,
            version: (b[0] >> 3) & 0x03,
            flags: b[1],
            len: u16::from_be_bytes([b[2], b[3]]),
            group: u16::from_be_bytes([b[4], b[5]]),
            seq: b[6],
            id: b[7],
        })
    }

    pub fn encode(&self) -> [u8; 8] {
        let [l0, l1] = self.len.to_be_bytes();
        let [g0, g1] = self.group.to_be_bytes();
        [
            (self.version << 3) | self.op,
            self.flags,
            l0,
            l1,
            g0,
            g1,
            self.seq,
            self.id,
        ]
    }
}

/// What the device does with a request.
pub enum Outcome {
    /// Answer with this packet.
    Answer(Vec<u8>),
    /// Answer, then restart (the os group's reset).
    AnswerThenReset(Vec<u8>),
    /// Say nothing (not a request, or a malformed header).
    Silent,
}

/// The answer to one packet (SMP header + body).
pub fn handle(sim: &mut SmpSim, packet: &[u8]) -> Outcome {
    let Some(h) = Header::parse(packet) else {
        return Outcome::Silent;
    };
    let body = &packet[8..];
    if !matches!(h.op, OP_READ | OP_WRITE) || body.len() != h.len as usize {
        return Outcome::Silent;
    }
    let request = match ciborium::from_reader::<Value, _>(body) {
        Ok(Value::Map(m)) => m,
        _ => return Outcome::Answer(answer(&h, Reply::Rc(MGMT_ERR_EINVAL))),
    };
    let write = h.op == OP_WRITE;
    let reply = match h.group {
        GROUP_OS => os(sim, h.id, write, &request),
        GROUP_FS => super::fs::handle(sim, h.id, write, &request),
        GROUP_SETTINGS => super::settings::handle(sim, h.id, write, &request),
        _ => Reply::Rc(MGMT_ERR_ENOTSUP),
    };
    let reset = h.group == GROUP_OS && h.id == 5 && write && matches!(reply, Reply::Map(_));
    let wire = answer(&h, reply);
    if reset {
        Outcome::AnswerThenReset(wire)
    } else {
        Outcome::Answer(wire)
    }
}

/// The answer packet (header + CBOR) to a request with header `h`.
pub fn answer(h: &Header, reply: Reply) -> Vec<u8> {
    let fields: Vec<(Value, Value)> = match reply {
        Reply::Map(f) => f.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        Reply::GroupError(group, rc) => group_error(h, group, rc, vec![]),
        Reply::GroupErrorWith(group, rc, more) => group_error(h, group, rc, more),
        Reply::Rc(rc) => vec![("rc".into(), rc.into())],
    };
    let mut body = Vec::new();
    ciborium::into_writer(&Value::Map(fields), &mut body).expect("CBOR into a Vec");
    let head = Header {
        op: h.op + 1,
        version: h.version,
        flags: 0,
        len: body.len() as u16,
        group: h.group,
        seq: h.seq,
        id: h.id,
    };
    [&head.encode()[..], &body].concat()
}

/// `{"err": {"group", "rc"}}` (SMP v2) or a translated `{"rc"}` (SMP v1), then `more`.
fn group_error(
    h: &Header,
    group: u16,
    rc: i64,
    more: Vec<(&'static str, Value)>,
) -> Vec<(Value, Value)> {
    let first = if h.version >= 1 {
        let err = Value::Map(vec![
            ("group".into(), (group as i64).into()),
            ("rc".into(), rc.into()),
        ]);
        ("err".into(), err)
    } else {
        ("rc".into(), v1_rc(group, rc).into())
    };
    std::iter::once(first)
        .chain(more.into_iter().map(|(k, v)| (k.into(), v)))
        .collect()
}

/// A group error as an SMP v1 client gets it (Zephyr's translation: not found is ENOENT,
/// invalid names and unknown hash types EINVAL, the rest EUNKNOWN).
fn v1_rc(group: u16, rc: i64) -> i64 {
    match (group, rc) {
        (GROUP_FS, 3) | (GROUP_SETTINGS, 3) => MGMT_ERR_ENOENT,
        (GROUP_FS, 2) | (GROUP_FS, 13) => MGMT_ERR_EINVAL,
        _ => MGMT_ERR_EUNKNOWN,
    }
}

/// The os group (0): echo, reset, MCUmgr parameters, application info.
fn os(sim: &mut SmpSim, id: u8, write: bool, m: &[(Value, Value)]) -> Reply {
    match (id, write) {
        (0, _) => match text(m, "d") {
            Some(d) => Reply::Map(vec![("r", d.into())]),
            None => Reply::Rc(MGMT_ERR_EINVAL),
        },
        (5, true) => Reply::Map(vec![]),
        (6, false) => Reply::Map(vec![
            ("buf_size", (sim.config.max_body as u64).into()),
            ("buf_count", 4u64.into()),
        ]),
        (7, false) => {
            let format = text(m, "format").unwrap_or("s");
            Reply::Map(vec![("output", app_info(sim, format).into())])
        }
        _ => Reply::Rc(MGMT_ERR_ENOTSUP),
    }
}

/// `uname`-like output for the format letters Zephyr knows, in Zephyr's order.
fn app_info(sim: &SmpSim, format: &str) -> String {
    let all = format.contains('a');
    let parts = [
        ('s', "Zephyr".to_string()),
        ('n', sim.device.serial.to_lowercase()),
        ('r', sim.config.firmware.clone()),
        ('v', sim.config.firmware.clone()),
        ('b', "Nov 30 2026 06:00:00".to_string()),
        ('m', "ARM".to_string()),
        ('p', "cortex-m33".to_string()),
        ('i', sim.config.model.clone()),
        ('o', "Zephyr".to_string()),
    ];
    parts
        .iter()
        .filter(|(c, _)| all || format.contains(*c))
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_back_as_written() {
        let h = Header {
            op: OP_WRITE,
            version: 1,
            flags: 0,
            len: 300,
            group: GROUP_FS,
            seq: 77,
            id: 0,
        };
        assert_eq!(Header::parse(&h.encode()), Some(h));
        assert_eq!(h.encode()[0], 0x0a);
    }
}
