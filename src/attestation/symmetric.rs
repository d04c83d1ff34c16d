//! Symmetric-key attestation: per-device keys derived from the enrollment-group key, or random
//! individual keys.
//!
//! Derivation is exactly DPS's (and `az iot dps enrollment-group compute-device-key`'s):
//! `base64(HMAC-SHA256(key = base64decode(groupKey), msg = utf8(registrationId)))`.
//! Group keys are read from a file or an environment variable and never logged or stored; a
//! derived key is never stored (it can be re-derived); individual keys are stored because DPS
//! needs them in the enrollment. DPS is always sent both keys: a derived enrollment's secondary
//! key comes from the secondary group key when one is configured, else it is a random key made
//! when the enrollment is recorded and stored like an individual key.

use super::{CredentialSource, Inspection, Requirement};
use crate::config::{SymmetricKeys, SymmetricSection};
use crate::device::{Capability, Device};
use crate::domain::{AttestationKind, Credential, Enrollment, Secret};
use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

/// Bytes in a random individual key (DPS accepts 32 to 64 bytes).
pub const INDIVIDUAL_KEY_BYTES: usize = 32;

/// A group key, decoded. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct GroupKey {
    mac: HmacSha256,
    id: String,
}

impl std::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GroupKey({})", self.id)
    }
}

impl GroupKey {
    /// Decode a base64 group key; `what` names its source for messages.
    pub fn from_base64(text: &str, what: &str) -> Result<Self> {
        let bytes = B64.decode(text.trim()).map_err(|e| Error::Secret {
            what: what.to_string(),
            message: format!("not valid base64 ({e})"),
        })?;
        if bytes.len() < 16 {
            return Err(Error::Secret {
                what: what.to_string(),
                message: format!(
                    "the key is {} bytes long; DPS group keys are 32 to 64 bytes",
                    bytes.len()
                ),
            });
        }
        let digest = Sha256::digest(&bytes);
        let id = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        let mac = HmacSha256::new_from_slice(&bytes).expect("HMAC accepts any key length");
        Ok(GroupKey { mac, id })
    }

    /// A short, non-secret fingerprint (first 6 bytes of SHA-256 of the key) stored with
    /// enrollments so that a later export can tell the key changed.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The device key for `registration_id`, base64.
    pub fn derive(&self, registration_id: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(registration_id.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }
}

/// Fresh random key from the OS CSPRNG, base64.
pub fn random_key() -> Result<String> {
    let mut bytes = [0u8; INDIVIDUAL_KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| Error::Secret {
        what: "OS random number generator".into(),
        message: e.to_string(),
    })?;
    Ok(B64.encode(bytes))
}

/// A derived enrollment's secondary key, and whether it was derived. What the device was given
/// stays its secondary: for an enrollment already recorded under this group key (`kept`), its
/// stored (random) key, else one derived from the secondary group key, else none (recorded by
/// an older station without one). Only a new enrollment gets a new random key.
fn secondary_key(
    kept: Option<Option<&Secret>>,
    secondary_group: Option<&GroupKey>,
    registration_id: &str,
) -> Result<(Option<Secret>, bool)> {
    Ok(match (kept, secondary_group) {
        (Some(Some(stored)), _) => (Some(stored.clone()), false),
        (_, Some(g)) => (Some(Secret(g.derive(registration_id))), true),
        (Some(None), None) => (None, false),
        (None, None) => (Some(Secret(random_key()?)), false),
    })
}

/// The keys configured in `[attestation.symmetric]`, loaded.
#[derive(Debug, Clone)]
pub struct SymmetricKeySource {
    pub mode: SymmetricKeys,
    pub primary: Option<GroupKey>,
    pub secondary: Option<GroupKey>,
}

impl SymmetricKeySource {
    /// Load the group keys named in the section (environment variable first, then file).
    pub fn load(
        section: &SymmetricSection,
        resolve: impl Fn(&Path) -> std::path::PathBuf,
    ) -> Result<Self> {
        let primary = read_key(
            section.group_key_env.as_deref(),
            section.group_key_file.as_deref().map(&resolve).as_deref(),
            "group key",
        )?;
        let secondary = read_key(
            section.secondary_group_key_env.as_deref(),
            section
                .secondary_group_key_file
                .as_deref()
                .map(&resolve)
                .as_deref(),
            "secondary group key",
        )?;
        if section.keys == SymmetricKeys::GroupDerived && primary.is_none() {
            return Err(Error::Secret {
                what: "group key".into(),
                message: format!(
                    "neither environment variable {} nor file {} is set",
                    section.group_key_env.as_deref().unwrap_or("(none)"),
                    section
                        .group_key_file
                        .as_deref()
                        .map(|p| resolve(p).display().to_string())
                        .unwrap_or("(none)".into())
                ),
            });
        }
        Ok(Self {
            mode: section.keys,
            primary,
            secondary,
        })
    }
}

/// Read a key file: the key text with `#` comment lines (which label demo and test keys)
/// removed. `what` names the key in messages; the key itself never appears in them.
pub fn read_key_file(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Secret {
        what: format!("{what} file {}", path.display()),
        message: e.to_string(),
    })?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect())
}

impl SymmetricKeySource {
    /// The group keys of `[attestation.symmetric]`, if the section is there (export and upload
    /// re-derive keys with them whatever the current attestation mode).
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Self>> {
        config
            .attestation
            .symmetric
            .as_ref()
            .map(|s| Self::load(s, |p| config.resolve(p)))
            .transpose()
    }
}

fn read_key(env: Option<&str>, file: Option<&Path>, what: &str) -> Result<Option<GroupKey>> {
    if let Some(var) = env
        && let Ok(v) = std::env::var(var)
        && !v.trim().is_empty()
    {
        return GroupKey::from_base64(&v, &format!("{what} from environment variable {var}"))
            .map(Some);
    }
    match file {
        None => Ok(None),
        Some(path) => {
            let key = read_key_file(path, what)?;
            GroupKey::from_base64(&key, &format!("{what} file {}", path.display())).map(Some)
        }
    }
}

impl CredentialSource for SymmetricKeySource {
    fn kind(&self) -> AttestationKind {
        AttestationKind::SymmetricKey
    }

    fn requires(&self) -> Requirement {
        Requirement {
            capability: Capability::SymmetricKey,
            mode: "symmetric keys",
        }
    }

    fn obtain(
        &self,
        registration_id: &str,
        existing: Option<&Enrollment>,
        _device: &mut dyn Device,
        _inspection: Option<&Inspection>,
    ) -> Result<Credential> {
        Ok(match self.mode {
            SymmetricKeys::GroupDerived => {
                let group = self
                    .primary
                    .as_ref()
                    .expect("loading refuses group-derived mode without a group key");
                let kept = existing
                    .filter(|e| e.group_key_id.as_deref() == Some(group.id()))
                    .map(|e| e.secondary_key.as_ref());
                let (secondary, secondary_derived) =
                    secondary_key(kept, self.secondary.as_ref(), registration_id)?;
                Credential::SymmetricKey {
                    primary: Secret(group.derive(registration_id)),
                    secondary,
                    group_key_id: Some(group.id().to_string()),
                    secondary_derived,
                }
            }
            // An individual enrollment keeps its keys: a re-run writes the same ones.
            SymmetricKeys::Individual => match existing.and_then(|e| e.primary_key.clone()) {
                Some(primary) => Credential::SymmetricKey {
                    primary,
                    secondary: existing.and_then(|e| e.secondary_key.clone()),
                    group_key_id: None,
                    secondary_derived: false,
                },
                None => Credential::SymmetricKey {
                    primary: Secret(random_key()?),
                    secondary: Some(Secret(random_key()?)),
                    group_key_id: None,
                    secondary_derived: false,
                },
            },
        })
    }

    fn still_valid(&self, existing: &Enrollment) -> bool {
        // A derived key is still right if it came from the configured group key.
        existing.primary_key.is_some()
            || self
                .primary
                .as_ref()
                .is_some_and(|g| existing.group_key_id.as_deref() == Some(g.id()))
    }

    fn reproducible(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference vector computed independently with Python:
    /// base64.b64encode(hmac.new(base64.b64decode(K), b"sn-0001", hashlib.sha256).digest())
    #[test]
    fn derivation_matches_reference_vector() {
        let k = GroupKey::from_base64(
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==",
            "test",
        )
        .unwrap();
        assert_eq!(
            k.derive("sn-0001"),
            include_str!("../../tests/fixtures/derive-sn-0001.txt").trim()
        );
    }

    #[test]
    fn bad_group_keys_are_refused_without_echoing_them() {
        let e = GroupKey::from_base64("not base64!!", "group key file x").unwrap_err();
        assert_eq!(e.code(), "config.secret");
        assert!(!e.to_string().contains("not base64!!"));
        assert!(GroupKey::from_base64("AAAA", "k").is_err());
    }

    #[test]
    fn random_keys_are_fresh_and_decode_to_32_bytes() {
        let a = random_key().unwrap();
        let b = random_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(B64.decode(a).unwrap().len(), INDIVIDUAL_KEY_BYTES);
    }

    #[test]
    fn a_recorded_secondary_key_is_kept_and_only_a_new_enrollment_gets_a_random_one() {
        let g = GroupKey::from_base64(&B64.encode([9u8; 32]), "secondary").unwrap();
        let stored = Secret("c3RvcmVk".into());
        // Stored wins, even over a secondary group key configured since.
        let (k, derived) = secondary_key(Some(Some(&stored)), Some(&g), "d1").unwrap();
        assert_eq!((k.unwrap().0, derived), ("c3RvcmVk".to_string(), false));
        // Recorded without one (an older station): still without one, so the device's digest
        // is reproduced.
        let (k, _) = secondary_key(Some(None), None, "d1").unwrap();
        assert!(k.is_none());
        let (k, derived) = secondary_key(Some(None), Some(&g), "d1").unwrap();
        assert_eq!((k.unwrap().0, derived), (g.derive("d1"), true));
        // New: derived when a secondary group key is configured, else random and fresh.
        let (a, derived) = secondary_key(None, None, "d1").unwrap();
        let (b, _) = secondary_key(None, None, "d1").unwrap();
        assert!(!derived);
        assert_ne!(a.unwrap().0, b.unwrap().0);
    }

    #[test]
    fn debug_does_not_leak_key() {
        let k = GroupKey::from_base64(&B64.encode([7u8; 32]), "k").unwrap();
        assert!(format!("{k:?}").starts_with("GroupKey("));
    }
}
