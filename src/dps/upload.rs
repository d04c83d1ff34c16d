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

use super::enrollment::{DpsOptions, write_enrollment};
use super::export::attestation;
use super::sas::{SasSigner, redact};
use super::{API_VERSION, MAX_BULK};
use crate::attestation::symmetric::SymmetricKeySource;
use crate::config::{Config, UploadSection};
use crate::domain::Event;
pub use crate::domain::event::{UploadSummary, VerifySummary};
use crate::error::{Error, ErrorCode, Result};
use crate::store::{AttestationRow, Store, UploadCandidate, UploadResult, UploadStatus};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Backoff after the first failure; doubles each time up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
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

/// Spaces calls at least `60 / rate_per_minute` seconds apart.
struct RateLimiter {
    interval: Duration,
    next: Instant,
}

impl RateLimiter {
    fn wait(&mut self) {
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        }
        self.next = self.next.max(now) + self.interval;
    }
}

/// A client of one DPS instance's service API.
pub struct Dps {
    agent: ureq::Agent,
    base: String,
    signer: SasSigner,
    rate: RateLimiter,
    give_up: Duration,
    pub requests: u32,
}

struct Reply {
    status: u16,
    body: String,
}

impl Dps {
    /// A client for `[upload]`, reading the policy key from its environment variable or file.
    pub fn new(config: &Config, section: &UploadSection, endpoint: Option<&str>) -> Result<Self> {
        let key = policy_key(config, section)?;
        let base = endpoint
            .or(section.endpoint.as_deref())
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("https://{}", section.host));
        // The token's resource is the host requests go to.
        let host = base
            .split("://")
            .nth(1)
            .unwrap_or(&base)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(section.request_timeout_s)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            agent,
            base,
            signer: SasSigner::new(
                &host,
                &section.policy_name,
                key,
                Duration::from_secs(section.token_lifetime_s),
            ),
            rate: RateLimiter {
                interval: Duration::from_secs(60) / section.rate_per_minute.max(1),
                next: Instant::now(),
            },
            give_up: Duration::from_secs(section.give_up_after_s),
            requests: 0,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}?api-version={API_VERSION}", self.base)
    }

    /// One request, retried on 429, 5xx and network failures until `give_up` has passed.
    fn send(
        &mut self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Reply> {
        let url = self.url(path);
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            self.rate.wait();
            self.requests += 1;
            let token = self.signer.token().to_string();
            let result = match (method, body) {
                ("POST", Some(b)) => self
                    .agent
                    .post(&url)
                    .header("Authorization", &token)
                    .header("Content-Type", "application/json")
                    .send(b),
                _ => self.agent.get(&url).header("Authorization", &token).call(),
            };
            let (status, retry_after, reason) = match result {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    if status != 429 && status < 500 {
                        return Ok(Reply { status, body: text });
                    }
                    (Some(status), retry_after, format!("HTTP {status}"))
                }
                Err(e) => (None, None, e.to_string()),
            };
            attempt += 1;
            let backoff = BACKOFF_BASE
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(BACKOFF_MAX);
            let jittered = backoff.mul_f64(0.5 + 0.5 * jitter());
            let wait = retry_after.map_or(jittered, |r| r.max(jittered));
            if start.elapsed() + wait > self.give_up {
                return Err(upload_error(
                    ErrorCode::UploadGaveUp,
                    format!(
                        "{method} {path} still failing after {attempt} attempts over {:?}: {reason}",
                        start.elapsed()
                    ),
                ));
            }
            emit(Event::Retry {
                status,
                reason,
                wait_ms: wait.as_millis() as u64,
                attempt,
            });
            std::thread::sleep(wait);
        }
    }

    /// GET one enrollment: `Some(json)` if DPS holds it.
    fn get(&mut self, registration_id: &str, emit: &mut dyn FnMut(Event)) -> Result<Option<Value>> {
        let r = self.send(
            "GET",
            &format!("/enrollments/{registration_id}"),
            None,
            emit,
        )?;
        match r.status {
            200 => serde_json::from_str(&r.body).map(Some).map_err(|e| {
                upload_error(
                    ErrorCode::UploadBadResponse,
                    format!("GET {registration_id}: {e}"),
                )
            }),
            404 => Ok(None),
            401 | 403 => Err(upload_error(
                ErrorCode::UploadUnauthorized,
                format!("HTTP {}: {}", r.status, r.body),
            )),
            s => Err(upload_error(
                ErrorCode::UploadHttp,
                format!("GET {registration_id}: HTTP {s}: {}", r.body),
            )),
        }
    }
}

fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    u16::from_le_bytes(b) as f64 / u16::MAX as f64
}

fn policy_key(config: &Config, section: &UploadSection) -> Result<Vec<u8>> {
    use base64::Engine;
    let (text, what) = match section.policy_key_env.as_deref().and_then(|v| {
        std::env::var(v)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map(|s| (s, v))
    }) {
        Some((s, var)) => (s, format!("DPS policy key from environment variable {var}")),
        None => {
            let path = section
                .policy_key_file
                .as_deref()
                .map(|p| config.resolve(p))
                .ok_or_else(|| Error::Secret {
                    what: "DPS policy key".into(),
                    message: format!(
                        "environment variable {} is not set and no policy_key_file is configured",
                        section.policy_key_env.as_deref().unwrap_or("(none)")
                    ),
                })?;
            let key = crate::attestation::symmetric::read_key_file(&path, "DPS policy key")?;
            (key, format!("DPS policy key file {}", path.display()))
        }
    };
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| Error::Secret {
            what,
            message: format!("not valid base64 ({e})"),
        })
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
    // Items DPS reported an error for, by registration ID: (errorCode, errorStatus).
    let mut errored: HashMap<String, (Option<i64>, Option<String>)> = HashMap::new();
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
    let mut results = Vec::with_capacity(items.len());
    let mut to_update: Vec<&Prepared> = Vec::new();
    let (mut ok, mut conflicts, mut failed) = (0, 0, 0);
    for p in items {
        let Some((code, status)) = errored
            .get(&p.registration_id.to_ascii_lowercase())
            .cloned()
        else {
            results.push((p, UploadStatus::Uploaded, None, None));
            ok += 1;
            continue;
        };
        // Already there? The same attestation is a success; another one a conflict.
        let verdict = match dps.get(&p.registration_id, emit)? {
            Some(held) => {
                let sent: Value = serde_json::from_slice(&p.json).expect("we wrote valid JSON");
                match same_attestation(&sent, &held, p.thumbprint.as_deref()) {
                    Ok(()) => UploadStatus::Uploaded,
                    Err(_) => UploadStatus::Conflict,
                }
            }
            None => UploadStatus::Failed,
        };
        match verdict {
            UploadStatus::Uploaded => ok += 1,
            UploadStatus::Conflict if opts.update && mode == "create" => {
                to_update.push(p);
                continue;
            }
            UploadStatus::Conflict => {
                conflicts += 1;
                emit(Event::Conflict {
                    registration_id: p.registration_id.clone(),
                    error_code: code,
                    error_status: status.clone(),
                });
            }
            UploadStatus::Failed => {
                failed += 1;
                emit(Event::ItemFailed {
                    registration_id: p.registration_id.clone(),
                    error_code: code,
                    error_status: status.clone(),
                });
            }
        }
        results.push((p, verdict, code, status));
    }
    let records: Vec<UploadResult<'_>> = results
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
    summary.uploaded += ok;
    summary.conflicts += conflicts;
    summary.failed += failed;
    emit(Event::Bulk {
        request: dps.requests,
        mode,
        enrollments: items.len(),
        uploaded: ok,
        conflicts,
        failed,
    });
    if !to_update.is_empty() {
        bulk(store, dps, &to_update, "update", opts, summary, emit)?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attestation_comparison_per_kind() {
        let sent = json!({"registrationId": "a", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "k1"}}});
        let same = json!({"registrationId": "A", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "k1", "secondaryKey": "dps-made"}}});
        assert!(
            same_attestation(&sent, &same, None).is_ok(),
            "a secondary key DPS generated is not ours to compare"
        );
        let other = json!({"registrationId": "a", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "k2"}}});
        assert!(
            same_attestation(&sent, &other, None)
                .unwrap_err()
                .contains("primaryKey")
        );
        let tpm = json!({"registrationId": "a", "attestation": {"type": "tpm"}});
        assert!(same_attestation(&sent, &tpm, None).is_err());
        let x = json!({"registrationId": "a", "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "PEM"}}}}});
        let info = json!({"registrationId": "a", "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"info": {"sha256Thumbprint": "ABCD"}}}}}});
        assert!(same_attestation(&x, &info, Some("abcd")).is_ok());
        assert!(same_attestation(&x, &info, Some("abce")).is_err());
    }

    #[test]
    fn dry_run_redaction_removes_every_key() {
        let mut v = json!({"enrollments": [{"attestation": {"symmetricKey": {"primaryKey": "s1", "secondaryKey": "s2"}}}]});
        redact_keys(&mut v);
        assert!(!v.to_string().contains("s1") && !v.to_string().contains("\"s2\""));
    }

    #[test]
    fn bulk_body_is_a_valid_operation() {
        let p = Prepared {
            seq: 1,
            registration_id: "a".into(),
            json: br#"{"registrationId":"a"}"#.to_vec(),
            thumbprint: None,
        };
        let v: Value = serde_json::from_slice(&bulk_body(&[&p, &p], "create")).unwrap();
        assert_eq!(v["mode"], "create");
        assert_eq!(v["enrollments"].as_array().unwrap().len(), 2);
    }
}
