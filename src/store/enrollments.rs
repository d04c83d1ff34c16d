//! Enrollments and attempts.
//!
//! Lifecycle of an enrollment row: `pending` (durably recorded before anything is written to
//! the device) → `provisioned` (after the device's read-back matched) or `failed` (with its
//! error code). A provisioned row is immutable (a trigger enforces it) and gets the next
//! `export_seq`; it counts as `exported` once a batch covers its `export_seq`, so marking a
//! batch of a million enrollments is one insert.

use super::{NEXT_SEQ, Store, kind_column, now};
use crate::domain::{Credential, Enrollment, Secret, Status};
use crate::error::{Error, Result};
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;

/// What the workflow records as `pending` before writing the device.
#[derive(Debug, Clone)]
pub struct NewEnrollment<'a> {
    pub registration_id: &'a str,
    pub device_serial: &'a str,
    pub firmware: &'a str,
    pub model: &'a str,
    /// The credential: its kind, key source, keys kept for individual enrollments,
    /// certificate or TPM material.
    pub credential: &'a Credential,
    pub station: &'a str,
    pub line: &'a str,
    pub operator: &'a str,
    /// Hex digest of every record the station writes (DPS coordinates, registration ID,
    /// credential): what the device reports once it holds this credential.
    pub expected_digest: &'a str,
    /// Replace a provisioned enrollment (a re-issued certificate): its current version is
    /// kept in `superseded_enrollments`.
    pub supersede: bool,
}

/// One provisioning attempt, passed or failed.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub registration_id: Option<&'a str>,
    pub device_serial: Option<&'a str>,
    pub passed: bool,
    pub error_code: Option<&'a str>,
    pub message: Option<&'a str>,
    pub station: &'a str,
    pub operator: &'a str,
    pub port: &'a str,
    pub started_at: &'a str,
    pub duration_ms: u64,
}

/// Counters for the station's header and `station list`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub pending: i64,
    pub provisioned: i64,
    pub failed: i64,
    pub exported: i64,
}

const COLUMNS: &str = "e.registration_id, e.device_serial, e.firmware, e.model, e.attestation_type, \
    e.key_source, e.primary_key, e.secondary_key, e.group_key_id, e.public_material, e.cert_serial, \
    e.cert_thumbprint, e.cert_not_before, e.cert_not_after, e.ek_cert_status, e.device_digest, e.expected_digest, e.status, \
    e.error_code, e.station, e.line, e.operator, e.created_at, e.updated_at, e.provisioned_at, \
    e.export_seq, \
    (SELECT b.id FROM batches b WHERE b.first_seq <= e.export_seq AND b.last_seq >= e.export_seq \
     ORDER BY b.first_seq DESC LIMIT 1) AS batch_id";

/// Map a row selected with [`COLUMNS`].
pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<Enrollment> {
    let status: String = r.get("status")?;
    let batch: Option<String> = r.get("batch_id")?;
    let mut status = Status::parse(&status).unwrap_or(Status::Failed);
    if batch.is_some() {
        status = Status::Exported;
    }
    Ok(Enrollment {
        registration_id: r.get("registration_id")?,
        device_serial: r.get("device_serial")?,
        firmware: r.get("firmware")?,
        model: r.get("model")?,
        attestation_type: kind_column(r, "attestation_type")?,
        key_source: r.get("key_source")?,
        primary_key: r.get::<_, Option<String>>("primary_key")?.map(Secret),
        secondary_key: r.get::<_, Option<String>>("secondary_key")?.map(Secret),
        group_key_id: r.get("group_key_id")?,
        certificate: r.get("public_material")?,
        cert_serial: r.get("cert_serial")?,
        cert_thumbprint: r.get("cert_thumbprint")?,
        cert_not_before: r.get("cert_not_before")?,
        cert_not_after: r.get("cert_not_after")?,
        ek_cert_status: r.get("ek_cert_status")?,
        device_digest: r.get("device_digest")?,
        expected_digest: r.get("expected_digest")?,
        status,
        error_code: r.get("error_code")?,
        station: r.get("station")?,
        line: r.get("line")?,
        operator: r.get("operator")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
        provisioned_at: r.get("provisioned_at")?,
        export_seq: r.get("export_seq")?,
        batch,
    })
}

/// Columns kept when a provisioned enrollment is superseded.
const SUPERSEDED_COLUMNS: &str = "registration_id, device_serial, firmware, model, attestation_type, \
    key_source, primary_key, secondary_key, group_key_id, public_material, device_digest, station, \
    line, operator, created_at, provisioned_at, export_seq, cert_serial, cert_thumbprint, \
    cert_not_before, cert_not_after, storage_root_key, ek_hash, ek_certificate, ek_cert_issuer, \
    ek_cert_status";

impl Store {
    /// The enrollment for `registration_id` (case-insensitive), if any.
    pub fn find(&self, registration_id: &str) -> Result<Option<Enrollment>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM enrollments e WHERE e.registration_id = ?1"),
                [registration_id],
                from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Whether `digest` is an earlier provisioned version of `registration_id`, kept when it
    /// was re-keyed.
    pub fn is_superseded_version(&self, registration_id: &str, digest: &str) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT count(*) > 0 FROM superseded_enrollments \
                 WHERE lower(registration_id) = lower(?1) AND device_digest = ?2",
                [registration_id, digest],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Durably record `new` as `pending`, before anything is written to the device.
    ///
    /// A row that is already provisioned is left as it is when `new` is the same credential
    /// (same digest); another credential is a re-key and needs `supersede`, which first keeps
    /// the current version in `superseded_enrollments`. A row for the same ID but another
    /// device serial is refused.
    pub fn record_pending(&mut self, new: &NewEnrollment<'_>) -> Result<()> {
        let path = self.path().to_string();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Error::database(&path, e))?;
        if !check_existing(&tx, &path, new)? {
            return Ok(());
        }
        check_duplicate_ek(&tx, &path, new)?;
        upsert_pending(&tx, new).map_err(|e| Error::database(&path, e))?;
        tx.commit().map_err(|e| Error::database(&path, e))
    }

    /// Durably mark `registration_id` provisioned (device read-back matched `digest`) and
    /// record the passed attempt, in one transaction.
    ///
    /// Refused unless `digest` is the digest of the credential the database holds for it (the
    /// recorded one of a pending row, or the provisioned one): a PASS never stands on a
    /// credential the database does not hold.
    pub fn mark_provisioned(
        &mut self,
        registration_id: &str,
        digest: &str,
        attempt: &Attempt<'_>,
    ) -> Result<()> {
        let path = self.path().to_string();
        let e = |e: rusqlite::Error| Error::database(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let held: Option<(String, Option<String>, Option<String>)> = tx
            .query_row(
                "SELECT status, device_digest, expected_digest FROM enrollments WHERE registration_id = ?1",
                [registration_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(e)?;
        let recorded = match &held {
            None => None,
            Some((status, device, _)) if status == "provisioned" => device.clone(),
            Some((_, _, expected)) => expected.clone(),
        };
        if recorded.as_deref() != Some(digest) {
            return Err(Error::VerifyMismatch {
                expected: recorded.unwrap_or_else(|| "(no enrollment recorded)".into()),
                actual: digest.to_string(),
            });
        }
        let t = now();
        tx.prepare_cached(&format!(
            "UPDATE enrollments SET status = 'provisioned', error_code = NULL, device_digest = ?2, \
                updated_at = ?3, provisioned_at = ?3, export_seq = {NEXT_SEQ} \
             WHERE registration_id = ?1 AND status <> 'provisioned'"
        ))
        .and_then(|mut stmt| stmt.execute(params![registration_id, digest, t]))
        .map_err(e)?;
        insert_attempt(&tx, attempt).map_err(e)?;
        tx.commit().map_err(e)
    }

    /// Record a failed attempt and, if the enrollment is not provisioned, mark it failed.
    pub fn mark_failed(&mut self, attempt: &Attempt<'_>) -> Result<()> {
        let path = self.path().to_string();
        let e = |e: rusqlite::Error| Error::database(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        if let Some(id) = attempt.registration_id {
            tx.prepare_cached(
                "UPDATE enrollments SET status = 'failed', error_code = ?2, updated_at = ?3 \
                 WHERE registration_id = ?1 AND device_serial IS ?4 AND status <> 'provisioned'",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id,
                    attempt.error_code,
                    now(),
                    attempt.device_serial
                ])
            })
            .map_err(e)?;
        }
        insert_attempt(&tx, attempt).map_err(e)?;
        tx.commit().map_err(e)
    }

    /// Enrollments, newest first, optionally filtered by status and a search text (serial or
    /// registration ID prefix).
    pub fn list(
        &self,
        status: Option<Status>,
        search: Option<&str>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<Enrollment>> {
        let mut sql = format!("SELECT {COLUMNS} FROM enrollments e WHERE 1 = 1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        match status {
            None => {}
            Some(Status::Exported) => sql
                .push_str(" AND e.export_seq <= (SELECT COALESCE(MAX(last_seq), 0) FROM batches)"),
            Some(Status::Provisioned) => {
                sql.push_str(" AND e.export_seq > (SELECT COALESCE(MAX(last_seq), 0) FROM batches)")
            }
            Some(s) => {
                sql.push_str(" AND e.status = ?");
                args.push(Box::new(s.as_str()));
            }
        }
        if let Some(q) = search.filter(|q| !q.is_empty()) {
            sql.push_str(
                " AND (e.registration_id LIKE ? ESCAPE '\\' OR e.device_serial LIKE ? ESCAPE '\\')",
            );
            let pat = format!(
                "{}%",
                q.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            );
            args.push(Box::new(pat.clone()));
            args.push(Box::new(pat));
        }
        sql.push_str(" ORDER BY e.id DESC LIMIT ? OFFSET ?");
        args.push(Box::new(limit));
        args.push(Box::new(offset as i64));
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())),
                from_row,
            )
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// How many enrollments match a search (serial or registration ID prefix; all if empty).
    pub fn count_matching(&self, search: Option<&str>) -> Result<i64> {
        match search.filter(|q| !q.is_empty()) {
            None => self
                .conn
                .query_row("SELECT count(*) FROM enrollments", [], |r| r.get(0))
                .map_err(|e| self.err(e)),
            Some(q) => {
                let pat = format!(
                    "{}%",
                    q.replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_")
                );
                self.conn
                    .query_row(
                        "SELECT count(*) FROM enrollments WHERE registration_id LIKE ?1 ESCAPE '\\' \
                         OR device_serial LIKE ?1 ESCAPE '\\'",
                        [pat],
                        |r| r.get(0),
                    )
                    .map_err(|e| self.err(e))
            }
        }
    }

    /// Attempts since `since` (RFC 3339): passed, failed, median cycle time, failures by code.
    pub fn shift_stats(&self, since: &str) -> Result<ShiftStats> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT outcome, error_code, duration_ms FROM attempts WHERE started_at >= ?1",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([since]).map_err(|e| self.err(e))?;
        let mut s = ShiftStats::default();
        let mut durations = Vec::new();
        let mut codes: std::collections::BTreeMap<String, i64> = Default::default();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let outcome: String = r.get(0).map_err(|e| self.err(e))?;
            let duration: i64 = r.get(2).map_err(|e| self.err(e))?;
            if outcome == "passed" {
                s.passed += 1;
                durations.push(duration);
            } else {
                s.failed += 1;
                let code: Option<String> = r.get(1).map_err(|e| self.err(e))?;
                *codes.entry(code.unwrap_or_default()).or_default() += 1;
            }
        }
        durations.sort_unstable();
        s.median_cycle_ms = durations.get(durations.len() / 2).copied();
        let mut by_code: Vec<(String, i64)> = codes.into_iter().collect();
        by_code.sort_by_key(|b| std::cmp::Reverse(b.1));
        s.failures_by_code = by_code;
        Ok(s)
    }

    /// How many enrollments stand where.
    pub fn counts(&self) -> Result<Counts> {
        let one = |sql: &str| -> Result<i64> {
            self.conn
                .query_row(sql, [], |r| r.get(0))
                .map_err(|e| self.err(e))
        };
        // export_seq is dense (1, 2, 3, ...): every number belongs to exactly one current or
        // superseded enrollment, and neither is ever deleted. So counting is arithmetic on
        // watermarks, whatever the size of the database.
        let (covered, assigned) = self.export_watermarks()?;
        let superseded = |sql: &str| -> Result<i64> {
            self.conn
                .query_row(sql, [covered], |r| r.get(0))
                .map_err(|e| self.err(e))
        };
        let old_exported =
            superseded("SELECT count(*) FROM superseded_enrollments WHERE export_seq <= ?1")?;
        let old_unexported =
            superseded("SELECT count(*) FROM superseded_enrollments WHERE export_seq > ?1")?;
        Ok(Counts {
            pending: one("SELECT count(*) FROM enrollments WHERE status = 'pending'")?,
            provisioned: assigned - covered - old_unexported,
            failed: one("SELECT count(*) FROM enrollments WHERE status = 'failed'")?,
            exported: covered - old_exported,
        })
    }

    /// Attempts for a registration ID or serial, newest first.
    pub fn attempts(&self, key: &str, limit: u32) -> Result<Vec<AttemptRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT registration_id, device_serial, outcome, error_code, message, operator, \
                    port, started_at, duration_ms FROM attempts \
                 WHERE registration_id = ?1 OR device_serial = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![key, limit], |r| {
                Ok(AttemptRow {
                    registration_id: r.get(0)?,
                    device_serial: r.get(1)?,
                    outcome: r.get(2)?,
                    error_code: r.get(3)?,
                    message: r.get(4)?,
                    operator: r.get(5)?,
                    port: r.get(6)?,
                    started_at: r.get(7)?,
                    duration_ms: r.get(8)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }
}

/// Attempt statistics over a period (a shift, a day).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ShiftStats {
    pub passed: i64,
    pub failed: i64,
    pub median_cycle_ms: Option<i64>,
    /// Failure codes, most frequent first.
    pub failures_by_code: Vec<(String, i64)>,
}

impl ShiftStats {
    /// Passed as a percentage of attempts, if any.
    pub fn yield_percent(&self) -> Option<f64> {
        let total = self.passed + self.failed;
        (total > 0).then(|| self.passed as f64 * 100.0 / total as f64)
    }
}

/// One row of the attempts table.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub registration_id: Option<String>,
    pub device_serial: Option<String>,
    pub outcome: String,
    pub error_code: Option<String>,
    pub message: Option<String>,
    pub operator: String,
    pub port: String,
    pub started_at: String,
    pub duration_ms: i64,
}

fn insert_attempt(tx: &rusqlite::Transaction<'_>, a: &Attempt<'_>) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "INSERT INTO attempts (registration_id, device_serial, outcome, error_code, message, \
            station, operator, port, started_at, duration_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            a.registration_id,
            a.device_serial,
            if a.passed { "passed" } else { "failed" },
            a.error_code,
            a.message,
            a.station,
            a.operator,
            a.port,
            a.started_at,
            a.duration_ms as i64,
        ])
    })
}

/// Check the row already held for `new`'s registration ID, if any, and supersede it when
/// `new` re-keys a provisioned enrollment. `false`: it is provisioned with this very
/// credential already, and there is nothing to record.
fn check_existing(
    tx: &rusqlite::Transaction<'_>,
    path: &str,
    new: &NewEnrollment<'_>,
) -> Result<bool> {
    let existing: Option<(String, String, Option<String>)> = tx
        .query_row(
            "SELECT device_serial, status, device_digest FROM enrollments WHERE registration_id = ?1",
            [new.registration_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(|e| Error::database(path, e))?;
    let Some((serial, status, digest)) = existing else {
        return Ok(true);
    };
    if serial != new.device_serial {
        return Err(Error::DuplicateRegistration {
            registration_id: new.registration_id.to_string(),
            enrolled_serial: serial,
            serial: new.device_serial.to_string(),
        });
    }
    if status != "provisioned" {
        return Ok(true);
    }
    if digest.as_deref() == Some(new.expected_digest) {
        return Ok(false);
    }
    if !new.supersede {
        return Err(Error::RekeyNotPermitted {
            registration_id: new.registration_id.to_string(),
            serial,
            recorded: digest.unwrap_or_default(),
            wanted: new.expected_digest.to_string(),
            cause: "the database keeps the provisioned credential".into(),
        });
    }
    supersede(tx, new.registration_id).map_err(|e| Error::database(path, e))?;
    Ok(true)
}

/// Keep the provisioned version of `registration_id` in `superseded_enrollments` and turn
/// its row back to pending.
fn supersede(tx: &rusqlite::Transaction<'_>, registration_id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO superseded_enrollments ({SUPERSEDED_COLUMNS}, superseded_at) \
             SELECT {SUPERSEDED_COLUMNS}, ?2 FROM enrollments WHERE registration_id = ?1"
    ))
    .and_then(|mut stmt| stmt.execute(params![registration_id, now()]))?;
    tx.prepare_cached(
        "UPDATE enrollments SET status = 'pending', export_seq = NULL, provisioned_at = NULL \
         WHERE registration_id = ?1",
    )
    .and_then(|mut stmt| stmt.execute([registration_id]))?;
    Ok(())
}

/// Refuse a TPM whose endorsement key another registration ID already holds.
fn check_duplicate_ek(
    tx: &rusqlite::Transaction<'_>,
    path: &str,
    new: &NewEnrollment<'_>,
) -> Result<()> {
    let Some(tpm) = new.credential.tpm() else {
        return Ok(());
    };
    let other: Option<String> = tx
        .query_row(
            "SELECT registration_id FROM enrollments WHERE ek_hash = ?1 AND registration_id <> ?2 LIMIT 1",
            params![tpm.ek_hash, new.registration_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| Error::database(path, e))?;
    match other {
        Some(enrolled) => Err(Error::DuplicateEk {
            registration_id: new.registration_id.to_string(),
            enrolled,
        }),
        None => Ok(()),
    }
}

/// Insert `new` as pending, or turn its existing row back to pending with `new`'s values.
fn upsert_pending(
    tx: &rusqlite::Transaction<'_>,
    new: &NewEnrollment<'_>,
) -> rusqlite::Result<usize> {
    let t = now();
    let c = new.credential;
    let cert = c.certificate();
    let tpm = c.tpm();
    let (primary, secondary) = c.stored_keys();
    tx.prepare_cached("INSERT INTO enrollments (registration_id, device_serial, firmware, model, \
            attestation_type, key_source, primary_key, secondary_key, group_key_id, status, \
            station, line, operator, created_at, updated_at, public_material, cert_serial, \
            cert_thumbprint, cert_not_before, cert_not_after, storage_root_key, ek_hash, \
            ek_certificate, ek_cert_issuer, ek_cert_status, expected_digest) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?11, ?12, ?13, ?13, ?14, ?15, \
            ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24) \
         ON CONFLICT (registration_id) DO UPDATE SET firmware = excluded.firmware, \
            model = excluded.model, attestation_type = excluded.attestation_type, \
            key_source = excluded.key_source, primary_key = excluded.primary_key, \
            secondary_key = excluded.secondary_key, group_key_id = excluded.group_key_id, \
            status = 'pending', error_code = NULL, station = excluded.station, \
            line = excluded.line, operator = excluded.operator, updated_at = excluded.updated_at, \
            public_material = excluded.public_material, cert_serial = excluded.cert_serial, \
            cert_thumbprint = excluded.cert_thumbprint, cert_not_before = excluded.cert_not_before, \
            cert_not_after = excluded.cert_not_after, storage_root_key = excluded.storage_root_key, \
            ek_hash = excluded.ek_hash, ek_certificate = excluded.ek_certificate, \
            ek_cert_issuer = excluded.ek_cert_issuer, ek_cert_status = excluded.ek_cert_status, \
            expected_digest = excluded.expected_digest")
        .and_then(|mut stmt| stmt.execute(params![
            new.registration_id,
            new.device_serial,
            new.firmware,
            new.model,
            c.kind().as_str(),
            c.key_source().as_str(),
            primary.map(|s| s.0.as_str()),
            secondary.map(|s| s.0.as_str()),
            c.group_key_id(),
            new.station,
            new.line,
            new.operator,
            t,
            cert.map(|c| c.pem.as_str())
                .or(tpm.map(|t| t.endorsement_key.as_str())),
            cert.map(|c| c.serial.as_str()),
            cert.map(|c| c.thumbprint.as_str()),
            cert.map(|c| c.not_before.as_str()),
            cert.map(|c| c.not_after.as_str()),
            tpm.and_then(|t| t.storage_root_key.as_deref()),
            tpm.map(|t| t.ek_hash.as_str()),
            tpm.and_then(|t| t.ek_certificate.as_deref()),
            tpm.and_then(|t| t.ek_cert_issuer.as_deref()),
            tpm.map(|t| t.ek_cert_status.as_str()),
            new.expected_digest,
        ]))
}
