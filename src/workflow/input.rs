//! What the operator gives the workflow for one device, and what a passed device comes to.

use std::time::Duration;

/// Irreversible steps the operator (or an engineer) explicitly allowed for this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Replace an identity the device already holds under another registration ID.
    pub overwrite_identity: bool,
    /// Re-key a provisioned device: write a credential other than the one its enrollment
    /// holds (a new certificate, another group key, ID scope or endpoint). The current version
    /// is kept in `superseded_enrollments`.
    pub rekey: bool,
}

/// What the operator supplies for one device.
#[derive(Debug, Clone, Default)]
pub struct DeviceInput {
    /// A scanned serial-number barcode, if any.
    pub scanned_serial: Option<String>,
    pub operator: String,
    pub permissions: Permissions,
}

/// A passed device.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub registration_id: String,
    pub serial: String,
    pub duration: Duration,
    /// Time spent waiting on the device.
    pub io_wait: Duration,
}

impl Outcome {
    /// Time the station itself spent.
    pub fn overhead(&self) -> Duration {
        self.duration.saturating_sub(self.io_wait)
    }
}
