//! What DPS receives: the IndividualEnrollment model (api-version 2021-10-01) and batch export.
//!
//! [`enrollment`] turns a stored enrollment plus the `[dps]` options into the service's JSON;
//! [`export`] writes batches (CSV for traceability, bulk-operation JSON for DPS, and a signed
//! [`manifest`]); [`upload`]
//! sends them to the service API, signed with [`sas`] tokens. Nothing here talks to a device.

pub mod enrollment;
pub mod export;
pub mod manifest;
pub mod publish;
pub mod sas;
pub mod upload;

/// The service API version the station speaks.
pub const API_VERSION: &str = "2021-10-01";
/// DPS accepts at most this many enrollments per bulk operation.
pub const MAX_BULK: usize = 10;
