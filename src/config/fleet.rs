//! `[fleet]`: the PostgreSQL database a factory's stations share (docs/fleet.md).
//!
//! No `[fleet]` is a standalone station. The password never sits in station.toml: it comes
//! from a file or an environment variable, and a URL carrying one is refused.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[fleet]`: the fleet database and how the station behaves without it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// `postgresql://user@host:port/dbname` (no password) or a libpq key/value string.
    pub url: String,
    /// File holding the role's password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the role's password; wins over the file when set.
    #[serde(default)]
    pub password_env: Option<String>,
    /// `require` (TLS with rustls, the default) or `disable` (a unix socket or a test server).
    #[serde(default)]
    pub sslmode: SslMode,
    /// PEM file of the CA that signed the server's certificate (a private CA); without it the
    /// public web roots are trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// What a station does when the fleet database cannot be reached at a device.
    #[serde(default)]
    pub offline: OfflinePolicy,
    /// Seconds to wait for the server when connecting or claiming.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_s: u64,
    /// Outbox entries sent per transaction by the sync thread.
    #[serde(default = "default_sync_batch")]
    pub sync_batch: u32,
    /// Who uploads the stations' enrollments to DPS: each station, or `station upload --fleet`.
    #[serde(default)]
    pub uploads: FleetUploads,
}

/// `[fleet] uploads`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FleetUploads {
    /// Each station runs `station upload` for its own enrollments.
    #[default]
    Station,
    /// One `station upload --fleet` uploads every station's enrollments; per-station upload
    /// refuses.
    Fleet,
}

/// TLS to the fleet database.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SslMode {
    #[default]
    Require,
    Disable,
}

/// `[fleet] offline`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OfflinePolicy {
    /// Provision on; claims are made when the server returns, and a conflict found then is
    /// flagged on both stations (never merged).
    #[default]
    Allow,
    /// Fail the device with `fleet.unreachable` before anything is written to it.
    Refuse,
}

fn default_connect_timeout() -> u64 {
    3
}
fn default_sync_batch() -> u32 {
    500
}

/// The checks serde cannot express.
pub(super) fn check(f: &FleetSection) -> Result<(), (String, String)> {
    let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
    let url = f.url.trim();
    if !(url.starts_with("postgresql://") || url.starts_with("postgres://") || url.contains('=')) {
        return bad(
            "fleet.url",
            "expected postgresql://USER@HOST:PORT/DBNAME or a key=value connection string",
        );
    }
    let userinfo = url
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
        .and_then(|authority| authority.rsplit_once('@').map(|(u, _)| u));
    if userinfo.is_some_and(|u| u.contains(':')) || url.contains("password=") {
        return bad(
            "fleet.url",
            "the URL carries a password: move it to password_file or password_env (never in station.toml)",
        );
    }
    if f.connect_timeout_s == 0 || f.connect_timeout_s > 60 {
        return bad("fleet.connect_timeout_s", "expected 1 to 60 seconds");
    }
    if f.sync_batch == 0 || f.sync_batch > 10_000 {
        return bad("fleet.sync_batch", "expected 1 to 10000 entries");
    }
    Ok(())
}

/// With `uploads = "fleet"` another host uploads this station's enrollments: refuse the key
/// modes whose keys only this station holds (individual symmetric keys, and the random
/// secondary a group-derived enrollment gets without a secondary group key).
pub(super) fn check_uploads(
    f: &FleetSection,
    attestation: &super::AttestationSection,
) -> Result<(), (String, String)> {
    if f.uploads != FleetUploads::Fleet || attestation.mode != super::AttestationMode::Symmetric {
        return Ok(());
    }
    let Some(s) = &attestation.symmetric else {
        return Ok(());
    };
    let fix = "configure a secondary group key (secondary_group_key_file or _env) so the upload host re-derives both keys, or keep [fleet] uploads = \"station\"";
    if s.keys == super::SymmetricKeys::Individual {
        return Err((
            "fleet.uploads".into(),
            "\"fleet\" cannot upload individual symmetric keys: they never leave this station; use keys = \"group-derived\" with a secondary group key, or keep [fleet] uploads = \"station\"".into(),
        ));
    }
    if s.secondary_group_key_file.is_none() && s.secondary_group_key_env.is_none() {
        return Err((
            "fleet.uploads".into(),
            format!(
                "\"fleet\" with group-derived keys and no secondary group key: each enrollment's secondary key would be random and held only by this station; {fix}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(url: &str) -> FleetSection {
        toml::from_str(&format!("url = \"{url}\"")).unwrap()
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_the_defaults_are_safe() {
        let f = section("postgresql://station@db.factory:5432/provisioning");
        assert_eq!(
            (f.sslmode, f.offline, f.sync_batch),
            (SslMode::Require, OfflinePolicy::Allow, 500)
        );
        assert!(check(&f).is_ok());
        for bad in [
            "postgresql://station:secret@db.factory/provisioning",
            "host=db.factory user=station password=secret",
        ] {
            let (key, message) = check(&section(bad)).unwrap_err();
            assert_eq!(key, "fleet.url");
            assert!(message.contains("password_file"), "{message}");
        }
        assert_eq!(check(&section("mysql://db")).unwrap_err().0, "fleet.url");
    }
}
