//! The workflow's rules that need no state: which serial a device has, whether its read-back
//! matches, why a re-key is refused, whether a failed device still listens; and the fleet
//! claim, made once the credential is known and before it is recorded or written.

use crate::device::Device;
use crate::domain::{Credential, Enrollment, Event, hex};
use crate::error::{Error, Result};
use crate::fleet::{Claimer, claim::Claimed, claim::credential_key};
use std::time::Duration;

/// The device's own digest of what it holds must be the one sent.
pub(super) fn verify(device: &mut dyn Device, expected: &crate::domain::Digest) -> Result<()> {
    match device.held_digest()? {
        Some(d) if d == *expected => Ok(()),
        held => Err(Error::VerifyMismatch {
            expected: hex(expected),
            actual: held
                .map(|d| hex(&d))
                .unwrap_or_else(|| "no identity".into()),
        }),
    }
}

/// A scanned serial, if one was given (blank counts as none).
pub(super) fn scanned(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// The device's serial: reported, or scanned; both must agree when both are there.
pub(super) fn resolve_serial(reported: &str, scan: Option<&str>) -> Result<String> {
    match (reported.trim(), scanned(scan)) {
        ("", None) => Err(Error::NoSerial),
        ("", Some(s)) => Ok(s.to_string()),
        (r, Some(s)) if !r.eq_ignore_ascii_case(s) => Err(Error::SerialMismatch {
            scanned: s.to_string(),
            reported: r.to_string(),
        }),
        (r, _) => Ok(r.to_string()),
    }
}

/// Why writing `credential` to a provisioned device is a re-key, in words.
pub(super) fn rekey_refused(e: &Enrollment, credential: &Credential, wanted: &str) -> Error {
    let cause = match (&e.group_key_id, credential.group_key_id()) {
        (Some(was), Some(now)) if was != now => {
            format!("it was provisioned with group key {was}, the configured group key is {now}")
        }
        _ => {
            "the ID scope, global endpoint or credential differs from what it was provisioned with"
                .into()
        }
    };
    Error::RekeyNotPermitted {
        registration_id: e.registration_id.clone(),
        serial: e.device_serial.clone(),
        recorded: e.device_digest.clone().unwrap_or_default(),
        wanted: wanted.to_string(),
        cause,
    }
}

/// Whether the device still listens after this failure (so it is worth a reset).
pub(super) fn device_responsive(e: &Error) -> bool {
    matches!(
        e,
        Error::Nak { .. }
            | Error::IdentityConflict { .. }
            | Error::VerifyMismatch { .. }
            | Error::SerialMismatch { .. }
            | Error::DuplicateRegistration { .. }
            | Error::RegistrationId { .. }
            | Error::RekeyNotPermitted { .. }
            | Error::ReissueNotPermitted { .. }
            | Error::CapabilityMissing { .. }
            | Error::RequestTooLarge { .. }
            | Error::Interrupted { .. }
            | Error::Smp { .. }
    )
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Why an MCUmgr device cannot serve `mode`, and what to do instead.
fn smp_cannot(mode: &str) -> String {
    let instead = if mode.contains("TPM") {
        "MCUmgr has no TPM command: expose the device's TPM to the station over a TCTI ([attestation.tpm] source = \"tcti\")"
    } else {
        "generating a key pair and a CSR on the device is not part of standard MCUmgr: use protocol v1 firmware, or [attestation.x509] key_source = \"station\" (the private key then crosses the line, docs/smp.md)"
    };
    format!("an MCUmgr (SMP) device cannot do {mode}: {instead}")
}

/// The device advertises what the credential source needs.
pub(super) fn capabilities(
    info: &crate::device::DeviceInfo,
    need: crate::attestation::Requirement,
) -> Result<()> {
    if !info.has(need.capability) && info.protocol == crate::device::smp::PROTOCOL_SMP {
        return Err(Error::Smp {
            code: crate::error::ErrorCode::DeviceSmpUnsupported,
            message: smp_cannot(need.mode),
        });
    }
    if !info.has(need.capability) {
        return Err(Error::CapabilityMissing {
            mode: need.mode,
            capability: need.capability.name(),
            bit: need.capability.bit().trailing_zeros(),
            capabilities: info.capabilities,
        });
    }
    Ok(())
}

/// Claim the registration ID (and the EK hash or certificate thumbprint) fleet-wide, before
/// anything is recorded or written. Another station's claim fails the device; a server away
/// under `offline = "allow"` is a warning (the claim is made when the outbox reaches it).
pub(super) fn claim_in_fleet(
    fleet: Option<&mut Claimer>,
    registration_id: &str,
    credential: &Credential,
    emit: &mut dyn FnMut(Event),
) -> Result<()> {
    let Some(fleet) = fleet else { return Ok(()) };
    let key = credential_key(credential);
    if let Claimed::Offline(reason) = fleet.claim(registration_id, key.as_deref())? {
        emit(Event::Warning {
            message: format!(
                "fleet database unreachable, provisioning offline (the claim is made when it returns): {reason}"
            ),
        });
    }
    Ok(())
}
