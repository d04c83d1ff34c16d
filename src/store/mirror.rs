//! The central upload's mirror: a station database (`<database>.fleet-upload.db`) on the host
//! that runs `station upload --fleet`, holding the fleet's exported enrollment versions that DPS
//! has not accepted yet, so that the one uploader ([`crate::dps::upload::upload`]) sends them
//! under one rate limit. `fleet_mirror` maps each mirror version to its station's version
//! (station, export_seq); the upload results are written back to the fleet database by that
//! key. The mirror holds no key: symmetric keys are re-derived from the group keys where the
//! upload runs.

use super::{NEXT_SEQ, Store, now};
use crate::error::{Error, Result};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

/// One enrollment version of a station, as the fleet database holds it.
#[derive(Debug, Clone)]
pub struct MirrorVersion {
    pub station: String,
    pub export_seq: i64,
    pub registration_id: String,
    pub device_serial: String,
    pub attestation_type: String,
    pub key_source: Option<String>,
    pub group_key_id: Option<String>,
    /// The certificate PEM (X.509) or the EK (TPM).
    pub public_material: Option<String>,
    pub cert_thumbprint: Option<String>,
    pub storage_root_key: Option<String>,
    pub line: String,
    pub provisioned_at: Option<String>,
    /// Whether its secondary key is one only its station holds (`None`: synced by a station
    /// that did not say).
    pub secondary_held: Option<bool>,
}

/// One station batch's versions to mirror, in export order.
#[derive(Debug, Clone)]
pub struct MirrorBatch {
    pub station: String,
    pub batch: String,
    pub dps_options: String,
    pub versions: Vec<MirrorVersion>,
}

/// An upload result of the mirror, keyed by its station's version.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorResult {
    pub station: String,
    pub export_seq: i64,
    pub registration_id: String,
    pub status: String,
    pub mode: String,
    pub error_code: Option<i64>,
    pub updated_at: String,
}

impl Store {
    /// Open (or create) a mirror database.
    pub fn open_mirror(path: &std::path::Path) -> Result<Store> {
        let store = Store::open(path)?;
        store
            .conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS fleet_mirror (
                     seq        INTEGER PRIMARY KEY,
                     station    TEXT NOT NULL,
                     export_seq INTEGER NOT NULL,
                     UNIQUE (station, export_seq))",
            )
            .map_err(|e| store.err(e))?;
        Ok(store)
    }

    /// Whether the mirror holds `station`'s version `export_seq` already.
    pub fn mirrored(&self, station: &str, export_seq: i64) -> Result<bool> {
        self.conn
            .prepare_cached("SELECT 1 FROM fleet_mirror WHERE station = ?1 AND export_seq = ?2")
            .and_then(|mut s| {
                s.query_row(params![station, export_seq], |_| Ok(()))
                    .optional()
            })
            .map(|r| r.is_some())
            .map_err(|e| self.err(e))
    }

    /// Add a batch's versions, in one transaction: each gets the next mirror sequence, a newer
    /// version of a registration ID supersedes the mirrored one, and the versions form one
    /// mirror batch with the station batch's DPS options.
    pub fn mirror_batch(&mut self, b: &MirrorBatch) -> Result<usize> {
        let path = self.path().to_string();
        let e = |e: rusqlite::Error| Error::database(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let (mut first, mut last, mut n) = (None, 0, 0);
        for v in &b.versions {
            let known: bool = tx
                .prepare_cached(
                    "SELECT count(*) > 0 FROM fleet_mirror WHERE station = ?1 AND export_seq = ?2",
                )
                .and_then(|mut q| q.query_row(params![v.station, v.export_seq], |r| r.get(0)))
                .map_err(e)?;
            if known {
                continue;
            }
            let seq: i64 = tx
                .prepare_cached(&format!("SELECT {NEXT_SEQ}"))
                .and_then(|mut q| q.query_row([], |r| r.get(0)))
                .map_err(e)?;
            insert_version(&tx, v, seq).map_err(e)?;
            first.get_or_insert(seq);
            last = seq;
            n += 1;
        }
        let Some(first) = first else {
            return Ok(0);
        };
        tx.execute(
                "INSERT INTO batches (id, first_seq, last_seq, count, created_at, station, dps_options) \
                 VALUES (?1, ?2, ?3, ?3 - ?2 + 1, ?4, ?5, ?6)",
                params![
                    format!("{}/{}/{first}", b.station, b.batch),
                    first,
                    last,
                    now(),
                    b.station,
                    b.dps_options
                ],
            )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(n)
    }

    /// Every upload result of the mirror, by its station's version.
    pub fn mirror_results(&self) -> Result<Vec<MirrorResult>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT m.station, m.export_seq, u.registration_id, u.status, u.mode, \
                    u.error_code, u.updated_at \
                 FROM fleet_mirror m JOIN uploads u ON u.export_seq = m.seq ORDER BY m.seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(MirrorResult {
                    station: r.get(0)?,
                    export_seq: r.get(1)?,
                    registration_id: r.get(2)?,
                    status: r.get(3)?,
                    mode: r.get(4)?,
                    error_code: r.get(5)?,
                    updated_at: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }
}

/// Record `v` as mirror version `seq`; a mirrored version of the same registration ID moves to
/// `superseded_enrollments` first (the provisioned row may change only then).
fn insert_version(
    tx: &rusqlite::Transaction<'_>,
    v: &MirrorVersion,
    seq: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO superseded_enrollments (registration_id, device_serial, firmware, model, \
            attestation_type, key_source, group_key_id, public_material, station, line, operator, \
            created_at, provisioned_at, export_seq, cert_thumbprint, storage_root_key, superseded_at) \
         SELECT registration_id, device_serial, firmware, model, attestation_type, key_source, \
            group_key_id, public_material, station, line, operator, created_at, provisioned_at, \
            export_seq, cert_thumbprint, storage_root_key, ?2 \
         FROM enrollments WHERE registration_id = ?1 AND export_seq IS NOT NULL",
    )?
    .execute(params![v.registration_id, now()])?;
    let t = now();
    tx.prepare_cached(
        "INSERT INTO enrollments (registration_id, device_serial, firmware, model, \
            attestation_type, key_source, group_key_id, public_material, status, station, line, \
            created_at, updated_at, provisioned_at, export_seq, cert_thumbprint, storage_root_key) \
         VALUES (?1, ?2, '', '', ?3, ?4, ?5, ?6, 'provisioned', ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (registration_id) DO UPDATE SET device_serial = excluded.device_serial, \
            attestation_type = excluded.attestation_type, key_source = excluded.key_source, \
            group_key_id = excluded.group_key_id, public_material = excluded.public_material, \
            station = excluded.station, line = excluded.line, updated_at = excluded.updated_at, \
            provisioned_at = excluded.provisioned_at, export_seq = excluded.export_seq, \
            cert_thumbprint = excluded.cert_thumbprint, storage_root_key = excluded.storage_root_key",
    )?
    .execute(params![
            v.registration_id,
            v.device_serial,
            v.attestation_type,
            v.key_source,
            v.group_key_id,
            v.public_material,
            v.station,
            v.line,
            t,
            v.provisioned_at,
            seq,
            v.cert_thumbprint,
            v.storage_root_key,
    ])?;
    tx.prepare_cached("INSERT INTO fleet_mirror (seq, station, export_seq) VALUES (?1, ?2, ?3)")?
        .execute(params![seq, v.station, v.export_seq])?;
    Ok(())
}
