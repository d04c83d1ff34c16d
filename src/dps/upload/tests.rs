use super::client::{http_date, retry_after};
use super::*;
use serde_json::json;

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
    };
    let v: Value = serde_json::from_slice(&bulk_body(&[&p, &p], "create")).unwrap();
    assert_eq!(v["mode"], "create");
    assert_eq!(v["enrollments"].as_array().unwrap().len(), 2);
}

#[test]
fn retry_after_takes_seconds_or_an_http_date() {
    // RFC 9110's example date, checked with `date -u -d 'Sun, 06 Nov 1994 08:49:37 GMT' +%s`.
    assert_eq!(
        http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(784_111_777)
    );
    assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
    assert_eq!(
        http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
        Some(1_835_481_599)
    );
    assert_eq!(http_date("Sun, 06 Nov 1994 08:49:37 CET"), None);
    assert_eq!(http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
    assert_eq!(http_date("yesterday"), None);
    assert_eq!(retry_after(" 7 "), Some(std::time::Duration::from_secs(7)));
    assert_eq!(
        retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(std::time::Duration::ZERO),
        "a date in the past means now"
    );
    let soon = std::time::SystemTime::now() + std::time::Duration::from_secs(120);
    let d = retry_after(&httpdate_for_test(soon)).unwrap().as_secs();
    assert!((115..=120).contains(&d), "{d}");
}

/// IMF-fixdate of `t`, formatted by the `date` tool (an independent implementation).
fn httpdate_for_test(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let out = std::process::Command::new("date")
        .env("LC_ALL", "C")
        .args([
            "-u",
            "-d",
            &format!("@{secs}"),
            "+%a, %d %b %Y %H:%M:%S GMT",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn registration_states_are_read_as_dps_writes_them() {
    let s = registration_state(Some(&json!({"registrationId": "a", "status": "failed",
        "errorCode": 401002, "errorMessage": "The device is unauthorized"})));
    assert_eq!(s.status, "failed");
    assert_eq!(
        s.error.as_deref(),
        Some("401002: The device is unauthorized")
    );
    assert_eq!(registration_state(None).status, "not_registered");
    let a = registration_state(Some(&json!({"status": "assigned",
        "assignedHub": "hub-a.azure-devices.net", "deviceId": "a"})));
    assert_eq!(a.assigned_hub.as_deref(), Some("hub-a.azure-devices.net"));
    assert_eq!(a.error, None);
}

/// Found by the `dps_answers` fuzz target
/// (fuzz/regressions/dps_answers/registration-state-with-an-empty-status): `"status": ""` was
/// recorded as a device's registration status, an empty word counted among the failures.
#[test]
fn an_empty_registration_status_is_unknown() {
    assert_eq!(
        registration_state(Some(&json!({"status": ""}))).status,
        "unknown"
    );
    assert_eq!(registration_state(Some(&json!({}))).status, "unknown");
}

/// Found by the `dps_answers` fuzz target
/// (fuzz/regressions/dps_answers/retry-after-date-in-year-minus-111111111110128): a
/// `Retry-After` date in year -111111111110128 overflowed the day count (a panic with overflow
/// checks, a wrong wait without); negative times of day were taken too.
#[test]
fn a_retry_after_date_outside_four_digit_years_or_the_day_is_no_date() {
    assert_eq!(http_date("Sat, 29 Feb -11111111111012 6:54:40 GMT"), None);
    assert_eq!(
        http_date("Sun, 06 Nov 9223372036854775807 08:49:37 GMT"),
        None
    );
    assert_eq!(
        http_date("Sun, 06 Nov 1994 -9223372036854775808:00:00 GMT"),
        None
    );
    assert_eq!(http_date("Sun, 06 Nov 1994 08:-1:37 GMT"), None);
    assert_eq!(
        http_date("Fri, 31 Dec 9999 23:59:59 GMT"),
        Some(253_402_300_799)
    );
}
