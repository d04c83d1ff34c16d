//! A local HTTP server playing the Azure DPS service API (api-version 2021-10-01) for tests and
//! benches, as the real service behaves:
//!
//! - every request needs `api-version=2021-10-01` and a SAS token whose `sr` is the DPS host
//!   name the token is for ([`DPS_HOST`] unless started with [`FakeDps::start_for`]), not the
//!   address the request went to; signature, expiry and policy name are checked too;
//! - `POST /enrollments` (bulk, modes `create`, `update`, `updateIfMatchETag`, `delete`): the body
//!   is validated strictly against the swagger, at most 10 enrollments per call, per-item errors;
//! - `GET /enrollments/{id}` and `POST /enrollments/query` (paged with `x-ms-max-item-count` and
//!   `x-ms-continuation`) show enrollments as DPS does: service-filled `etag` and timestamps,
//!   defaults for fields never sent, X.509 certificates as `info`, and **never symmetric keys**;
//! - `POST /enrollments/{id}/attestationmechanism` is the only answer carrying the keys;
//! - `GET /registrations/{id}` answers the device registration states tests [`FakeDps::register`].
//!
//! The next bulk (or query) call can be scripted to fail: 429 with Retry-After in seconds or as an
//! HTTP date, 500, a dropped connection after accepting, `isSuccessful: false` without errors, or
//! one item refused. Registration IDs are case-insensitive and kept lowercase.
#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The DPS host name SAS tokens must be issued for (their `sr`), by default.
pub const DPS_HOST: &str = "my-dps.azure-devices-provisioning.net";
/// The policy key the fake DPS accepts (test material, base64).
pub const POLICY_KEY: &str = "dGVzdC1wb2xpY3kta2V5LWZvci10aGUtZmFrZS1kcHMtc2VydmljZQ==";
pub const POLICY: &str = "provisioningserviceowner";

const API_VERSION: &str = "2021-10-01";
/// Most enrollments DPS takes in one bulk operation.
const MAX_BULK: usize = 10;
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
const MAX_BODY: usize = 16 << 20;
const CONTINUATION_PREFIX: &str = "fake-dps-enrollments-after:";
/// What the fake cannot compute without a SHA-1 implementation among the dev-dependencies.
const SHA1_UNAVAILABLE: &str = "UNAVAILABLE-IN-FAKE";

/// A scripted answer to the next bulk call (or, pushed with [`FakeDps::push_query_fault`], to
/// the next query call, where only `TooMany`, `TooManyUntilDate`, `ServerError` and
/// `DropAfterAccepting` (close without answering) mean anything; the others are ignored there).
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 with `Retry-After: <seconds>`.
    TooMany {
        retry_after_s: u64,
    },
    /// 429 with `Retry-After: <IMF-fixdate>` that many seconds ahead.
    TooManyUntilDate {
        seconds: u64,
    },
    ServerError,
    /// Accept the enrollments, then close the connection without answering.
    DropAfterAccepting,
    /// Store the first `accept` items as the mode says, drop the rest, and answer 200
    /// `{"isSuccessful": false, "errors": []}`.
    FailedWithoutErrors {
        accept: usize,
    },
    /// Refuse that one item with this code and status; the others proceed normally.
    ItemError {
        registration_id: String,
        error_code: i64,
        error_status: String,
    },
}

#[derive(Default)]
pub struct State {
    /// Stored enrollments by lowercase registration ID: as written (keys included), with the
    /// service-filled `etag`, `createdDateTimeUtc` and `lastUpdatedDateTimeUtc`.
    pub enrollments: HashMap<String, Value>,
    /// Device registration states by lowercase registration ID.
    pub registrations: HashMap<String, Value>,
    /// Enrollments that came into being (bulk `create`, or `update` of one not held), per
    /// registration ID (to prove nothing was created twice).
    pub creates: HashMap<String, u32>,
    pub bulk_calls: u32,
    pub get_calls: u32,
    pub mechanism_calls: u32,
    pub query_calls: u32,
    pub registration_calls: u32,
    pub unauthorized: u32,
    /// Bodies that failed validation, with the errors.
    pub invalid: Vec<String>,
    /// Scripted answers to the next bulk calls.
    pub faults: VecDeque<Fault>,
    /// Scripted answers to the next query calls.
    pub query_faults: VecDeque<Fault>,
    /// Delay before answering each bulk call.
    pub delay: Duration,
    /// Bulk calls from this number on (1 = the first) wait, unanswered, until it is cleared:
    /// a test can kill the uploader with a call surely in flight.
    pub hold_from: Option<u32>,
    etag_seq: u64,
}

impl State {
    /// A new opaque etag, unique per write (the shape DPS uses: base64 of a counter).
    fn next_etag(&mut self) -> String {
        self.etag_seq += 1;
        B64.encode(self.etag_seq.to_be_bytes())
    }

    /// Store `enrollment` under `id` as a service write does: new etag, `lastUpdatedDateTimeUtc`
    /// now, `createdDateTimeUtc` kept from the enrollment it replaces. Returns whether it is new.
    fn write(&mut self, id: &str, mut enrollment: Value) -> bool {
        let now = rfc3339(now());
        let created = self
            .enrollments
            .get(id)
            .and_then(|e| e.get("createdDateTimeUtc"))
            .cloned();
        let is_new = !self.enrollments.contains_key(id);
        let etag = self.next_etag();
        if let Some(e) = enrollment.as_object_mut() {
            e.insert("registrationId".into(), json!(id));
            e.insert("etag".into(), json!(etag));
            e.insert(
                "createdDateTimeUtc".into(),
                created.unwrap_or_else(|| json!(now)),
            );
            e.insert("lastUpdatedDateTimeUtc".into(), json!(now));
        }
        self.enrollments.insert(id.to_string(), enrollment);
        is_new
    }

    /// What `GET /enrollments/{id}` answers (no keys), or `None` when not held.
    pub fn shown(&self, registration_id: &str) -> Option<Value> {
        let id = registration_id.to_lowercase();
        let stored = self.enrollments.get(&id)?;
        Some(view(&id, stored, self.registrations.get(&id)))
    }

    /// What `POST /enrollments/{id}/attestationmechanism` answers (keys included).
    pub fn mechanism(&self, registration_id: &str) -> Option<Value> {
        let id = registration_id.to_lowercase();
        let mut att = self.enrollments.get(&id)?.get("attestation")?.clone();
        with_certificate_info(&mut att, &id);
        Some(att)
    }
}

pub struct FakeDps {
    pub url: String,
    /// The DPS host name SAS tokens must be issued for.
    pub host: String,
    pub state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDps {
    /// Run `station ARGS` (an upload against this DPS) and SIGKILL it while its second bulk
    /// call is in flight: the call is held unanswered until the process is dead, then let go
    /// (DPS applies it, as a call the client never heard back from).
    pub fn kill_uploader_mid_call(&self, args: &[&str]) {
        use std::io::BufRead;
        lock(&self.state).hold_from = Some(2);
        let mut child = std::process::Command::new(super::STATION)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        for line in out.lines() {
            if line.unwrap().contains("\"event\":\"bulk\"") {
                self.wait_for_bulk_calls(2);
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Release a call [`FakeDps::kill_uploader_mid_call`] held.
    pub fn let_go(&self) {
        lock(&self.state).hold_from = None;
    }

    /// Wait until DPS has received `n` bulk calls (held ones included).
    pub fn wait_for_bulk_calls(&self, n: u32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while lock(&self.state).bulk_calls < n {
            assert!(
                std::time::Instant::now() < deadline,
                "DPS never received bulk call {n}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A fake DPS that accepts tokens issued for [`DPS_HOST`].
    pub fn start() -> FakeDps {
        Self::start_for(DPS_HOST)
    }

    /// A fake DPS that accepts tokens issued for `host`.
    pub fn start_for(host: &str) -> FakeDps {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let server = Server {
            state: state.clone(),
            host: host.to_ascii_lowercase(),
            validator: jsonschema::validator_for(&super::bulk_schema()).unwrap(),
        };
        let sp = stop.clone();
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if stream.set_nonblocking(false).is_ok() {
                            let _ = server.serve(stream);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FakeDps {
            url: format!("http://127.0.0.1:{}", addr.port()),
            host: host.to_ascii_lowercase(),
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Pre-load an enrollment (e.g. to cause a conflict), stored form: keys included. Service
    /// fields it lacks (`etag`, timestamps) are filled in; it does not count as a create.
    pub fn hold(&self, enrollment: Value) {
        let id = enrollment["registrationId"]
            .as_str()
            .expect("hold: the enrollment needs a registrationId")
            .to_lowercase();
        let mut s = lock(&self.state);
        let etag = s.next_etag();
        let now = rfc3339(now());
        let mut e = enrollment;
        let obj = e.as_object_mut().expect("hold: an enrollment is an object");
        obj.insert("registrationId".into(), json!(id));
        obj.entry("etag").or_insert(json!(etag));
        obj.entry("createdDateTimeUtc").or_insert(json!(now));
        obj.entry("lastUpdatedDateTimeUtc").or_insert(json!(now));
        s.enrollments.insert(id, e);
    }

    /// Change a held enrollment as someone in the portal would (stored form, keys included):
    /// it gets a new etag and `lastUpdatedDateTimeUtc`. Panics when it is not held.
    pub fn modify(&self, registration_id: &str, f: impl FnOnce(&mut Value)) {
        let id = registration_id.to_lowercase();
        let mut s = lock(&self.state);
        let mut e = s
            .enrollments
            .get(&id)
            .cloned()
            .unwrap_or_else(|| panic!("modify: no enrollment {id} is held"));
        f(&mut e);
        s.write(&id, e);
    }

    /// Record the device's registration state (a DeviceRegistrationState such as
    /// `{"status":"assigned","assignedHub":"hub-a.azure-devices.net","deviceId":"x"}`), as if
    /// the device had registered. `registrationId`, timestamps and `etag` are filled if missing.
    pub fn register(&self, registration_id: &str, state: Value) {
        let id = registration_id.to_lowercase();
        let mut s = lock(&self.state);
        let etag = s.next_etag();
        let now = rfc3339(now());
        let mut r = state;
        let obj = r
            .as_object_mut()
            .expect("register: a registration state is an object");
        obj.entry("registrationId").or_insert(json!(id));
        obj.entry("createdDateTimeUtc").or_insert(json!(now));
        obj.entry("lastUpdatedDateTimeUtc").or_insert(json!(now));
        obj.entry("etag").or_insert(json!(etag));
        s.registrations.insert(id, r);
    }

    /// What `GET /enrollments/{id}` would answer (no keys), without counting a call.
    pub fn shown(&self, registration_id: &str) -> Option<Value> {
        lock(&self.state).shown(registration_id)
    }

    /// Script the answer to the next bulk call.
    pub fn push_fault(&self, f: Fault) {
        lock(&self.state).faults.push_back(f);
    }

    /// Script the answer to the next query call.
    pub fn push_query_fault(&self, f: Fault) {
        lock(&self.state).query_faults.push_back(f);
    }
}

impl Drop for FakeDps {
    fn drop(&mut self) {
        // A test that failed while a bulk call was held must not leave the server waiting.
        lock(&self.state).hold_from = None;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The state, even after a test panicked while holding it.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// How DPS shows enrollments

/// An enrollment as GET and query show it: defaults for fields never sent, no symmetric keys,
/// certificates as `info`, and the registration state once the device registered.
fn view(id: &str, stored: &Value, registration: Option<&Value>) -> Value {
    let mut e = stored.clone();
    let Some(obj) = e.as_object_mut() else {
        return e;
    };
    fill_defaults(obj);
    if let Some(att) = obj.get_mut("attestation") {
        without_keys(att);
        with_certificate_info(att, id);
    }
    if let Some(r) = registration {
        obj.insert("registrationState".into(), r.clone());
    }
    e
}

/// What DPS answers for the fields a client did not send.
fn fill_defaults(e: &mut Map<String, Value>) {
    e.entry("provisioningStatus").or_insert(json!("enabled"));
    e.entry("capabilities").or_insert(json!({"iotEdge": false}));
    e.entry("reprovisionPolicy")
        .or_insert(json!({"updateHubAssignment": true, "migrateDeviceData": true}));
}

/// DPS never returns symmetric keys from GET or query.
fn without_keys(att: &mut Value) {
    if let Some(sk) = att.get_mut("symmetricKey") {
        *sk = json!({});
    }
}

/// Like DPS, show certificate info rather than the PEM that was sent.
fn with_certificate_info(att: &mut Value, id: &str) {
    for set in ["clientCertificates", "signingCertificates"] {
        for which in ["primary", "secondary"] {
            let pointer = format!("/x509/{set}/{which}");
            let Some(slot) = att.pointer_mut(&pointer) else {
                continue;
            };
            if let Some(pem) = slot.get("certificate").and_then(Value::as_str) {
                let info = certificate_info(pem, id);
                *slot = json!({ "info": info });
            }
        }
    }
}

/// An X509CertificateInfo with every required field: real SHA-256 thumbprint over the DER,
/// the rest plausible fakes (the fake does not parse the certificate).
fn certificate_info(pem: &str, id: &str) -> Value {
    let der = certificate_der(pem).unwrap_or_default();
    let sha256 = upper_hex(&Sha256::digest(&der));
    json!({
        "subjectName": format!("CN={id}"),
        "sha1Thumbprint": SHA1_UNAVAILABLE,
        "sha256Thumbprint": sha256,
        "issuerName": "CN=Fake DPS Test Intermediate CA",
        "notBeforeUtc": "2025-01-01T00:00:00Z",
        "notAfterUtc": "2027-01-01T00:00:00Z",
        "serialNumber": &sha256[..16],
        "version": 3,
    })
}

/// The DER of the first certificate in `pem` (or of bare base64), if it decodes.
fn certificate_der(pem: &str) -> Option<Vec<u8>> {
    let b64: String = if pem.contains("-----BEGIN") {
        pem.lines()
            .skip_while(|l| !l.starts_with("-----BEGIN"))
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect()
    } else {
        pem.to_string()
    };
    let b64: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    B64.decode(b64).ok().filter(|der| !der.is_empty())
}

fn upper_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Time

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Year, month, day of a day count since 1970-01-01 (H. Hinnant's civil_from_days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-01-02T03:04:05.1234567Z`, the way DPS writes its timestamps (100 ns ticks).
fn rfc3339(t: Duration) -> String {
    let secs = t.as_secs();
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:07}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        t.subsec_nanos() / 100
    )
}

/// An IMF-fixdate (RFC 9110), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let (y, mo, d) = civil_from_days(days as i64);
    let s = secs % 86_400;
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(mo - 1) as usize],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

// ---------------------------------------------------------------------------------------------
// HTTP

struct Request {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn json(status: u16, body: &Value) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    /// A ProvisioningServiceErrorDetails answer.
    fn error(status: u16, code: i64, message: &str) -> Response {
        Response::json(
            status,
            &json!({
                "errorCode": code,
                "message": message,
                "timestampUtc": rfc3339(now()),
            }),
        )
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn write_to(&self, stream: &mut TcpStream) -> std::io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(self.body.as_bytes())?;
        stream.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        412 => "Precondition Failed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// Read one request. `Ok(Err(_))` is a malformed request (answered 400); `Ok(Ok(None))` a
/// connection closed before sending anything.
fn read_request(stream: &TcpStream) -> std::io::Result<Result<Option<Request>, String>> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(Ok(None));
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let body = match read_body(&mut reader, &headers)? {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Ok(Ok(Some(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
    })))
}

fn read_body(
    reader: &mut impl BufRead,
    headers: &HashMap<String, String>,
) -> std::io::Result<Result<Vec<u8>, String>> {
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(reader);
    }
    let len = match headers.get("content-length").map(|v| v.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) if n <= MAX_BODY => n,
        Some(_) => return Ok(Err("bad Content-Length".into())),
    };
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Ok(body))
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Result<Vec<u8>, String>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size = size_line.trim().split(';').next().unwrap_or("");
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            return Ok(Err("bad chunk size".into()));
        };
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut t = String::new();
                if reader.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(Ok(body));
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Ok(Err("body too large".into()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = String::new();
        reader.read_line(&mut crlf)?;
    }
}

/// Percent-decoding; a `%` not followed by two hex digits stays as it is.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Check `Authorization` as DPS does: resource (the DPS host name), expiry, policy name and
/// signature over `sr + "\n" + se` with `sr` as it appears in the token.
fn authorized(header: Option<&str>, host: &str) -> bool {
    let Some(token) = header.and_then(|h| h.strip_prefix("SharedAccessSignature ")) else {
        return false;
    };
    let fields: HashMap<&str, &str> = token
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let (Some(sr), Some(sig), Some(se), Some(skn)) = (
        fields.get("sr"),
        fields.get("sig"),
        fields.get("se"),
        fields.get("skn"),
    ) else {
        return false;
    };
    let expired = se.parse::<u64>().map_or(true, |e| e <= now().as_secs());
    if expired || *skn != POLICY || !url_decode(sr).eq_ignore_ascii_case(host) {
        return false;
    }
    let Ok(key) = B64.decode(POLICY_KEY) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return false;
    };
    mac.update(format!("{sr}\n{se}").as_bytes());
    url_decode(sig) == B64.encode(mac.finalize().into_bytes())
}

// ---------------------------------------------------------------------------------------------
// The service

struct Server {
    state: Arc<Mutex<State>>,
    host: String,
    validator: jsonschema::Validator,
}

/// A bulk operation mode.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Create,
    Update,
    UpdateIfMatchETag,
    Delete,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "create" => Some(Mode::Create),
            "update" => Some(Mode::Update),
            "updateIfMatchETag" => Some(Mode::UpdateIfMatchETag),
            "delete" => Some(Mode::Delete),
            _ => None,
        }
    }
}

/// A per-item refusal in a bulk answer.
type ItemError = (i64, String);

impl Server {
    fn serve(&self, mut stream: TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let answer = match read_request(&stream)? {
            Ok(Some(req)) => self.handle(&req),
            Ok(None) => return Ok(()),
            Err(e) => Some(Response::error(
                400,
                400000,
                &format!("malformed request: {e}"),
            )),
        };
        match answer {
            Some(r) => r.write_to(&mut stream),
            // Close without answering.
            None => Ok(()),
        }
    }

    fn handle(&self, req: &Request) -> Option<Response> {
        let version = req
            .query
            .split('&')
            .find_map(|p| p.strip_prefix("api-version="));
        if version != Some(API_VERSION) {
            return Some(Response::error(
                400,
                400001,
                "api-version=2021-10-01 is required",
            ));
        }
        if !authorized(req.header("authorization"), &self.host) {
            lock(&self.state).unauthorized += 1;
            return Some(Response::error(401, 401002, "Unauthorized"));
        }
        let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("POST", ["enrollments"]) => self.bulk(req),
            ("POST", ["enrollments", "query"]) => self.query(req),
            ("GET", ["enrollments", i]) if !i.is_empty() => Some(self.get(&path_id(i))),
            ("POST", ["enrollments", i, "attestationmechanism"]) if !i.is_empty() => {
                Some(self.mechanism(&path_id(i)))
            }
            ("GET", ["registrations", i]) if !i.is_empty() => Some(self.registration(&path_id(i))),
            _ => Some(Response::error(
                404,
                404000,
                &format!("No such operation: {} {}", req.method, req.path),
            )),
        }
    }

    fn get(&self, id: &str) -> Response {
        let mut s = lock(&self.state);
        s.get_calls += 1;
        match s.shown(id) {
            Some(e) => Response::json(200, &e),
            None => enrollment_not_found(id),
        }
    }

    fn mechanism(&self, id: &str) -> Response {
        let mut s = lock(&self.state);
        s.mechanism_calls += 1;
        match s.mechanism(id) {
            Some(att) => Response::json(200, &att),
            None => enrollment_not_found(id),
        }
    }

    fn registration(&self, id: &str) -> Response {
        let mut s = lock(&self.state);
        s.registration_calls += 1;
        match s.registrations.get(id) {
            Some(r) => Response::json(200, r),
            None => Response::error(404, 404203, "Registration not found"),
        }
    }

    // -- bulk

    fn bulk(&self, req: &Request) -> Option<Response> {
        let (call, fault, delay) = {
            let mut s = lock(&self.state);
            s.bulk_calls += 1;
            (s.bulk_calls, s.faults.pop_front(), s.delay)
        };
        while lock(&self.state).hold_from.is_some_and(|from| call >= from) {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(delay);
        if let Some(r) = fault.as_ref().and_then(failure) {
            return Some(r);
        }
        let doc: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return Some(Response::error(400, 400004, &e.to_string())),
        };
        let (mode, items) = match self.check_bulk(&doc) {
            Ok(ok) => ok,
            Err(why) => {
                lock(&self.state).invalid.push(why);
                return Some(Response::error(400, 400004, "invalid bulk operation"));
            }
        };
        let errors = {
            let mut s = lock(&self.state);
            apply_bulk(&mut s, mode, items, fault.as_ref())
        };
        match fault {
            Some(Fault::DropAfterAccepting) => None,
            Some(Fault::FailedWithoutErrors { .. }) => Some(Response::json(
                200,
                &json!({"isSuccessful": false, "errors": []}),
            )),
            _ => Some(Response::json(
                200,
                &json!({"isSuccessful": errors.is_empty(), "errors": errors}),
            )),
        }
    }

    /// Validate a BulkEnrollmentOperation strictly against the swagger. `etag` is accepted
    /// only in `updateIfMatchETag`, where it is the precondition.
    fn check_bulk<'d>(&self, doc: &'d Value) -> Result<(Mode, &'d [Value]), String> {
        let items = doc["enrollments"].as_array().map_or(&[][..], Vec::as_slice);
        let n = items.len();
        let mode = doc["mode"].as_str().and_then(Mode::parse);
        let mut checked = doc.clone();
        let mut errors = Vec::new();
        if mode == Some(Mode::UpdateIfMatchETag) {
            errors.extend(take_etags(&mut checked));
        }
        errors.extend(
            self.validator
                .iter_errors(&checked)
                .map(|e| format!("{e} at {}", e.instance_path())),
        );
        if n == 0 || n > MAX_BULK {
            errors.push(format!("{n} enrollments (1 to {MAX_BULK} per operation)"));
        }
        errors.extend(items.iter().filter_map(certificate_problem));
        match mode {
            Some(mode) if errors.is_empty() => Ok((mode, items)),
            _ => Err(format!("{n} enrollments: {errors:?}")),
        }
    }

    // -- query

    fn query(&self, req: &Request) -> Option<Response> {
        let fault = {
            let mut s = lock(&self.state);
            s.query_calls += 1;
            s.query_faults.pop_front()
        };
        if let Some(f) = &fault {
            if let Fault::DropAfterAccepting = f {
                return None;
            }
            if let Some(r) = failure(f) {
                return Some(r);
            }
        }
        Some(
            self.query_page(req)
                .unwrap_or_else(|e| Response::error(400, 400000, &e)),
        )
    }

    fn query_page(&self, req: &Request) -> Result<Response, String> {
        check_query_spec(&req.body)?;
        let size = page_size(req.header("x-ms-max-item-count"))?;
        let after = req
            .header("x-ms-continuation")
            .map(continuation_after)
            .transpose()?;
        let s = lock(&self.state);
        let mut ids: Vec<&String> = s
            .enrollments
            .keys()
            .filter(|id| after.as_deref().is_none_or(|a| id.as_str() > a))
            .collect();
        ids.sort();
        let page: Vec<Value> = ids.iter().take(size).filter_map(|id| s.shown(id)).collect();
        let mut r = Response::json(200, &Value::Array(page))
            .header("x-ms-item-type", "Enrollment")
            .header("x-ms-max-item-count", size.to_string());
        if ids.len() > size {
            r = r.header("x-ms-continuation", continuation_token(ids[size - 1]));
        }
        Ok(r)
    }
}

/// A registration ID from a path segment: percent-decoded, lowercase.
fn path_id(segment: &str) -> String {
    url_decode(segment).to_lowercase()
}

fn enrollment_not_found(id: &str) -> Response {
    Response::error(404, 404201, &format!("Enrollment {id} not found"))
}

/// The answer of a throttling or server-error fault, if it is one.
fn failure(fault: &Fault) -> Option<Response> {
    let throttled = |retry_after: String| {
        Response::error(429, 429001, "Too many requests").header("Retry-After", retry_after)
    };
    match fault {
        Fault::TooMany { retry_after_s } => Some(throttled(retry_after_s.to_string())),
        Fault::TooManyUntilDate { seconds } => {
            // Round up so that the date is at least `seconds` away.
            let t = now();
            let base = t.as_secs() + u64::from(t.subsec_nanos() > 0);
            Some(throttled(http_date(base + seconds)))
        }
        Fault::ServerError => Some(Response::error(500, 500001, "Internal server error")),
        _ => None,
    }
}

/// Remove the `etag` of each enrollment (the validator refuses service-filled fields), with an
/// error for any that is not a string.
fn take_etags(doc: &mut Value) -> Vec<String> {
    let Some(items) = doc.get_mut("enrollments").and_then(Value::as_array_mut) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    for (i, item) in items.iter_mut().enumerate() {
        let etag = item.as_object_mut().and_then(|o| o.remove("etag"));
        if etag.is_some_and(|e| !e.is_string()) {
            errors.push(format!("etag is not a string at /enrollments/{i}/etag"));
        }
    }
    errors
}

/// DPS refuses a client certificate that is not a certificate; the fake checks it decodes.
fn certificate_problem(item: &Value) -> Option<String> {
    let id = item["registrationId"].as_str().unwrap_or("?");
    let certs = item.pointer("/attestation/x509/clientCertificates")?;
    ["primary", "secondary"].iter().find_map(|which| {
        let pem = certs.get(which)?.get("certificate")?.as_str()?;
        certificate_der(pem)
            .is_none()
            .then(|| format!("{id}: {which} certificate is neither PEM nor base64 DER"))
    })
}

/// Apply the items of a valid bulk operation; the per-item errors, in item order.
fn apply_bulk(s: &mut State, mode: Mode, items: &[Value], fault: Option<&Fault>) -> Vec<Value> {
    let accept = match fault {
        Some(Fault::FailedWithoutErrors { accept }) => *accept,
        _ => usize::MAX,
    };
    let mut errors = Vec::new();
    for item in items.iter().take(accept) {
        let id = item["registrationId"].as_str().unwrap_or("").to_lowercase();
        let refused = match fault {
            Some(Fault::ItemError {
                registration_id,
                error_code,
                error_status,
            }) if registration_id.eq_ignore_ascii_case(&id) => {
                Err((*error_code, error_status.clone()))
            }
            _ => apply_item(s, mode, &id, item),
        };
        if let Err((code, status)) = refused {
            errors.push(json!({"registrationId": id, "errorCode": code, "errorStatus": status}));
        }
    }
    errors
}

fn apply_item(s: &mut State, mode: Mode, id: &str, item: &Value) -> Result<(), ItemError> {
    let held = s.enrollments.get(id);
    match mode {
        Mode::Create if held.is_some() => {
            return Err((409201, "Enrollment already exists".into()));
        }
        Mode::UpdateIfMatchETag => {
            let held_etag = held.and_then(|e| e.get("etag")).and_then(Value::as_str);
            let sent = item.get("etag").and_then(Value::as_str);
            let matches = match (held_etag, sent) {
                (Some(h), Some(e)) => e == "*" || e == h,
                _ => false,
            };
            if !matches {
                return Err((412201, "Precondition failed: etag mismatch".into()));
            }
        }
        Mode::Delete => {
            return match s.enrollments.remove(id) {
                Some(_) => Ok(()),
                None => Err((404201, "Enrollment not found".into())),
            };
        }
        Mode::Create | Mode::Update => {}
    }
    if s.write(id, item.clone()) {
        *s.creates.entry(id.to_string()).or_insert(0) += 1;
    }
    Ok(())
}

/// The body must be a QuerySpecification asking for every enrollment.
fn check_query_spec(body: &[u8]) -> Result<(), String> {
    let spec: Value =
        serde_json::from_slice(body).map_err(|e| format!("query specification: {e}"))?;
    let obj = spec
        .as_object()
        .ok_or("query specification: not an object")?;
    if let Some(k) = obj.keys().find(|k| *k != "query") {
        return Err(format!("query specification: unknown field {k}"));
    }
    let query = obj
        .get("query")
        .and_then(Value::as_str)
        .ok_or("query specification: query (a string) is required")?;
    let normal = query
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    match normal.as_str() {
        "*" | "select * from enrollments" => Ok(()),
        _ => Err(format!("unsupported query: {query}")),
    }
}

/// `x-ms-max-item-count`: absent means 100; clamped to 1..=1000.
fn page_size(header: Option<&str>) -> Result<usize, String> {
    let Some(h) = header else {
        return Ok(DEFAULT_PAGE as usize);
    };
    let n: i64 = h
        .trim()
        .parse()
        .map_err(|_| format!("x-ms-max-item-count is not a number: {h}"))?;
    Ok(n.clamp(1, MAX_PAGE) as usize)
}

/// An opaque continuation token: the last registration ID returned, so that it stays valid
/// whatever is written between pages.
fn continuation_token(last: &str) -> String {
    B64.encode(format!("{CONTINUATION_PREFIX}{last}"))
}

fn continuation_after(token: &str) -> Result<String, String> {
    B64.decode(token.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix(CONTINUATION_PREFIX).map(str::to_string))
        .ok_or_else(|| format!("unknown continuation token: {token}"))
}
