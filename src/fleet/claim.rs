//! Fleet-wide claims: before a credential goes to a device, the station claims its
//! registration ID (and its EK hash or certificate thumbprint) in the fleet database in one
//! round trip. A claim another station holds fails the device with `fleet.claimed`, naming
//! that station and line; a claim this station already holds is fine (re-running a device).
//!
//! When the server cannot be reached the `[fleet] offline` policy decides: `allow` goes on
//! (the claim is made when the outbox reaches the server, and a conflict found then is
//! flagged), `refuse` fails the device with `fleet.unreachable`. After a failed connection
//! the claimer does not try again for [`RETRY_AFTER`], so devices do not each wait for it.

use super::{connect, schema, server};
use crate::config::{Config, OfflinePolicy};
use crate::domain::Credential;
use crate::error::{Error, ErrorCode, Result};
use postgres::{Client, Statement};
use std::time::{Duration, Instant};

/// How long after a failed connection the claimer counts the server as away.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The SQLSTATE `fleet.claim()` raises for a claim another station holds.
const CLAIMED: &str = "PS001";

/// What a claim came to when it did not fail the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The fleet database recorded the claim (or this station held it already).
    Held,
    /// The server is away and the policy allows going on; the reason, for a warning.
    Offline(String),
}

/// One connection's claims for a station (one per fixture worker).
pub struct Claimer {
    config: Config,
    conn: Option<(Client, Statement)>,
    away_until: Option<Instant>,
    last_error: String,
}

/// The key a credential is claimed under besides its registration ID, if it has one.
pub fn credential_key(credential: &Credential) -> Option<String> {
    match credential {
        Credential::Tpm(m) => Some(format!("ek:{}", m.ek_hash)),
        Credential::X509 { certificate, .. } => Some(format!("x509:{}", certificate.thumbprint)),
        Credential::SymmetricKey { .. } => None,
    }
}

impl Claimer {
    /// A claimer for the station `config` names; connects now if it can. A fleet schema
    /// missing or newer than this binary is refused here, before any device.
    pub fn new(config: &Config) -> Result<Claimer> {
        super::section(config)?;
        let mut claimer = Claimer {
            config: config.clone(),
            conn: None,
            away_until: None,
            last_error: String::new(),
        };
        match claimer.connection() {
            Ok(_) => Ok(claimer),
            Err(e) if e.code() == ErrorCode::FleetUnreachable => Ok(claimer),
            Err(e) => Err(e),
        }
    }

    /// Whether the last contact with the server worked.
    pub fn online(&self) -> bool {
        self.conn.is_some()
    }

    fn connection(&mut self) -> Result<&mut (Client, Statement)> {
        if self.conn.is_none() {
            let mut client = connect(&self.config)?;
            schema::check(&mut client)?;
            let stmt = client
                .prepare("SELECT fleet.claim($1, $2, $3, $4)")
                .map_err(server)?;
            self.conn = Some((client, stmt));
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Claim `registration_id` (and `key`) for this station.
    pub fn claim(&mut self, registration_id: &str, key: Option<&str>) -> Result<Claimed> {
        let away = self.away_until.is_some_and(|t| Instant::now() < t);
        let result = if away {
            Err(Error::Fleet {
                code: ErrorCode::FleetUnreachable,
                message: self.last_error.clone(),
            })
        } else {
            self.try_claim(registration_id, key)
        };
        match result {
            Ok(()) => {
                self.away_until = None;
                Ok(Claimed::Held)
            }
            Err(e) if e.code() == ErrorCode::FleetUnreachable => {
                if !away {
                    self.conn = None;
                    self.away_until = Some(Instant::now() + RETRY_AFTER);
                    self.last_error = e.to_string();
                }
                match self.config.fleet.as_ref().map(|f| f.offline) {
                    Some(OfflinePolicy::Allow) => Ok(Claimed::Offline(e.to_string())),
                    _ => Err(Error::Fleet {
                        code: ErrorCode::FleetUnreachable,
                        message: format!(
                            "cannot claim `{registration_id}` ({e}); [fleet] offline = \"refuse\": nothing was written to the device"
                        ),
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn try_claim(&mut self, registration_id: &str, key: Option<&str>) -> Result<()> {
        let station = self.config.station.id.clone();
        let line = self.config.station.line.clone();
        let (client, stmt) = self.connection()?;
        match client.execute(stmt, &[&registration_id, &key, &station, &line]) {
            Ok(_) => Ok(()),
            Err(e) => match e.as_db_error().filter(|d| d.code().code() == CLAIMED) {
                Some(db) => Err(Error::FleetClaimed {
                    registration_id: registration_id.to_string(),
                    what: db.message().to_string(),
                    station: db.detail().unwrap_or_default().to_string(),
                    line: db.hint().unwrap_or_default().to_string(),
                }),
                None => Err(server(e)),
            },
        }
    }
}
