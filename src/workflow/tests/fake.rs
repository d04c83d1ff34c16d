//! An in-process device that keeps docs/protocol.md's rules, with one scripted fault.

use super::SERIAL;
use crate::device::{Capability, Device, DeviceInfo, ReportedEk};
use crate::domain::record::records_digest;
use crate::domain::{Digest, RecordId};
use crate::error::{Error, Result};
use crate::workflow::Interrupt;
use std::collections::BTreeMap;
use std::time::Duration;

/// The steps a device can fail at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Identify,
    HeldId,
    HeldDigest,
    Stage,
    Commit,
    ReadBack,
}

/// How it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    Timeout,
    Disconnected,
    Nak,
    Protocol,
    /// COMMIT takes effect on the device, but its answer is lost.
    LostAnswer,
    /// The device answers with a digest of something else.
    Lie,
}

pub(super) const OPS: [Op; 6] = [
    Op::Identify,
    Op::HeldId,
    Op::HeldDigest,
    Op::Stage,
    Op::Commit,
    Op::ReadBack,
];
pub(super) const FAULTS: [Fault; 4] = [
    Fault::Timeout,
    Fault::Disconnected,
    Fault::Nak,
    Fault::Protocol,
];

/// A device in memory: a committed identity, staged records, one scripted fault.
pub(super) struct Fake {
    pub(super) serial: String,
    pub(super) capabilities: u32,
    pub(super) committed: BTreeMap<RecordId, Vec<u8>>,
    pub(super) staged: BTreeMap<RecordId, Vec<u8>>,
    pub(super) fault: Option<(Op, Fault)>,
    pub(super) stages: u32,
    pub(super) commits: u32,
    pub(super) resets: u32,
    /// After the commit, `held_digest` is the read-back.
    pub(super) committed_once: bool,
    /// A session is open (identify) and not yet ended (reset).
    pub(super) session: bool,
    /// The REPLACE flag of the last commit.
    pub(super) last_replace: Option<bool>,
    /// Ask for a stop while staging record number `.0` (1-based), or inside the commit.
    pub(super) stop_at_stage: Option<(u32, Interrupt)>,
    pub(super) stop_in_commit: Option<Interrupt>,
}

impl Fake {
    pub(super) fn new() -> Self {
        Self {
            serial: SERIAL.into(),
            capabilities: Capability::SymmetricKey.bit(),
            committed: BTreeMap::new(),
            staged: BTreeMap::new(),
            fault: None,
            stages: 0,
            commits: 0,
            resets: 0,
            committed_once: false,
            session: false,
            last_replace: None,
            stop_at_stage: None,
            stop_in_commit: None,
        }
    }

    /// A device that holds an identity from elsewhere under `registration_id`.
    pub(super) fn holding(registration_id: &str) -> Self {
        let mut f = Self::new();
        for (id, b) in [
            (RecordId::IdScope, &b"0ne0000OTHER"[..]),
            (
                RecordId::GlobalEndpoint,
                b"global.azure-devices-provisioning.net",
            ),
            (RecordId::RegistrationId, registration_id.as_bytes()),
            (RecordId::CredentialType, &[1]),
            (RecordId::Credential, b"b3RoZXI="),
        ] {
            f.committed.insert(id, b.to_vec());
        }
        f
    }

    /// protocol.md §7: every command but HELLO needs a session (NAK NO_SESSION).
    fn in_session(&self) -> Result<()> {
        if self.session {
            return Ok(());
        }
        Err(nak(0x0c, "no session (HELLO first)"))
    }

    pub(super) fn failing(op: Op, fault: Fault) -> Self {
        let mut f = Self::new();
        f.fault = Some((op, fault));
        f
    }

    pub(super) fn digest(&self) -> Option<Digest> {
        (!self.committed.is_empty())
            .then(|| records_digest(self.committed.iter().map(|(k, v)| (*k as u8, v.as_slice()))))
    }

    /// The scripted fault for `op`, as the error a real link would report.
    fn fail(&self, op: Op) -> Result<()> {
        if let Some((o, f @ (Fault::LostAnswer | Fault::Lie))) = self.fault {
            assert!(
                matches!((o, f), (Op::Commit, _) | (Op::ReadBack, Fault::Lie)),
                "{o:?}/{f:?} is not a scripted fault"
            );
        }
        match self.fault {
            Some((o, f)) if o == op => Err(match f {
                Fault::Timeout => Error::Timeout {
                    port: "fake".into(),
                    command: "OP",
                    attempts: 4,
                },
                Fault::Disconnected => Error::Disconnected {
                    port: "fake".into(),
                    command: "OP",
                },
                Fault::Nak => nak(0x06, "storage failure"),
                Fault::Protocol => Error::Protocol {
                    port: "fake".into(),
                    command: "OP",
                    message: "scripted".into(),
                },
                // These answer; what they answer is scripted at the step.
                Fault::LostAnswer | Fault::Lie => return Ok(()),
            }),
            _ => Ok(()),
        }
    }

    fn lies_at(&self, op: Op) -> bool {
        self.fault == Some((op, Fault::Lie))
    }
}

fn nak(code: u8, reason: &'static str) -> Error {
    Error::Nak {
        command: "OP",
        code,
        reason,
        detail: String::new(),
    }
}

impl Device for Fake {
    fn port(&self) -> &str {
        "fake"
    }

    fn identify(&mut self) -> Result<DeviceInfo> {
        self.fail(Op::Identify)?;
        // A new session discards whatever was staged and not committed.
        self.session = true;
        self.staged.clear();
        self.committed_once = false;
        Ok(DeviceInfo {
            protocol: 1,
            capabilities: self.capabilities,
            holds_identity: !self.committed.is_empty(),
            serial: self.serial.clone(),
            firmware: "1.0".into(),
            model: "fake".into(),
        })
    }

    fn held_record(&mut self, record: RecordId) -> Result<Option<Vec<u8>>> {
        self.in_session()?;
        assert!(record.readable(), "secret records are never read back");
        self.fail(Op::HeldId)?;
        Ok(self.committed.get(&record).cloned())
    }

    fn held_digest(&mut self) -> Result<Option<Digest>> {
        self.in_session()?;
        let op = if self.committed_once {
            Op::ReadBack
        } else {
            Op::HeldDigest
        };
        self.fail(op)?;
        if self.lies_at(op) {
            return Ok(Some([0x5a; 32]));
        }
        Ok(self.digest())
    }

    fn stage(
        &mut self,
        record: RecordId,
        bytes: &[u8],
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        self.in_session()?;
        self.stages += 1;
        if let Some((n, stop)) = &self.stop_at_stage
            && *n == self.stages
        {
            stop.request(15);
        }
        self.fail(Op::Stage)?;
        self.staged.insert(record, bytes.to_vec());
        progress(bytes.len());
        Ok(())
    }

    fn commit(&mut self, replace: bool) -> Result<Digest> {
        self.in_session()?;
        self.commits += 1;
        self.last_replace = Some(replace);
        if self.fault != Some((Op::Commit, Fault::LostAnswer)) {
            self.fail(Op::Commit)?;
        }
        // protocol.md §7: INCOMPLETE unless every required record is staged; ALREADY_PROVISIONED
        // when it holds another registration ID and REPLACE is clear.
        if RecordId::REQUIRED
            .iter()
            .any(|r| !self.staged.contains_key(r))
        {
            return Err(nak(0x0b, "records missing for commit"));
        }
        let held = self.committed.get(&RecordId::RegistrationId);
        if held.is_some_and(|h| Some(h) != self.staged.get(&RecordId::RegistrationId)) && !replace {
            return Err(nak(0x07, "already provisioned"));
        }
        if let Some(stop) = &self.stop_in_commit {
            stop.request(15);
        }
        self.committed = std::mem::take(&mut self.staged);
        self.committed_once = true;
        if self.fault == Some((Op::Commit, Fault::LostAnswer)) {
            self.fault = None;
            return Err(Error::Timeout {
                port: "fake".into(),
                command: "COMMIT",
                attempts: 4,
            });
        }
        if self.lies_at(Op::Commit) {
            return Ok([0xa5; 32]);
        }
        Ok(self.digest().expect("committed"))
    }

    fn generate_csr(&mut self, _: crate::config::X509KeyType, _: &str) -> Result<Vec<u8>> {
        unreachable!("symmetric mode asks for no CSR")
    }

    fn read_ek(&mut self, _: crate::config::TpmEkType) -> Result<ReportedEk> {
        unreachable!("symmetric mode reads no EK")
    }

    fn reset(&mut self) -> Result<()> {
        self.in_session()?;
        self.resets += 1;
        self.session = false;
        self.staged.clear();
        self.committed_once = false;
        Ok(())
    }

    fn io_wait(&self) -> Duration {
        Duration::ZERO
    }
}
