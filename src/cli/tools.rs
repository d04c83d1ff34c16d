//! Bring-up tools: the simulator, a development CA, reading a TPM.

use super::args::SimulateArgs;
use super::output::Out;
use crate::config;
use crate::error::{Error, Result};
use crate::sim;
use std::process::ExitCode;

pub(super) fn tpm_read(
    config_path: Option<&std::path::Path>,
    tcti: Option<String>,
    ek_type: Option<String>,
    roots: Vec<std::path::PathBuf>,
    out: Out,
) -> Result<ExitCode> {
    use crate::attestation::tpm;
    use crate::config::{EkCertPolicy, TpmEkType};
    // Flags first; what is missing comes from [attestation.tpm] when a config is at hand.
    let config = if tcti.is_none() || ek_type.is_none() {
        config::load(config_path).ok()
    } else {
        None
    };
    let section = config.as_ref().and_then(|c| c.attestation.tpm.clone());
    let tcti = tcti
        .or_else(|| section.as_ref().and_then(|s| s.tcti.clone()))
        .ok_or_else(|| {
            Error::Usage("give --tcti (no [attestation.tpm] tcti is configured)".into())
        })?;
    let ek_type = match ek_type.as_deref() {
        Some("ecc-p256") => TpmEkType::EccP256,
        Some(_) => TpmEkType::Rsa2048,
        None => section.as_ref().map(|s| s.ek_type).unwrap_or_default(),
    };
    let roots = if roots.is_empty() {
        match (&section, &config) {
            (Some(s), Some(c)) => tpm::load_roots(&s.ek_roots, |p| c.resolve(p))?,
            _ => Vec::new(),
        }
    } else {
        tpm::load_roots(&roots, |p| p.to_path_buf())?
    };
    let reading = tpm::read_ek_tcti(&tcti, ek_type, false, true, true)?;
    let policy = if roots.is_empty() {
        EkCertPolicy::Off
    } else {
        EkCertPolicy::Warn
    };
    let (material, _) = tpm::check(&reading, policy, &roots)?;
    let cert_status = if roots.is_empty() && reading.certificate.is_some() {
        "present, not verified (no roots given)".to_string()
    } else if roots.is_empty() {
        "missing".to_string()
    } else {
        material.ek_cert_status.clone()
    };
    let id = tpm::registration_id(&reading.public);
    out.emit(
        &serde_json::json!({
            "endorsement_key": material.endorsement_key,
            "storage_root_key": material.storage_root_key,
            "registration_id": id,
            "ek_origin": reading.origin,
            "ek_certificate": cert_status,
            "ek_certificate_issuer": material.ek_cert_issuer,
        }),
        || {
            format!(
                "TPM at {tcti}\n  EK ({}, {} bytes TPM2B_PUBLIC): {}\n  registration ID: {id}\n  EK certificate: {cert_status}{}",
                reading.origin,
                reading.public.len(),
                material.endorsement_key,
                material
                    .ek_cert_issuer
                    .as_deref()
                    .map(|i| format!(" (issuer {i})"))
                    .unwrap_or_default()
            )
        },
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn ca_init(dir: &std::path::Path, out: Out) -> Result<ExitCode> {
    let ca = crate::attestation::x509::init_dev_ca(dir)?;
    out.emit(&ca, || {
        format!(
            "development CA created (NOT for production):\n  root          {}\n  intermediate  {}\n\
             In station.toml:\n  [attestation]\n  mode = \"x509\"\n  [attestation.x509]\n  \
             ca_cert = \"{}\"\n  ca_key = \"{}\"\n  chain = [\"{}\"]",
            ca.root_cert.display(),
            ca.ca_cert.display(),
            ca.ca_cert.display(),
            ca.ca_key.display(),
            ca.root_cert.display()
        )
    });
    Ok(ExitCode::SUCCESS)
}

pub(super) fn simulate(
    config_path: Option<&std::path::Path>,
    a: &SimulateArgs,
    out: Out,
) -> Result<ExitCode> {
    let sc = sim_config(config_path, a)?;
    let handles = gang(&sc, a);
    let mut running = Vec::new();
    for (id, c) in handles {
        let flash_dir = c.flash_dir.clone();
        let c_protocol = c.protocol;
        let handle = sim::spawn(c).map_err(|e| Error::PortUnavailable {
            port: "pty".into(),
            message: format!("cannot create a pseudo-terminal: {e}"),
        })?;
        let mut ready = serde_json::json!({"event": "simulator_ready", "port": handle.path, "flash": flash_dir, "protocol": c_protocol.as_str()});
        if let Some(id) = &id {
            ready["fixture"] = id.clone().into();
        }
        out.emit(&ready, || match &id {
            Some(id) => format!("{id} {}", handle.path),
            None => handle.path.clone(),
        });
        if !out.json {
            eprintln!(
                "simulated fixture {}on {} (flash in {}); Ctrl-C to stop",
                id.as_ref().map(|i| format!("{i} ")).unwrap_or_default(),
                handle.path,
                flash_dir.display()
            );
        }
        running.push(handle);
    }
    // Until every fixture's simulator ends (a disconnect fault) or the process is stopped.
    for handle in running {
        let exit = handle.wait().map_err(|e| Error::PortUnavailable {
            port: "pty".into(),
            message: e.to_string(),
        })?;
        if exit == sim::SimExit::Disconnected {
            eprintln!("simulated device disconnected (fault injected)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The simulator `station simulate` asks for: its flags over `[simulator]` and `[device]`.
fn sim_config(config_path: Option<&std::path::Path>, a: &SimulateArgs) -> Result<sim::SimConfig> {
    // The simulator stands alone: it only reads station.toml for defaults when no --flash is
    // given.
    let config = match &a.flash {
        Some(_) => None,
        None => Some(config::load(config_path)?),
    };
    let flash = match (&a.flash, &config) {
        (Some(f), _) => f.clone(),
        (None, Some(c)) => c.resolve(&c.simulator.flash_dir),
        (None, None) => unreachable!("config is loaded when --flash is absent"),
    };
    let mut sc = sim::SimConfig::new(flash);
    if let Some(c) = &config {
        sc.serial_prefix = c.simulator.serial_prefix.clone();
        sc.baud = c.simulator.baud;
        sc.protocol = c.device.protocol;
    }
    match a.protocol.as_deref() {
        Some("smp") => sc.protocol = config::DeviceProtocol::Smp,
        Some(_) => sc.protocol = config::DeviceProtocol::V1,
        None => {}
    }
    if let Some(p) = &a.serial_prefix {
        sc.serial_prefix = p.clone();
    }
    if let Some(b) = a.baud {
        sc.baud = b;
    }
    sc.devices = a.devices;
    sc.first = a.first.max(1);
    sc.max_body = a.max_body;
    sc.firmware = a.firmware.clone();
    sc.fault_device = a.fault_device;
    sc.tpm = a.tpm.clone();
    if let Some(bits) = a.capabilities {
        sc.capabilities = bits;
    }
    for f in &a.faults {
        match sc.protocol {
            config::DeviceProtocol::Smp => sc.smp_faults.add(f),
            config::DeviceProtocol::V1 => sc.faults.add(f),
        }
        .map_err(Error::Usage)?;
    }
    Ok(sc)
}

/// The simulators `--fixtures N` asks for: each its own serial range and flash directory, the
/// faults only on the `--fault-fixture`s (all when none is named).
fn gang(sc: &sim::SimConfig, a: &SimulateArgs) -> Vec<(Option<String>, sim::SimConfig)> {
    if a.fixtures == 1 {
        return vec![(None, sc.clone())];
    }
    (0..a.fixtures)
        .map(|k| {
            let id = format!("f{}", k + 1);
            let mut c = sc.clone();
            c.first = sc.first + k * config::SIM_SERIAL_STRIDE;
            c.flash_dir = sc.flash_dir.join(&id);
            if !a.fault_fixture.is_empty() && !a.fault_fixture.contains(&(k + 1)) {
                c.faults = sim::Faults::default();
            }
            (Some(id), c)
        })
        .collect()
}
