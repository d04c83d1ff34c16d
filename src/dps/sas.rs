//! Shared Access Signature tokens for the DPS service API.
//!
//! `SharedAccessSignature sr={sr}&sig={sig}&se={expiry}&skn={policy}` where `sr` is the
//! URL-encoded lowercase host, the string to sign is `sr + "\n" + expiry` (unix seconds), and
//! `sig` is the URL-encoded base64 HMAC-SHA256 of it under the base64-decoded policy key. The
//! key is never logged; [`SasSigner`]'s `Debug` does not show it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Percent-encode everything but RFC 3986 unreserved characters (as `encodeURIComponent`).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A SAS token for `host`, valid until `expiry` (unix seconds).
pub fn token(host: &str, policy: &str, key: &[u8], expiry: u64) -> String {
    let sr = url_encode(&host.to_ascii_lowercase());
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{sr}\n{expiry}").as_bytes());
    let sig = url_encode(&B64.encode(mac.finalize().into_bytes()));
    format!(
        "SharedAccessSignature sr={sr}&sig={sig}&se={expiry}&skn={}",
        url_encode(policy)
    )
}

/// The same token with its signature replaced, for printing.
pub fn redact(token: &str) -> String {
    token
        .split('&')
        .map(|part| {
            if part.starts_with("sig=") {
                "sig=<redacted>"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Issues tokens and renews them before they expire.
pub struct SasSigner {
    host: String,
    policy: String,
    key: Vec<u8>,
    lifetime: Duration,
    current: Option<(String, u64)>,
}

impl std::fmt::Debug for SasSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasSigner")
            .field("host", &self.host)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl SasSigner {
    pub fn new(host: &str, policy: &str, key: Vec<u8>, lifetime: Duration) -> Self {
        Self {
            host: host.to_string(),
            policy: policy.to_string(),
            key,
            lifetime,
            current: None,
        }
    }

    /// A token valid for at least a tenth of its lifetime (and a minute) from now.
    pub fn token(&mut self) -> &str {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let margin = (self.lifetime.as_secs() / 10).max(60);
        let fresh = self
            .current
            .as_ref()
            .is_some_and(|(_, expiry)| *expiry > now + margin);
        if !fresh {
            let expiry = now + self.lifetime.as_secs();
            self.current = Some((token(&self.host, &self.policy, &self.key, expiry), expiry));
        }
        &self.current.as_ref().expect("set above").0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference computed independently with Python (hmac, base64, urllib.parse.quote(safe='')).
    #[test]
    fn token_matches_reference() {
        let key = B64
            .decode("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
            .unwrap();
        let t = token(
            "My-DPS.azure-devices-provisioning.net",
            "provisioningserviceowner",
            &key,
            1_800_000_000,
        );
        assert_eq!(t, include_str!("../../tests/fixtures/sas-token.txt").trim());
        let sig = t.split('&').find_map(|p| p.strip_prefix("sig=")).unwrap();
        assert!(redact(&t).contains("sig=<redacted>") && !redact(&t).contains(sig));
    }

    #[test]
    fn signer_renews_before_expiry() {
        let mut s = SasSigner::new("h", "p", vec![1; 32], Duration::from_secs(30));
        // A 30-second lifetime is always within the one-minute margin: every call renews.
        let a = s.token().to_string();
        assert!(a.starts_with("SharedAccessSignature sr=h&sig="));
        let mut long = SasSigner::new("h", "p", vec![1; 32], Duration::from_secs(3600));
        let b = long.token().to_string();
        assert_eq!(long.token(), b, "a fresh token is reused");
    }
}
