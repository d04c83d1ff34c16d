//! Command-line arguments (clap derive). Exit codes are documented in `docs/errors.md`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Factory provisioning station for Azure IoT Hub Device Provisioning Service.
#[derive(Debug, Parser)]
#[command(name = "station", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default: ./station.toml).
    #[arg(long, global = true, env = "STATION_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print JSON lines (events and results) instead of text, for MES integration.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Provision devices on the fixture, one after another.
    Provision(ProvisionArgs),
    /// Run the device simulator on a new pseudo-terminal and print its path.
    Simulate(SimulateArgs),
    /// Export provisioned enrollments as a batch (CSV + DPS bulk JSON).
    Export(ExportArgs),
    /// Upload exported enrollments to DPS (bulk, rate-limited, resumable); --verify reads them back.
    Upload(UploadArgs),
    /// List enrollments and counters.
    List(ListArgs),
    /// Print a device key derived from the configured group key.
    DeriveKey(DeriveKeyArgs),
    /// Check configuration, keys, database, export directory and port; say what to fix.
    Doctor,
    /// Certificate authority tools.
    #[command(subcommand)]
    Ca(CaCommand),
    /// TPM bring-up tools.
    #[command(subcommand)]
    Tpm(TpmCommand),
    /// Device labels: print one again, or render its preview.
    #[command(subcommand)]
    Label(LabelCommand),
    /// The audit trail: the station's public audit key, and verification of the chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Exported batches: check files against their signed manifests.
    #[command(subcommand)]
    Batch(BatchCommand),
    /// The fleet database ([fleet]): create its schema, show the fleet, send what is queued.
    #[command(subcommand)]
    Fleet(FleetCommand),
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Create or migrate the fleet schema (once per server, and after upgrading stations).
    Init,
    /// Per station: last sync, lag, queued entries, conflicts; per line and day: yield.
    Status {
        /// Days of per-line figures to show.
        #[arg(long, default_value_t = 7)]
        days: i32,
    },
    /// Send everything this station has queued for the fleet database, then exit.
    Sync,
    /// Give back this station's claim on a registration ID whose device never passed here,
    /// so another station can provision it (refused once the ID is provisioned anywhere).
    Release {
        /// The registration ID (as `fleet.claimed` named it).
        registration_id: String,
        /// Why (kept in the fleet database and this station's audit trail).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the station's public audit key (PEM), for the back office.
    Key,
    /// Walk the audit trail and report the first broken link (exit 1 on any).
    Verify {
        /// Start at the first entry at or after this time (RFC 3339, e.g. 2026-11-30 or
        /// 2026-11-30T06:00:00Z); rows are then not checked against the trail.
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
        /// Check signatures against this public key (a PEM file, or base64) instead of the
        /// station's own.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Check a batch manifest (or every manifest in a directory) and the files it lists.
    Verify {
        /// A `<batch>.manifest.json`, or a directory of batches.
        #[arg(value_name = "DIR|FILE")]
        path: PathBuf,
        /// The station's public audit key (PEM file, or base64); without it only the files'
        /// integrity is checked, not who signed them.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LabelCommand {
    /// Print a provisioned device's label again on the [label] printer.
    Reprint {
        /// The device's registration ID.
        #[arg(value_name = "ID")]
        registration_id: String,
    },
    /// Render a provisioned device's label as a PNG, as the station previews it.
    Preview {
        /// The device's registration ID.
        #[arg(value_name = "ID")]
        registration_id: String,
        /// Where to write the PNG.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Also write the filled ZPL job here.
        #[arg(long, value_name = "FILE")]
        zpl: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TpmCommand {
    /// Read one TPM's EK and print it (DPS encoding), its registration ID and certificate status.
    Read {
        /// TCTI (default: [attestation.tpm] tcti), e.g. swtpm:host=127.0.0.1,port=2321.
        #[arg(long, value_name = "TCTI")]
        tcti: Option<String>,
        /// EK type: rsa2048 or ecc-p256 (default: [attestation.tpm] ek_type).
        #[arg(long, value_parser = ["rsa2048", "ecc-p256"])]
        ek_type: Option<String>,
        /// PEM bundle of TPM manufacturer roots to verify the EK certificate (repeatable;
        /// default: [attestation.tpm] ek_roots).
        #[arg(long = "roots", value_name = "FILE")]
        roots: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a development root and intermediate CA (clearly labelled, not for production).
    Init {
        /// Directory for the development CA files.
        #[arg(long, value_name = "DIR", required = true)]
        dev: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Serial port path, `sim`, or `auto` (overrides the one fixture's port).
    #[arg(long, value_name = "PATH")]
    pub port: Option<String>,
    /// Provision on this `[[fixture]]` only.
    #[arg(long, value_name = "ID")]
    pub fixture: Option<String>,
    /// Provision on every fixture at once, one thread each (the default when station.toml has
    /// `[[fixture]]` tables); `--count` is the total.
    #[arg(long)]
    pub all_fixtures: bool,
    /// Scanned serial number of the device (barcode).
    #[arg(long, value_name = "SN")]
    pub serial: Option<String>,
    /// Number of devices to provision (one after another on each fixture; in all over
    /// several fixtures).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Operator ID recorded with every attempt.
    #[arg(long, env = "STATION_OPERATOR", default_value = "")]
    pub operator: String,
    /// Permit replacing an identity a device already holds (irreversible).
    #[arg(long)]
    pub allow_overwrite: bool,
    /// Permit a re-key: writing a provisioned device a credential other than the one its
    /// enrollment holds (a new certificate, another group key or ID scope). The old version is
    /// kept.
    #[arg(long, visible_alias = "allow-reissue")]
    pub allow_rekey: bool,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Directory for the devices' flash files (default: [simulator] flash_dir).
    #[arg(long, value_name = "DIR")]
    pub flash: Option<PathBuf>,
    /// Number of devices the fixture presents in turn (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub devices: u32,
    /// Simulate a gang of this many fixtures: one pty each, serials 100000 apart, flash in
    /// `<flash>/f<k>`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub fixtures: u32,
    /// With --fixtures: inject the faults on fixture K only (1-based, repeatable).
    #[arg(long, value_name = "K")]
    pub fault_fixture: Vec<u32>,
    /// Number of the first device.
    #[arg(long, default_value_t = 1)]
    pub first: u32,
    /// Serial-number prefix.
    #[arg(long, value_name = "PREFIX")]
    pub serial_prefix: Option<String>,
    /// Throttle to this baud rate (0 = unthrottled).
    #[arg(long)]
    pub baud: Option<u32>,
    /// Largest frame body the device accepts.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u16).range(64..))]
    pub max_body: u16,
    /// Firmware version the devices report.
    #[arg(long, default_value = "1.4.2")]
    pub firmware: String,
    /// Inject a fault (repeatable): noise, corrupt:N, drop:N, stall[:CMD], disconnect[:CMD],
    /// nak:CMD[:CODE], provisioned:REGID, bad-storage, csr-tamper, csr-cn:CN, csr-key:TYPE,
    /// busy:CMD[:N], wrong-type:CMD, stale-seq:CMD, empty-nak:CMD, state:CMD:N (docs/protocol.md §11).
    #[arg(long = "fault", value_name = "FAULT")]
    pub faults: Vec<String>,
    /// Apply faults only to the Nth device of this run.
    #[arg(long, value_name = "N")]
    pub fault_device: Option<u32>,
    /// The simulated devices' TPM, reached through this TCTI, answers READ_EK.
    #[arg(long, value_name = "TCTI")]
    pub tpm: Option<String>,
    /// HELLO capability bits the devices advertise (protocol.md §5), e.g. 0x1 for a device
    /// that stores symmetric keys only.
    #[arg(long, value_name = "BITS", value_parser = parse_bits)]
    pub capabilities: Option<u32>,
    /// The protocol the devices speak: v1, or smp (a Zephyr MCUmgr device: os, fs and settings
    /// groups; its faults are noise, corrupt:N, drop:N, fs-full:BYTES, wrong-hash[:NAME],
    /// slow-erase:MS, docs/smp.md). Default: [device] protocol.
    #[arg(long, value_parser = ["v1", "smp"])]
    pub protocol: Option<String>,
}

fn parse_bits(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("`{s}` is not a number (use e.g. 0x5 or 5)"))
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output directory (default: station.export_dir).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write an existing batch again (identical bytes).
    #[arg(long, value_name = "ID")]
    pub batch: Option<String>,
    /// List the batches instead of exporting.
    #[arg(long, conflicts_with = "batch")]
    pub list: bool,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Print the requests (signature and keys redacted) instead of sending them.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace enrollments DPS holds with a different attestation (bulk mode "update").
    #[arg(long)]
    pub update: bool,
    /// Read back every uploaded enrollment (query pages) and compare every field with what
    /// was sent; attestation is read again only where the enrollment's etag changed.
    #[arg(long, conflicts_with_all = ["dry_run", "update"])]
    pub verify: bool,
    /// With --verify: read every enrollment's attestation, whatever its etag.
    #[arg(long, requires = "verify")]
    pub deep: bool,
    /// With --verify: read each device's registration state (did it come up in the field?).
    #[arg(long, requires = "verify")]
    pub registrations: bool,
    /// Base URL instead of https://<upload.host> (testing, sovereign clouds).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Upload every station's exported enrollments from the fleet database ([fleet]), under
    /// this host's one [upload] rate limit; one run at a time across the fleet.
    #[arg(long, conflicts_with = "verify")]
    pub fleet: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only enrollments with this status: pending, provisioned, failed, exported.
    #[arg(long, value_parser = ["pending", "provisioned", "failed", "exported"])]
    pub status: Option<String>,
    /// Only enrollments whose serial or registration ID starts with this.
    #[arg(long)]
    pub search: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
}

#[derive(Debug, Args)]
pub struct DeriveKeyArgs {
    /// The device's registration ID.
    #[arg(long, value_name = "ID")]
    pub registration_id: String,
}
