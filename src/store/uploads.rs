//! Upload bookkeeping: which enrollment versions DPS accepted, refused, or holds differently.
//!
//! Keyed by `export_seq`, so a re-issued enrollment (a new version) is uploaded again. Results
//! are recorded durably after each bulk call, so an interrupted upload resumes where it
//! stopped and nothing DPS did not accept is marked uploaded.

use super::{Store, now};
pub use crate::domain::event::RegistrationState;
use crate::error::Result;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

/// An exported enrollment version DPS has not yet accepted.
#[derive(Debug, Clone)]
pub struct UploadCandidate {
    pub export_seq: i64,
    pub registration_id: String,
    pub attestation_type: crate::domain::AttestationKind,
    pub primary_key: Option<String>,
    pub secondary_key: Option<String>,
    pub group_key_id: Option<String>,
    pub certificate: Option<String>,
    pub cert_thumbprint: Option<String>,
    pub storage_root_key: Option<String>,
    /// The DPS options of the batch the version was exported in.
    pub batch: String,
    /// The etag at which DPS was last seen holding exactly this version.
    pub etag: Option<String>,
}

/// What DPS said of one enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadStatus {
    Uploaded,
    Conflict,
    Failed,
}

impl UploadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadStatus::Uploaded => "uploaded",
            UploadStatus::Conflict => "conflict",
            UploadStatus::Failed => "failed",
        }
    }
}

/// One result to record.
#[derive(Debug, Clone)]
pub struct UploadResult<'a> {
    pub export_seq: i64,
    pub registration_id: &'a str,
    pub status: UploadStatus,
    pub mode: &'a str,
    pub error_code: Option<i64>,
    pub error_status: Option<&'a str>,
}

/// Upload counters.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct UploadCounts {
    pub uploaded: i64,
    pub conflict: i64,
    pub failed: i64,
    /// Exported versions with no successful upload yet.
    pub not_uploaded: i64,
}

fn candidate(r: &rusqlite::Row<'_>) -> rusqlite::Result<UploadCandidate> {
    Ok(UploadCandidate {
        export_seq: r.get(0)?,
        registration_id: r.get(1)?,
        attestation_type: super::kind_column(r, 2)?,
        primary_key: r.get(3)?,
        secondary_key: r.get(4)?,
        group_key_id: r.get(5)?,
        certificate: r.get(6)?,
        cert_thumbprint: r.get(7)?,
        batch: r.get(8)?,
        storage_root_key: r.get(9)?,
        etag: r.get(10)?,
    })
}

const CANDIDATE_COLUMNS: &str = "e.export_seq, e.registration_id, e.attestation_type, e.primary_key, \
    COALESCE(e.secondary_key, (SELECT k.secondary_key FROM dps_secondary_keys k WHERE k.export_seq = e.export_seq)), \
    e.group_key_id, e.public_material, e.cert_thumbprint, \
    (SELECT b.id FROM batches b WHERE b.first_seq <= e.export_seq AND b.last_seq >= e.export_seq), \
    e.storage_root_key, (SELECT u.etag FROM uploads u WHERE u.export_seq = e.export_seq)";

/// One enrollment version's verification result.
#[derive(Debug, Clone)]
pub struct Verification<'a> {
    pub export_seq: i64,
    /// `match`, or what differs.
    pub result: &'a str,
    /// The etag DPS showed when it held exactly what was sent (`None`: check again next time).
    pub etag: Option<&'a str>,
}

impl Store {
    /// Up to `limit` exported current enrollment versions after `after_seq` that DPS has not
    /// accepted yet (never uploaded, conflicting or failed), in export order.
    pub fn upload_candidates(&self, after_seq: i64, limit: u32) -> Result<Vec<UploadCandidate>> {
        self.candidate_page(
            "FROM enrollments e WHERE e.export_seq > ?1 \
               AND e.export_seq <= (SELECT COALESCE(MAX(last_seq), 0) FROM batches) \
               AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.export_seq = e.export_seq AND u.status = 'uploaded')",
            after_seq,
            limit,
        )
    }

    /// Up to `limit` uploaded current enrollment versions after `after_seq` (for `--verify`).
    pub fn uploaded(&self, after_seq: i64, limit: u32) -> Result<Vec<UploadCandidate>> {
        self.candidate_page(
            "FROM enrollments e JOIN uploads u ON u.export_seq = e.export_seq \
             WHERE e.export_seq > ?1 AND u.status = 'uploaded'",
            after_seq,
            limit,
        )
    }

    /// One page, in export order, of the rows `from_where` selects (`?1` = after this seq).
    fn candidate_page(
        &self,
        from_where: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<UploadCandidate>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {CANDIDATE_COLUMNS} {from_where} ORDER BY e.export_seq LIMIT ?2"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![after_seq, limit], candidate)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Run the cached statement `sql` once per item in one durable transaction.
    fn write_each<T>(
        &mut self,
        sql: &str,
        items: &[T],
        mut bind: impl FnMut(&mut rusqlite::CachedStatement<'_>, &T) -> rusqlite::Result<usize>,
    ) -> Result<()> {
        let path = self.path().to_string();
        let e = |e: rusqlite::Error| crate::error::Error::database(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        {
            let mut stmt = tx.prepare_cached(sql).map_err(e)?;
            for item in items {
                bind(&mut stmt, item).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Durably record the results of one bulk call.
    pub fn record_uploads(&mut self, results: &[UploadResult<'_>]) -> Result<()> {
        let t = now();
        self.write_each(
            "INSERT INTO uploads (export_seq, registration_id, status, mode, error_code, error_status, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (export_seq) DO UPDATE SET status = excluded.status, mode = excluded.mode, \
                error_code = excluded.error_code, error_status = excluded.error_status, \
                attempts = attempts + 1, updated_at = excluded.updated_at, etag = NULL",
            results,
            |stmt, r| {
                stmt.execute(params![
                    r.export_seq,
                    r.registration_id,
                    r.status.as_str(),
                    r.mode,
                    r.error_code,
                    r.error_status,
                    t
                ])
            },
        )
    }

    /// The uploaded current version of `registration_id`, if any (to reconcile what DPS shows).
    pub fn uploaded_version(&self, registration_id: &str) -> Result<Option<UploadCandidate>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {CANDIDATE_COLUMNS} FROM enrollments e JOIN uploads u ON u.export_seq = e.export_seq \
                 WHERE e.registration_id = ?1 AND u.status = 'uploaded'"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_row(params![registration_id], candidate)
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` uploaded current versions after `after_seq` that verification `run` did
    /// not see (DPS did not show them).
    pub fn unseen_uploaded(
        &self,
        run: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<UploadCandidate>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {CANDIDATE_COLUMNS} FROM enrollments e JOIN uploads u ON u.export_seq = e.export_seq \
                 WHERE e.export_seq > ?1 AND u.status = 'uploaded' AND u.verify_run IS NOT ?3 \
                 ORDER BY e.export_seq LIMIT ?2"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![after_seq, limit, run], candidate)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    /// Current versions not yet accepted by DPS (what an upload has to send).
    pub fn count_upload_candidates(&self) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM enrollments e \
                 WHERE e.export_seq <= (SELECT COALESCE(MAX(last_seq), 0) FROM batches) \
                   AND NOT EXISTS (SELECT 1 FROM uploads u WHERE u.export_seq = e.export_seq AND u.status = 'uploaded')",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Current versions DPS accepted (what a verification reads back).
    pub fn count_uploaded(&self) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM uploads u JOIN enrollments e ON e.export_seq = u.export_seq \
                 WHERE u.status = 'uploaded'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// The secondary key sent for an enrollment recorded without one: made once, kept.
    pub fn dps_secondary_key(&mut self, export_seq: i64, fresh: &str) -> Result<String> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO dps_secondary_keys (export_seq, secondary_key, created_at) \
                 VALUES (?1, ?2, ?3)",
                params![export_seq, fresh, now()],
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .query_row(
                "SELECT secondary_key FROM dps_secondary_keys WHERE export_seq = ?1",
                params![export_seq],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Durably record one page of verification results, seen by verification `run`.
    pub fn record_verifications(&mut self, run: &str, results: &[Verification<'_>]) -> Result<()> {
        let t = now();
        self.write_each(
            "UPDATE uploads SET verified_at = ?2, verify_result = ?3, etag = ?4, verify_run = ?5 \
             WHERE export_seq = ?1",
            results,
            |stmt, r| stmt.execute(params![r.export_seq, t, r.result, r.etag, run]),
        )
    }

    /// Remember the etags DPS showed for versions it was seen holding exactly as sent.
    pub fn record_etags(&mut self, etags: &[(i64, &str)]) -> Result<()> {
        self.write_each(
            "UPDATE uploads SET etag = ?2 WHERE export_seq = ?1",
            etags,
            |stmt, (seq, etag)| stmt.execute(params![seq, etag]),
        )
    }

    /// Record a device's registration state as DPS reported it.
    pub fn record_registration(&mut self, export_seq: i64, r: &RegistrationState) -> Result<()> {
        self.conn
            .execute(
                "UPDATE uploads SET registration_status = ?2, assigned_hub = ?3, device_id = ?4, \
                    registration_error = ?5, registration_updated = ?6, registration_checked_at = ?7 \
                 WHERE export_seq = ?1",
                params![
                    export_seq,
                    r.status,
                    r.assigned_hub,
                    r.device_id,
                    r.error,
                    r.last_updated,
                    now()
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The last registration state read for `registration_id`'s uploaded version.
    pub fn registration_state(&self, registration_id: &str) -> Result<Option<RegistrationState>> {
        self.conn
            .query_row(
                "SELECT u.registration_status, u.assigned_hub, u.device_id, u.registration_error, \
                    u.registration_updated \
                 FROM uploads u JOIN enrollments e ON e.export_seq = u.export_seq \
                 WHERE e.registration_id = ?1 AND u.registration_status IS NOT NULL",
                params![registration_id],
                |r| {
                    Ok(RegistrationState {
                        status: r.get(0)?,
                        assigned_hub: r.get(1)?,
                        device_id: r.get(2)?,
                        error: r.get(3)?,
                        last_updated: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Upload counters over current enrollment versions.
    pub fn upload_counts(&self) -> Result<UploadCounts> {
        let q = |sql: &str| -> Result<i64> {
            self.conn
                .query_row(sql, [], |r| r.get(0))
                .map_err(|e| self.err(e))
        };
        let count = |status: &str| {
            q(&format!(
                "SELECT count(*) FROM uploads u JOIN enrollments e ON e.export_seq = u.export_seq WHERE u.status = '{status}'"
            ))
        };
        let uploaded = count("uploaded")?;
        let exported_current = self.counts()?.exported;
        Ok(UploadCounts {
            uploaded,
            conflict: count("conflict")?,
            failed: count("failed")?,
            not_uploaded: exported_current - uploaded,
        })
    }
}
