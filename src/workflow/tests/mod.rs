//! The workflow against an in-process fake [`Device`]: every step failing in every way it can,
//! the database state after each, and no PASS without a matched read-back.

mod fake;

use super::*;
use crate::config;
use crate::device::Capability;
use crate::domain::RecordId;
use fake::{FAULTS, Fake, Fault, OPS, Op};

const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/group-key.txt");
pub(super) const SERIAL: &str = "SN-0001";
const ID: &str = "sn-0001";

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
fn an_unfinished_rekey_needs_the_permission_again() {
    let mut s = station();
    let mut d = Fake::new();
    run(&mut s, &mut d).0.unwrap();
    let old = d.digest();
    let mut cfg = s.config.clone();
    cfg.dps.id_scope = "0ne00000002".into();
    s.workflow = Workflow::new(&cfg).unwrap();
    let rekey = DeviceInput {
        operator: "op".into(),
        permissions: Permissions {
            rekey: true,
            ..Default::default()
        },
        ..Default::default()
    };
    // The approved re-key fails at the commit: the device keeps its previous credential.
    d.fault = Some((Op::Commit, Fault::Nak));
    let r = s.workflow.provision(&mut d, &rekey, &mut |_| {});
    assert_eq!(r.unwrap_err().code(), "device.nak");
    assert_eq!(d.digest(), old);
    d.fault = None;
    let stages = d.stages;
    let (r, events) = run(&mut s, &mut d);
    assert_eq!(r.unwrap_err().code(), "device.rekey_not_permitted");
    assert!(!passed(&events));
    assert_eq!((d.stages, d.digest()), (stages, old), "nothing written");
    s.workflow.provision(&mut d, &rekey, &mut |_| {}).unwrap();
    let e = s.workflow.store().find(ID).unwrap().unwrap();
    assert_eq!(e.status, Status::Provisioned);
    assert_eq!(e.device_digest, d.digest().map(|x| hex(&x)));
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
