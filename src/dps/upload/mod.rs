//! Upload to DPS: bulk enrollment through the service REST API (api-version 2021-10-01), and
//! reconciliation.
//!
//! Sends every exported, not-yet-accepted enrollment version in bulk operations of at most
//! [`MAX_BULK`], under a rate limit, retrying 429/5xx/network failures with exponential
//! backoff and jitter (honouring `Retry-After`) up to a bounded time. Each item of a response is
//! judged: an enrollment DPS already holds with the same attestation is a success, with a
//! different one a conflict (`--update` replaces it). Results are recorded after every call, so
//! an interrupted upload resumes, nothing is uploaded twice, and nothing DPS did not accept is
//! marked uploaded. The policy key is never logged; `--dry-run` redacts the signature and keys.

mod client;
#[cfg(test)]
mod tests;

use super::MAX_BULK;
use super::enrollment::{DpsOptions, write_enrollment};
use super::export::attestation;
use super::sas::redact;
use crate::attestation::symmetric::SymmetricKeySource;
use crate::domain::Event;
pub use crate::domain::event::{UploadSummary, VerifySummary};
use crate::error::{Error, ErrorCode, Result};
use crate::store::{AttestationRow, Store, UploadCandidate, UploadResult, UploadStatus};
pub use client::Dps;
use client::Reply;
use serde_json::Value;
use std::collections::HashMap;

/// Enrollment versions read from the database at a time.
const PAGE: u32 = 1000;

/// How `station upload` runs.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// Print the requests instead of sending them.
    pub dry_run: bool,
    /// Replace enrollments DPS holds with a different attestation (`mode: update`).
    pub update: bool,
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
    thumbprint: Option<String>,
}

fn prepare(
    c: &UploadCandidate,
    store: &Store,
    keys: Option<&SymmetricKeySource>,
    fragments: &mut HashMap<String, String>,
) -> Result<Prepared> {
    if !fragments.contains_key(&c.batch) {
        let b = store.batch(&c.batch)?;
        let o: DpsOptions = serde_json::from_str(&b.dps_options).map_err(|e| Error::Database {
            path: store.path().to_string(),
            message: format!("batch {} has unreadable DPS options: {e}", b.id),
        })?;
        fragments.insert(c.batch.clone(), o.fragment());
    }
    let row = AttestationRow {
        registration_id: &c.registration_id,
        attestation_type: c.attestation_type,
        primary_key: c.primary_key.as_deref(),
        secondary_key: c.secondary_key.as_deref(),
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
        thumbprint: c.cert_thumbprint.clone(),
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

/// Whether what DPS holds (`got`) has our registration ID and attestation (`sent`).
fn same_attestation(
    sent: &Value,
    got: &Value,
    thumbprint: Option<&str>,
) -> std::result::Result<(), String> {
    let id = |v: &Value| {
        v["registrationId"]
            .as_str()
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    if id(sent) != id(got) {
        return Err(format!("registration ID is `{}`", id(got)));
    }
    let (s, g) = (&sent["attestation"], &got["attestation"]);
    if s["type"] != g["type"] {
        return Err(format!("attestation type is {}", g["type"]));
    }
    match s["type"].as_str() {
        Some("symmetricKey") => {
            for k in ["primaryKey", "secondaryKey"] {
                let ours = &s["symmetricKey"][k];
                if !ours.is_null() && *ours != g["symmetricKey"][k] {
                    return Err(format!("symmetricKey.{k} differs"));
                }
            }
            Ok(())
        }
        Some("x509") => {
            let primary = &g["x509"]["clientCertificates"]["primary"];
            let norm = |v: &Value| {
                v.as_str()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect::<String>()
            };
            let ours = &s["x509"]["clientCertificates"]["primary"]["certificate"];
            let same = if !primary["certificate"].is_null() {
                norm(&primary["certificate"]) == norm(ours)
            } else {
                let theirs = primary["info"]["sha256Thumbprint"].as_str().unwrap_or("");
                thumbprint.is_some_and(|t| t.eq_ignore_ascii_case(theirs))
            };
            if same {
                Ok(())
            } else {
                Err("X.509 client certificate differs".into())
            }
        }
        _ => Ok(()),
    }
}

/// Upload every exported enrollment version DPS has not accepted yet.
pub fn upload(
    store: &mut Store,
    dps: &mut Dps,
    keys: Option<&SymmetricKeySource>,
    opts: &UploadOptions,
    emit: &mut dyn FnMut(Event),
) -> Result<UploadSummary> {
    emit(Event::UploadStarted {
        endpoint: dps.base().to_string(),
    });
    let mut summary = UploadSummary::default();
    let mut fragments = HashMap::new();
    let mut after = 0;
    loop {
        let candidates = store.upload_candidates(after, PAGE)?;
        let Some(last) = candidates.last() else { break };
        after = last.export_seq;
        let prepared = candidates
            .iter()
            .map(|c| prepare(c, store, keys, &mut fragments))
            .collect::<Result<Vec<_>>>()?;
        for chunk in prepared.chunks(MAX_BULK) {
            let items: Vec<&Prepared> = chunk.iter().collect();
            bulk(store, dps, &items, "create", opts, &mut summary, emit)?;
        }
    }
    summary.requests = dps.requests;
    emit(Event::UploadFinished(summary));
    Ok(summary)
}

/// Items DPS reported an error for, by lowercase registration ID: (errorCode, errorStatus).
type Errored = HashMap<String, (Option<i64>, Option<String>)>;

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
    summary: &mut UploadSummary,
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
    let errored = errored_items(&reply, items)?;
    let judged = judge(dps, items, &errored, mode, opts, emit)?;
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
    summary.uploaded += judged.ok;
    summary.conflicts += judged.conflicts;
    summary.failed += judged.failed;
    emit(Event::Bulk {
        request: dps.requests,
        mode,
        enrollments: items.len(),
        uploaded: judged.ok,
        conflicts: judged.conflicts,
        failed: judged.failed,
    });
    if !judged.to_update.is_empty() {
        bulk(store, dps, &judged.to_update, "update", opts, summary, emit)?;
    }
    Ok(())
}

/// The items of a bulk operation DPS reported an error for, from its reply.
fn errored_items(reply: &Reply, items: &[&Prepared]) -> Result<Errored> {
    let mut errored = Errored::new();
    match reply.status {
        200 => {
            let v: Value = serde_json::from_str(&reply.body).map_err(|e| {
                upload_error(
                    ErrorCode::UploadBadResponse,
                    format!("bulk result is not JSON: {e}"),
                )
            })?;
            if v.get("isSuccessful").and_then(Value::as_bool).is_none() {
                return Err(upload_error(
                    ErrorCode::UploadBadResponse,
                    "bulk result lacks isSuccessful",
                ));
            }
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
        }
        401 | 403 => {
            return Err(upload_error(
                ErrorCode::UploadUnauthorized,
                format!(
                    "DPS refused the signature (HTTP {}): {}",
                    reply.status, reply.body
                ),
            ));
        }
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
        }
        s => {
            return Err(upload_error(
                ErrorCode::UploadHttp,
                format!("POST /enrollments: HTTP {s}: {}", reply.body),
            ));
        }
    }
    Ok(errored)
}

/// Judge every item of a bulk operation: accepted, or (for an item DPS reported an error
/// for) already held with the same attestation, held with another one, or failed.
fn judge<'a>(
    dps: &mut Dps,
    items: &[&'a Prepared],
    errored: &Errored,
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
        let Some((code, status)) = errored
            .get(&p.registration_id.to_ascii_lowercase())
            .cloned()
        else {
            j.results.push((p, UploadStatus::Uploaded, None, None));
            j.ok += 1;
            continue;
        };
        let verdict = held_verdict(dps, p, emit)?;
        match verdict {
            UploadStatus::Uploaded => j.ok += 1,
            UploadStatus::Conflict if opts.update && mode == "create" => {
                j.to_update.push(p);
                continue;
            }
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

/// Already there? The same attestation is a success; another one a conflict.
fn held_verdict(dps: &mut Dps, p: &Prepared, emit: &mut dyn FnMut(Event)) -> Result<UploadStatus> {
    Ok(match dps.get(&p.registration_id, emit)? {
        Some(held) => {
            let sent: Value = serde_json::from_slice(&p.json).expect("we wrote valid JSON");
            match same_attestation(&sent, &held, p.thumbprint.as_deref()) {
                Ok(()) => UploadStatus::Uploaded,
                Err(_) => UploadStatus::Conflict,
            }
        }
        None => UploadStatus::Failed,
    })
}

/// Read back every uploaded enrollment and compare it with the database.
pub fn verify(
    store: &mut Store,
    dps: &mut Dps,
    keys: Option<&SymmetricKeySource>,
    emit: &mut dyn FnMut(Event),
) -> Result<VerifySummary> {
    let mut summary = VerifySummary::default();
    let mut fragments = HashMap::new();
    let mut after = 0;
    loop {
        let uploaded = store.uploaded(after, PAGE)?;
        let Some(last) = uploaded.last() else { break };
        after = last.export_seq;
        for c in &uploaded {
            let p = prepare(c, store, keys, &mut fragments)?;
            summary.checked += 1;
            let problem = match dps.get(&c.registration_id, emit)? {
                None => Some("DPS does not hold this enrollment".to_string()),
                Some(held) => {
                    let sent: Value = serde_json::from_slice(&p.json).expect("we wrote valid JSON");
                    same_attestation(&sent, &held, p.thumbprint.as_deref()).err()
                }
            };
            match &problem {
                None => summary.matched += 1,
                Some(problem) => {
                    summary.mismatched += 1;
                    emit(Event::Mismatch {
                        registration_id: c.registration_id.clone(),
                        problem: problem.clone(),
                    });
                }
            }
            store.record_verification(c.export_seq, problem.as_deref().unwrap_or("match"))?;
        }
    }
    summary.requests = dps.requests;
    emit(Event::VerifyFinished(summary));
    Ok(summary)
}
