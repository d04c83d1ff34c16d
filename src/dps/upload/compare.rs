//! What DPS holds against what the station sent, field by field.
//!
//! DPS shows an enrollment (GET, query) without its symmetric keys; those come only from the
//! attestation mechanism. Fields the station did not send are compared with what DPS fills in
//! for them (`provisioningStatus` enabled, no IoT Edge, re-provision and migrate), so an
//! enrollment someone disabled in the portal is a difference even when the station relied on
//! the default. Key values are never put in a difference, only the field name.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The enrollment fields the station may set, with what DPS holds when one is not sent.
/// (`iotHubHostName` is compared only when sent: the service may fill it from the hub it
/// assigns.)
fn settable() -> [(&'static str, Option<Value>); 9] {
    [
        ("deviceId", None),
        ("initialTwin", None),
        ("provisioningStatus", Some(json!("enabled"))),
        ("capabilities", Some(json!({"iotEdge": false}))),
        (
            "reprovisionPolicy",
            Some(json!({"updateHubAssignment": true, "migrateDeviceData": true})),
        ),
        ("allocationPolicy", None),
        ("iotHubs", None),
        ("customAllocationDefinition", None),
        ("optionalDeviceInformation", None),
    ]
}

/// Every non-attestation field that differs, as `field: sent …, DPS holds …`.
pub(super) fn fields(sent: &Value, shown: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let id = |v: &Value| {
        v["registrationId"]
            .as_str()
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    if id(sent) != id(shown) {
        out.push(format!(
            "registrationId: sent {}, DPS holds {}",
            id(sent),
            id(shown)
        ));
    }
    for (field, default) in settable() {
        let ours = normal(sent.get(field)).or(default);
        let theirs = normal(shown.get(field));
        let (ours, theirs) = if field == "iotHubs" {
            (hubs(ours), hubs(theirs))
        } else {
            (ours, theirs)
        };
        diff(field, ours.as_ref(), theirs.as_ref(), &mut out);
    }
    if let Some(ours) = normal(sent.get("iotHubHostName")) {
        let theirs = normal(shown.get("iotHubHostName"));
        diff("iotHubHostName", Some(&ours), theirs.as_ref(), &mut out);
    }
    out
}

/// A hub list as a set: host names are case-insensitive and their order means nothing.
fn hubs(v: Option<Value>) -> Option<Value> {
    let Some(Value::Array(a)) = v else { return v };
    let mut s: Vec<String> = a
        .iter()
        .map(|x| {
            x.as_str()
                .map_or_else(|| x.to_string(), str::to_ascii_lowercase)
        })
        .collect();
    s.sort();
    s.dedup();
    Some(json!(s))
}

/// A value as compared: no nulls, no service metadata (`$…`), no empty objects or arrays.
fn normal(v: Option<&Value>) -> Option<Value> {
    match v? {
        Value::Null => None,
        Value::Object(m) => {
            let kept: Map<String, Value> = m
                .iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .filter_map(|(k, v)| normal(Some(v)).map(|v| (k.clone(), v)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        Value::Array(a) if a.is_empty() => None,
        other => Some(other.clone()),
    }
}

/// Differences between two normalised values, by dotted field path.
fn diff(path: &str, ours: Option<&Value>, theirs: Option<&Value>, out: &mut Vec<String>) {
    match (ours, theirs) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                diff(&format!("{path}.{k}"), a.get(k), b.get(k), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: sent {}, DPS holds {}", show(a), show(b))),
    }
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "nothing".into(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 80 {
                format!("{}…", s.chars().take(80).collect::<String>())
            } else {
                s
            }
        }
    }
}

/// Whether `held` (an attestation as DPS shows it) carries symmetric key values.
pub(super) fn shows_keys(held: &Value) -> bool {
    let k = &held["symmetricKey"];
    k["primaryKey"].is_string() || k["secondaryKey"].is_string()
}

/// Every attestation difference between the attestation sent and `held` (from a GET, a query
/// page or the attestation mechanism). Symmetric keys are compared only when `held` shows
/// them (the attestation mechanism); values are never named.
pub(super) fn attestation(sent: &Value, held: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if sent["type"] != held["type"] {
        out.push(format!(
            "attestation.type: sent {}, DPS holds {}",
            sent["type"], held["type"]
        ));
        return out;
    }
    match sent["type"].as_str() {
        Some("symmetricKey") if shows_keys(held) => {
            for k in ["primaryKey", "secondaryKey"] {
                // A key never sent (recorded by an older station) is not ours to compare.
                let ours = &sent["symmetricKey"][k];
                if !ours.is_null() && *ours != held["symmetricKey"][k] {
                    out.push(format!("attestation.symmetricKey.{k} differs"));
                }
            }
        }
        Some("x509") => x509(sent, held, &mut out),
        Some("tpm") => {
            for k in ["endorsementKey", "storageRootKey"] {
                let ours = &sent["tpm"][k];
                if !ours.is_null() && bytes(ours) != bytes(&held["tpm"][k]) {
                    out.push(format!("attestation.tpm.{k} differs"));
                }
            }
        }
        _ => {}
    }
    out
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    let s: String = v.as_str()?.split_whitespace().collect();
    B64.decode(s).ok()
}

/// The device certificate: the PEM when DPS shows it, else its SHA-256 thumbprint; no
/// secondary certificate the station did not send.
fn x509(sent: &Value, held: &Value, out: &mut Vec<String>) {
    let certs = &held["x509"]["clientCertificates"];
    let ours = sent["x509"]["clientCertificates"]["primary"]["certificate"]
        .as_str()
        .unwrap_or("");
    let primary = &certs["primary"];
    let same = match primary["certificate"].as_str() {
        Some(pem) => squeeze(pem) == squeeze(ours),
        None => primary["info"]["sha256Thumbprint"]
            .as_str()
            .is_some_and(|t| Some(t.to_ascii_uppercase()) == thumbprint(ours)),
    };
    if !same {
        out.push("attestation.x509.clientCertificates.primary differs".into());
    }
    if normal(certs.get("secondary")).is_some() {
        out.push(
            "attestation.x509.clientCertificates.secondary: sent nothing, DPS holds a certificate"
                .into(),
        );
    }
    for other in ["signingCertificates", "caReferences"] {
        if normal(held["x509"].get(other)).is_some() {
            out.push(format!(
                "attestation.x509.{other}: sent nothing, DPS holds some"
            ));
        }
    }
}

fn squeeze(s: &str) -> String {
    s.split_whitespace().collect()
}

/// Uppercase hex SHA-256 of the first certificate of a PEM text (the device certificate).
pub(super) fn thumbprint(pem: &str) -> Option<String> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = B64.decode(squeeze(&body)).ok()?;
    Some(
        Sha256::digest(der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsent_fields_are_compared_with_what_dps_fills_in() {
        let sent = json!({"registrationId": "a", "capabilities": {"iotEdge": false},
            "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": true},
            "iotHubs": ["Hub-B", "hub-a"], "initialTwin": {"tags": {"line": 3}}});
        let shown = json!({"registrationId": "A", "provisioningStatus": "enabled",
            "capabilities": {"iotEdge": false},
            "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": true},
            "iotHubs": ["hub-a", "hub-b"], "initialTwin": {"tags": {"line": 3},
            "properties": {"desired": {"$metadata": {}}}}, "etag": "x"});
        assert!(
            fields(&sent, &shown).is_empty(),
            "{:?}",
            fields(&sent, &shown)
        );
        let mut changed = shown.clone();
        changed["provisioningStatus"] = json!("disabled");
        changed["reprovisionPolicy"]["migrateDeviceData"] = json!(false);
        changed["iotHubs"] = json!(["hub-c"]);
        changed["initialTwin"]["tags"]["line"] = json!(4);
        changed["allocationPolicy"] = json!("static");
        let d = fields(&sent, &changed);
        assert_eq!(d.len(), 5, "{d:?}");
        assert!(
            d.contains(&r#"provisioningStatus: sent "enabled", DPS holds "disabled""#.to_string())
        );
        assert!(d.contains(
            &"reprovisionPolicy.migrateDeviceData: sent true, DPS holds false".to_string()
        ));
        assert!(d.contains(&r#"allocationPolicy: sent nothing, DPS holds "static""#.to_string()));
        assert!(d.iter().any(|x| x.starts_with("initialTwin.tags.line:")));
        assert!(d.iter().any(|x| x.starts_with("iotHubs:")));
    }

    #[test]
    fn keys_are_compared_only_when_shown_and_never_named() {
        let sent = json!({"type": "symmetricKey", "symmetricKey": {"primaryKey": "k1", "secondaryKey": "k2"}});
        let get_view = json!({"type": "symmetricKey", "symmetricKey": {}});
        assert!(!shows_keys(&get_view));
        assert!(
            attestation(&sent, &get_view).is_empty(),
            "a GET cannot tell"
        );
        let mech = json!({"type": "symmetricKey", "symmetricKey": {"primaryKey": "k1", "secondaryKey": "zz"}});
        let d = attestation(&sent, &mech);
        assert_eq!(d, vec!["attestation.symmetricKey.secondaryKey differs"]);
        assert!(!d[0].contains("zz") && !d[0].contains("k2"));
        let primary_only = json!({"type": "symmetricKey", "symmetricKey": {"primaryKey": "k1"}});
        assert!(
            attestation(&primary_only, &mech).is_empty(),
            "a key never sent (an older station's upload) is not compared"
        );
        let tpm = json!({"type": "tpm", "tpm": {"endorsementKey": "AAE="}});
        assert_eq!(attestation(&sent, &tpm).len(), 1);
    }

    #[test]
    fn x509_by_thumbprint_and_tpm_by_bytes() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
        let t = thumbprint(pem).unwrap();
        let sent = json!({"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}});
        let info = json!({"type": "x509", "x509": {"clientCertificates": {"primary": {"info": {"sha256Thumbprint": t.to_lowercase()}}}}});
        assert!(attestation(&sent, &info).is_empty());
        let mut two = info.clone();
        two["x509"]["clientCertificates"]["secondary"] =
            json!({"info": {"sha256Thumbprint": "AB"}});
        assert_eq!(attestation(&sent, &two).len(), 1);
        let other = json!({"type": "x509", "x509": {"clientCertificates": {"primary": {"info": {"sha256Thumbprint": "00"}}}}});
        assert_eq!(attestation(&sent, &other).len(), 1);
        let ek = json!({"type": "tpm", "tpm": {"endorsementKey": "AAEC AwQ="}});
        let held = json!({"type": "tpm", "tpm": {"endorsementKey": "AAECAwQ="}});
        assert!(attestation(&ek, &held).is_empty());
        let moved = json!({"type": "tpm", "tpm": {"endorsementKey": "AAECAwU="}});
        assert_eq!(
            attestation(&ek, &moved),
            vec!["attestation.tpm.endorsementKey differs"]
        );
    }
}
