//! Upload to DPS: bulk enrollment through the service REST API (api-version 2021-10-01), and
//! reconciliation.
//!
//! Sends every exported, not-yet-accepted enrollment version in bulk operations of at most
//! [`MAX_BULK`], under a rate limit, retrying 429/5xx/network failures with exponential
//! backoff and jitter (honouring `Retry-After`, seconds or an HTTP date) up to a bounded time.
//! Each item of a response is judged: an item the answer does not name is accepted only when
//! the whole operation succeeded; any other item is looked up through the attestation
//! mechanism (the one call that shows symmetric keys; GET and query never do) — held with the
//! same attestation is a success, with another one a conflict (`--update` replaces it), not
//! held a failure that the next run sends again. Results are recorded after every call, so an
//! interrupted upload resumes, nothing is uploaded twice, and nothing DPS did not accept is
//! marked uploaded. After an upload the enrollments are read back through query pages and each
//! one's etag is remembered: verification ([`verify`]) then reads attestation only for
//! enrollments whose etag changed. The policy key is never logged; `--dry-run` redacts the
//! signature and keys.

mod client;
mod compare;
pub(crate) mod parsers;
#[cfg(test)]
mod tests;
mod verify;

use super::MAX_BULK;
use super::enrollment::{DpsOptions, write_enrollment};
use super::export::attestation;
use super::sas::redact;
use crate::attestation::symmetric::{SymmetricKeySource, random_key};
use crate::domain::event::{Phase, Progress};
pub use crate::domain::event::{RegistrationSummary, UploadSummary, VerifySummary};
use crate::domain::{AttestationKind, Event};
use crate::error::{Error, ErrorCode, Result};
use crate::store::{AttestationRow, Store, UploadCandidate, UploadResult, UploadStatus};
pub use client::Dps;
use client::Reply;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Instant;
pub use verify::{VerifyOptions, registration, registration_state, registrations, verify};

/// Enrollment versions read from the database at a time.
const PAGE: u32 = 1000;

/// How `station upload` runs.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// Print the requests instead of sending them.
    pub dry_run: bool,
    /// Replace enrollments DPS holds with a different attestation (`mode: update`).
    pub update: bool,
    /// The export directory: each batch's signed manifest there must verify before any of its
    /// enrollments is sent (`None`: not checked).
    pub manifests: Option<std::path::PathBuf>,
}

fn upload_error(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::Upload {
        code,
        message: message.into(),
    }
}

/// An enrollment ready to send.
struct Prepared {
    seq: i64,
    registration_id: String,
    json: Vec<u8>,
}

impl Prepared {
    fn value(&self) -> Value {
        serde_json::from_slice(&self.json).expect("we wrote valid JSON")
    }
}

/// Batch DPS options as enrollment JSON fragments, read once per batch.
type Fragments = HashMap<String, String>;

/// The enrollment JSON of version `c`. `to_send`: it is about to be uploaded, so a symmetric
/// enrollment recorded without a secondary key gets one (made once, kept); otherwise (reading
/// back) it is compared as it was sent.
fn prepare(
    c: &UploadCandidate,
    store: &mut Store,
    keys: Option<&SymmetricKeySource>,
    fragments: &mut Fragments,
    to_send: bool,
) -> Result<Prepared> {
    if !fragments.contains_key(&c.batch) {
        let b = store.batch(&c.batch)?;
        let o: DpsOptions = serde_json::from_str(&b.dps_options).map_err(|e| Error::Database {
            path: store.path().to_string(),
            message: format!("batch {} has unreadable DPS options: {e}", b.id),
        })?;
        fragments.insert(c.batch.clone(), o.fragment());
    }
    // DPS is always sent both keys. An enrollment recorded (by an older station) with a
    // derived primary and no secondary gets a random secondary, made once and kept.
    let derivable = c.primary_key.is_some() || keys.is_some_and(|k| k.secondary.is_some());
    let filled = match (c.attestation_type, &c.secondary_key) {
        (AttestationKind::SymmetricKey, None) if to_send && !derivable => {
            Some(store.dps_secondary_key(c.export_seq, &random_key()?)?)
        }
        _ => None,
    };
    let row = AttestationRow {
        registration_id: &c.registration_id,
        attestation_type: c.attestation_type,
        primary_key: c.primary_key.as_deref(),
        secondary_key: c.secondary_key.as_deref().or(filled.as_deref()),
        group_key_id: c.group_key_id.as_deref(),
        certificate: c.certificate.as_deref(),
        storage_root_key: c.storage_root_key.as_deref(),
    };
    let (mut d1, mut d2) = (String::new(), String::new());
    let att = attestation(&row, keys, &mut d1, &mut d2)?;
    let mut json = Vec::with_capacity(512);
    write_enrollment(&mut json, &c.registration_id, &att, &fragments[&c.batch]);
    Ok(Prepared {
        seq: c.export_seq,
        registration_id: c.registration_id.clone(),
        json,
    })
}

fn bulk_body(items: &[&Prepared], mode: &str) -> Vec<u8> {
    let mut body = br#"{"enrollments":["#.to_vec();
    for (i, p) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&p.json);
    }
    body.extend_from_slice(format!(r#"],"mode":"{mode}"}}"#).as_bytes());
    body
}

/// Replace key material with a marker, for printing.
fn redact_keys(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if k == "primaryKey" || k == "secondaryKey" {
                    *val = Value::String("<redacted>".into());
                } else {
                    redact_keys(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_keys),
        _ => {}
    }
}

/// What DPS holds under an enrollment's registration ID, by its attestation mechanism.
enum Held {
    Same,
    Different(Vec<String>),
    Absent,
}

/// Whether DPS holds `p` as sent: its attestation (through the attestation mechanism, the only
/// call that shows symmetric keys) and every other field (through GET).
fn held(dps: &mut Dps, p: &Prepared, emit: &mut dyn FnMut(Event)) -> Result<Held> {
    let Some(mechanism) = dps.attestation_mechanism(&p.registration_id, emit)? else {
        return Ok(Held::Absent);
    };
    let sent = p.value();
    let mut d = compare::attestation(&sent["attestation"], &mechanism);
    match dps.get(&p.registration_id, emit)? {
        Some(shown) => d.extend(compare::fields(&sent, &shown)),
        None => return Ok(Held::Absent),
    }
    Ok(if d.is_empty() {
        Held::Same
    } else {
        Held::Different(d)
    })
}

/// Upload every exported enrollment version DPS has not accepted yet, then read back the
/// etags of what was accepted.
pub fn upload(
    store: &mut Store,
    dps: &mut Dps,
    keys: Option<&SymmetricKeySource>,
    opts: &UploadOptions,
    page_size: u32,
    emit: &mut dyn FnMut(Event),
) -> Result<UploadSummary> {
    emit(Event::UploadStarted {
        endpoint: dps.base().to_string(),
    });
    let mut run = Run {
        summary: UploadSummary::default(),
        accepted: HashMap::new(),
        progress: Progress::new(Phase::Upload, store.count_upload_candidates()?),
        started: Instant::now(),
    };
    let mut fragments = Fragments::new();
    let mut verified: HashMap<String, bool> = HashMap::new();
    let mut after = 0;
    loop {
        let candidates = store.upload_candidates(after, PAGE)?;
        let Some(last) = candidates.last() else { break };
        after = last.export_seq;
        let sendable: Vec<&UploadCandidate> = candidates
            .iter()
            .filter(|c| batch_verified(store, &c.batch, opts, &mut verified, &mut run, emit))
            .collect();
        let prepared = sendable
            .into_iter()
            .map(|c| prepare(c, store, keys, &mut fragments, true))
            .collect::<Result<Vec<_>>>()?;
        for chunk in prepared.chunks(MAX_BULK) {
            let items: Vec<&Prepared> = chunk.iter().collect();
            bulk(store, dps, &items, "create", opts, &mut run, emit)?;
        }
    }
    if !run.accepted.is_empty() {
        run.summary.etags_recorded =
            verify::read_back(store, dps, keys, &run.accepted, page_size, emit)?;
    }
    run.summary.requests = dps.requests;
    emit(Event::UploadFinished(run.summary));
    Ok(run.summary)
}

/// Whether `batch`'s manifest verifies (checked once per batch; a refusal is reported once).
fn batch_verified(
    store: &Store,
    batch: &str,
    opts: &UploadOptions,
    verified: &mut HashMap<String, bool>,
    run: &mut Run,
    emit: &mut dyn FnMut(Event),
) -> bool {
    let Some(dir) = &opts.manifests else {
        return true;
    };
    if let Some(ok) = verified.get(batch) {
        return *ok;
    }
    let ok = match super::manifest::require(store, batch, dir) {
        Ok(()) => true,
        Err(e) => {
            run.summary.refused_batches += 1;
            emit(Event::BatchRefused {
                batch: batch.to_string(),
                problem: (&e).into(),
            });
            false
        }
    };
    verified.insert(batch.to_string(), ok);
    ok
}

/// One upload run's bookkeeping.
struct Run {
    summary: UploadSummary,
    /// What DPS accepted in this run, by lowercase registration ID: export_seq.
    accepted: HashMap<String, i64>,
    progress: Progress,
    started: Instant,
}

/// Items DPS reported an error for, by lowercase registration ID: (errorCode, errorStatus).
type Errored = HashMap<String, (Option<i64>, Option<String>)>;

/// DPS's answer to one bulk operation.
struct Answer {
    /// `isSuccessful`: every item of the operation was accepted.
    successful: bool,
    errored: Errored,
}

/// What became of the items of one bulk operation.
struct Judged<'a> {
    /// Item, verdict, errorCode, errorStatus: what is recorded.
    results: Vec<(&'a Prepared, UploadStatus, Option<i64>, Option<String>)>,
    /// Conflicts to send again with `mode: update`.
    to_update: Vec<&'a Prepared>,
    ok: usize,
    conflicts: usize,
    failed: usize,
}

fn bulk(
    store: &mut Store,
    dps: &mut Dps,
    items: &[&Prepared],
    mode: &'static str,
    opts: &UploadOptions,
    run: &mut Run,
    emit: &mut dyn FnMut(Event),
) -> Result<()> {
    let body = bulk_body(items, mode);
    if opts.dry_run {
        let mut v: Value = serde_json::from_slice(&body).expect("we wrote valid JSON");
        redact_keys(&mut v);
        emit(Event::Request {
            method: "POST",
            url: dps.url("/enrollments"),
            authorization: redact(dps.signer.token()),
            body: v,
        });
        return Ok(());
    }
    let reply = dps.send("POST", "/enrollments", Some(&body), emit)?;
    let answer = answer(&reply, items)?;
    let judged = judge(dps, items, &answer, mode, opts, emit)?;
    let records: Vec<UploadResult<'_>> = judged
        .results
        .iter()
        .map(|(p, s, code, status)| UploadResult {
            export_seq: p.seq,
            registration_id: &p.registration_id,
            status: *s,
            mode,
            error_code: *code,
            error_status: status.as_deref(),
        })
        .collect();
    store.record_uploads(&records)?;
    for (p, s, ..) in &judged.results {
        if *s == UploadStatus::Uploaded {
            run.accepted
                .insert(p.registration_id.to_ascii_lowercase(), p.seq);
        }
    }
    run.summary.uploaded += judged.ok;
    run.summary.conflicts += judged.conflicts;
    run.summary.failed += judged.failed;
    emit(Event::Bulk {
        request: dps.requests,
        mode,
        enrollments: items.len(),
        uploaded: judged.ok,
        conflicts: judged.conflicts,
        failed: judged.failed,
    });
    if mode == "create" {
        let p = &mut run.progress;
        p.done += items.len() as u64;
        p.requests = dps.requests;
        p.ok = run.summary.uploaded as u64;
        p.conflicts = run.summary.conflicts as u64;
        p.failed = run.summary.failed as u64;
        p.estimate(run.started);
        emit(Event::Progress(*p));
    }
    if !judged.to_update.is_empty() {
        bulk(store, dps, &judged.to_update, "update", opts, run, emit)?;
    }
    Ok(())
}

/// DPS's answer to a bulk operation: whether it succeeded in full, and the items it named.
fn answer(reply: &Reply, items: &[&Prepared]) -> Result<Answer> {
    let mut errored = Errored::new();
    match reply.status {
        200 => {
            let v: Value = serde_json::from_str(&reply.body).map_err(|e| {
                upload_error(
                    ErrorCode::UploadBadResponse,
                    format!("bulk result is not JSON: {e}"),
                )
            })?;
            let Some(successful) = v.get("isSuccessful").and_then(Value::as_bool) else {
                return Err(upload_error(
                    ErrorCode::UploadBadResponse,
                    "bulk result lacks isSuccessful",
                ));
            };
            for e in v["errors"].as_array().into_iter().flatten() {
                let code = e["errorCode"].as_i64();
                // Some services list successes among the errors: judge each item.
                if code.is_some_and(|c| (200..300).contains(&c)) {
                    continue;
                }
                let id = e["registrationId"]
                    .as_str()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                errored.insert(id, (code, e["errorStatus"].as_str().map(str::to_string)));
            }
            Ok(Answer {
                successful,
                errored,
            })
        }
        401 | 403 => Err(upload_error(
            ErrorCode::UploadUnauthorized,
            format!(
                "DPS refused the signature (HTTP {}): {}",
                reply.status, reply.body
            ),
        )),
        400 => {
            // The whole operation was refused (e.g. validation): every item failed with it.
            let v: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
            let code = v["errorCode"].as_i64().or(Some(400));
            let status = v["message"]
                .as_str()
                .map(str::to_string)
                .or(Some(reply.body.clone()));
            for p in items {
                errored.insert(
                    p.registration_id.to_ascii_lowercase(),
                    (code, status.clone()),
                );
            }
            Ok(Answer {
                successful: false,
                errored,
            })
        }
        s => Err(upload_error(
            ErrorCode::UploadHttp,
            format!("POST /enrollments: HTTP {s}: {}", reply.body),
        )),
    }
}

/// Said of an item DPS neither accepted in a successful operation nor named.
const UNNAMED: &str = "DPS answered isSuccessful=false without naming this enrollment";

/// Judge every item of a bulk operation. An item is accepted outright only when the whole
/// operation succeeded and did not name it; every other item is looked up: held with the
/// same attestation (accepted, or already there), held with another one (a conflict), or not
/// held (failed; sent again by the next run).
fn judge<'a>(
    dps: &mut Dps,
    items: &[&'a Prepared],
    answer: &Answer,
    mode: &'static str,
    opts: &UploadOptions,
    emit: &mut dyn FnMut(Event),
) -> Result<Judged<'a>> {
    let mut j = Judged {
        results: Vec::with_capacity(items.len()),
        to_update: Vec::new(),
        ok: 0,
        conflicts: 0,
        failed: 0,
    };
    for &p in items {
        let named = answer.errored.get(&p.registration_id.to_ascii_lowercase());
        if named.is_none() && answer.successful {
            j.results.push((p, UploadStatus::Uploaded, None, None));
            j.ok += 1;
            continue;
        }
        let (code, mut status) = named.cloned().unwrap_or((None, Some(UNNAMED.to_string())));
        let verdict = match held(dps, p, emit)? {
            Held::Same => UploadStatus::Uploaded,
            Held::Different(_) if opts.update && mode == "create" => {
                j.to_update.push(p);
                continue;
            }
            Held::Different(d) => {
                let said = status.map(|s| format!("{s}; ")).unwrap_or_default();
                status = Some(format!("{said}DPS holds: {}", d.join("; ")));
                // An update DPS did not take is a failure, not a conflict.
                if mode == "update" {
                    UploadStatus::Failed
                } else {
                    UploadStatus::Conflict
                }
            }
            Held::Absent => UploadStatus::Failed,
        };
        match verdict {
            UploadStatus::Uploaded => j.ok += 1,
            UploadStatus::Conflict => {
                j.conflicts += 1;
                emit(Event::Conflict {
                    registration_id: p.registration_id.clone(),
                    error_code: code,
                    error_status: status.clone(),
                });
            }
            UploadStatus::Failed => {
                j.failed += 1;
                emit(Event::ItemFailed {
                    registration_id: p.registration_id.clone(),
                    error_code: code,
                    error_status: status.clone(),
                });
            }
        }
        j.results.push((p, verdict, code, status));
    }
    Ok(j)
}
