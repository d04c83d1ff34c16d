//! The client of one DPS instance's service API: signed requests under a rate limit, retried
//! with exponential backoff and jitter (honouring `Retry-After`) up to a bounded time.

use super::upload_error;
use crate::config::{Config, UploadSection};
use crate::domain::Event;
use crate::dps::API_VERSION;
use crate::dps::sas::SasSigner;
use crate::error::{Error, ErrorCode, Result};
use serde_json::Value;
use std::time::{Duration, Instant};

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
    pub(super) fn get(
        &mut self,
        registration_id: &str,
        emit: &mut dyn FnMut(Event),
    ) -> Result<Option<Value>> {
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
