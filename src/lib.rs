//! A factory provisioning station for Azure IoT Hub Device Provisioning Service (DPS).
//!
//! Layers, each importing only those below it (`tests/architecture.rs` keeps it so):
//!
//! ```text
//! cli            gui            front ends: parse, render Events, call the station service
//!  │              │
//!  ├──────────────┴── sim       the device simulator: a peer the layers below never import
//! station                       run a fixture (next device, stop rules); jobs; labels; doctor
//! workflow                      one device: identify → credential → pending → write → verify
//! fuzzing                       entry points that fuzz every parser fed from outside
//! fleet                         the fleet database (PostgreSQL): claims, outbox sync, status
//! dps                           DPS model, export, upload
//! label                         device labels: ZPL from the template, printers, PNG preview
//! store                         SQLite: enrollments, attempts, batches
//! attestation                   credential sources: symmetric, X.509, TPM
//! device                        the `Device` trait; protocol v1; a device's TPM over TCTI
//! config                        station.toml
//! domain, error                 registration ID, Credential, records and digest, Event
//! ```
//!
//! See `docs/architecture.md`.

pub mod attestation;
pub mod cli;
pub mod config;
pub mod device;
pub mod domain;
pub mod dps;
pub mod error;
pub mod fleet;
pub mod fuzzing;
#[cfg(feature = "gui")]
pub mod gui;
pub mod label;
pub mod sim;
pub mod station;
pub mod store;
pub mod workflow;

pub use error::{Error, ErrorCode, Result};
