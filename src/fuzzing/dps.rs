//! What the DPS service answers: bulk operation results, enrollments and attestation
//! mechanisms, query pages, registration states, and `Retry-After`.

use super::Bytes;
use crate::dps::upload::parsers;
use crate::dps::upload::registration_state;
use crate::error::ErrorCode;
use arbitrary::Unstructured;
use serde_json::{Map, Value, json};

/// HTTP statuses an answer is given, by the input's status byte (the rest: 100 + byte).
const STATUSES: [u16; 9] = [200, 200, 200, 400, 401, 403, 404, 429, 500];

/// The bulk operation's items, as the station names them.
const ITEMS: [&str; 3] = ["sn0001", "SN0002", "line-a.sn0003"];

/// Key values the station sent; no difference it reports may show one.
const KEYS: [&str; 4] = [
    "c2VudC1wcmltYXJ5LWtleS0wMDAwMDAwMDAwMDA=",
    "c2VudC1zZWNvbmRhcnkta2V5LTAwMDAwMDAwMDA=",
    "aGVsZC1wcmltYXJ5LWtleS0wMDAwMDAwMDAwMDA=",
    "aGVsZC1zZWNvbmRhcnkta2V5LTAwMDAwMDAwMDA=",
];

/// Input: `parser u8` (0 bulk result, 1 enrollment or attestation mechanism, 2 query page,
/// 3 registration state, 4 `Retry-After`; wrapping), `status u8`, `shape u8` (even: the rest
/// is the answer's text; odd: the rest drives a generator of JSON made of DPS's field names),
/// and for query pages one more byte choosing the continuation tokens.
///
/// Properties: only an HTTP 200 whose JSON says `isSuccessful: true` makes an item uploaded
/// without a look-up; a 400 fails every item; named items are lowercase and never 2xx; a query
/// page is an array and never repeats the token asked with; a registration state always has a
/// status; no difference the station reports shows a symmetric key; an HTTP date is read as
/// the calendar (the `time` crate) says; every refusal is an upload error code.
pub fn dps_answers(data: &[u8]) {
    let mut b = Bytes::new(data);
    let parser = b.u8() % 5;
    let status = match b.u8() {
        s if (s as usize) < STATUSES.len() => STATUSES[s as usize],
        s => 100 + s as u16,
    };
    let shape = b.u8();
    let tokens = if parser == 2 { b.u8() % 4 } else { 0 };
    let rest = b.rest();
    let text = if shape.is_multiple_of(2) {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        generated(rest).to_string()
    };
    match parser {
        0 => bulk(status, &text),
        1 => {
            if let Some(v) = read(parsers::json(status, &text), status) {
                shown(&v);
            }
        }
        2 => query(status, &text, tokens),
        3 => {
            let v = read(parsers::json(status, &text), status);
            let state = registration_state(v.as_ref());
            assert!(!state.status.is_empty());
            assert!(v.is_some() || state.status == "not_registered");
        }
        _ => retry_after(&text),
    }
}

/// An answer read, or a refusal with an upload code; `Some` only for HTTP 200.
fn read(r: crate::Result<Option<Value>>, status: u16) -> Option<Value> {
    match r {
        Ok(v) => {
            assert!(status == 200 || (status == 404 && v.is_none()));
            v
        }
        Err(e) => {
            refused(&e);
            None
        }
    }
}

fn refused(e: &crate::Error) {
    assert!(
        matches!(
            e.code(),
            ErrorCode::UploadBadResponse | ErrorCode::UploadHttp | ErrorCode::UploadUnauthorized
        ),
        "a DPS answer refused with {}",
        e.code().as_str()
    );
}

fn bulk(status: u16, text: &str) {
    match parsers::bulk(status, text, &ITEMS) {
        Ok((successful, named)) => judged(status, text, successful, &named),
        Err(e) => {
            refused(&e);
            assert!(status != 400, "a 400 is a judgement, not an error");
        }
    }
}

/// Items named by an answer: lowercase registration ID, `errorCode`, `errorStatus`.
type Named = [(String, Option<i64>, Option<String>)];

fn judged(status: u16, text: &str, successful: bool, named: &Named) {
    if successful {
        let v: Value = serde_json::from_str(text).expect("a successful answer is JSON");
        assert!(status == 200 && v["isSuccessful"] == Value::Bool(true));
    }
    if status == 400 {
        assert!(!successful);
        for id in ITEMS {
            assert!(named.iter().any(|(n, ..)| *n == id.to_ascii_lowercase()));
        }
    } else {
        assert_eq!(status, 200, "only 200 and 400 are judged");
        for (id, code, _) in named {
            assert_eq!(*id, id.to_ascii_lowercase());
            assert!(!code.is_some_and(|c| (200..300).contains(&c)));
        }
    }
}

fn query(status: u16, text: &str, tokens: u8) {
    let (next, asked) = match tokens {
        0 => (None, None),
        1 => (Some("page-2".to_string()), None),
        2 => (Some("page-2".to_string()), Some("page-2")),
        _ => (None, Some("page-2")),
    };
    match parsers::query(status, text, next.clone(), asked) {
        Ok((items, token)) => {
            assert_eq!(status, 200);
            assert!(token.is_none() || token.as_deref() != asked);
            assert_eq!(token, next);
            for item in &items {
                shown(item);
            }
        }
        Err(e) => refused(&e),
    }
}

/// Compare an enrollment DPS shows with each kind the station sends.
fn shown(v: &Value) {
    for sent in sent() {
        let mut reported = parsers::differences(&sent, v);
        reported.extend(parsers::attestation_differences(&sent["attestation"], v));
        reported.extend(parsers::attestation_differences(
            &sent["attestation"],
            &v["attestation"],
        ));
        for line in reported {
            // Only attestation differences could show a key; a type mismatch prints both
            // types, which DPS may spell as anything (even as a key's text), and other fields
            // print what DPS holds in them.
            if !line.starts_with("attestation.") || line.starts_with("attestation.type:") {
                continue;
            }
            for key in KEYS {
                assert!(!line.contains(key), "a difference shows a key: {line}");
            }
        }
    }
}

/// Enrollments as the station sends them: symmetric key, X.509, TPM.
fn sent() -> [Value; 3] {
    let pem = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n";
    [
        json!({"registrationId": "sn0001", "attestation": {"type": "symmetricKey",
            "symmetricKey": {"primaryKey": KEYS[0], "secondaryKey": KEYS[1]}},
            "provisioningStatus": "enabled", "iotHubs": ["hub-a.azure-devices.net"],
            "initialTwin": {"tags": {"line": "a"}, "properties": {"desired": {"t": 30}}},
            "allocationPolicy": "hashed"}),
        json!({"registrationId": "sn0002", "attestation": {"type": "x509",
            "x509": {"clientCertificates": {"primary": {"certificate": pem}}}},
            "capabilities": {"iotEdge": true}}),
        json!({"registrationId": "sn0003", "attestation": {"type": "tpm",
            "tpm": {"endorsementKey": "AAEC", "storageRootKey": "AwQF"}},
            "reprovisionPolicy": {"updateHubAssignment": false, "migrateDeviceData": false}}),
    ]
}

/// `Retry-After` as seconds or an IMF-fixdate: the date's seconds agree with the calendar.
fn retry_after(text: &str) {
    let (wait, date) = parsers::wait(text);
    if text.trim().parse::<u64>().is_ok() {
        assert!(wait.is_some());
    }
    let Some(seconds) = date else { return };
    let fields: Option<Vec<i64>> = text.split_once(", ").and_then(|(_, rest)| {
        let f: Vec<&str> = rest.split([' ', ':']).collect();
        let month = MONTHS.iter().position(|m| f.get(1) == Some(m))? as i64 + 1;
        let num = |i: usize| f.get(i)?.parse::<i64>().ok();
        Some(vec![num(0)?, month, num(2)?, num(3)?, num(4)?, num(5)?])
    });
    let [day, month, year, h, m, s] = fields.expect("a date read is a date")[..] else {
        panic!("a date has six fields");
    };
    let calendar = i32::try_from(year)
        .ok()
        .zip(time::Month::try_from(month as u8).ok())
        .and_then(|(y, mo)| time::Date::from_calendar_date(y, mo, day as u8).ok());
    if let Some(date) = calendar
        && (0..60).contains(&s)
        && (0..24).contains(&h)
        && (0..60).contains(&m)
    {
        let expected = date.midnight().assume_utc().unix_timestamp() + h * 3600 + m * 60 + s;
        assert_eq!(seconds as i64, expected, "{text} read as {seconds}");
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Field names of DPS's answers (swagger 2021-10-01), so that generated JSON reaches the
/// station's comparisons instead of being refused as unknown.
const FIELDS: &[&str] = &[
    "isSuccessful",
    "errors",
    "registrationId",
    "errorCode",
    "errorStatus",
    "message",
    "attestation",
    "type",
    "symmetricKey",
    "primaryKey",
    "secondaryKey",
    "x509",
    "clientCertificates",
    "primary",
    "secondary",
    "certificate",
    "info",
    "sha256Thumbprint",
    "tpm",
    "endorsementKey",
    "storageRootKey",
    "signingCertificates",
    "caReferences",
    "deviceId",
    "initialTwin",
    "tags",
    "properties",
    "desired",
    "provisioningStatus",
    "capabilities",
    "iotEdge",
    "reprovisionPolicy",
    "updateHubAssignment",
    "migrateDeviceData",
    "allocationPolicy",
    "iotHubs",
    "iotHubHostName",
    "customAllocationDefinition",
    "optionalDeviceInformation",
    "etag",
    "status",
    "assignedHub",
    "errorMessage",
    "lastUpdatedDateTimeUtc",
    "$metadata",
    "registrationState",
];

/// Strings DPS's answers carry.
const STRINGS: &[&str] = &[
    "sn0001",
    "SN0002",
    "line-a.sn0003",
    "symmetricKey",
    "x509",
    "tpm",
    "enabled",
    "disabled",
    "assigned",
    "assigning",
    "failed",
    "unassigned",
    "hashed",
    "static",
    "geoLatency",
    "",
    "hub-a.azure-devices.net",
    "HUB-A.azure-devices.net",
    "AAEC",
    "AAE=",
    "AwQF",
    "MAMCAQE=",
    "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
];

/// A JSON value drawn from `bytes`: objects keyed by DPS's field names, its strings, numbers
/// near its error codes, the sent and other keys.
fn generated(bytes: &[u8]) -> Value {
    value(&mut Unstructured::new(bytes), 0).unwrap_or(Value::Null)
}

fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let choices = if depth >= 5 { 5 } else { 7 };
    Ok(match u.choose_index(choices)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(*u.choose(&[200i64, 201, 400, 401002, 409, 412, 429, 500, -1, i64::MAX])?),
        3 => Value::String(u.choose(STRINGS)?.to_string()),
        4 => match u.choose_index(3)? {
            0 => Value::String(u.choose(&KEYS)?.to_string()),
            1 => Value::String(u.arbitrary::<&str>()?.to_string()),
            _ => json!(u.arbitrary::<f64>()?),
        },
        5 => {
            let n = u.choose_index(4)?;
            Value::Array(
                (0..n)
                    .map(|_| value(u, depth + 1))
                    .collect::<arbitrary::Result<_>>()?,
            )
        }
        _ => {
            let n = u.choose_index(7)?;
            let mut m = Map::new();
            for _ in 0..n {
                let key = u.choose(FIELDS)?.to_string();
                m.insert(key, value(u, depth + 1)?);
            }
            Value::Object(m)
        }
    })
}
