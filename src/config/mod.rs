//! `station.toml`: the station's whole configuration, loaded once at start.
//!
//! This module owns the model (serde structs that refuse unknown keys), loading with errors that
//! name `file:line:column`, the key and what is expected, and the semantic checks that serde
//! cannot express. It resolves relative paths against the file's directory. It never reads
//! secrets itself beyond checking they can be found (the symmetric credential source reads them).

mod device;
mod fixtures;
mod fleet;
mod label;
pub(crate) mod load;
mod model;

pub use device::{DeviceProtocol, DeviceSection, SerialSource, SmpSection, SmpStorage};
pub use fixtures::{FixtureConfig, FixtureSection, MAX_FIXTURES, SIM_SERIAL_STRIDE};
pub use fleet::{FleetSection, FleetUploads, OfflinePolicy, SslMode};
pub use label::{LabelSection, PrinterAddress, ZPL_TCP_DEFAULT_PORT};
pub use load::{CONFIG_ENV, DEFAULT_CONFIG, load, load_str};
pub use model::*;
