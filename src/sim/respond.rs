//! What a simulated device answers to each frame: replay of a repeated request, injected
//! faults, and the commands themselves (sessions, chunked staging, atomic COMMIT, read-back,
//! GEN_CSR, READ_EK).

use super::faults::Faults;
use super::flash::{Flash, digest_of, store};
use super::state::{Device, Staged};
use super::{MAX_RECORD, SimConfig, faults_apply};
use crate::device::v1::frame::{self, Decoder};
use crate::device::v1::protocol::{
    self, CredentialType, HelloInfo, NakCode, RecordId, Request, commit_flag, kind,
};
use std::collections::BTreeMap;

/// What the simulator does with a request.
pub(super) enum Action {
    Silent,
    Disconnect,
    Respond(Vec<u8>, bool),
}

/// A record's size limit (protocol.md §6).
fn record_max(id: RecordId) -> usize {
    match id {
        RecordId::IdScope => 32,
        RecordId::GlobalEndpoint => 253,
        RecordId::RegistrationId => 128,
        RecordId::CredentialType => 1,
        _ => MAX_RECORD,
    }
}

fn nak(seq: u8, code: NakCode, detail: &[u8]) -> Vec<u8> {
    let mut body = vec![code as u8];
    body.extend_from_slice(detail);
    frame::encode(kind::NAK, seq, &body)
}

/// The request being answered: its type and sequence number.
#[derive(Clone, Copy)]
struct Reply {
    kind: u8,
    seq: u8,
}

impl Reply {
    fn ok(self, body: &[u8]) -> Vec<u8> {
        frame::encode(self.kind | kind::RESPONSE, self.seq, body)
    }

    fn nak(self, code: NakCode, detail: &[u8]) -> Vec<u8> {
        nak(self.seq, code, detail)
    }
}

pub(super) fn handle(config: &SimConfig, d: &mut Device, f: &frame::Frame) -> Action {
    if d.stalled {
        return Action::Silent;
    }
    if f.kind != kind::HELLO
        && let Some((seq, k, body, wire)) = &d.last
        && *seq == f.seq
        && *k == f.kind
        && *body == f.body
    {
        return Action::Respond(wire.clone(), false);
    }
    let faults = if faults_apply(config, d) {
        config.faults.clone()
    } else {
        Faults::default()
    };
    let count = {
        let c = d.seen.entry(f.kind).or_insert(0);
        *c += 1;
        *c
    };
    if faults.stall_on == Some(f.kind) {
        d.stalled = true;
        return Action::Silent;
    }
    if faults.disconnect_on == Some(f.kind) && (count >= 2 || f.kind != kind::WRITE) {
        return Action::Disconnect;
    }
    if let Some((k, n)) = faults.busy_on
        && k == f.kind
        && count <= n
    {
        // BUSY: nothing was done, nothing is remembered.
        return Action::Respond(nak(f.seq, NakCode::Busy, b"booting"), false);
    }
    let (wire, reset) = match injected(&faults, f) {
        Some(wire) => (wire, false),
        None => answer(config, d, f, &faults),
    };
    d.last = Some((f.seq, f.kind, f.body.clone(), wire.clone()));
    Action::Respond(wire, reset)
}

/// The answer an injected fault puts in place of the real one, if any.
fn injected(faults: &Faults, f: &frame::Frame) -> Option<Vec<u8>> {
    if let Some((_, code)) = faults.nak_on.filter(|(k, _)| *k == f.kind) {
        let mut body = vec![code];
        body.extend_from_slice(b"injected fault");
        Some(frame::encode(kind::NAK, f.seq, &body))
    } else if faults.empty_nak_on == Some(f.kind) {
        Some(frame::encode(kind::NAK, f.seq, &[]))
    } else if faults.wrong_type_on == Some(f.kind) {
        Some(frame::encode(
            kind::READ_RECORD | kind::RESPONSE,
            f.seq,
            b"oops",
        ))
    } else if faults.stale_seq_on == Some(f.kind) {
        Some(frame::encode(
            f.kind | kind::RESPONSE,
            f.seq.wrapping_sub(1),
            &[1; 33],
        ))
    } else {
        None
    }
}

/// Decode the request and answer it; the bool asks for a reset after the answer is sent.
fn answer(
    config: &SimConfig,
    d: &mut Device,
    f: &frame::Frame,
    faults: &Faults,
) -> (Vec<u8>, bool) {
    match Request::decode(f.kind, &f.body) {
        None if protocol::command_name(f.kind) == "UNKNOWN" || f.kind & kind::RESPONSE != 0 => {
            (nak(f.seq, NakCode::UnknownCommand, b""), false)
        }
        // A CN that is not UTF-8.
        None if f.kind == kind::GEN_CSR && f.body.len() >= 2 => (
            nak(f.seq, NakCode::BadFrame, b"common name is not UTF-8"),
            false,
        ),
        None => (nak(f.seq, NakCode::BadLength, b""), false),
        Some(req) => {
            let (w, reset) = respond(config, d, f.seq, req, faults);
            (restate(faults, f.kind, w), reset)
        }
    }
}

/// Under the `state` fault, re-frame the answer to a request of type `request` with another
/// state byte.
fn restate(faults: &Faults, request: u8, w: Vec<u8>) -> Vec<u8> {
    if let Some((k, state)) = faults.state_on
        && k == request
        && w.len() > 4
    {
        let mut frames = Vec::new();
        Decoder::new(4096).push(&w, |r| frames.extend(r.ok()));
        if let Some(mut a) = frames.pop().filter(|a| a.kind != kind::NAK) {
            a.body[0] = state;
            return frame::encode(a.kind, a.seq, &a.body);
        }
    }
    w
}

fn respond(
    config: &SimConfig,
    d: &mut Device,
    seq: u8,
    req: Request,
    faults: &Faults,
) -> (Vec<u8>, bool) {
    let r = Reply {
        kind: req.kind(),
        seq,
    };
    let wire = match &req {
        Request::Hello { min, max } => respond_hello(config, d, r, *min, *max),
        _ if !d.session => r.nak(NakCode::NoSession, b""),
        Request::Write {
            record,
            offset,
            total,
            data,
        } => respond_write(d, r, *record, *offset as usize, *total as usize, data),
        Request::Commit { flags } => respond_commit(config, d, r, *flags, faults),
        Request::ReadDigest => respond_read_digest(d, r),
        Request::ReadRecord { record } => respond_read_record(d, r, *record),
        Request::Reset => {
            d.session = false;
            return (r.ok(&[]), true);
        }
        Request::ReadEk { ek_type } => match (&config.tpm, read_ek(config, *ek_type)) {
            (None, _) => r.nak(NakCode::UnknownCommand, b"no TPM"),
            (Some(_), Ok(body)) => r.ok(&body),
            (Some(_), Err(code)) => r.nak(code, b"TPM read failed"),
        },
        Request::GenCsr {
            key_type,
            common_name,
        } => respond_gen_csr(d, r, *key_type, common_name, faults),
    };
    (wire, false)
}

fn respond_hello(config: &SimConfig, d: &mut Device, r: Reply, min: u8, max: u8) -> Vec<u8> {
    if min > protocol::VERSION_MAX || max < protocol::VERSION_MIN {
        return r.nak(
            NakCode::UnsupportedVersion,
            &[protocol::VERSION_MIN, protocol::VERSION_MAX],
        );
    }
    d.session = true;
    d.staged.clear();
    d.staged_key = None;
    let info = HelloInfo {
        version: protocol::VERSION_MAX.min(max),
        max_body: config.max_body,
        capabilities: config.capabilities,
        provisioned: !d.committed.is_empty(),
        serial: d.serial.clone(),
        firmware: d.flash.firmware.clone(),
        model: config.model.clone(),
    };
    r.ok(&protocol::encode_device_info(&info))
}

fn respond_write(
    d: &mut Device,
    r: Reply,
    record: u8,
    offset: usize,
    total: usize,
    data: &[u8],
) -> Vec<u8> {
    let Some(id) = RecordId::from_u8(record) else {
        return r.nak(NakCode::BadRecord, b"");
    };
    if total == 0 {
        return r.nak(NakCode::BadLength, b"empty record");
    }
    if total > record_max(id) {
        return r.nak(NakCode::BadLength, b"record too large");
    }
    if offset == 0 {
        d.staged.insert(
            record,
            Staged {
                total,
                data: Vec::with_capacity(total),
            },
        );
    }
    let Some(s) = d.staged.get_mut(&record) else {
        return r.nak(NakCode::OutOfOrder, b"");
    };
    if s.data.len() != offset || s.total != total {
        return r.nak(NakCode::OutOfOrder, b"");
    }
    if offset + data.len() > total {
        return r.nak(NakCode::BadLength, b"past declared total");
    }
    s.data.extend_from_slice(data);
    let mut body = vec![record];
    body.extend_from_slice(&(s.data.len() as u32).to_le_bytes());
    r.ok(&body)
}

/// COMMIT's checks on what is staged: every required record complete, a known credential
/// type, and the private key that type needs. Gives the staged credential type, or the NAK.
fn check_staged(d: &Device, r: Reply) -> Result<Option<u8>, Vec<u8>> {
    let complete = RecordId::REQUIRED.iter().all(|r| {
        d.staged
            .get(&(*r as u8))
            .is_some_and(|s| s.data.len() == s.total)
    }) && d.staged.values().all(|s| s.data.len() == s.total);
    let cred_type = d
        .staged
        .get(&(RecordId::CredentialType as u8))
        .and_then(|s| s.data.first().copied());
    let key_ok = match cred_type {
        Some(t) if t == CredentialType::X509DeviceKey as u8 => d.staged_key.is_some(),
        Some(t) if t == CredentialType::X509StationKey as u8 => {
            d.staged.contains_key(&(RecordId::PrivateKey as u8))
        }
        Some(t) => t == CredentialType::SymmetricKey as u8 || t == CredentialType::Tpm as u8,
        None => false,
    };
    if cred_type.is_some_and(|t| !(1..=4).contains(&t)) {
        return Err(r.nak(NakCode::BadRecord, b"credential type"));
    }
    if !complete || !key_ok {
        return Err(r.nak(NakCode::Incomplete, b""));
    }
    Ok(cred_type)
}

fn respond_commit(
    config: &SimConfig,
    d: &mut Device,
    r: Reply,
    flags: u8,
    faults: &Faults,
) -> Vec<u8> {
    let cred_type = match check_staged(d, r) {
        Ok(t) => t,
        Err(wire) => return wire,
    };
    let new: BTreeMap<u8, Vec<u8>> = d.staged.iter().map(|(k, s)| (*k, s.data.clone())).collect();
    let rid = RecordId::RegistrationId as u8;
    if !d.committed.is_empty()
        && d.committed.get(&rid) != new.get(&rid)
        && flags & commit_flag::REPLACE == 0
    {
        return r.nak(NakCode::AlreadyProvisioned, b"");
    }
    let mut stored = new;
    if faults.bad_storage
        && let Some(c) = stored.get_mut(&(RecordId::Credential as u8))
        && let Some(b) = c.first_mut()
    {
        *b ^= 0x01;
    }
    let path = Flash::path(&config.flash_dir, &d.serial);
    let previous_key = d.flash.device_key.clone();
    d.flash.device_key = match cred_type {
        Some(t) if t == CredentialType::X509DeviceKey as u8 => {
            d.staged_key.as_deref().map(protocol::hex)
        }
        _ => None,
    };
    if store(&path, &mut d.flash, &stored).is_err() {
        d.flash.device_key = previous_key;
        return r.nak(NakCode::StorageFailure, b"flash write failed");
    }
    d.committed = stored;
    d.staged.clear();
    d.staged_key = None;
    let mut body = vec![1];
    body.extend_from_slice(&digest_of(&d.committed));
    r.ok(&body)
}

fn respond_read_digest(d: &Device, r: Reply) -> Vec<u8> {
    let mut body = vec![!d.committed.is_empty() as u8];
    if d.committed.is_empty() {
        body.extend_from_slice(&[0; 32]);
    } else {
        body.extend_from_slice(&digest_of(&d.committed));
    }
    r.ok(&body)
}

fn respond_read_record(d: &Device, r: Reply, record: u8) -> Vec<u8> {
    match RecordId::from_u8(record) {
        Some(id) if !id.readable() => r.nak(NakCode::AccessDenied, b""),
        Some(_) => match d.committed.get(&record) {
            Some(v) => r.ok(v),
            None => r.nak(NakCode::BadRecord, b"not stored"),
        },
        None => r.nak(NakCode::BadRecord, b""),
    }
}

fn respond_gen_csr(
    d: &mut Device,
    r: Reply,
    key_type: u8,
    common_name: &str,
    faults: &Faults,
) -> Vec<u8> {
    if common_name.is_empty() || common_name.len() > 64 {
        return r.nak(NakCode::BadLength, b"common name must be 1 to 64 bytes");
    }
    match make_csr(key_type, common_name, faults) {
        Ok((csr, key)) => {
            d.staged_key = Some(key);
            r.ok(&csr)
        }
        Err(code) => r.nak(code, b""),
    }
}

/// What a device does on GEN_CSR: generate a key of the asked type, sign a CSR with CN =
/// `common_name`. Faults can change the key type, the CN, or break the signature.
fn make_csr(
    key_type: u8,
    common_name: &str,
    faults: &Faults,
) -> Result<(Vec<u8>, Vec<u8>), NakCode> {
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};
    let rsa = || KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048);
    let key = match (faults.csr_key.as_deref(), key_type) {
        (Some("ed25519"), _) => KeyPair::generate_for(&PKCS_ED25519),
        (Some("p256"), _) | (None, 1) => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        (Some("p384"), _) | (None, 2) => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
        (Some("rsa2048"), _) | (None, 3) => rsa(),
        _ => return Err(NakCode::BadRecord),
    }
    .map_err(|_| NakCode::StorageFailure)?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        faults.csr_cn.as_deref().unwrap_or(common_name),
    );
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(|_| NakCode::StorageFailure)?;
    let mut der = csr.der().to_vec();
    if faults.csr_tamper
        && let Some(b) = der.last_mut()
    {
        *b ^= 0x01;
    }
    Ok((der, key.serialize_der()))
}

/// What a device does on READ_EK: read its own TPM (here through the simulator's TCTI).
fn read_ek(config: &SimConfig, ek_type: u8) -> Result<Vec<u8>, NakCode> {
    use crate::config::TpmEkType;
    let tcti = config.tpm.as_deref().ok_or(NakCode::UnknownCommand)?;
    let t = match ek_type {
        1 => TpmEkType::Rsa2048,
        2 => TpmEkType::EccP256,
        _ => return Err(NakCode::BadRecord),
    };
    let r = crate::device::tpm::read_ek_tcti(tcti, t, false, true, true)
        .map_err(|_| NakCode::StorageFailure)?;
    Ok(protocol::encode_ek(
        &r.public,
        r.certificate.as_deref().unwrap_or_default(),
        r.srk.as_deref().unwrap_or_default(),
    ))
}
