//! Loading `station.toml`: parse, locate every error at `file:line:column`, validate.

use super::model::*;
use crate::domain::registration_id::Template;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Environment variable that selects another configuration file.
pub const CONFIG_ENV: &str = "STATION_CONFIG";
/// The file used when neither `--config` nor `STATION_CONFIG` is given, if it exists...
pub const DEFAULT_CONFIG: &str = "station.toml";
/// ...else the installed station's configuration.
pub const SYSTEM_CONFIG: &str = "/etc/provisioning-station/station.toml";

/// Load and validate the configuration from `path` (or `STATION_CONFIG`, or `./station.toml`).
pub fn load(path: Option<&Path>) -> Result<Config> {
    let path: PathBuf = match path {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os(CONFIG_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let local = PathBuf::from(DEFAULT_CONFIG);
                if !local.exists() && Path::new(SYSTEM_CONFIG).exists() {
                    PathBuf::from(SYSTEM_CONFIG)
                } else {
                    local
                }
            }),
    };
    let text = std::fs::read_to_string(&path).map_err(|source| Error::ConfigUnreadable {
        path: path.clone(),
        source,
    })?;
    let mut config = load_str(&text, &path)?;
    let abs = std::path::absolute(&path).unwrap_or(path.clone());
    config.base_dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    config.source_path = path;
    Ok(config)
}

/// Parse and validate configuration text; `path` is only used in messages.
pub fn load_str(text: &str, path: &Path) -> Result<Config> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        let key = e.span().map(|s| key_at(text, s.start)).unwrap_or_default();
        Error::ConfigInvalid {
            location: format!("{}:{line}:{col}", path.display()),
            key,
            message: e.message().trim().to_string(),
        }
    })?;
    let mut config = config;
    validate(&config).map_err(|(key, message)| {
        let (line, col) = locate(text, &key).unwrap_or((1, 1));
        Error::ConfigInvalid {
            location: format!("{}:{line}:{col}", path.display()),
            key,
            message,
        }
    })?;
    if let Some(label) = config.label.as_mut() {
        super::label::load_template(label, text, path, &|key| locate(text, key))?;
    }
    Ok(config)
}

type Invalid = (String, String);

fn bad(key: &str, message: impl Into<String>) -> Invalid {
    (key.to_string(), message.into())
}

fn validate(c: &Config) -> std::result::Result<(), Invalid> {
    validate_station_and_dps(c)?;
    validate_registration_and_attestation(c)?;
    validate_upload(c)?;
    validate_tpm(c)?;
    validate_serial(c)?;
    super::fixtures::check(&c.fixtures)?;
    c.device.smp.check()?;
    if let Some(label) = &c.label {
        super::label::check(label)?;
    }
    if let Some(fleet) = &c.fleet {
        super::fleet::check(fleet)?;
        super::fleet::check_uploads(fleet, &c.attestation)?;
    }
    Ok(())
}

/// The checks serde cannot express, for `[station]` and `[dps]`.
fn validate_station_and_dps(c: &Config) -> std::result::Result<(), Invalid> {
    if c.station.id.trim().is_empty() {
        return Err(bad("station.id", "expected a non-empty station name"));
    }
    let scope = &c.dps.id_scope;
    if scope.is_empty() || scope.len() > 32 || !scope.chars().all(|ch| ch.is_ascii_alphanumeric()) {
        return Err(bad(
            "dps.id_scope",
            format!(
                "expected the DPS ID scope (letters and digits, e.g. 0ne00012345), got `{scope}`"
            ),
        ));
    }
    if !is_host_name(&c.dps.global_endpoint) {
        return Err(bad(
            "dps.global_endpoint",
            format!(
                "expected a host name such as global.azure-devices-provisioning.net, got `{}`",
                c.dps.global_endpoint
            ),
        ));
    }
    for hub in &c.dps.iot_hubs {
        if !is_host_name(hub) {
            return Err(bad(
                "dps.iot_hubs",
                format!("expected IoT hub host names (name.azure-devices.net), got `{hub}`"),
            ));
        }
    }
    if let Some(h) = &c.dps.iot_hub_host_name
        && !is_host_name(h)
    {
        return Err(bad(
            "dps.iot_hub_host_name",
            format!("expected an IoT hub host name, got `{h}`"),
        ));
    }
    if c.dps.allocation_policy == Some(AllocationPolicy::Static) && c.dps.iot_hubs.len() != 1 {
        return Err(bad(
            "dps.iot_hubs",
            "allocation_policy = \"static\" needs exactly one hub in iot_hubs",
        ));
    }
    if c.dps.allocation_policy == Some(AllocationPolicy::Custom) {
        return Err(bad(
            "dps.allocation_policy",
            "\"custom\" allocation needs a webhook this station does not configure; use hashed, geoLatency or static",
        ));
    }
    Ok(())
}

/// The checks serde cannot express, for `[registration]` and `[attestation]`.
fn validate_registration_and_attestation(c: &Config) -> std::result::Result<(), Invalid> {
    let template =
        Template::parse(&c.registration.template).map_err(|m| bad("registration.template", m))?;
    if !template.is_per_device() {
        return Err(bad(
            "registration.template",
            "expected a template containing {serial} or {scan}, so that every device gets its own ID",
        ));
    }
    match c.attestation.mode {
        AttestationMode::X509 | AttestationMode::Tpm => {}
        AttestationMode::Symmetric => {
            let Some(s) = &c.attestation.symmetric else {
                return Err(bad(
                    "attestation.mode",
                    "mode \"symmetric\" needs an [attestation.symmetric] section",
                ));
            };
            if s.keys == SymmetricKeys::GroupDerived
                && s.group_key_file.is_none()
                && s.group_key_env.is_none()
            {
                return Err(bad(
                    "attestation.symmetric.keys",
                    "\"group-derived\" keys need group_key_file or group_key_env",
                ));
            }
        }
    }
    if c.attestation.mode == AttestationMode::X509 {
        match &c.attestation.x509 {
            None => {
                return Err(bad(
                    "attestation.mode",
                    "mode \"x509\" needs an [attestation.x509] section",
                ));
            }
            Some(x) if x.validity_days == 0 || x.validity_days > 36_500 => {
                return Err(bad(
                    "attestation.x509.validity_days",
                    "expected a number of days from 1 to 36500",
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The checks serde cannot express, for `[upload]`.
fn validate_upload(c: &Config) -> std::result::Result<(), Invalid> {
    if let Some(u) = &c.upload {
        if !is_host_name(&u.host) {
            return Err(bad(
                "upload.host",
                format!(
                    "expected the DPS service host (name.azure-devices-provisioning.net), got `{}`",
                    u.host
                ),
            ));
        }
        if let Some(e) = &u.endpoint
            && !(e.starts_with("https://") || e.starts_with("http://"))
        {
            return Err(bad(
                "upload.endpoint",
                format!(
                    "expected a base URL such as https://my-dps.azure-devices-provisioning.net, got `{e}`"
                ),
            ));
        }
        if u.policy_key_file.is_none() && u.policy_key_env.is_none() {
            return Err(bad(
                "upload.policy_name",
                "the policy key must come from policy_key_file or policy_key_env (never inline)",
            ));
        }
        if u.rate_per_minute == 0 || u.rate_per_minute > 1000 {
            return Err(bad(
                "upload.rate_per_minute",
                "expected 1 to 1000 calls per minute (the DPS quota is 1,000 operations per minute)",
            ));
        }
        if u.query_page_size == 0 || u.query_page_size > 1000 {
            return Err(bad(
                "upload.query_page_size",
                "expected 1 to 1000 enrollments per query page",
            ));
        }
        if u.token_lifetime_s < 60 {
            return Err(bad(
                "upload.token_lifetime_s",
                "expected at least 60 seconds",
            ));
        }
    }
    Ok(())
}

/// The checks serde cannot express, for `[attestation.tpm]`.
fn validate_tpm(c: &Config) -> std::result::Result<(), Invalid> {
    if c.attestation.mode == AttestationMode::Tpm {
        let Some(t) = &c.attestation.tpm else {
            return Err(bad(
                "attestation.mode",
                "mode \"tpm\" needs an [attestation.tpm] section",
            ));
        };
        if t.source == TpmReach::Tcti && t.tcti.as_deref().is_none_or(str::is_empty) {
            return Err(bad(
                "attestation.tpm.source",
                "source = \"tcti\" needs tcti, e.g. \"device:/dev/tpmrm0\" or \"swtpm:host=127.0.0.1,port=2321\"",
            ));
        }
        if t.ek_certificate != EkCertPolicy::Off && t.ek_roots.is_empty() {
            return Err(bad(
                "attestation.tpm.ek_certificate",
                "checking EK certificates needs ek_roots (the TPM manufacturers' root bundle), or ek_certificate = \"off\"",
            ));
        }
    }
    Ok(())
}

/// The checks serde cannot express, for `[serial]` and `[simulator]`.
fn validate_serial(c: &Config) -> std::result::Result<(), Invalid> {
    let port = c.serial.port.as_str();
    if port != "sim" && port != "auto" && !port.starts_with('/') {
        return Err(bad(
            "serial.port",
            format!("expected a device path (/dev/ttyUSB0), \"sim\" or \"auto\", got `{port}`"),
        ));
    }
    for id in &c.serial.usb_ids {
        if parse_usb_id(id).is_none() {
            return Err(bad(
                "serial.usb_ids",
                format!("expected VID:PID in hex (e.g. \"0403:6001\"), got `{id}`"),
            ));
        }
    }
    if port == "auto" && c.serial.usb_ids.is_empty() {
        return Err(bad(
            "serial.usb_ids",
            "port = \"auto\" needs at least one VID:PID in usb_ids",
        ));
    }
    if c.serial.baud == 0 {
        return Err(bad(
            "serial.baud",
            "expected a baud rate above 0, e.g. 115200",
        ));
    }
    if c.serial.response_timeout_ms == 0 || c.serial.commit_timeout_ms == 0 {
        return Err(bad(
            "serial.response_timeout_ms",
            "expected timeouts above 0 milliseconds",
        ));
    }
    if c.serial.retries > 20 {
        return Err(bad("serial.retries", "expected at most 20 retries"));
    }
    if c.simulator.serial_prefix.is_empty()
        || !c
            .simulator
            .serial_prefix
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
    {
        return Err(bad(
            "simulator.serial_prefix",
            "expected letters, digits or -",
        ));
    }
    Ok(())
}

/// Parse `VID:PID` in hex.
pub fn parse_usb_id(s: &str) -> Option<(u16, u16)> {
    let (v, p) = s.split_once(':')?;
    if v.len() != 4 || p.len() != 4 {
        return None;
    }
    Some((
        u16::from_str_radix(v, 16).ok()?,
        u16::from_str_radix(p, 16).ok()?,
    ))
}

fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The dotted key whose value or name starts at `offset` (best effort, for messages).
fn key_at(text: &str, offset: usize) -> String {
    let mut table = String::new();
    let mut upto = 0;
    for line in text.split_inclusive('\n') {
        let end = upto + line.len();
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            table = h
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
        }
        if offset < end {
            if let Some((k, _)) = t.split_once('=')
                && !t.starts_with('[')
            {
                let k = k.trim();
                return if table.is_empty() {
                    k.to_string()
                } else {
                    format!("{table}.{k}")
                };
            }
            return table;
        }
        upto = end;
    }
    table
}

/// Where a dotted key is written: its own line, else its table's header.
fn locate(text: &str, dotted: &str) -> Option<(usize, usize)> {
    let (table, leaf) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let mut current = String::new();
    let mut header = None;
    // `fixture[2]` is the third `[[fixture]]` table.
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some(h) = t.strip_prefix('[') {
            current = h
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if t.starts_with("[[") {
                let n = seen.entry(current.clone()).or_insert(0);
                current = format!("{current}[{n}]");
                *n += 1;
            }
            if current == table {
                header = Some((i + 1, line.len() - t.len() + 1));
            }
            continue;
        }
        if current == table
            && let Some(rest) = t.strip_prefix(leaf)
            && rest.trim_start().starts_with('=')
        {
            return Some((i + 1, line.len() - t.len() + 1));
        }
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_keys_and_headers() {
        let text = "[station]\nid = \"a\"\n\n[dps]\n  id_scope = \"x\"\n";
        assert_eq!(locate(text, "dps.id_scope"), Some((5, 3)));
        assert_eq!(locate(text, "dps.iot_hubs"), Some((4, 1)));
        assert_eq!(locate(text, "serial.port"), None);
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(key_at(text, text.find("\"x\"").unwrap()), "dps.id_scope");
    }

    #[test]
    fn usb_ids_parse() {
        assert_eq!(parse_usb_id("0403:6001"), Some((0x0403, 0x6001)));
        assert_eq!(parse_usb_id("403:6001"), None);
        assert_eq!(parse_usb_id("zzzz:6001"), None);
    }
}
