//! A factory provisioning station for Azure IoT Hub Device Provisioning Service (DPS).
//!
//! The pipeline, one module per stage, in the order data flows:
//!
//! ```text
//! station.toml ─► config ─► workflow (one device at a time, per fixture)
//!                               │
//!    device ◄── serial ◄── device::link/protocol ◄── identify ─► attestation ─► Credential
//!                               │
//!                         write ─► commit ─► verify digest
//!                               │
//!                         store (SQLite) ─► dps::export (CSV + DPS bulk JSON)
//!                               │
//!                         Event stream ─► GUI (egui) | CLI (text / JSON lines)
//! ```
//!
//! The library holds the whole workflow; front ends only start work and render
//! [`workflow::Event`]s. See `docs/architecture.md`.

pub mod attestation;
pub mod cli;
pub mod config;
pub mod device;
pub mod dps;
pub mod error;
pub mod gui;
pub mod store;
pub mod workflow;

pub use error::{Error, Result};
