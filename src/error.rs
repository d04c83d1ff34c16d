//! The station's one error type.
//!
//! Every failure has a stable [`ErrorCode`] (`device.timeout`, `config.invalid`, ...) that goes
//! into the database with a failed attempt, a message that says what happened (naming the port,
//! command, file or key involved), and a one-line remedy a line technician can act on. Codes
//! are part of the public interface: they are listed in `docs/errors.md` (a test keeps the two
//! in step) and never renamed.

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

/// One table: each code, its stable spelling, and the remedy shown with it.
macro_rules! codes {
    ($($name:ident = $text:literal => $remedy:literal,)*) => {
        /// Every stable error code. The compiler checks each use; `docs/errors.md` lists them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($name,)*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The stable spelling, recorded with failed attempts.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $text,)*
                }
            }

            /// One plain sentence telling the technician (or engineer) what to do next.
            pub fn remedy(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $remedy,)*
                }
            }
        }
    };
}

codes! {
    ConfigUnreadable = "config.unreadable" => "Check the path given with --config or STATION_CONFIG, and that the file is readable.",
    ConfigInvalid = "config.invalid" => "Fix the key at that line and column; docs/config.md lists every key and its allowed values.",
    ConfigMissingSection = "config.missing_section" => "Add the section named in the message to station.toml (docs/config.md).",
    ConfigSecret = "config.secret" => "Give the station the key file or environment variable named in station.toml, holding a base64 key.",
    RegistrationInvalidId = "registration.invalid_id" => "Check the scanned serial and [registration] template: IDs are lowercase letters, digits and - . _ : only.",
    DevicePortUnavailable = "device.port_unavailable" => "Check the fixture cable and the port in station.toml, and that your account is in the dialout group.",
    DeviceNoFixture = "device.no_fixture" => "Plug in the fixture, or set serial.port to its path; `station doctor` lists the ports it sees.",
    DeviceIo = "device.io" => "Re-seat the device in the fixture and check the cable, then retry.",
    DeviceTimeout = "device.timeout" => "Check the device is powered and running provisioning firmware, re-seat it, then retry.",
    DeviceDisconnected = "device.disconnected" => "Re-seat the device in the fixture and check the cable, then retry.",
    DeviceNak = "device.nak" => "The device refused the step; retry once, and if it repeats set the device aside for rework.",
    DeviceProtocol = "device.protocol" => "The device answered nonsense; check the baud rate and firmware, then retry.",
    DeviceRequestTooLarge = "device.request_too_large" => "The device's frame buffer is too small for this step: shorten the registration ID, or flash firmware with a larger max_body (1024 recommended).",
    DeviceBusy = "device.busy" => "The device stayed busy; wait for it to finish booting, re-seat it, then retry.",
    DeviceCapabilityMissing = "device.capability_missing" => "This device's firmware cannot store this kind of credential: check the attestation mode in station.toml or flash firmware that supports it.",
    DeviceNoNextDevice = "device.no_next_device" => "Put the next device on the fixture, then start again.",
    DeviceRekeyNotPermitted = "device.rekey_not_permitted" => "The database keeps this device's credential: restore the group key and ID scope it was provisioned with, or re-run with --allow-rekey if an engineer approves a new credential.",
    DeviceUnsupportedProtocol = "device.unsupported_protocol" => "Flash provisioning firmware that speaks a protocol version this station supports.",
    DeviceNoSerial = "device.no_serial" => "Scan the device's serial number barcode, then start again.",
    DeviceSerialMismatch = "device.serial_mismatch" => "The label and the device disagree: check you scanned the device in the fixture.",
    DeviceIdentityConflict = "device.identity_conflict" => "This device was provisioned elsewhere; set it aside, or re-run with overwrite permission if an engineer approves.",
    DeviceSmpRefused = "device.smp_refused" => "The device's MCUmgr refused the step: check its firmware has the groups docs/smp.md lists (fs with SHA-256, settings, os) and that [device.smp] names its directory or subtree, then retry.",
    DeviceSmpStorage = "device.smp_storage" => "The device could not store the file (its file system is full or failing): erase its storage partition (e.g. `mcumgr fs` tools or a reflash), then retry; set it aside if it repeats.",
    DeviceSmpHashMismatch = "device.smp_hash_mismatch" => "The device's file does not hash to what was written: retry, and if it repeats set the device aside for rework (its storage is failing).",
    DeviceSmpUnsupported = "device.smp_unsupported" => "An MCUmgr device cannot do this step: use protocol v1 firmware for device-made keys, or change the attestation settings as the message says (docs/smp.md).",
    DeviceVerifyMismatch = "device.verify_mismatch" => "The device did not store what was written; retry, and if it repeats set the device aside for rework.",
    AuditBroken = "audit.broken" => "The audit trail shows a change made outside the station: keep the database as it is (copy it), and call the engineer responsible for the line's records.",
    AuditManifestInvalid = "audit.manifest_invalid" => "The batch's files or manifest were changed, swapped or are missing: re-create the batch from the database with `station export --batch ID` (or restore the original files), then run the upload again.",
    FixtureSameDevice = "fixture.same_device" => "One device is on two fixtures at once (or two devices carry one serial label): take it off the other fixture, and check the serial labels.",
    FleetClaimed = "fleet.claimed" => "Another station holds this registration ID (or key): set the device aside and check its serial label; the message names the station and line that provisioned it.",
    FleetUnreachable = "fleet.unreachable" => "Check the network to the fleet database and that PostgreSQL runs ([fleet] url); with offline = \"allow\" the station goes on and catches up when it returns.",
    FleetAuth = "fleet.auth" => "The fleet database and the station do not accept each other: check the user in [fleet] url, the password in password_file or password_env, ca_file and the host name, and the server's pg_hba.conf (TLS, address); the station takes no device until it is fixed.",
    FleetReleaseRefused = "fleet.release_refused" => "Only the station holding a claim can release it, and only while no station has provisioned the ID: run it on the station the message names, or re-key the device there.",
    FleetServer = "fleet.server" => "The fleet database refused a request: check the role's privileges and the server log, and run `station fleet init` after upgrading the station.",
    FleetSchemaTooNew = "fleet.schema_too_new" => "The fleet database was migrated by a newer station: install that version on this station too.",
    FleetUploadBusy = "fleet.upload_busy" => "Another `station upload --fleet` is running (the message names its host): wait for it to finish; a crashed run's lock is released with its connection.",
    FleetSchemaMissing = "fleet.schema_missing" => "Create the fleet schema once with `station fleet init` (as a role allowed to create tables), then start the station again.",
    StoreDuplicateRegistration = "store.duplicate_registration" => "Two devices map to one registration ID: check the serial label and the [registration] template.",
    StoreDatabase = "store.database" => "Check the database path, its permissions and free disk space; do not delete the database, call an engineer.",
    StoreSchemaTooNew = "store.schema_too_new" => "This database was written by a newer station; install that version or use another database path.",
    ExportGroupKeyChanged = "export.group_key_changed" => "Configure the group key these devices were provisioned with before exporting them.",
    ExportBatchNotFound = "export.batch_not_found" => "Run `station export --list` to see the batches that exist.",
    IoFile = "io.file" => "Check the path exists, is writable and the disk is not full.",
    X509CaUnreadable = "x509.ca_unreadable" => "Check the [attestation.x509] paths; `station ca init --dev DIR` makes a development CA.",
    X509CaKeyMismatch = "x509.ca_key_mismatch" => "Point ca_key at the private key of the ca_cert certificate.",
    X509CaExpired = "x509.ca_expired" => "Install a CA certificate valid for longer than the device certificates (or lower validity_days).",
    X509CaNotYetValid = "x509.ca_not_yet_valid" => "Install a CA certificate valid for longer than the device certificates (or lower validity_days).",
    X509CaValidityShort = "x509.ca_validity_short" => "Install a CA certificate valid for longer than the device certificates (or lower validity_days).",
    X509CaNotCa = "x509.ca_not_ca" => "ca_cert must be a CA certificate (basicConstraints CA:TRUE, keyUsage keyCertSign).",
    X509CaNoKeyCertSign = "x509.ca_no_keycertsign" => "ca_cert must be a CA certificate (basicConstraints CA:TRUE, keyUsage keyCertSign).",
    X509ChainInvalid = "x509.chain_invalid" => "List the chain in order, each certificate signed by the next, up to the root.",
    X509MintFailed = "x509.mint_failed" => "The station could not issue the certificate; call an engineer.",
    X509CsrInvalid = "x509.csr_invalid" => "The device sent a bad certificate request; retry once, then set the device aside for rework.",
    X509CsrKeyUnsupported = "x509.csr_key_unsupported" => "The device sent a bad certificate request; retry once, then set the device aside for rework.",
    X509CsrSubjectMismatch = "x509.csr_subject_mismatch" => "The device sent a bad certificate request; retry once, then set the device aside for rework.",
    X509CnTooLong = "x509.cn_too_long" => "Shorten the [registration] template so IDs fit in 64 characters.",
    X509ReissueNotPermitted = "x509.reissue_not_permitted" => "Set the device aside, or re-run with --allow-rekey if an engineer approves a new certificate.",
    TpmUnreachable = "tpm.unreachable" => "Check the fixture's TPM connection and the tcti in station.toml.",
    TpmNoEk = "tpm.no_ek" => "The device's TPM answered unexpectedly; re-seat the device and retry, then set it aside.",
    TpmBadEk = "tpm.bad_ek" => "The device's TPM answered unexpectedly; re-seat the device and retry, then set it aside.",
    TpmEkCertMissing = "tpm.ek_cert_missing" => "Set the device aside: its TPM's EK certificate does not prove a genuine TPM from a configured manufacturer.",
    TpmEkCertInvalid = "tpm.ek_cert_invalid" => "Set the device aside: its TPM's EK certificate does not prove a genuine TPM from a configured manufacturer.",
    TpmRootsUnreadable = "tpm.roots_unreadable" => "Check the ek_roots files in [attestation.tpm].",
    TpmPersistFailed = "tpm.persist_failed" => "The TPM refused to persist the EK; call an engineer.",
    TpmDuplicateEk = "tpm.duplicate_ek" => "Two devices report the same EK: set this device aside and report it to the TPM supplier.",
    UploadNotConfigured = "upload.not_configured" => "Add an [upload] section to station.toml (docs/config.md).",
    UploadUnauthorized = "upload.unauthorized" => "Check [upload] host, policy_name and the policy key; the station clock must be right.",
    UploadHttp = "upload.http" => "Check the network and the DPS instance, then run `station upload` again: it resumes where it stopped.",
    UploadBadResponse = "upload.bad_response" => "Check the network and the DPS instance, then run `station upload` again: it resumes where it stopped.",
    UploadFleetOwns = "upload.fleet_owns" => "This station is in a fleet with [fleet] uploads = \"fleet\": upload every station's enrollments from one host with `station upload --fleet`.",
    UploadGaveUp = "upload.gave_up" => "Check the network and the DPS instance, then run `station upload` again: it resumes where it stopped.",
    LabelPrinterUnavailable = "label.printer_unavailable" => "Check the label printer is on, loaded and reachable at the [label] printer address; labels queued meanwhile print when it answers, others with `station label reprint ID`.",
    LabelQueueFull = "label.queue_full" => "The label printer has been down too long and the queue is full: fix the printer, then reprint the missing labels with `station label reprint ID`.",
    LabelNotProvisioned = "label.not_provisioned" => "Only a device that passed gets a label: check the registration ID with `station list --search ID`.",
    StationInterrupted = "station.interrupted" => "Put the device on the fixture again and re-run it: the station resumes from what the device holds.",
    StationDisplay = "station.display" => "Start the window from a desktop session (DISPLAY or WAYLAND_DISPLAY set), or use the headless commands (`station provision`).",
    StationInternal = "station.internal" => "The station hit a fault of its own; note the message and call an engineer.",
    Usage = "usage" => "Run `station help` for the commands and their options.",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Every failure the station can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    #[error("{message}")]
    Audit { code: ErrorCode, message: String },
    #[error(
        "device {serial} (registration ID `{registration_id}`) is being provisioned on fixture {fixture} right now"
    )]
    SameDevice {
        serial: String,
        registration_id: String,
        fixture: String,
    },
    #[error(
        "registration ID `{registration_id}`: {what} is held by station {station} on line {line} in the fleet database"
    )]
    FleetClaimed {
        registration_id: String,
        /// What is held: the registration ID, or the EK / certificate thumbprint.
        what: String,
        station: String,
        line: String,
    },
    #[error("fleet database: {message}")]
    Fleet { code: ErrorCode, message: String },
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
        code: ErrorCode,
        path: PathBuf,
        message: String,
    },
    #[error("{message}")]
    Csr { code: ErrorCode, message: String },
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
    Tpm { code: ErrorCode, message: String },
    /// An MCUmgr (SMP) device refused a step, or cannot do it.
    #[error("{message}")]
    Smp { code: ErrorCode, message: String },
    #[error(
        "this TPM's EK is already enrolled as `{enrolled}`; refusing to enroll it again as `{registration_id}`"
    )]
    DuplicateEk {
        registration_id: String,
        enrolled: String,
    },
    #[error("DPS upload: {message}")]
    Upload { code: ErrorCode, message: String },
    /// A device label could not be printed or made (never a device failure).
    #[error("label: {message}")]
    Label { code: ErrorCode, message: String },
    #[error("station.toml has no {section} section, which this command needs")]
    MissingSection { section: &'static str },
    #[error("cannot open the station window: {message}")]
    Display { message: String },
    #[error("internal fault: {message}")]
    Internal { message: String },
    /// The command line asks for something it cannot have.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The stable code recorded with failed attempts and printed with every error.
    pub fn code(&self) -> ErrorCode {
        use ErrorCode as C;
        match self {
            Error::ConfigUnreadable { .. } => C::ConfigUnreadable,
            Error::ConfigInvalid { .. } => C::ConfigInvalid,
            Error::MissingSection { .. } => C::ConfigMissingSection,
            Error::Secret { .. } => C::ConfigSecret,
            Error::RegistrationId { .. } => C::RegistrationInvalidId,
            Error::PortUnavailable { .. } => C::DevicePortUnavailable,
            Error::NoFixture { .. } => C::DeviceNoFixture,
            Error::Io { .. } => C::DeviceIo,
            Error::Timeout { .. } => C::DeviceTimeout,
            Error::Disconnected { .. } => C::DeviceDisconnected,
            Error::Nak { .. } => C::DeviceNak,
            Error::Protocol { .. } => C::DeviceProtocol,
            Error::RequestTooLarge { .. } => C::DeviceRequestTooLarge,
            Error::Busy { .. } => C::DeviceBusy,
            Error::CapabilityMissing { .. } => C::DeviceCapabilityMissing,
            Error::NoNextDevice { .. } => C::DeviceNoNextDevice,
            Error::RekeyNotPermitted { .. } => C::DeviceRekeyNotPermitted,
            Error::Interrupted { .. } => C::StationInterrupted,
            Error::UnsupportedProtocol { .. } => C::DeviceUnsupportedProtocol,
            Error::NoSerial => C::DeviceNoSerial,
            Error::SerialMismatch { .. } => C::DeviceSerialMismatch,
            Error::IdentityConflict { .. } => C::DeviceIdentityConflict,
            Error::VerifyMismatch { .. } => C::DeviceVerifyMismatch,
            Error::DuplicateRegistration { .. } => C::StoreDuplicateRegistration,
            Error::SameDevice { .. } => C::FixtureSameDevice,
            Error::FleetClaimed { .. } => C::FleetClaimed,
            Error::Database { .. } => C::StoreDatabase,
            Error::SchemaTooNew { .. } => C::StoreSchemaTooNew,
            Error::GroupKeyChanged { .. } => C::ExportGroupKeyChanged,
            Error::BatchNotFound(_) => C::ExportBatchNotFound,
            Error::File { .. } => C::IoFile,
            Error::Ca { code, .. }
            | Error::Csr { code, .. }
            | Error::Tpm { code, .. }
            | Error::Smp { code, .. }
            | Error::Upload { code, .. }
            | Error::Label { code, .. }
            | Error::Audit { code, .. }
            | Error::Fleet { code, .. } => *code,
            Error::CnTooLong { .. } => C::X509CnTooLong,
            Error::ReissueNotPermitted { .. } => C::X509ReissueNotPermitted,
            Error::DuplicateEk { .. } => C::TpmDuplicateEk,
            Error::Display { .. } => C::StationDisplay,
            Error::Internal { .. } => C::StationInternal,
            Error::Usage(_) => C::Usage,
        }
    }

    /// One plain sentence telling the technician (or engineer) what to do next.
    pub fn remedy(&self) -> &'static str {
        self.code().remedy()
    }

    /// The exit code class of this error.
    pub fn exit_class(&self) -> ExitClass {
        match self {
            Error::ConfigUnreadable { .. }
            | Error::ConfigInvalid { .. }
            | Error::MissingSection { .. }
            | Error::Secret { .. }
            | Error::Ca { .. }
            | Error::Usage(_) => ExitClass::Usage,
            Error::Label {
                code: ErrorCode::LabelNotProvisioned,
                ..
            } => ExitClass::Usage,
            Error::Label { .. } => ExitClass::Environment,
            // Station configuration found wanting while a device was in the fixture.
            Error::Tpm {
                code: ErrorCode::TpmRootsUnreadable,
                ..
            }
            | Error::Csr {
                code: ErrorCode::X509CaValidityShort,
                ..
            } => ExitClass::Usage,
            Error::PortUnavailable { .. }
            | Error::NoFixture { .. }
            | Error::Database { .. }
            | Error::SchemaTooNew { .. }
            | Error::File { .. }
            | Error::GroupKeyChanged { .. }
            | Error::BatchNotFound(_)
            | Error::Upload { .. }
            | Error::Fleet { .. }
            | Error::Display { .. }
            | Error::Internal { .. } => ExitClass::Environment,
            Error::Interrupted { .. } => ExitClass::Interrupted,
            _ => ExitClass::Device,
        }
    }

    /// A database error on the database at `path`.
    pub fn database(path: impl std::fmt::Display, e: rusqlite::Error) -> Self {
        Error::Database {
            path: path.to_string(),
            message: e.to_string(),
        }
    }
}

/// An error as the technician sees it: its code, what happened, what to do.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Problem {
    pub code: ErrorCode,
    pub message: String,
    pub remedy: &'static str,
}

impl From<&Error> for Problem {
    fn from(e: &Error) -> Self {
        Problem {
            code: e.code(),
            message: e.to_string(),
            remedy: e.remedy(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::{Error, ErrorCode, ExitClass};

    #[test]
    fn station_configuration_found_at_a_device_exits_as_a_configuration_error() {
        let e = Error::Tpm {
            code: ErrorCode::TpmRootsUnreadable,
            message: String::new(),
        };
        assert_eq!(e.exit_class(), ExitClass::Usage);
        let e = Error::Tpm {
            code: ErrorCode::TpmUnreachable,
            message: String::new(),
        };
        assert_eq!(e.exit_class(), ExitClass::Device);
    }

    #[test]
    fn every_code_is_listed_in_docs_errors_md_and_spelled_once() {
        let doc = include_str!("../docs/errors.md");
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "{} is spelled twice", c.as_str());
            assert!(
                doc.contains(&format!("`{}`", c.as_str())),
                "docs/errors.md does not list `{}`",
                c.as_str()
            );
        }
    }
}
