//! The fleet database: many stations, one PostgreSQL registry (docs/fleet.md).
//!
//! This module owns the connection (password from a file or the environment, TLS with rustls),
//! the central schema and its append-only migrations ([`schema`]), fleet-wide claims of
//! registration IDs and EK / certificate thumbprints ([`claim`]), the outbox sync ([`sync`]) and
//! the fleet's status ([`status`]). The station's SQLite database stays its durable journal: the
//! station provisions on when the server is away, and nothing here writes to a device.

pub mod claim;
pub mod release;
pub mod schema;
pub mod status;
pub mod sync;
pub mod upload;

pub use claim::Claimer;
pub use status::{ConflictRow, FleetStatus, LineDay, StationRow};
pub use sync::{SyncHandle, SyncReport, SyncState};

use crate::config::{Config, FleetSection, SslMode};
use crate::error::{Error, ErrorCode, Result};
use postgres::Client;
use std::sync::Arc;
use std::time::Duration;

/// The schema that holds every fleet table.
pub const SCHEMA: &str = "fleet";

/// The `[fleet]` section, or the error a fleet command gives without one.
pub fn section(config: &Config) -> Result<&FleetSection> {
    config
        .fleet
        .as_ref()
        .ok_or(Error::MissingSection { section: "[fleet]" })
}

/// Open a connection to the fleet database named in `config`.
pub fn connect(config: &Config) -> Result<Client> {
    let f = section(config)?;
    let mut pg: postgres::Config = f.url.parse().map_err(|e| Error::ConfigInvalid {
        location: config.source_path.display().to_string(),
        key: "fleet.url".into(),
        message: format!("not a PostgreSQL connection string: {e}"),
    })?;
    if let Some(password) = password(config, f)? {
        pg.password(password);
    }
    pg.connect_timeout(Duration::from_secs(f.connect_timeout_s));
    pg.tcp_user_timeout(Duration::from_secs(f.connect_timeout_s * 4));
    pg.keepalives_idle(Duration::from_secs(30));
    pg.application_name(&format!("station {}", config.station.id));
    let result = match f.sslmode {
        SslMode::Disable => {
            pg.ssl_mode(postgres::config::SslMode::Disable);
            pg.connect(postgres::NoTls)
        }
        SslMode::Require => {
            pg.ssl_mode(postgres::config::SslMode::Require);
            pg.connect(tls(config, f)?)
        }
    };
    result.map_err(refused_at_connect)
}

/// A connection that failed: the server refusing the role (SQLSTATE class 28: a wrong password,
/// no pg_hba.conf entry for this address or encryption), a password the server asks for and
/// the station lacks, a server certificate the station does not trust, or no such database,
/// is a configuration fault that waiting does not mend, so it is not `fleet.unreachable`
/// (which `offline = "allow"` rides out); a server starting up or out of connections is.
fn refused_at_connect(e: postgres::Error) -> Error {
    let code = e.as_db_error().map(|d| d.code().code().to_string());
    let text = describe(&e);
    let untrusted = text.contains("invalid peer certificate");
    match code.as_deref() {
        Some(c) if c.starts_with("28") => Error::Fleet {
            code: ErrorCode::FleetAuth,
            message: format!("the server refused the role: {text}"),
        },
        None if text.contains("password missing") => Error::Fleet {
            code: ErrorCode::FleetAuth,
            message: format!(
                "the server asks for a password and [fleet] has neither password_file nor password_env: {text}"
            ),
        },
        None if untrusted => Error::Fleet {
            code: ErrorCode::FleetAuth,
            message: format!(
                "the server's certificate is not trusted (check [fleet] ca_file and the host name in url): {text}"
            ),
        },
        Some("3D000") => Error::Fleet {
            code: ErrorCode::FleetServer,
            message: describe(&e),
        },
        _ => unreachable(e),
    }
}

/// The role's password: the environment variable wins over the file; neither is fine (peer
/// or certificate authentication on a unix socket).
fn password(config: &Config, f: &FleetSection) -> Result<Option<String>> {
    if let Some(v) = f
        .password_env
        .as_deref()
        .and_then(|v| std::env::var(v).ok())
    {
        return Ok(Some(v));
    }
    let Some(file) = &f.password_file else {
        if let Some(var) = &f.password_env {
            return Err(Error::Secret {
                what: "fleet.password_env".into(),
                message: format!(
                    "environment variable {var} is not set and no password_file is configured"
                ),
            });
        }
        return Ok(None);
    };
    let path = config.resolve(file);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Secret {
        what: "fleet.password_file".into(),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    Ok(Some(text.lines().next().unwrap_or_default().to_string()))
}

/// rustls with the configured CA, or the public web roots, on the ring provider ureq uses.
fn tls(config: &Config, f: &FleetSection) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    match &f.ca_file {
        Some(file) => {
            let path = config.resolve(file);
            let bad = |message: String| Error::ConfigInvalid {
                location: config.source_path.display().to_string(),
                key: "fleet.ca_file".into(),
                message,
            };
            let pem = std::fs::read(&path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            let certs = x509_parser::pem::Pem::iter_from_buffer(&pem)
                .map(|p| p.map(|p| p.contents))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("{} is not PEM: {e}", path.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs.into_iter().map(Into::into));
            if added == 0 {
                return Err(bad(format!("{} holds no CA certificate", path.display())));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal {
            message: format!("TLS setup: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
}

/// The server could not be reached (or the connection broke).
pub(crate) fn unreachable(e: postgres::Error) -> Error {
    Error::Fleet {
        code: ErrorCode::FleetUnreachable,
        message: describe(&e),
    }
}

/// The server refused a request; a broken connection is `fleet.unreachable`.
pub(crate) fn server(e: postgres::Error) -> Error {
    if e.is_closed() || e.as_db_error().is_none() {
        return unreachable(e);
    }
    Error::Fleet {
        code: ErrorCode::FleetServer,
        message: describe(&e),
    }
}

/// The error with its cause chain (postgres' Display alone often says only "db error").
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
