//! IndividualEnrollment JSON, as the DPS service API (2021-10-01) defines it.
//!
//! Only fields the service accepts on create are emitted (never `registrationState`, `etag`,
//! timestamps or certificate `info`). The `[dps]` options are the same for every device of a
//! batch, so they are serialised once ([`DpsOptions::fragment`]) and spliced into each
//! enrollment: the export of a million enrollments does not re-serialise them a million times.

use crate::config::DpsSection;
use crate::domain::AttestationKind;
use serde::{Deserialize, Serialize};

/// The enrollment options from `[dps]`, in the service's spelling. Stored with each batch so
/// that a re-export reproduces identical bytes whatever station.toml says today.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DpsOptions {
    pub capabilities: Capabilities,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iot_hub_host_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_twin: Option<InitialTwin>,
    pub provisioning_status: String,
    pub reprovision_policy: ReprovisionPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocation_policy: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub iot_hubs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    pub iot_edge: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReprovisionPolicy {
    pub update_hub_assignment: bool,
    pub migrate_device_data: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InitialTwin {
    #[serde(skip_serializing_if = "serde_json::Map::is_empty", default)]
    pub tags: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub properties: Option<TwinProperties>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TwinProperties {
    pub desired: serde_json::Map<String, serde_json::Value>,
}

impl DpsOptions {
    /// The options `[dps]` asks for.
    pub fn from_config(d: &DpsSection) -> Self {
        let (update_hub_assignment, migrate_device_data) = d.reprovision.flags();
        let twin = &d.initial_twin;
        let initial_twin =
            (!twin.tags.is_empty() || !twin.desired.is_empty()).then(|| InitialTwin {
                tags: twin.tags.clone(),
                properties: (!twin.desired.is_empty()).then(|| TwinProperties {
                    desired: twin.desired.clone(),
                }),
            });
        DpsOptions {
            capabilities: Capabilities {
                iot_edge: d.iot_edge,
            },
            iot_hub_host_name: d.iot_hub_host_name.clone(),
            initial_twin,
            provisioning_status: serde_json::to_value(d.provisioning_status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "enabled".into()),
            reprovision_policy: ReprovisionPolicy {
                update_hub_assignment,
                migrate_device_data,
            },
            allocation_policy: d.allocation_policy.and_then(|p| {
                serde_json::to_value(p)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
            }),
            iot_hubs: d.iot_hubs.clone(),
        }
    }

    /// The options as JSON object members without braces, ready to splice.
    pub fn fragment(&self) -> String {
        let s = serde_json::to_string(self).expect("options serialise");
        s[1..s.len() - 1].to_string()
    }
}

/// The attestation part of an enrollment.
#[derive(Debug, Clone)]
pub enum Attestation<'a> {
    SymmetricKey {
        primary: &'a str,
        secondary: Option<&'a str>,
    },
    /// The device certificate (PEM), as `clientCertificates.primary.certificate`.
    X509 { certificate: &'a str },
    /// base64 TPM2B_PUBLIC of the EK (and of the SRK).
    Tpm {
        endorsement_key: &'a str,
        storage_root_key: Option<&'a str>,
    },
}

impl Attestation<'_> {
    pub fn kind(&self) -> AttestationKind {
        match self {
            Attestation::SymmetricKey { .. } => AttestationKind::SymmetricKey,
            Attestation::X509 { .. } => AttestationKind::X509,
            Attestation::Tpm { .. } => AttestationKind::Tpm,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SymmetricKeyJson<'a> {
    primary_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    secondary_key: Option<&'a str>,
}

/// Append one IndividualEnrollment object to `out`.
pub fn write_enrollment(
    out: &mut Vec<u8>,
    registration_id: &str,
    attestation: &Attestation<'_>,
    options_fragment: &str,
) {
    out.extend_from_slice(b"{\"registrationId\":");
    serde_json::to_writer(&mut *out, registration_id).expect("string serialises");
    out.extend_from_slice(b",\"attestation\":{\"type\":\"");
    out.extend_from_slice(attestation.kind().as_str().as_bytes());
    out.extend_from_slice(b"\"");
    match attestation {
        Attestation::SymmetricKey { primary, secondary } => {
            out.extend_from_slice(b",\"symmetricKey\":");
            serde_json::to_writer(
                &mut *out,
                &SymmetricKeyJson {
                    primary_key: primary,
                    secondary_key: *secondary,
                },
            )
            .expect("keys serialise");
        }
        Attestation::X509 { certificate } => {
            out.extend_from_slice(
                b",\"x509\":{\"clientCertificates\":{\"primary\":{\"certificate\":",
            );
            serde_json::to_writer(&mut *out, certificate).expect("string serialises");
            out.extend_from_slice(b"}}}");
        }
        Attestation::Tpm {
            endorsement_key,
            storage_root_key,
        } => {
            out.extend_from_slice(b",\"tpm\":{\"endorsementKey\":");
            serde_json::to_writer(&mut *out, endorsement_key).expect("string serialises");
            if let Some(srk) = storage_root_key {
                out.extend_from_slice(b",\"storageRootKey\":");
                serde_json::to_writer(&mut *out, srk).expect("string serialises");
            }
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"}");
    if !options_fragment.is_empty() {
        out.push(b',');
        out.extend_from_slice(options_fragment.as_bytes());
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spliced_enrollment_is_valid_json_with_options() {
        let d: crate::config::DpsSection = toml::from_str(
            "id_scope = \"0ne00000001\"\nallocation_policy = \"static\"\niot_hubs = [\"h.azure-devices.net\"]\nreprovision = \"never\"\n[initial_twin.tags]\nenv = \"prod\"\n[initial_twin.desired]\ninterval = 30\n",
        )
        .unwrap();
        let o = DpsOptions::from_config(&d);
        let mut out = Vec::new();
        write_enrollment(
            &mut out,
            "sn-1",
            &Attestation::SymmetricKey {
                primary: "a2V5",
                secondary: None,
            },
            &o.fragment(),
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["registrationId"], "sn-1");
        assert_eq!(v["attestation"]["type"], "symmetricKey");
        assert_eq!(v["attestation"]["symmetricKey"]["primaryKey"], "a2V5");
        assert!(
            v["attestation"]["symmetricKey"]
                .get("secondaryKey")
                .is_none()
        );
        assert_eq!(v["allocationPolicy"], "static");
        assert_eq!(v["reprovisionPolicy"]["updateHubAssignment"], false);
        assert_eq!(v["initialTwin"]["tags"]["env"], "prod");
        assert_eq!(v["initialTwin"]["properties"]["desired"]["interval"], 30);
        assert_eq!(v["provisioningStatus"], "enabled");
    }
}
