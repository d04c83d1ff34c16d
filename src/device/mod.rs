//! The device side of the station: the byte link ([`transport`]), protocol v1 ([`frame`],
//! [`protocol`], [`link`]) and the device simulator ([`sim`]).
//!
//! [`connect`] turns `[serial]` (a path, `sim` or `auto`) into a [`Fixture`] ready for the
//! workflow. Nothing here touches the database or knows about attestation.

pub mod frame;
pub mod link;
pub mod protocol;
pub mod sim;
pub mod transport;

use crate::config::{Config, load::parse_usb_id};
use crate::error::{Error, Result};
use std::time::Duration;

/// An open fixture: the link to its device, and the in-process simulator behind it, if any.
pub struct Fixture {
    pub link: link::Link,
    pub sim: Option<sim::SimHandle>,
}

/// Which port `[serial]` (or `--port`) designates, resolving `auto` by USB VID:PID.
pub fn resolve_port(config: &Config, port: &str) -> Result<String> {
    if port != "auto" {
        return Ok(port.to_string());
    }
    let ids: Vec<(u16, u16)> = config
        .serial
        .usb_ids
        .iter()
        .filter_map(|s| parse_usb_id(s))
        .collect();
    let found = transport::find_usb_ports(&ids)?;
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::NoFixture {
            message: format!(
                "no USB serial port with VID:PID in [{}]",
                config.serial.usb_ids.join(", ")
            ),
        }),
        many => Err(Error::NoFixture {
            message: format!(
                "several fixtures match ({}); name one with --port",
                many.join(", ")
            ),
        }),
    }
}

/// Open the fixture: `port_override` wins over `serial.port`.
pub fn connect(config: &Config, port_override: Option<&str>) -> Result<Fixture> {
    let port = port_override.unwrap_or(&config.serial.port);
    let (path, sim, baud) = if port == "sim" {
        let mut sc = sim::SimConfig::new(config.resolve(&config.simulator.flash_dir));
        sc.serial_prefix = config.simulator.serial_prefix.clone();
        sc.baud = config.simulator.baud;
        let handle = sim::spawn(sc).map_err(|e| Error::PortUnavailable {
            port: "sim".into(),
            message: format!("cannot start the built-in simulator: {e}"),
        })?;
        let baud = if config.simulator.baud > 0 {
            config.simulator.baud
        } else {
            config.serial.baud
        };
        (handle.path.clone(), Some(handle), baud)
    } else {
        (resolve_port(config, port)?, None, config.serial.baud)
    };
    let transport = transport::SerialTransport::open(&path, baud)?;
    let timeouts = protocol::Timeouts {
        response: Duration::from_millis(config.serial.response_timeout_ms),
        commit: Duration::from_millis(config.serial.commit_timeout_ms),
        keygen: Duration::from_millis(config.serial.keygen_timeout_ms),
    };
    Ok(Fixture {
        link: link::Link::new(Box::new(transport), baud, timeouts, config.serial.retries),
        sim,
    })
}
