//! The workflow against an in-process fake [`Device`]: every step failing in every way it can,
//! the database state after each, and no PASS without a matched read-back.

use super::*;
use crate::config;
use crate::device::{Capability, ReportedEk};
use crate::domain::record::records_digest;
use crate::domain::{Digest, RecordId};
use std::collections::BTreeMap;

const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/group-key.txt");
const SERIAL: &str = "SN-0001";
const ID: &str = "sn-0001";

/// The steps a device can fail at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Identify,
    HeldId,
    HeldDigest,
    Stage,
    Commit,
    ReadBack,
}

/// How it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Timeout,
    Disconnected,
    Nak,
    Protocol,
    /// COMMIT takes effect on the device, but its answer is lost.
    LostAnswer,
    /// The device answers with a digest of something else.
    Lie,
}

const OPS: [Op; 6] = [
    Op::Identify,
    Op::HeldId,
    Op::HeldDigest,
    Op::Stage,
    Op::Commit,
    Op::ReadBack,
];
const FAULTS: [Fault; 4] = [
    Fault::Timeout,
    Fault::Disconnected,
    Fault::Nak,
    Fault::Protocol,
];

/// A device in memory: a committed identity, staged records, one scripted fault.
struct Fake {
    serial: String,
    capabilities: u32,
    committed: BTreeMap<RecordId, Vec<u8>>,
    staged: BTreeMap<RecordId, Vec<u8>>,
    fault: Option<(Op, Fault)>,
    stages: u32,
    commits: u32,
    resets: u32,
    /// After the commit, `held_digest` is the read-back.
    committed_once: bool,
    /// A session is open (identify) and not yet ended (reset).
    session: bool,
    /// The REPLACE flag of the last commit.
    last_replace: Option<bool>,
    /// Ask for a stop while staging record number `.0` (1-based), or inside the commit.
    stop_at_stage: Option<(u32, Interrupt)>,
    stop_in_commit: Option<Interrupt>,
}

impl Fake {
    fn new() -> Self {
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
    fn holding(registration_id: &str) -> Self {
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

    fn failing(op: Op, fault: Fault) -> Self {
        let mut f = Self::new();
        f.fault = Some((op, fault));
        f
    }

    fn digest(&self) -> Option<Digest> {
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

struct Station {
    _dir: tempfile::TempDir,
    config: config::Config,
    workflow: Workflow,
}

fn station_with(extra_dps: &str) -> Station {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[station]\nid = \"unit\"\nline = \"l1\"\ndatabase = \"{}\"\nexport_dir = \"exports\"\n\
         [dps]\nid_scope = \"0ne00000001\"\n{extra_dps}\
         [attestation]\nmode = \"symmetric\"\n[attestation.symmetric]\ngroup_key_file = \"{KEY}\"\n",
        dir.path().join("station.db").display()
    );
    let config = config::load_str(&text, &dir.path().join("station.toml")).unwrap();
    let workflow = Workflow::new(&config).unwrap();
    Station {
        _dir: dir,
        config,
        workflow,
    }
}

fn station() -> Station {
    station_with("")
}

fn run(s: &mut Station, device: &mut Fake) -> (Result<Outcome>, Vec<Event>) {
    let mut events = Vec::new();
    let input = DeviceInput {
        operator: "op".into(),
        ..Default::default()
    };
    let r = s
        .workflow
        .provision(device, &input, &mut |e| events.push(e));
    (r, events)
}

fn passed(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::Passed { .. }))
}

#[test]
fn a_device_that_stores_what_was_sent_passes_and_is_recorded_with_its_digest() {
    let mut s = station();
    let mut d = Fake::new();
    let (r, events) = run(&mut s, &mut d);
    r.unwrap();
    assert!(passed(&events));
    let e = s.workflow.store().find(ID).unwrap().unwrap();
    assert_eq!(e.status, Status::Provisioned);
    assert_eq!(e.device_digest, d.digest().map(|x| hex(&x)));
    assert_eq!(e.device_digest, e.expected_digest);
    assert_eq!((d.commits, d.resets), (1, 1));
}

#[test]
fn every_step_failing_every_way_records_a_failure_and_never_a_pass() {
    for op in OPS {
        for fault in FAULTS {
            let mut s = station();
            let mut d = Fake::failing(op, fault);
            if matches!(op, Op::HeldId | Op::HeldDigest) {
                // These are asked only of a device that holds an identity: give it one.
                let mut first = Fake::new();
                run(&mut s, &mut first).0.unwrap();
                d.committed = first.committed.clone();
            }
            let before = s.workflow.store().find(ID).unwrap();
            let failed_before = s.workflow.store().shift_stats("").unwrap().failed;
            let (r, events) = run(&mut s, &mut d);
            let e = r.expect_err(&format!("{op:?}/{fault:?} must fail"));
            assert!(!passed(&events), "{op:?}/{fault:?}: no PASS");
            assert!(
                matches!(events.last(), Some(Event::Failed { problem, .. }) if problem.code == e.code()),
                "{op:?}/{fault:?}: the last event is the failure"
            );
            let row = s.workflow.store().find(ID).unwrap();
            match (&before, &row) {
                // A provisioned device that failed a later step is never downgraded.
                (Some(b), Some(now)) => {
                    assert_eq!(now.status, Status::Provisioned, "{op:?}/{fault:?}");
                    assert_eq!(now.device_digest, b.device_digest, "{op:?}/{fault:?}");
                }
                (None, Some(now)) => {
                    assert!(
                        matches!(op, Op::Stage | Op::Commit | Op::ReadBack),
                        "{op:?}/{fault:?}: recorded only once the credential is made"
                    );
                    assert_eq!(now.status, Status::Failed, "{op:?}/{fault:?}");
                    assert_eq!(now.error_code.as_deref(), Some(e.code().as_str()));
                    assert!(now.device_digest.is_none(), "{op:?}/{fault:?}");
                }
                (None, None) => assert!(
                    matches!(op, Op::Identify),
                    "{op:?}/{fault:?}: a device identified is recorded"
                ),
                (Some(_), None) => panic!("{op:?}/{fault:?}: an enrollment vanished"),
            }
            let stats = s.workflow.store().shift_stats("").unwrap();
            assert_eq!(
                stats.failed,
                failed_before + 1,
                "{op:?}/{fault:?}: one attempt"
            );
            if op != Op::Identify {
                let attempts = s.workflow.store().attempts(SERIAL, 10).unwrap();
                assert_eq!(
                    attempts[0].error_code.as_deref(),
                    Some(e.code().as_str()),
                    "{op:?}/{fault:?}: the attempt is recorded with its code"
                );
            }
            if op == Op::Commit || op == Op::Stage {
                assert!(
                    d.committed.is_empty(),
                    "{op:?}/{fault:?}: nothing committed"
                );
            }
        }
    }
}

#[test]
fn a_commit_answered_with_another_digest_is_not_a_pass() {
    let mut s = station();
    let mut d = Fake::failing(Op::Commit, Fault::Lie);
    let (r, events) = run(&mut s, &mut d);
    assert_eq!(r.unwrap_err().code(), "device.verify_mismatch");
    assert!(!passed(&events));
    assert_eq!(
        s.workflow.store().find(ID).unwrap().unwrap().status,
        Status::Failed
    );
}

#[test]
fn a_read_back_that_differs_from_the_commit_is_not_a_pass() {
    let mut s = station();
    let mut d = Fake::failing(Op::ReadBack, Fault::Lie);
    let (r, events) = run(&mut s, &mut d);
    assert_eq!(r.unwrap_err().code(), "device.verify_mismatch");
    assert!(!passed(&events));
    let e = s.workflow.store().find(ID).unwrap().unwrap();
    assert_eq!((e.status, e.device_digest), (Status::Failed, None));
}

#[test]
fn a_lost_commit_answer_is_finished_from_what_the_device_holds_without_writing_again() {
    let mut s = station();
    let mut d = Fake::failing(Op::Commit, Fault::LostAnswer);
    let (r, _) = run(&mut s, &mut d);
    assert_eq!(r.unwrap_err().code(), "device.timeout");
    let e = s.workflow.store().find(ID).unwrap().unwrap();
    assert_eq!(e.status, Status::Failed);
    assert_eq!(e.expected_digest, d.digest().map(|x| hex(&x)));
    let stages = d.stages;
    let (r, events) = run(&mut s, &mut d);
    r.unwrap();
    assert!(passed(&events));
    assert_eq!(d.stages, stages, "nothing written again");
    assert_eq!(d.commits, 1);
    assert_eq!(
        s.workflow.store().find(ID).unwrap().unwrap().status,
        Status::Provisioned
    );
}

#[test]
fn a_re_run_of_a_device_holding_its_recorded_identity_writes_nothing() {
    let mut s = station();
    let mut d = Fake::new();
    run(&mut s, &mut d).0.unwrap();
    let stages = d.stages;
    let (r, events) = run(&mut s, &mut d);
    r.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::AlreadyProvisioned { .. }))
    );
    assert_eq!((d.stages, d.commits), (stages, 1), "nothing rewritten");
}

#[test]
fn a_changed_id_scope_is_a_rekey_refused_without_touching_device_or_database() {
    let mut s = station();
    let mut d = Fake::new();
    run(&mut s, &mut d).0.unwrap();
    let recorded = s.workflow.store().find(ID).unwrap().unwrap().device_digest;
    // The same database, another ID scope: the device (holding the old one) would go to
    // another DPS instance than its enrollment.
    let mut cfg = s.config.clone();
    cfg.dps.id_scope = "0ne00000002".into();
    s.workflow = Workflow::new(&cfg).unwrap();
    let stages = d.stages;
    for wiped in [false, true] {
        if wiped {
            d.committed.clear();
        }
        let (r, events) = run(&mut s, &mut d);
        assert_eq!(
            r.unwrap_err().code(),
            "device.rekey_not_permitted",
            "wiped {wiped}"
        );
        assert!(!passed(&events));
        assert_eq!(d.stages, stages, "nothing written");
        let e = s.workflow.store().find(ID).unwrap().unwrap();
        assert_eq!(
            (e.status, e.device_digest.clone()),
            (Status::Provisioned, recorded.clone())
        );
    }
    // An approved re-key writes the new scope and keeps the old version.
    let input = DeviceInput {
        operator: "op".into(),
        permissions: Permissions {
            rekey: true,
            ..Default::default()
        },
        ..Default::default()
    };
    s.workflow.provision(&mut d, &input, &mut |_| {}).unwrap();
    assert_eq!(
        d.committed.get(&RecordId::IdScope).map(Vec::as_slice),
        Some(&b"0ne00000002"[..])
    );
    let e = s.workflow.store().find(ID).unwrap().unwrap();
    assert_eq!(e.device_digest, d.digest().map(|x| hex(&x)));
    assert_ne!(e.device_digest, recorded);
}

#[test]
fn an_identity_from_elsewhere_is_replaced_only_with_permission() {
    let mut s = station();
    let mut d = Fake::holding("foreign-7");
    let (r, _) = run(&mut s, &mut d);
    assert_eq!(r.unwrap_err().code(), "device.identity_conflict");
    assert_eq!((d.stages, d.commits), (0, 0));
    assert!(s.workflow.store().find(ID).unwrap().is_none());
    let input = DeviceInput {
        operator: "op".into(),
        permissions: Permissions {
            overwrite_identity: true,
            ..Default::default()
        },
        ..Default::default()
    };
    s.workflow.provision(&mut d, &input, &mut |_| {}).unwrap();
    assert_eq!(d.last_replace, Some(true), "COMMIT carries REPLACE");
    assert_eq!(
        d.committed
            .get(&RecordId::RegistrationId)
            .map(Vec::as_slice),
        Some(ID.as_bytes())
    );
}

#[test]
fn a_stop_while_writing_abandons_the_device_before_its_commit() {
    let mut s = station();
    let stop = Interrupt::default();
    s.workflow.set_interrupt(stop.clone());
    let mut d = Fake::new();
    d.stop_at_stage = Some((2, stop));
    let (r, events) = run(&mut s, &mut d);
    assert_eq!(r.unwrap_err().code(), "station.interrupted");
    assert!(!passed(&events));
    assert_eq!((d.stages, d.commits), (2, 0));
    assert!(d.committed.is_empty());
    let e = s.workflow.store().find(ID).unwrap().unwrap();
    assert_eq!((e.status, e.device_digest), (Status::Failed, None));
}

#[test]
fn a_stop_after_the_commit_finishes_the_device() {
    let mut s = station();
    let stop = Interrupt::default();
    s.workflow.set_interrupt(stop.clone());
    let mut d = Fake::new();
    d.stop_in_commit = Some(stop);
    let (r, events) = run(&mut s, &mut d);
    r.unwrap();
    assert!(passed(&events));
    assert_eq!(
        s.workflow.store().find(ID).unwrap().unwrap().status,
        Status::Provisioned
    );
}

#[test]
fn a_device_without_the_capability_is_refused_before_anything_is_written() {
    let mut s = station();
    let mut d = Fake::new();
    d.capabilities = Capability::Csr.bit();
    let (r, _) = run(&mut s, &mut d);
    assert_eq!(r.unwrap_err().code(), "device.capability_missing");
    assert_eq!((d.stages, d.commits), (0, 0));
    assert!(s.workflow.store().find(ID).unwrap().is_none());
}
