//! The client of one DPS instance's service API: signed requests under a rate limit, retried
//! with exponential backoff and jitter (honouring `Retry-After`) up to a bounded time.

use super::upload_error;
use crate::config::{Config, UploadSection};
use crate::domain::Event;
use crate::dps::API_VERSION;
use crate::dps::sas::SasSigner;
use crate::dps::sas::url_encode;
use crate::error::{Error, ErrorCode, Result};
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Backoff after the first failure; doubles each time up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

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
    pub(super) signer: SasSigner,
    rate: RateLimiter,
    give_up: Duration,
    pub requests: u32,
}

pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: String,
    /// `x-ms-continuation` of a query answer.
    pub(super) continuation: Option<String>,
}

impl Dps {
    /// A client for `[upload]`, reading the policy key from its environment variable or file.
    pub fn new(config: &Config, section: &UploadSection, endpoint: Option<&str>) -> Result<Self> {
        let key = policy_key(config, section)?;
        let base = endpoint
            .or(section.endpoint.as_deref())
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("https://{}", section.host));
        // The token's resource is the DPS host it is for, wherever requests go (a proxy, a
        // test server): DPS checks `sr` against its own name.
        let host = section.host.clone();
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

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}?api-version={API_VERSION}", self.base)
    }

    /// One request, retried on 429, 5xx and network failures until `give_up` has passed.
    pub(super) fn send(
        &mut self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Reply> {
        self.send_with(method, path, body, &[], emit)
    }

    /// [`Dps::send`] with extra request headers.
    // long: one retry loop (request, classify, back off) reads best in one place
    pub(super) fn send_with(
        &mut self,
        method: &'static str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
        emit: &mut dyn FnMut(Event),
    ) -> Result<Reply> {
        let url = self.url(path);
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            self.rate.wait();
            self.requests += 1;
            let token = self.signer.token().to_string();
            let result = if method == "POST" {
                let mut req = self
                    .agent
                    .post(&url)
                    .header("Authorization", &token)
                    .header("Content-Type", "application/json");
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                req.send(body.unwrap_or(b""))
            } else {
                let mut req = self.agent.get(&url).header("Authorization", &token);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                req.call()
            };
            let (status, retry_after, reason) = match result {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let header = |name: &str| {
                        resp.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let retry_after = header("retry-after").and_then(|v| retry_after(&v));
                    let continuation = header("x-ms-continuation").filter(|c| !c.is_empty());
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    if status != 429 && status < 500 {
                        return Ok(Reply {
                            status,
                            body: text,
                            continuation,
                        });
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
            // Saturating: a Retry-After of u64::MAX seconds is a wait too long, not a panic.
            if start.elapsed().saturating_add(wait) > self.give_up {
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

    /// GET one enrollment as DPS shows it (never with symmetric keys): `None` if not held.
    pub(super) fn get(
        &mut self,
        registration_id: &str,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Option<Value>> {
        let path = format!("/enrollments/{}", url_encode(registration_id));
        let r = self.send("GET", &path, None, emit)?;
        json_or_absent(&format!("GET {path}"), r)
    }

    /// An enrollment's attestation with its keys (`IndividualEnrollment_GetAttestationMechanism`,
    /// the only call that returns symmetric keys): `None` if DPS does not hold the enrollment.
    pub(super) fn attestation_mechanism(
        &mut self,
        registration_id: &str,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Option<Value>> {
        let path = format!(
            "/enrollments/{}/attestationmechanism",
            url_encode(registration_id)
        );
        // The operation takes no body (as the service SDKs call it).
        let r = self.send("POST", &path, None, emit)?;
        json_or_absent(&format!("POST {path}"), r)
    }

    /// One page of `POST /enrollments/query` (`{"query": "*"}`): the enrollments (without
    /// keys) and the continuation token of the next page, `None` on the last.
    pub(super) fn query_page(
        &mut self,
        continuation: Option<&str>,
        page_size: u32,
        emit: &mut dyn FnMut(Event),
    ) -> Result<(Vec<Value>, Option<String>)> {
        let size = page_size.to_string();
        let mut headers = vec![("x-ms-max-item-count", size.as_str())];
        if let Some(c) = continuation {
            headers.push(("x-ms-continuation", c));
        }
        let r = self.send_with(
            "POST",
            "/enrollments/query",
            Some(br#"{"query":"*"}"#),
            &headers,
            emit,
        )?;
        query_answer(r, continuation)
    }

    /// A device's registration state (`GET /registrations/{id}`): `None` until it registers.
    pub(super) fn registration(
        &mut self,
        registration_id: &str,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Option<Value>> {
        let path = format!("/registrations/{}", url_encode(registration_id));
        let r = self.send("GET", &path, None, emit)?;
        json_or_absent(&format!("GET {path}"), r)
    }
}

/// A JSON answer that may be "not there" (404); refusals and other statuses are errors.
pub(super) fn json_or_absent(what: &str, r: Reply) -> Result<Option<Value>> {
    match r.status {
        200 => serde_json::from_str(&r.body)
            .map(Some)
            .map_err(|e| upload_error(ErrorCode::UploadBadResponse, format!("{what}: {e}"))),
        404 => Ok(None),
        401 | 403 => Err(upload_error(
            ErrorCode::UploadUnauthorized,
            format!(
                "{what}: DPS refused the signature (HTTP {}): {}",
                r.status, r.body
            ),
        )),
        s => Err(upload_error(
            ErrorCode::UploadHttp,
            format!("{what}: HTTP {s}: {}", r.body),
        )),
    }
}

/// One query page's enrollments and the next page's continuation token, from DPS's answer to
/// the page asked for with `continuation`.
pub(super) fn query_answer(
    r: Reply,
    continuation: Option<&str>,
) -> Result<(Vec<Value>, Option<String>)> {
    let next = r.continuation.clone();
    if next.is_some() && next.as_deref() == continuation {
        return Err(upload_error(
            ErrorCode::UploadBadResponse,
            "POST /enrollments/query: DPS answered the same continuation token again",
        ));
    }
    match json_or_absent("POST /enrollments/query", r)? {
        Some(Value::Array(items)) => Ok((items, next)),
        Some(_) => Err(upload_error(
            ErrorCode::UploadBadResponse,
            "POST /enrollments/query: the answer is not an array of enrollments",
        )),
        None => Err(upload_error(
            ErrorCode::UploadHttp,
            "POST /enrollments/query: HTTP 404 (is the endpoint a DPS service API?)",
        )),
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(super) fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = http_date(v)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Unix seconds of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form HTTP senders use.
pub(super) fn http_date(v: &str) -> Option<u64> {
    let (_, rest) = v.split_once(", ")?;
    let f: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, clock, "GMT"] = f[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| *x == month)? as i64 + 1;
    let (d, y): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let t: Vec<i64> = clock
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [hh, mm, ss] = t[..] else { return None };
    // IMF-fixdate: a four-digit year, a time of day (bounded, so the arithmetic below cannot
    // overflow).
    if !(1..=31).contains(&d)
        || !(0..=9999).contains(&y)
        || !(0..=23).contains(&hh)
        || !(0..=59).contains(&mm)
        || !(0..=60).contains(&ss)
    {
        return None;
    }
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
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
