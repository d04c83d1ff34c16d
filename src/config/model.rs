//! The serde model of `station.toml`. Every key is documented in `docs/config.md`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub station: StationSection,
    pub dps: DpsSection,
    #[serde(default)]
    pub registration: RegistrationSection,
    pub attestation: AttestationSection,
    #[serde(default)]
    pub serial: SerialSection,
    #[serde(default)]
    pub simulator: SimulatorSection,
    /// `[device]`: the protocol the devices speak (v1 or Zephyr MCUmgr).
    #[serde(default)]
    pub device: super::DeviceSection,
    #[serde(default)]
    pub upload: Option<UploadSection>,
    #[serde(default)]
    pub gui: GuiSection,
    /// `[label]`: the device label printed after each PASS (none: no labels).
    #[serde(default)]
    pub label: Option<super::LabelSection>,
    /// `[fleet]`: the shared PostgreSQL database (none: a standalone station).
    #[serde(default)]
    pub fleet: Option<super::FleetSection>,
    /// `[[fixture]]` tables: the slots of a gang fixture. None: `[serial]` is the one fixture.
    #[serde(default, rename = "fixture")]
    pub fixtures: Vec<super::FixtureSection>,
    /// Directory of the file this was loaded from; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file this was loaded from (for messages).
    #[serde(skip)]
    pub source_path: PathBuf,
}

/// `[station]`: who this station is and where it keeps its data.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StationSection {
    pub id: String,
    #[serde(default)]
    pub line: String,
    pub database: PathBuf,
    pub export_dir: PathBuf,
}

/// `[dps]`: the DPS coordinates written to devices and the options of every enrollment.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DpsSection {
    pub id_scope: String,
    #[serde(default = "default_global_endpoint")]
    pub global_endpoint: String,
    #[serde(default)]
    pub allocation_policy: Option<AllocationPolicy>,
    #[serde(default)]
    pub iot_hubs: Vec<String>,
    #[serde(default)]
    pub iot_hub_host_name: Option<String>,
    #[serde(default)]
    pub provisioning_status: ProvisioningStatus,
    #[serde(default)]
    pub reprovision: Reprovision,
    #[serde(default)]
    pub iot_edge: bool,
    #[serde(default)]
    pub initial_twin: InitialTwin,
}

fn default_global_endpoint() -> String {
    "global.azure-devices-provisioning.net".to_string()
}

/// DPS allocation policy, spelled as the service API spells it.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum AllocationPolicy {
    #[serde(rename = "hashed")]
    Hashed,
    #[serde(rename = "geoLatency")]
    GeoLatency,
    #[serde(rename = "static")]
    Static,
    #[serde(rename = "custom")]
    Custom,
}

/// Whether DPS lets the device register.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProvisioningStatus {
    #[default]
    Enabled,
    Disabled,
}

/// The seed's three re-provisioning options.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Reprovision {
    /// Re-provision and migrate data (DPS default).
    #[default]
    ReprovisionAndMigrate,
    /// Re-provision and reset to the initial configuration.
    ReprovisionAndReset,
    /// Never re-provision: the device stays on its hub.
    Never,
}

impl Reprovision {
    /// `(updateHubAssignment, migrateDeviceData)` as the API spells it.
    pub fn flags(self) -> (bool, bool) {
        match self {
            Reprovision::ReprovisionAndMigrate => (true, true),
            Reprovision::ReprovisionAndReset => (true, false),
            Reprovision::Never => (false, false),
        }
    }
}

/// `[dps.initial_twin]`: tags and desired properties given to every device's twin.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InitialTwin {
    #[serde(default)]
    pub tags: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub desired: serde_json::Map<String, serde_json::Value>,
}

/// `[registration]`: how a registration ID is formed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationSection {
    #[serde(default = "default_template")]
    pub template: String,
}

impl Default for RegistrationSection {
    fn default() -> Self {
        Self {
            template: default_template(),
        }
    }
}

fn default_template() -> String {
    "{serial}".to_string()
}

/// `[attestation]`: which credential each device gets.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationSection {
    pub mode: AttestationMode,
    #[serde(default)]
    pub symmetric: Option<SymmetricSection>,
    #[serde(default)]
    pub x509: Option<X509Section>,
    #[serde(default)]
    pub tpm: Option<TpmSection>,
}

/// The attestation kind.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttestationMode {
    Symmetric,
    X509,
    Tpm,
}

/// `[attestation.tpm]`: where the device's TPM is reached and how its EK is checked.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TpmSection {
    #[serde(default)]
    pub source: TpmReach,
    /// TCTI of the fixture's TPM connection (`source = "tcti"`).
    #[serde(default)]
    pub tcti: Option<String>,
    #[serde(default)]
    pub ek_type: TpmEkType,
    /// Permission to persist a newly created EK at 0x81010001.
    #[serde(default)]
    pub persist_ek: bool,
    #[serde(default)]
    pub registration_id: TpmRegistrationId,
    #[serde(default)]
    pub ek_certificate: EkCertPolicy,
    /// PEM bundles of TPM manufacturer roots and intermediates.
    #[serde(default)]
    pub ek_roots: Vec<PathBuf>,
    /// Also enroll the SRK at 0x81000001 as `storageRootKey`.
    #[serde(default)]
    pub include_srk: bool,
}

/// Where the station reads the EK.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TpmReach {
    /// The fixture exposes the device's TPM to the station (a TCTI).
    #[default]
    Tcti,
    /// The device reads its own TPM and reports over serial (READ_EK).
    Device,
}

/// EK algorithm.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TpmEkType {
    #[default]
    Rsa2048,
    EccP256,
}

/// How the registration ID of a TPM device is formed.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TpmRegistrationId {
    /// As the Azure C SDK derives it from the EK.
    #[default]
    Ek,
    /// The `[registration]` template.
    Template,
}

/// What a missing or failing EK certificate does.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EkCertPolicy {
    /// Fail the device.
    #[default]
    Require,
    /// Pass the device, record a warning.
    Warn,
    /// Do not check.
    Off,
}

/// `[attestation.x509]`: the station's issuing CA and the device certificate profile.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct X509Section {
    /// Issuing (intermediate) CA certificate, PEM.
    pub ca_cert: PathBuf,
    /// Its private key, PEM (PKCS#8, SEC1 or PKCS#1).
    pub ca_key: PathBuf,
    /// Certificates above the issuing CA, up to the root, PEM.
    #[serde(default)]
    pub chain: Vec<PathBuf>,
    #[serde(default)]
    pub key_source: X509KeySource,
    #[serde(default)]
    pub key_type: X509KeyType,
    #[serde(default = "default_validity_days")]
    pub validity_days: u32,
}

fn default_validity_days() -> u32 {
    3650
}

/// Where a device's private key is generated.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum X509KeySource {
    /// On the device, which returns a CSR: the key never crosses the wire.
    #[default]
    Device,
    /// On the station, which writes key and chain to the device and forgets the key.
    Station,
}

/// Device key algorithm.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum X509KeyType {
    #[default]
    P256,
    P384,
    Rsa2048,
}

/// `[attestation.symmetric]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SymmetricSection {
    #[serde(default)]
    pub keys: SymmetricKeys,
    /// File holding the base64 enrollment-group primary key.
    #[serde(default)]
    pub group_key_file: Option<PathBuf>,
    /// Environment variable holding the group primary key; wins over the file when set.
    #[serde(default)]
    pub group_key_env: Option<String>,
    /// Optional: the group's secondary key, for the enrollment's secondaryKey.
    #[serde(default)]
    pub secondary_group_key_file: Option<PathBuf>,
    #[serde(default)]
    pub secondary_group_key_env: Option<String>,
}

/// Where per-device symmetric keys come from.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SymmetricKeys {
    /// HMAC-SHA256 of the registration ID under the group key; never stored.
    #[default]
    GroupDerived,
    /// Fresh random primary and secondary keys; stored, since DPS needs them.
    Individual,
}

/// `[serial]`: the fixture's serial line.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSection {
    /// A tty path, `sim` for the built-in simulator, or `auto` to find a USB fixture by VID:PID.
    #[serde(default = "default_port")]
    pub port: String,
    /// `VID:PID` pairs (hex) that `auto` accepts.
    #[serde(default)]
    pub usb_ids: Vec<String>,
    /// With `auto`: the USB serial number of this fixture's adapter (tells adapters of the same
    /// VID:PID apart).
    #[serde(default)]
    pub usb_serial: Option<String>,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Base time allowed for a device's answer, before line time is added.
    #[serde(default = "default_response_timeout")]
    pub response_timeout_ms: u64,
    /// Extra time allowed for COMMIT (flash writes).
    #[serde(default = "default_commit_timeout")]
    pub commit_timeout_ms: u64,
    /// Extra time allowed for GEN_CSR (key generation on the device).
    #[serde(default = "default_keygen_timeout")]
    pub keygen_timeout_ms: u64,
    /// How often a request is re-sent after a timeout or a corrupt answer.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// How long `provision --count N` waits for the next device.
    #[serde(default = "default_next_device_timeout")]
    pub next_device_timeout_s: u64,
}

impl Default for SerialSection {
    fn default() -> Self {
        Self {
            port: default_port(),
            usb_ids: Vec::new(),
            usb_serial: None,
            baud: default_baud(),
            response_timeout_ms: default_response_timeout(),
            commit_timeout_ms: default_commit_timeout(),
            keygen_timeout_ms: default_keygen_timeout(),
            retries: default_retries(),
            next_device_timeout_s: default_next_device_timeout(),
        }
    }
}

fn default_port() -> String {
    "sim".to_string()
}
fn default_baud() -> u32 {
    115_200
}
fn default_response_timeout() -> u64 {
    500
}
fn default_commit_timeout() -> u64 {
    2_000
}
fn default_keygen_timeout() -> u64 {
    15_000
}
fn default_retries() -> u32 {
    3
}
fn default_next_device_timeout() -> u64 {
    60
}

/// `[simulator]`: the built-in device simulator used when `serial.port = "sim"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSection {
    /// Where simulated devices keep their "flash" (one JSON file per device).
    #[serde(default = "default_flash_dir")]
    pub flash_dir: PathBuf,
    /// Serial-number prefix of simulated devices.
    #[serde(default = "default_serial_prefix")]
    pub serial_prefix: String,
    /// Simulated line rate; 0 = as fast as the pty goes.
    #[serde(default)]
    pub baud: u32,
    /// Number of the first simulated device (serials are `<prefix><number:06>`). With several
    /// `sim` fixtures, the k-th (from 0) starts at `first + k * 100000`.
    #[serde(default = "default_first")]
    pub first: u32,
}

fn default_first() -> u32 {
    1
}

impl Default for SimulatorSection {
    fn default() -> Self {
        Self {
            flash_dir: default_flash_dir(),
            serial_prefix: default_serial_prefix(),
            baud: 0,
            first: default_first(),
        }
    }
}

fn default_flash_dir() -> PathBuf {
    PathBuf::from("station-data/sim-flash")
}
fn default_serial_prefix() -> String {
    "SIM".to_string()
}

impl Config {
    /// Resolve a configured path against the configuration file's directory.
    pub fn resolve(&self, p: &std::path::Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The database path, resolved.
    pub fn database_path(&self) -> PathBuf {
        self.resolve(&self.station.database)
    }

    /// The export directory, resolved.
    pub fn export_dir(&self) -> PathBuf {
        self.resolve(&self.station.export_dir)
    }
}

/// `[upload]`: the DPS service API the station uploads enrollments to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UploadSection {
    /// The DPS instance's service host, e.g. `my-dps.azure-devices-provisioning.net`.
    pub host: String,
    /// Base URL instead of `https://<host>` (sovereign clouds, a test server).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Shared access policy name.
    #[serde(default = "default_policy_name")]
    pub policy_name: String,
    /// File holding the policy's base64 key (never the key itself in this file).
    #[serde(default)]
    pub policy_key_file: Option<PathBuf>,
    /// Environment variable holding the policy key; wins over the file when set.
    #[serde(default)]
    pub policy_key_env: Option<String>,
    /// Lifetime of each SAS token; tokens are renewed before they expire.
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_s: u64,
    /// Bulk calls per minute at most (DPS allows 1,000 service operations per minute).
    #[serde(default = "default_rate_per_minute")]
    pub rate_per_minute: u32,
    /// Give up retrying a call (429, 5xx, network) after this long.
    #[serde(default = "default_give_up")]
    pub give_up_after_s: u64,
    /// Timeout of one HTTP request.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_s: u64,
    /// Enrollments asked for per query page when reading back and verifying
    /// (`x-ms-max-item-count`; DPS may return fewer).
    #[serde(default = "default_query_page_size")]
    pub query_page_size: u32,
}

fn default_query_page_size() -> u32 {
    1000
}

fn default_policy_name() -> String {
    "provisioningserviceowner".into()
}
fn default_token_lifetime() -> u64 {
    3600
}
/// Default of `upload.rate_per_minute`: well below DPS's 1,000 operations per minute.
pub const DEFAULT_UPLOAD_RATE_PER_MINUTE: u32 = 600;

fn default_rate_per_minute() -> u32 {
    DEFAULT_UPLOAD_RATE_PER_MINUTE
}
fn default_give_up() -> u64 {
    300
}
fn default_request_timeout() -> u64 {
    30
}

/// `[gui]`: the technician's window.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuiSection {
    /// Start provisioning as soon as a new device answers on the fixture.
    #[serde(default)]
    pub auto_start: bool,
    /// Play a short sound on PASS and FAIL (the operator can mute it).
    #[serde(default = "default_true")]
    pub sounds: bool,
    /// Text scale for reading from two metres away.
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Open full screen (the kiosk entry).
    #[serde(default)]
    pub fullscreen: bool,
}

impl Default for GuiSection {
    fn default() -> Self {
        Self {
            auto_start: false,
            sounds: true,
            scale: default_scale(),
            fullscreen: false,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_scale() -> f32 {
    1.25
}
