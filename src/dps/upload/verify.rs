//! Reconciliation with DPS at factory scale: read what DPS holds through query pages (one call
//! per page, never a key), compare every field the station sent, and read an enrollment's
//! attestation (the only way to see its symmetric keys) only when its etag changed since DPS
//! was last seen holding exactly what was sent, or on `--deep`. Then, on request, whether each
//! device came up: its registration state.

use super::client::Dps;
use super::{Fragments, PAGE, Prepared, compare, prepare};
use crate::attestation::symmetric::SymmetricKeySource;
use crate::domain::Event;
use crate::domain::event::{
    Phase, Progress, RegistrationState, RegistrationSummary, VerifySummary,
};
use crate::error::Result;
use crate::store::{Store, UploadCandidate, Verification};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// How a verification runs.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions {
    /// Read every enrollment's attestation, whatever its etag.
    pub deep: bool,
    /// Enrollments per query page (`x-ms-max-item-count`).
    pub page_size: u32,
}

/// Said of an enrollment DPS does not hold.
const NOT_HELD: &str = "DPS does not hold this enrollment";

/// What DPS shows of one enrollment against what was sent: every difference, and the etag to
/// remember when there is none.
struct Seen {
    differences: Vec<String>,
    etag: Option<String>,
}

/// Compare one enrollment as a query page shows it; read its attestation mechanism when the
/// page cannot show what matters (symmetric keys) and the etag does not vouch for it.
fn compare_shown(
    dps: &mut Dps,
    p: &Prepared,
    c: &UploadCandidate,
    shown: &Value,
    deep: bool,
    reads: &mut u32,
    emit: &mut dyn FnMut(Event),
) -> Result<Seen> {
    let sent = p.value();
    let mut differences = compare::fields(&sent, shown);
    differences.extend(compare::attestation(
        &sent["attestation"],
        &shown["attestation"],
    ));
    let etag = shown["etag"].as_str().map(str::to_string);
    let vouched = !deep && etag.is_some() && etag == c.etag;
    if sent["attestation"]["type"] == "symmetricKey"
        && !compare::shows_keys(&shown["attestation"])
        && !vouched
    {
        *reads += 1;
        match dps.attestation_mechanism(&p.registration_id, emit)? {
            Some(m) => differences.extend(compare::attestation(&sent["attestation"], &m)),
            None => differences.push(NOT_HELD.into()),
        }
    }
    let etag = etag.filter(|_| differences.is_empty());
    Ok(Seen { differences, etag })
}

/// After an upload: read the query pages and remember the etag of every enrollment accepted in
/// this run (`accepted`: lowercase registration ID → export_seq) that DPS shows as sent.
/// Returns how many etags were recorded.
pub(super) fn read_back(
    store: &mut Store,
    dps: &mut Dps,
    keys: Option<&SymmetricKeySource>,
    accepted: &HashMap<String, i64>,
    page_size: u32,
    emit: &mut dyn FnMut(Event),
) -> Result<usize> {
    let mut fragments = Fragments::new();
    let mut progress = Progress::new(Phase::ReadBack, accepted.len() as u64);
    let started = Instant::now();
    let mut continuation: Option<String> = None;
    let mut seen: HashSet<i64> = HashSet::new();
    let mut recorded = 0;
    loop {
        let (page, next) = dps.query_page(continuation.as_deref(), page_size, emit)?;
        let mut etags = Vec::new();
        for shown in &page {
            let id = shown["registrationId"]
                .as_str()
                .unwrap_or("")
                .to_ascii_lowercase();
            if !accepted.contains_key(&id) {
                continue;
            }
            let Some(c) = store.uploaded_version(&id)? else {
                continue;
            };
            if !seen.insert(c.export_seq) {
                continue; // shown twice (the set changed between pages)
            }
            progress.done += 1;
            let p = prepare(&c, store, keys, &mut fragments, false)?;
            let sent = p.value();
            let same = compare::fields(&sent, shown).is_empty()
                && compare::attestation(&sent["attestation"], &shown["attestation"]).is_empty();
            if let (true, Some(etag)) = (same, shown["etag"].as_str()) {
                etags.push((c.export_seq, etag.to_string()));
            }
        }
        let refs: Vec<(i64, &str)> = etags.iter().map(|(s, e)| (*s, e.as_str())).collect();
        store.record_etags(&refs)?;
        recorded += etags.len();
        progress.ok = recorded as u64;
        progress.requests = dps.requests;
        progress.estimate(started);
        emit(Event::Progress(progress));
        match next {
            Some(n) if progress.done < progress.total => continuation = Some(n),
            _ => break,
        }
    }
    Ok(recorded)
}

/// Read back every uploaded enrollment and compare it, field by field, with what was sent.
pub fn verify(
    store: &mut Store,
    dps: &mut Dps,
    keys: Option<&SymmetricKeySource>,
    opts: VerifyOptions,
    emit: &mut dyn FnMut(Event),
) -> Result<VerifySummary> {
    let mut summary = VerifySummary::default();
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = format!(
        "{}/{}/{}",
        crate::store::now(),
        std::process::id(),
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut fragments = Fragments::new();
    let mut progress = Progress::new(Phase::Verify, store.count_uploaded()?);
    let started = Instant::now();
    let mut seen: HashSet<i64> = HashSet::new();
    let mut continuation: Option<String> = None;
    loop {
        let (page, next) = dps.query_page(continuation.as_deref(), opts.page_size, emit)?;
        summary.pages += 1;
        let mut results = Vec::new();
        for shown in &page {
            let id = shown["registrationId"].as_str().unwrap_or("");
            let Some(c) = store.uploaded_version(id)? else {
                summary.others += 1;
                continue;
            };
            if !seen.insert(c.export_seq) {
                continue; // shown twice (the set changed between pages)
            }
            let p = prepare(&c, store, keys, &mut fragments, false)?;
            let s = compare_shown(
                dps,
                &p,
                &c,
                shown,
                opts.deep,
                &mut summary.attestation_reads,
                emit,
            )?;
            results.push((c.export_seq, c.registration_id, s));
        }
        record(store, &run, results, &mut summary, emit)?;
        progress.done = summary.checked as u64;
        progress.ok = summary.matched as u64;
        progress.failed = summary.mismatched as u64;
        progress.requests = dps.requests;
        progress.estimate(started);
        emit(Event::Progress(progress));
        match next {
            Some(n) => continuation = Some(n),
            None => break,
        }
    }
    // What DPS did not show at all.
    let mut after = 0;
    loop {
        let unseen = store.unseen_uploaded(&run, after, PAGE)?;
        let Some(last) = unseen.last() else { break };
        after = last.export_seq;
        let results = unseen
            .into_iter()
            .map(|c| {
                let s = Seen {
                    differences: vec![NOT_HELD.to_string()],
                    etag: None,
                };
                (c.export_seq, c.registration_id, s)
            })
            .collect();
        summary.missing += record(store, &run, results, &mut summary, emit)?;
    }
    summary.requests = dps.requests;
    emit(Event::VerifyFinished(summary));
    Ok(summary)
}

/// Record one page of verification results and report the mismatches; returns their number.
fn record(
    store: &mut Store,
    run: &str,
    results: Vec<(i64, String, Seen)>,
    summary: &mut VerifySummary,
    emit: &mut dyn FnMut(Event),
) -> Result<usize> {
    let texts: Vec<String> = results
        .iter()
        .map(|(_, _, s)| {
            if s.differences.is_empty() {
                "match".to_string()
            } else {
                s.differences.join("; ")
            }
        })
        .collect();
    let rows: Vec<Verification<'_>> = results
        .iter()
        .zip(&texts)
        .map(|((seq, _, s), t)| Verification {
            export_seq: *seq,
            result: t,
            etag: s.etag.as_deref(),
        })
        .collect();
    store.record_verifications(run, &rows)?;
    let mut mismatched = 0;
    for ((_, id, s), text) in results.into_iter().zip(texts) {
        summary.checked += 1;
        if s.differences.is_empty() {
            summary.matched += 1;
        } else {
            mismatched += 1;
            summary.mismatched += 1;
            emit(Event::Mismatch {
                registration_id: id,
                problem: text,
                differences: s.differences,
            });
        }
    }
    Ok(mismatched)
}

/// A device's registration state from DPS's answer (`None`: it has not registered).
pub fn registration_state(v: Option<&Value>) -> RegistrationState {
    let Some(v) = v else {
        return RegistrationState {
            status: "not_registered".into(),
            ..RegistrationState::default()
        };
    };
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let error = match (v["errorCode"].as_i64(), s("errorMessage")) {
        (None, None) => None,
        (code, msg) => Some(format!(
            "{}: {}",
            code.map_or("-".into(), |c| c.to_string()),
            msg.unwrap_or_default()
        )),
    };
    RegistrationState {
        // An empty status says no more than a missing one.
        status: s("status")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into()),
        assigned_hub: s("assignedHub"),
        device_id: s("deviceId"),
        error,
        last_updated: s("lastUpdatedDateTimeUtc"),
    }
}

/// Did the devices come up: read each uploaded enrollment's registration state, record it,
/// and summarise (assigned to which hubs, failed with which error, never seen).
pub fn registrations(
    store: &mut Store,
    dps: &mut Dps,
    emit: &mut dyn FnMut(Event),
) -> Result<RegistrationSummary> {
    let mut summary = RegistrationSummary::default();
    let mut progress = Progress::new(Phase::Registrations, store.count_uploaded()?);
    let started = Instant::now();
    let mut after = 0;
    loop {
        let page = store.uploaded(after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.export_seq;
        for c in page {
            let state = registration_state(dps.registration(&c.registration_id, emit)?.as_ref());
            store.record_registration(c.export_seq, &state)?;
            summary.checked += 1;
            match state.status.as_str() {
                "assigned" => {
                    let hub = state.assigned_hub.clone().unwrap_or_default();
                    *summary.assigned.entry(hub).or_default() += 1;
                }
                "assigning" => summary.assigning += 1,
                "unassigned" => summary.unassigned += 1,
                "not_registered" => summary.never_seen += 1,
                "disabled" => summary.disabled += 1,
                _ => summary.failed += 1,
            }
            if !matches!(state.status.as_str(), "assigned" | "not_registered") {
                emit(Event::Registration {
                    registration_id: c.registration_id,
                    state,
                });
            }
            progress.done += 1;
            progress.ok = summary.registered() as u64;
            progress.failed = summary.failed as u64;
            progress.requests = dps.requests;
            progress.estimate(started);
            emit(Event::Progress(progress));
        }
    }
    summary.requests = dps.requests;
    emit(Event::RegistrationsFinished(summary.clone()));
    Ok(summary)
}

/// One device's registration state, read now and recorded; `None` if the station has not
/// uploaded its enrollment.
pub fn registration(
    store: &mut Store,
    dps: &mut Dps,
    registration_id: &str,
    emit: &mut dyn FnMut(Event),
) -> Result<Option<RegistrationState>> {
    let Some(c) = store.uploaded_version(registration_id)? else {
        return Ok(None);
    };
    let state = registration_state(dps.registration(&c.registration_id, emit)?.as_ref());
    store.record_registration(c.export_seq, &state)?;
    Ok(Some(state))
}
