//! The station's one error type.
//!
//! Every failure has a stable code (`device.timeout`, `config.invalid`, ...) that goes into the
//! database with a failed attempt, a message that says what happened (naming the port, command,
//! file or key involved), and a one-line remedy a line technician can act on. Codes are part of
//! the public interface: they are listed in `docs/errors.md` and never renamed.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a failure maps to the process exit code (see `docs/errors.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    /// A device (or the data it presented) failed; the station itself is fine.
    Device = 1,
    /// The configuration or the command line is wrong; nothing was attempted.
    Usage = 2,
    /// Something the station needs is not available (port, database, files).
    Environment = 3,
    /// The run was stopped by SIGINT or SIGTERM (the shell's 128 + SIGINT).
    Interrupted = 130,
}

/// Every failure the station can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read configuration {path}: {source}")]
    ConfigUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{location}: `{key}`: {message}")]
    ConfigInvalid {
        /// `file:line:column`.
        location: String,
        key: String,
        message: String,
    },
    #[error("{what}: {message}")]
    Secret { what: String, message: String },
    #[error("registration ID `{id}` is invalid: {rule}")]
    RegistrationId { id: String, rule: String },
    #[error("cannot open serial port {port}: {message}")]
    PortUnavailable { port: String, message: String },
    #[error("no fixture found on USB: {message}")]
    NoFixture { message: String },
    #[error("serial I/O on {port} failed during {command}: {source}")]
    Io {
        port: String,
        command: &'static str,
        source: std::io::Error,
    },
    #[error("device on {port} did not answer {command} after {attempts} attempts")]
    Timeout {
        port: String,
        command: &'static str,
        attempts: u32,
    },
    #[error("device on {port} disconnected during {command}")]
    Disconnected { port: String, command: &'static str },
    #[error("device refused {command}: {reason} (NAK 0x{code:02x}{detail})")]
    Nak {
        command: &'static str,
        code: u8,
        reason: &'static str,
        detail: String,
    },
    #[error(
        "{command} needs a {size}-byte request body, but the device accepts at most {limit} (max_body in its HELLO answer)"
    )]
    RequestTooLarge {
        command: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("device stayed busy: {command} refused with BUSY {attempts} times")]
    Busy {
        command: &'static str,
        attempts: u32,
    },
    #[error(
        "device does not support {mode}: its HELLO capabilities 0x{capabilities:08x} lack bit {bit} ({capability})"
    )]
    CapabilityMissing {
        mode: &'static str,
        capability: &'static str,
        bit: u32,
        capabilities: u32,
    },
    #[error(
        "no new device answered on {port} within {waited_s} s (the last device, {previous}, is still on the fixture or nothing is)"
    )]
    NoNextDevice {
        port: String,
        previous: String,
        waited_s: u64,
    },
    #[error(
        "enrollment `{registration_id}` (device {serial}) is provisioned with another credential (recorded digest {recorded}); writing this one (digest {wanted}) is a re-key: {cause}"
    )]
    RekeyNotPermitted {
        registration_id: String,
        serial: String,
        recorded: String,
        wanted: String,
        cause: String,
    },
    #[error("stopped by {signal} before this device finished")]
    Interrupted { signal: &'static str },
    #[error("protocol error on {port} during {command}: {message}")]
    Protocol {
        port: String,
        command: &'static str,
        message: String,
    },
    #[error(
        "device speaks protocol v{device_min}..v{device_max}, station speaks v{station_min}..v{station_max}"
    )]
    UnsupportedProtocol {
        device_min: u8,
        device_max: u8,
        station_min: u8,
        station_max: u8,
    },
    #[error("device reported no hardware serial and none was scanned")]
    NoSerial,
    #[error("scanned serial `{scanned}` does not match the device's serial `{reported}`")]
    SerialMismatch { scanned: String, reported: String },
    #[error(
        "device {serial} already holds identity `{existing}`; this station would give it `{wanted}`"
    )]
    IdentityConflict {
        serial: String,
        existing: String,
        wanted: String,
    },
    #[error("device read-back does not match: expected digest {expected}, device reports {actual}")]
    VerifyMismatch { expected: String, actual: String },
    #[error(
        "registration ID `{registration_id}` is already enrolled for device {enrolled_serial}, not {serial}"
    )]
    DuplicateRegistration {
        registration_id: String,
        enrolled_serial: String,
        serial: String,
    },
    #[error("database {path}: {message}")]
    Database { path: String, message: String },
    #[error(
        "database {path} has schema version {found}; this station understands up to {supported}"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error(
        "enrollment `{registration_id}` was provisioned with group key {enrolled}, but the configured group key is {configured}"
    )]
    GroupKeyChanged {
        registration_id: String,
        enrolled: String,
        configured: String,
    },
    #[error("no batch `{0}` in the database")]
    BatchNotFound(String),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("station CA {path}: {message}")]
    Ca {
        code: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{message}")]
    Csr { code: &'static str, message: String },
    #[error(
        "registration ID `{registration_id}` is longer than the 64 characters an X.509 subject CN allows"
    )]
    CnTooLong { registration_id: String },
    #[error(
        "device {serial} holds a certificate that does not match its enrollment `{registration_id}`; issuing a new one needs permission"
    )]
    ReissueNotPermitted {
        serial: String,
        registration_id: String,
    },
    #[error("{message}")]
    Tpm { code: &'static str, message: String },
    #[error(
        "this TPM's EK is already enrolled as `{enrolled}`; refusing to enroll it again as `{registration_id}`"
    )]
    DuplicateEk {
        registration_id: String,
        enrolled: String,
    },
    #[error("DPS upload: {message}")]
    Upload { code: &'static str, message: String },
    #[error("{0}")]
    Usage(String),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Database {
            path: String::new(),
            message: e.to_string(),
        }
    }
}

impl Error {
    /// The stable code recorded with failed attempts and printed with every error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::ConfigUnreadable { .. } => "config.unreadable",
            Error::ConfigInvalid { .. } => "config.invalid",
            Error::Secret { .. } => "config.secret",
            Error::RegistrationId { .. } => "registration.invalid_id",
            Error::PortUnavailable { .. } => "device.port_unavailable",
            Error::NoFixture { .. } => "device.no_fixture",
            Error::Io { .. } => "device.io",
            Error::Timeout { .. } => "device.timeout",
            Error::Disconnected { .. } => "device.disconnected",
            Error::Nak { .. } => "device.nak",
            Error::Protocol { .. } => "device.protocol",
            Error::RequestTooLarge { .. } => "device.request_too_large",
            Error::Busy { .. } => "device.busy",
            Error::CapabilityMissing { .. } => "device.capability_missing",
            Error::NoNextDevice { .. } => "device.no_next_device",
            Error::RekeyNotPermitted { .. } => "device.rekey_not_permitted",
            Error::Interrupted { .. } => "station.interrupted",
            Error::UnsupportedProtocol { .. } => "device.unsupported_protocol",
            Error::NoSerial => "device.no_serial",
            Error::SerialMismatch { .. } => "device.serial_mismatch",
            Error::IdentityConflict { .. } => "device.identity_conflict",
            Error::VerifyMismatch { .. } => "device.verify_mismatch",
            Error::DuplicateRegistration { .. } => "store.duplicate_registration",
            Error::Database { .. } => "store.database",
            Error::SchemaTooNew { .. } => "store.schema_too_new",
            Error::GroupKeyChanged { .. } => "export.group_key_changed",
            Error::BatchNotFound(_) => "export.batch_not_found",
            Error::File { .. } => "io.file",
            Error::Ca { code, .. } | Error::Csr { code, .. } => code,
            Error::CnTooLong { .. } => "x509.cn_too_long",
            Error::ReissueNotPermitted { .. } => "x509.reissue_not_permitted",
            Error::Upload { code, .. } | Error::Tpm { code, .. } => code,
            Error::DuplicateEk { .. } => "tpm.duplicate_ek",
            Error::Usage(_) => "usage",
        }
    }

    /// One plain sentence telling the technician (or engineer) what to do next.
    pub fn remedy(&self) -> &'static str {
        match self {
            Error::ConfigUnreadable { .. } => {
                "Check the path given with --config or STATION_CONFIG, and that the file is readable."
            }
            Error::ConfigInvalid { .. } => {
                "Fix the key at that line and column; docs/config.md lists every key and its allowed values."
            }
            Error::Secret { .. } => {
                "Give the station the key file or environment variable named in station.toml, holding a base64 key."
            }
            Error::RegistrationId { .. } => {
                "Check the scanned serial and [registration] template: IDs are lowercase letters, digits and - . _ : only."
            }
            Error::PortUnavailable { .. } => {
                "Check the fixture cable and the port in station.toml, and that your account is in the dialout group."
            }
            Error::NoFixture { .. } => {
                "Plug in the fixture, or set serial.port to its path; `station doctor` lists the ports it sees."
            }
            Error::Io { .. } | Error::Disconnected { .. } => {
                "Re-seat the device in the fixture and check the cable, then retry."
            }
            Error::Timeout { .. } => {
                "Check the device is powered and running provisioning firmware, re-seat it, then retry."
            }
            Error::Nak { .. } => {
                "The device refused the step; retry once, and if it repeats set the device aside for rework."
            }
            Error::Protocol { .. } => {
                "The device answered nonsense; check the baud rate and firmware, then retry."
            }
            Error::RequestTooLarge { .. } => {
                "The device's frame buffer is too small for this step: shorten the registration ID, or flash firmware with a larger max_body (1024 recommended)."
            }
            Error::Busy { .. } => {
                "The device stayed busy; wait for it to finish booting, re-seat it, then retry."
            }
            Error::CapabilityMissing { .. } => {
                "This device's firmware cannot store this kind of credential: check the attestation mode in station.toml or flash firmware that supports it."
            }
            Error::NoNextDevice { .. } => "Put the next device on the fixture, then start again.",
            Error::RekeyNotPermitted { .. } => {
                "The database keeps this device's credential: restore the group key and ID scope it was provisioned with, or re-run with --allow-rekey if an engineer approves a new credential."
            }
            Error::Interrupted { .. } => {
                "Put the device on the fixture again and re-run it: the station resumes from what the device holds."
            }
            Error::UnsupportedProtocol { .. } => {
                "Flash provisioning firmware that speaks a protocol version this station supports."
            }
            Error::NoSerial => "Scan the device's serial number barcode, then start again.",
            Error::SerialMismatch { .. } => {
                "The label and the device disagree: check you scanned the device in the fixture."
            }
            Error::IdentityConflict { .. } => {
                "This device was provisioned elsewhere; set it aside, or re-run with overwrite permission if an engineer approves."
            }
            Error::VerifyMismatch { .. } => {
                "The device did not store what was written; retry, and if it repeats set the device aside for rework."
            }
            Error::DuplicateRegistration { .. } => {
                "Two devices map to one registration ID: check the serial label and the [registration] template."
            }
            Error::Database { .. } => {
                "Check the database path and free disk space; do not delete the database, call an engineer."
            }
            Error::SchemaTooNew { .. } => {
                "This database was written by a newer station; install that version or use another database path."
            }
            Error::GroupKeyChanged { .. } => {
                "Configure the group key these devices were provisioned with before exporting them."
            }
            Error::BatchNotFound(_) => "Run `station export --list` to see the batches that exist.",
            Error::File { .. } => "Check the path exists, is writable and the disk is not full.",
            Error::Ca { code, .. } => match *code {
                "x509.ca_key_mismatch" => {
                    "Point ca_key at the private key of the ca_cert certificate."
                }
                "x509.ca_expired" | "x509.ca_validity_short" | "x509.ca_not_yet_valid" => {
                    "Install a CA certificate valid for longer than the device certificates (or lower validity_days)."
                }
                "x509.ca_not_ca" | "x509.ca_no_keycertsign" => {
                    "ca_cert must be a CA certificate (basicConstraints CA:TRUE, keyUsage keyCertSign)."
                }
                "x509.chain_invalid" => {
                    "List the chain in order, each certificate signed by the next, up to the root."
                }
                _ => {
                    "Check the [attestation.x509] paths; `station ca init --dev DIR` makes a development CA."
                }
            },
            Error::Csr { code, .. } => match *code {
                "x509.mint_failed" | "x509.ca_validity_short" => {
                    "The station could not issue the certificate; call an engineer."
                }
                _ => {
                    "The device sent a bad certificate request; retry once, then set the device aside for rework."
                }
            },
            Error::CnTooLong { .. } => {
                "Shorten the [registration] template so IDs fit in 64 characters."
            }
            Error::ReissueNotPermitted { .. } => {
                "Set the device aside, or re-run with --allow-reissue if an engineer approves a new certificate."
            }
            Error::Tpm { code, .. } => match *code {
                "tpm.unreachable" => {
                    "Check the fixture's TPM connection and the tcti in station.toml."
                }
                "tpm.ek_cert_missing" | "tpm.ek_cert_invalid" => {
                    "Set the device aside: its TPM's EK certificate does not prove a genuine TPM from a configured manufacturer."
                }
                "tpm.roots_unreadable" => "Check the ek_roots files in [attestation.tpm].",
                "tpm.persist_failed" => "The TPM refused to persist the EK; call an engineer.",
                _ => {
                    "The device's TPM answered unexpectedly; re-seat the device and retry, then set it aside."
                }
            },
            Error::DuplicateEk { .. } => {
                "Two devices report the same EK: set this device aside and report it to the TPM supplier."
            }
            Error::Upload { code, .. } => match *code {
                "upload.unauthorized" => {
                    "Check [upload] host, policy_name and the policy key; the station clock must be right."
                }
                "upload.not_configured" => {
                    "Add an [upload] section to station.toml (docs/config.md)."
                }
                _ => {
                    "Check the network and the DPS instance, then run `station upload` again: it resumes where it stopped."
                }
            },
            Error::Usage(_) => "Run `station help` for the commands and their options.",
        }
    }

    /// The exit code class of this error.
    pub fn exit_class(&self) -> ExitClass {
        match self {
            Error::ConfigUnreadable { .. }
            | Error::ConfigInvalid { .. }
            | Error::Secret { .. }
            | Error::Ca { .. }
            | Error::Usage(_) => ExitClass::Usage,
            Error::PortUnavailable { .. }
            | Error::NoFixture { .. }
            | Error::Database { .. }
            | Error::SchemaTooNew { .. }
            | Error::File { .. }
            | Error::GroupKeyChanged { .. }
            | Error::BatchNotFound(_)
            | Error::Upload { .. } => ExitClass::Environment,
            Error::Interrupted { .. } => ExitClass::Interrupted,
            _ => ExitClass::Device,
        }
    }

    /// Attach the database path to a database error that lacks it.
    pub(crate) fn in_database(self, path: &str) -> Self {
        match self {
            Error::Database { path: p, message } if p.is_empty() => Error::Database {
                path: path.to_string(),
                message,
            },
            other => other,
        }
    }
}
