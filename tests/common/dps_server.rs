//! A local HTTP server playing the DPS service API (api-version 2021-10-01) for tests and
//! benches: it checks the SAS signature and expiry, validates every bulk body against the
//! swagger (strict), refuses more than 10 enrollments per operation, keeps the enrollments it
//! accepted, and can be scripted to answer 429 with Retry-After, 500, or drop the connection.
#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The policy key the fake DPS accepts (test material, base64).
pub const POLICY_KEY: &str = "dGVzdC1wb2xpY3kta2V5LWZvci10aGUtZmFrZS1kcHMtc2VydmljZQ==";
pub const POLICY: &str = "provisioningserviceowner";

/// A scripted answer to the next bulk call.
#[derive(Debug, Clone)]
pub enum Fault {
    TooMany {
        retry_after_s: u64,
    },
    ServerError,
    /// Accept the enrollments, then close the connection without answering.
    DropAfterAccepting,
}

#[derive(Default)]
pub struct State {
    pub enrollments: HashMap<String, Value>,
    /// Successful creates per registration ID (to prove nothing was created twice).
    pub creates: HashMap<String, u32>,
    pub bulk_calls: u32,
    pub get_calls: u32,
    pub unauthorized: u32,
    /// Bodies that failed validation, with the errors.
    pub invalid: Vec<String>,
    pub faults: VecDeque<Fault>,
    /// Delay before answering each bulk call.
    pub delay: Duration,
}

pub struct FakeDps {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDps {
    pub fn start() -> FakeDps {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let host = format!("127.0.0.1:{}", addr.port());
        let (st, sp, h) = (state.clone(), stop.clone(), host.clone());
        let validator = jsonschema::validator_for(&super::bulk_schema()).unwrap();
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let _ = serve(stream, &st, &h, &validator);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FakeDps {
            url: format!("http://{host}"),
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Pre-load an enrollment (e.g. to cause a conflict).
    pub fn hold(&self, enrollment: Value) {
        let id = enrollment["registrationId"].as_str().unwrap().to_string();
        self.state
            .lock()
            .unwrap()
            .enrollments
            .insert(id, enrollment);
    }

    pub fn push_fault(&self, f: Fault) {
        self.state.lock().unwrap().faults.push_back(f);
    }
}

impl Drop for FakeDps {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Check `Authorization` as DPS does: resource, expiry, policy name and signature.
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if se.parse::<u64>().map_or(true, |e| e <= now) || *skn != POLICY || url_decode(sr) != host {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&B64.decode(POLICY_KEY).unwrap()).unwrap();
    mac.update(format!("{}\n{se}", url_encode(host)).as_bytes());
    url_decode(sig) == B64.encode(mac.finalize().into_bytes())
}

fn respond(stream: &mut TcpStream, status: u16, extra: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    );
}

fn with_certificate_info(mut e: Value) -> Value {
    // Like DPS, answer with certificate info (the SHA-256 thumbprint) rather than the PEM.
    if let Some(pem) =
        e["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"].as_str()
    {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = B64.decode(b64).unwrap_or_default();
        let thumb: String = Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        e["attestation"]["x509"]["clientCertificates"]["primary"] =
            json!({"info": {"sha256Thumbprint": thumb}});
    }
    e
}

fn serve(
    mut stream: TcpStream,
    state: &Mutex<State>,
    host: &str,
    validator: &jsonschema::Validator,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if query != "api-version=2021-10-01" {
        respond(
            &mut stream,
            400,
            "",
            r#"{"errorCode":400001,"message":"api-version"}"#,
        );
        return Ok(());
    }
    if !authorized(headers.get("authorization").map(String::as_str), host) {
        state.lock().unwrap().unauthorized += 1;
        respond(
            &mut stream,
            401,
            "",
            r#"{"errorCode":401002,"message":"Unauthorized"}"#,
        );
        return Ok(());
    }
    match (method.as_str(), path) {
        ("POST", "/enrollments") => {
            let (fault, delay) = {
                let mut s = state.lock().unwrap();
                s.bulk_calls += 1;
                (s.faults.pop_front(), s.delay)
            };
            std::thread::sleep(delay);
            match fault {
                Some(Fault::TooMany { retry_after_s }) => {
                    respond(
                        &mut stream,
                        429,
                        &format!("Retry-After: {retry_after_s}\r\n"),
                        r#"{"errorCode":429001}"#,
                    );
                    return Ok(());
                }
                Some(Fault::ServerError) => {
                    respond(&mut stream, 500, "", r#"{"errorCode":500001}"#);
                    return Ok(());
                }
                _ => {}
            }
            let doc: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    respond(
                        &mut stream,
                        400,
                        "",
                        &json!({"errorCode": 400004, "message": e.to_string()}).to_string(),
                    );
                    return Ok(());
                }
            };
            let errors: Vec<String> = validator
                .iter_errors(&doc)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            let n = doc["enrollments"].as_array().map_or(0, Vec::len);
            if !errors.is_empty() || n > 10 || n == 0 {
                let mut s = state.lock().unwrap();
                s.invalid.push(format!("{n} enrollments: {errors:?}"));
                respond(
                    &mut stream,
                    400,
                    "",
                    &json!({"errorCode": 400004, "message": "invalid bulk operation"}).to_string(),
                );
                return Ok(());
            }
            let mode = doc["mode"].as_str().unwrap_or("");
            let mut errs = Vec::new();
            {
                let mut s = state.lock().unwrap();
                for e in doc["enrollments"].as_array().unwrap() {
                    let id = e["registrationId"].as_str().unwrap().to_string();
                    if mode == "create" && s.enrollments.contains_key(&id) {
                        errs.push(json!({"registrationId": id, "errorCode": 409201, "errorStatus": "Enrollment already exists"}));
                        continue;
                    }
                    s.enrollments.insert(id.clone(), e.clone());
                    if mode == "create" {
                        *s.creates.entry(id).or_insert(0) += 1;
                    }
                }
            }
            if let Some(Fault::DropAfterAccepting) = fault {
                drop(stream);
                return Ok(());
            }
            respond(
                &mut stream,
                200,
                "",
                &json!({"isSuccessful": errs.is_empty(), "errors": errs}).to_string(),
            );
        }
        ("GET", p) if p.starts_with("/enrollments/") => {
            let id = &p["/enrollments/".len()..];
            let held = {
                let mut s = state.lock().unwrap();
                s.get_calls += 1;
                s.enrollments.get(id).cloned()
            };
            match held {
                Some(e) => respond(&mut stream, 200, "", &with_certificate_info(e).to_string()),
                None => respond(
                    &mut stream,
                    404,
                    "",
                    r#"{"errorCode":404201,"message":"not found"}"#,
                ),
            }
        }
        _ => respond(&mut stream, 404, "", "{}"),
    }
    stream.flush()
}
