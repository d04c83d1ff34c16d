//! The serial ports the Settings dialog offers.

/// The serial ports this machine has, described (USB VID:PID and product).
pub fn list() -> Vec<(String, String)> {
    serialport::available_ports()
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let desc = match &p.port_type {
                serialport::SerialPortType::UsbPort(u) => format!(
                    "{} — USB {:04x}:{:04x} {}",
                    p.port_name,
                    u.vid,
                    u.pid,
                    u.product.clone().unwrap_or_default()
                ),
                _ => p.port_name.clone(),
            };
            (p.port_name, desc)
        })
        .collect()
}
