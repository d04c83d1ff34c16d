//! `station fleet release`: give back a claim this station holds on a registration ID whose
//! device never passed here, so that another station can provision the device (moved for
//! rework, a fixture taken out of service). Refused while the ID is provisioned anywhere: a
//! provisioned identity stays claimed (re-key it instead). The release is recorded in
//! `fleet.releases` and in this station's audit trail.

use super::{connect, schema, section, server};
use crate::config::Config;
use crate::error::{Error, ErrorCode, Result};
use crate::store::{Status, Store};
use serde::Serialize;

/// The SQLSTATE `fleet.release()` raises for a release it refuses.
const REFUSED: &str = "PS002";

/// What a release gave back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Released {
    pub registration_id: String,
    /// The EK hashes and certificate thumbprints claimed with it (`ek:…`, `x509:…`).
    pub keys: Vec<String>,
    pub reason: String,
}

fn refused(registration_id: &str, why: &str) -> Error {
    Error::Fleet {
        code: ErrorCode::FleetReleaseRefused,
        message: format!("cannot release the claim on `{registration_id}`: {why}"),
    }
}

/// Release this station's claim on `registration_id`, for `reason` (kept with the release).
pub fn release(config: &Config, registration_id: &str, reason: &str) -> Result<Released> {
    section(config)?;
    let registration_id = registration_id.trim().to_lowercase();
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Error::Usage(
            "say why the claim is released: --reason \"moved to line B for rework\"".into(),
        ));
    }
    let store = Store::open(&config.database_path())?;
    if let Some(at) = store.provisioned_at(&registration_id)? {
        return Err(refused(
            &registration_id,
            &format!(
                "this station provisioned it ({at}); a provisioned identity stays claimed (re-key the device here with --allow-rekey)"
            ),
        ));
    }
    if store.find(&registration_id)?.map(|e| e.status) == Some(Status::Pending) {
        return Err(refused(
            &registration_id,
            "a device with this ID is being written here, or a run stopped while writing it: take it off the fixture, or re-run it here to finish it (then release it if it failed)",
        ));
    }
    let mut client = connect(config)?;
    schema::check(&mut client)?;
    let row = client
        .query_one(
            "SELECT fleet.release($1, $2, $3)",
            &[&registration_id, &config.station.id, &reason],
        )
        .map_err(
            |e| match e.as_db_error().filter(|d| d.code().code() == REFUSED) {
                Some(db) => refused(&registration_id, db.message()),
                None => server(e),
            },
        )?;
    let released = Released {
        registration_id,
        keys: row.get(0),
        reason: reason.to_string(),
    };
    // The release is committed in the fleet database; a failure to log it here must say so.
    let logged = store
        .audit(
            "fleet_release",
            &released.registration_id,
            &serde_json::json!(released),
        )
        .and_then(|()| store.sign_audit_head("fleet_release").map(|_| ()));
    if let Err(e) = logged {
        return Err(Error::Database {
            path: store.path().to_string(),
            message: format!(
                "the claim on `{}` WAS released (fleet.releases holds it), but this station's audit trail could not record it: {e}",
                released.registration_id
            ),
        });
    }
    Ok(released)
}
