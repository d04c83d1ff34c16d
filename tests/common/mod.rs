//! Shared helpers for integration tests: a station directory with its own config, the real
//! `station` binary, and the device simulator as a separate process on a real pty.
#![allow(dead_code)]

pub mod dps_server;
pub mod postgres;
pub mod swtpm;

use rusqlite::OptionalExtension;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const STATION: &str = env!("CARGO_BIN_EXE_station");

/// Test group key (tests/fixtures/group-key.txt): test material only.
pub const GROUP_KEY_FILE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/group-key.txt");

/// An enrollment row: (registration_id, serial, status, error_code, device_digest).
pub type Row = (String, String, String, Option<String>, Option<String>);

/// A temporary station: directory, station.toml, database and export dir inside it.
pub struct StationDir {
    pub dir: tempfile::TempDir,
}

impl StationDir {
    /// A station with the default test configuration ([`default_config`]).
    pub fn new() -> Self {
        Self::with_config(&default_config())
    }

    /// A station with `config` as its station.toml.
    pub fn with_config(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("station.toml"), config).unwrap();
        StationDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("station.toml")
    }

    pub fn db(&self) -> PathBuf {
        self.path().join("data/station.db")
    }

    pub fn flash(&self) -> PathBuf {
        self.path().join("flash")
    }

    /// Run `station --config <this> args...`.
    pub fn station(&self, args: &[&str]) -> Output {
        Command::new(STATION)
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("STATION_GROUP_KEY")
            .env_remove("STATION_CONFIG")
            .output()
            .expect("station runs")
    }

    /// Start a simulator process with its flash in this station's `flash/` directory.
    pub fn simulator(&self, args: &[&str]) -> Simulator {
        Simulator::start(&self.flash(), args)
    }

    /// Enrollment rows as (registration_id, serial, status, error_code, device_digest).
    ///
    /// Read-only: a station killed before it created (or migrated) its database has no rows,
    /// and looking must not create the file.
    pub fn rows(&self) -> Vec<Row> {
        let Ok(conn) = read_only(&self.db()) else {
            return Vec::new();
        };
        let migrated: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'enrollments'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if !migrated {
            return Vec::new();
        }
        let mut st = conn
            .prepare("SELECT registration_id, device_serial, status, error_code, device_digest FROM enrollments ORDER BY id")
            .unwrap();
        st.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// Attempts as (registration_id, outcome, error_code).
    pub fn attempts(&self) -> Vec<(Option<String>, String, Option<String>)> {
        let conn = read_only(&self.db())
            .unwrap_or_else(|e| panic!("database {}: {e}", self.db().display()));
        let mut st = conn
            .prepare("SELECT registration_id, outcome, error_code FROM attempts ORDER BY id")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Check the database against the simulator's flash: every provisioned row's digest equals
    /// what the device holds, and no device holds an identity the database lacks.
    pub fn assert_db_matches_flash(&self) {
        let rows = self.rows();
        for (_, flash) in self.flash_devices() {
            let records = flash["records"].as_object().unwrap();
            let Some(regid_hex) = records.get("3").and_then(|v| v.as_str()) else {
                continue;
            };
            let regid = String::from_utf8(hex(regid_hex)).unwrap();
            let serial = flash["serial"].as_str().unwrap();
            let row = rows.iter().find(|r| r.0 == regid);
            match row {
                Some(r) if r.2 == "provisioned" => {
                    assert_eq!(r.1, serial, "row serial for {regid}");
                    assert_eq!(
                        r.4.as_deref(),
                        flash["digest"].as_str(),
                        "digest of {regid}"
                    );
                }
                // The device holds a credential the database has (pending/failed rows keep it),
                // or an identity that came from elsewhere (injected pre-provisioned devices).
                Some(_) => {}
                None => assert!(
                    regid.starts_with("foreign-"),
                    "device {serial} holds {regid}, which the database lacks"
                ),
            }
        }
        let devices = self.flash_devices();
        for r in rows.iter().filter(|r| r.2 == "provisioned") {
            // In the flash directory, or in a gang fixture's directory within it.
            let file = format!("{}.json", r.1);
            let (_, flash) = devices
                .iter()
                .find(|(p, _)| p.file_name().is_some_and(|n| n.to_string_lossy() == file))
                .unwrap_or_else(|| panic!("provisioned {} has no device flash {file}", r.0));
            assert_eq!(
                r.4.as_deref(),
                flash["digest"].as_str(),
                "provisioned {} must match its device",
                r.0
            );
        }
    }
}

/// A station in X.509 mode with its own development CA (test material).
pub fn x509_station(key_source: &str, key_type: &str) -> StationDir {
    let ca_dir = tempfile::tempdir().unwrap().keep();
    let out = Command::new(STATION)
        .args(["ca", "init", "--dev", ca_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let cfg = default_config().replace("mode = \"symmetric\"", "mode = \"x509\"")
        + &format!(
            "\n[attestation.x509]\nca_cert = \"{0}/dev-intermediate.pem\"\nca_key = \"{0}/dev-intermediate.key\"\n\
             chain = [\"{0}/dev-root.pem\"]\nkey_source = \"{key_source}\"\nkey_type = \"{key_type}\"\nvalidity_days = 730\n",
            ca_dir.display()
        );
    // [attestation.x509] must follow [attestation]; move the appended table up.
    let cfg = move_table_after(&cfg, "[attestation.x509]", "[attestation.symmetric]");
    let st = StationDir::with_config(&cfg);
    std::fs::create_dir_all(st.path().join("ca")).unwrap();
    for f in [
        "dev-root.pem",
        "dev-intermediate.pem",
        "dev-intermediate.key",
    ] {
        std::fs::copy(ca_dir.join(f), st.path().join("ca").join(f)).unwrap();
    }
    std::fs::remove_dir_all(&ca_dir).unwrap();
    let cfg = std::fs::read_to_string(st.config())
        .unwrap()
        .replace(ca_dir.to_str().unwrap(), "ca");
    std::fs::write(st.config(), cfg).unwrap();
    st
}

pub fn move_table_after(cfg: &str, table: &str, after: &str) -> String {
    let start = cfg.find(table).unwrap();
    let block = cfg[start..].to_string();
    let rest = &cfg[..start];
    let at = rest.find(after).unwrap();
    format!("{}{}\n{}", &rest[..at], block, &rest[at..])
}

impl StationDir {
    /// Every simulated device's flash file (path, contents). The simulator creates its flash
    /// directory when it starts: a missing one fails the test, since nothing could be checked.
    pub fn flash_devices(&self) -> Vec<(PathBuf, serde_json::Value)> {
        let entries = std::fs::read_dir(self.flash()).unwrap_or_else(|e| {
            panic!(
                "no flash directory {} to check: {e}",
                self.flash().display()
            )
        });
        // A gang simulator keeps each fixture's devices in a directory of its own.
        let mut devices: Vec<_> = entries
            .map(|e| e.unwrap().path())
            .flat_map(|p| {
                if p.is_dir() {
                    std::fs::read_dir(&p)
                        .unwrap()
                        .map(|e| e.unwrap().path())
                        .collect()
                } else {
                    vec![p]
                }
            })
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| {
                let flash = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                (p, flash)
            })
            .collect();
        devices.sort_by(|a, b| a.0.cmp(&b.0));
        devices
    }

    /// The crash-safety invariant, read from the device side: every identity a simulated
    /// device holds is a credential version the database holds (provisioned, recorded as
    /// pending or failed, or superseded), and for X.509 the certificate the device holds is
    /// the one stored for that version.
    pub fn assert_every_device_credential_is_in_db(&self) {
        // Read-only, and looking does not create the file; a device holding an identity
        // while the database is missing fails below.
        let conn = read_only(&self.db()).ok();
        for (path, flash) in self.flash_devices() {
            let digest = flash["digest"].as_str().unwrap().to_string();
            if flash["records"].as_object().is_none_or(|r| r.is_empty()) {
                continue;
            }
            let held: Option<Option<String>> = conn.as_ref().and_then(|conn| {
                conn.query_row(
                    "SELECT public_material FROM enrollments WHERE device_digest = ?1 OR (status <> 'provisioned' AND expected_digest = ?1) \
                     UNION ALL SELECT public_material FROM superseded_enrollments WHERE device_digest = ?1 LIMIT 1",
                    [&digest],
                    |r| r.get(0),
                )
                .optional()
                .unwrap_or_else(|e| panic!("reading {}: {e}", self.db().display()))
            });
            let Some(material) = held else {
                panic!(
                    "device {} holds digest {digest}, which no credential version in the database has",
                    path.display()
                );
            };
            let chain = flash["records"]["5"]
                .as_str()
                .map(|h| String::from_utf8_lossy(&hex(h)).into_owned())
                .unwrap_or_default();
            if chain.starts_with("-----BEGIN CERTIFICATE-----") {
                let cert = material.expect("an X.509 enrollment keeps its certificate");
                assert!(
                    chain.starts_with(cert.trim_end()),
                    "device {} holds a certificate the database does not",
                    path.display()
                );
            }
        }
    }
}

pub fn hex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The test station configuration.
pub fn default_config() -> String {
    format!(
        r#"
[station]
id = "test-station"
line = "line-t"
database = "data/station.db"
export_dir = "exports"

[dps]
id_scope = "0ne000TEST1"
allocation_policy = "hashed"
iot_hubs = ["hub-a.azure-devices.net", "hub-b.azure-devices.net"]
reprovision = "reprovision-and-reset"

[dps.initial_twin.tags]
environment = "production"

[dps.initial_twin.desired]
telemetryInterval = 30

[registration]
template = "{{serial}}"

[attestation]
mode = "symmetric"

[attestation.symmetric]
keys = "group-derived"
group_key_file = "{GROUP_KEY_FILE}"

[serial]
port = "sim"
response_timeout_ms = 1000
commit_timeout_ms = 3000
retries = 3
next_device_timeout_s = 5

[simulator]
flash_dir = "flash"
"#
    )
}

/// A read-only connection that waits out a station's writes (and the recovery of a killed
/// station's write-ahead log) instead of failing at once.
pub fn read_only(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

/// A `station simulate` process.
pub struct Simulator {
    pub child: Child,
    pub port: String,
}

impl Simulator {
    pub fn start(flash: &Path, args: &[&str]) -> Simulator {
        let mut child = Command::new(STATION)
            .arg("simulate")
            .arg("--flash")
            .arg(flash)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("simulator starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().to_string();
        assert!(port.starts_with("/dev/"), "simulator printed {line:?}");
        Simulator { child, port }
    }

    /// `station simulate --fixtures n`: one process, `n` ptys; `ports` in fixture order.
    pub fn start_gang(flash: &Path, n: usize, args: &[&str]) -> (Simulator, Vec<String>) {
        let mut child = Command::new(STATION)
            .arg("simulate")
            .arg("--flash")
            .arg(flash)
            .args(["--fixtures", &n.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("simulator starts");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let ports: Vec<String> = (0..n)
            .map(|k| {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let (id, port) = line.trim().split_once(' ').unwrap_or(("", ""));
                assert_eq!(id, format!("f{}", k + 1), "simulator printed {line:?}");
                assert!(port.starts_with("/dev/"), "simulator printed {line:?}");
                port.to_string()
            })
            .collect();
        let first = ports.first().cloned().unwrap_or_default();
        (Simulator { child, port: first }, ports)
    }

    /// Whether the simulator process has ended.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection to a station database for a test that changes it outside the station (as a
/// crash or an older station would leave it): the audit hash is registered, so the change is
/// logged like the station's own.
pub fn writable_db(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    provisioning_station::store::audit::register_functions(&conn).unwrap();
    conn
}

/// JSON lines of an output.
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Text of stdout and stderr together.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The swagger's schema, made strict, with exactly the two documented defects worked around:
/// the 2-character registrationId pattern, and TwinCollection's object-only values.
pub fn bulk_schema() -> serde_json::Value {
    let spec: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/dps-service-2021-10-01.json")).unwrap();
    let mut defs = spec["definitions"].clone();
    for (name, def) in defs.as_object_mut().unwrap() {
        let Some(props) = def
            .get_mut("properties")
            .and_then(serde_json::Value::as_object_mut)
        else {
            continue;
        };
        // Service-filled fields must never be sent.
        props.retain(|k, v| v.get("readOnly") != Some(&serde_json::json!(true)) && k != "etag");
        if name == "TwinCollection" {
            def["additionalProperties"] = serde_json::json!(true);
        } else {
            def["additionalProperties"] = serde_json::json!(false);
        }
    }
    defs["IndividualEnrollment"]["properties"]["registrationId"]["pattern"] =
        serde_json::json!("^[a-z0-9]([a-z0-9._:-]{0,126}[a-z0-9-])?$");
    serde_json::json!({"$ref": "#/definitions/BulkEnrollmentOperation", "definitions": defs})
}

pub fn validate(doc: &serde_json::Value) -> Vec<String> {
    let v = jsonschema::validator_for(&bulk_schema()).unwrap();
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}
