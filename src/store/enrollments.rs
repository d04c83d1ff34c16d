//! Enrollments, attempts and batches.
//!
//! Lifecycle of an enrollment row: `pending` (durably recorded before anything is written to
//! the device) → `provisioned` (after the device's read-back matched) or `failed` (with its
//! error code). A provisioned row is immutable (a trigger enforces it) and gets the next
//! `export_seq`; it counts as `exported` once a batch covers its `export_seq`, so marking a
//! batch of a million enrollments is one insert.

use super::{Store, now};
use crate::domain::{AttestationKind, Credential, Enrollment, Secret, Status};
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

/// An export batch.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub id: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub count: i64,
    pub created_at: String,
    pub station: String,
    pub dps_options: String,
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

/// The next `export_seq`: one past the highest ever assigned (current or superseded).
const NEXT_SEQ: &str = "(SELECT MAX(m) + 1 FROM (SELECT COALESCE(MAX(export_seq), 0) AS m FROM enrollments \
    UNION ALL SELECT COALESCE(MAX(export_seq), 0) FROM superseded_enrollments))";

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
        let existing: Option<(String, String, Option<String>)> = tx
            .query_row(
                "SELECT device_serial, status, device_digest FROM enrollments WHERE registration_id = ?1",
                [new.registration_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| Error::database(&path, e))?;
        if let Some((serial, status, digest)) = existing {
            if serial != new.device_serial {
                return Err(Error::DuplicateRegistration {
                    registration_id: new.registration_id.to_string(),
                    enrolled_serial: serial,
                    serial: new.device_serial.to_string(),
                });
            }
            if status == "provisioned" {
                if digest.as_deref() == Some(new.expected_digest) {
                    return Ok(());
                }
                if !new.supersede {
                    return Err(Error::RekeyNotPermitted {
                        registration_id: new.registration_id.to_string(),
                        serial: serial.clone(),
                        recorded: digest.unwrap_or_default(),
                        wanted: new.expected_digest.to_string(),
                        cause: "the database keeps the provisioned credential".into(),
                    });
                }
                tx.execute(
                    &format!(
                        "INSERT INTO superseded_enrollments ({SUPERSEDED_COLUMNS}, superseded_at) \
                         SELECT {SUPERSEDED_COLUMNS}, ?2 FROM enrollments WHERE registration_id = ?1"
                    ),
                    params![new.registration_id, now()],
                )
                .map_err(|e| Error::database(&path, e))?;
                tx.execute(
                    "UPDATE enrollments SET status = 'pending', export_seq = NULL, provisioned_at = NULL \
                     WHERE registration_id = ?1",
                    [new.registration_id],
                )
                .map_err(|e| Error::database(&path, e))?;
            }
        }
        if let Some(tpm) = new.credential.tpm() {
            let other: Option<String> = tx
                .query_row(
                    "SELECT registration_id FROM enrollments WHERE ek_hash = ?1 AND registration_id <> ?2 LIMIT 1",
                    params![tpm.ek_hash, new.registration_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| Error::database(&path, e))?;
            if let Some(enrolled) = other {
                return Err(Error::DuplicateEk {
                    registration_id: new.registration_id.to_string(),
                    enrolled,
                });
            }
        }
        let t = now();
        let c = new.credential;
        let cert = c.certificate();
        let tpm = c.tpm();
        let (primary, secondary) = c.stored_keys();
        tx.execute(
            "INSERT INTO enrollments (registration_id, device_serial, firmware, model, \
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
                expected_digest = excluded.expected_digest",
            params![
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
            ],
        )
        .map_err(|e| Error::database(&path, e))?;
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
        tx.execute(
            &format!("UPDATE enrollments SET status = 'provisioned', error_code = NULL, device_digest = ?2, \
                updated_at = ?3, provisioned_at = ?3, export_seq = {NEXT_SEQ} \
             WHERE registration_id = ?1 AND status <> 'provisioned'"),
            params![registration_id, digest, t],
        )
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
            tx.execute(
                "UPDATE enrollments SET status = 'failed', error_code = ?2, updated_at = ?3 \
                 WHERE registration_id = ?1 AND device_serial IS ?4 AND status <> 'provisioned'",
                params![id, attempt.error_code, now(), attempt.device_serial],
            )
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

    /// All batches, oldest first.
    pub fn batches(&self) -> Result<Vec<Batch>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, first_seq, last_seq, count, created_at, station, dps_options FROM batches ORDER BY first_seq")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], batch_from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// One batch by ID.
    pub fn batch(&self, id: &str) -> Result<Batch> {
        self.conn
            .query_row(
                "SELECT id, first_seq, last_seq, count, created_at, station, dps_options FROM batches WHERE id = ?1",
                [id],
                batch_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| Error::BatchNotFound(id.to_string()))
    }

    /// Highest `export_seq` a batch covers (0 if none), and highest assigned.
    pub fn export_watermarks(&self) -> Result<(i64, i64)> {
        self.conn
            .query_row(
                &format!("SELECT (SELECT COALESCE(MAX(last_seq), 0) FROM batches), {NEXT_SEQ} - 1"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))
    }

    /// Call `f` with the traceability columns of every provisioned enrollment with
    /// `first <= export_seq <= last`, in `export_seq` order, borrowing each row's text (no
    /// allocation per row). Returns the count.
    pub fn for_each_trace_row(
        &self,
        first: i64,
        last: i64,
        mut f: impl FnMut(&TraceRow<'_>) -> Result<()>,
    ) -> Result<i64> {
        self.scan_range(
            "registration_id, device_serial, firmware, model, attestation_type, key_source, \
             station, line, operator, provisioned_at, device_digest, cert_serial, cert_thumbprint, \
             cert_not_before, cert_not_after",
            first,
            last,
            |c| {
                f(&TraceRow {
                    registration_id: c.text(0)?,
                    device_serial: c.text(1)?,
                    firmware: c.text(2)?,
                    model: c.text(3)?,
                    attestation_type: c.text(4)?,
                    key_source: c.text(5)?,
                    station: c.text(6)?,
                    line: c.text(7)?,
                    operator: c.text(8)?,
                    provisioned_at: c.text(9)?,
                    device_digest: c.text(10)?,
                    cert_serial: c.text(11)?,
                    cert_thumbprint: c.text(12)?,
                    cert_not_before: c.text(13)?,
                    cert_not_after: c.text(14)?,
                })
            },
        )
    }

    /// Like [`Store::for_each_trace_row`], with the columns the DPS enrollment needs.
    pub fn for_each_attestation_row(
        &self,
        first: i64,
        last: i64,
        mut f: impl FnMut(&AttestationRow<'_>) -> Result<()>,
    ) -> Result<i64> {
        self.scan_range(
            "registration_id, attestation_type, primary_key, secondary_key, group_key_id, \
             public_material, storage_root_key",
            first,
            last,
            |c| {
                f(&AttestationRow {
                    registration_id: c.text(0)?,
                    attestation_type: c.kind(1)?,
                    primary_key: c.opt(2)?,
                    secondary_key: c.opt(3)?,
                    group_key_id: c.opt(4)?,
                    certificate: c.opt(5)?,
                    storage_root_key: c.opt(6)?,
                })
            },
        )
    }

    /// Scan `first..=last` in export_seq order over current and superseded enrollments (a
    /// batch keeps the versions it was exported with).
    fn scan_range(
        &self,
        columns: &str,
        first: i64,
        last: i64,
        mut f: impl FnMut(&Cols<'_, '_>) -> Result<()>,
    ) -> Result<i64> {
        let range = "WHERE export_seq BETWEEN ?1 AND ?2 ORDER BY export_seq";
        let mut old: Vec<(i64, Vec<Option<String>>)> = {
            let mut stmt = self
                .conn
                .prepare(&format!(
                    "SELECT export_seq, {columns} FROM superseded_enrollments {range}"
                ))
                .map_err(|e| self.err(e))?;
            let n = stmt.column_count();
            let rows = stmt
                .query_map([first, last], |r| {
                    let vals = (1..n)
                        .map(|i| r.get::<_, Option<String>>(i))
                        .collect::<rusqlite::Result<_>>()?;
                    Ok((r.get(0)?, vals))
                })
                .map_err(|e| self.err(e))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(|e| self.err(e))?
        };
        old.reverse();
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {columns}, export_seq FROM enrollments {range}"
            ))
            .map_err(|e| self.err(e))?;
        let seq_col = stmt.column_count() - 1;
        let mut rows = stmt.query([first, last]).map_err(|e| self.err(e))?;
        let mut n = 0;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let seq: i64 = row.get(seq_col).map_err(|e| self.err(e))?;
            while old.last().is_some_and(|(s, _)| *s < seq) {
                let (_, vals) = old.pop().expect("checked");
                f(&Cols::Owned(vals))?;
                n += 1;
            }
            f(&Cols::Row { row, store: self })?;
            n += 1;
        }
        while let Some((_, vals)) = old.pop() {
            f(&Cols::Owned(vals))?;
            n += 1;
        }
        Ok(n)
    }

    /// Another connection to the same database (for a second reader thread).
    pub fn reopen(&self) -> Result<Store> {
        Store::open(std::path::Path::new(&self.path))
    }

    /// Record a batch covering `first..=last`, unless another export got there first, with
    /// the size and SHA-256 of each of its files.
    pub fn insert_batch(&mut self, b: &Batch, files: &[BatchFile]) -> Result<()> {
        let path = self.path().to_string();
        let e = |e: rusqlite::Error| Error::database(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let covered: i64 = tx
            .query_row("SELECT COALESCE(MAX(last_seq), 0) FROM batches", [], |r| {
                r.get(0)
            })
            .map_err(e)?;
        if covered >= b.first_seq {
            return Err(Error::Database {
                path,
                message: "another export ran at the same time; run the export again".into(),
            });
        }
        tx.execute(
            "INSERT INTO batches (id, first_seq, last_seq, count, created_at, station, dps_options) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![b.id, b.first_seq, b.last_seq, b.count, b.created_at, b.station, b.dps_options],
        )
        .map_err(e)?;
        for f in files {
            tx.execute(
                "INSERT INTO batch_files (batch_id, name, bytes, sha256) VALUES (?1, ?2, ?3, ?4)",
                params![b.id, f.name, f.bytes as i64, f.sha256],
            )
            .map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    /// The files recorded for batch `id` (none for batches exported before they were kept).
    pub fn batch_files(&self, id: &str) -> Result<Vec<BatchFile>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, bytes, sha256 FROM batch_files WHERE batch_id = ?1 ORDER BY name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(BatchFile {
                    name: r.get(0)?,
                    bytes: r.get::<_, i64>(1)? as u64,
                    sha256: r.get(2)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }
}

/// One file of an export batch as it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchFile {
    /// File name in the export directory.
    pub name: String,
    pub bytes: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

/// Traceability columns of an enrollment, borrowed from the database row.
#[derive(Debug)]
pub struct TraceRow<'a> {
    pub registration_id: &'a str,
    pub device_serial: &'a str,
    pub firmware: &'a str,
    pub model: &'a str,
    pub attestation_type: &'a str,
    pub key_source: &'a str,
    pub station: &'a str,
    pub line: &'a str,
    pub operator: &'a str,
    pub provisioned_at: &'a str,
    pub device_digest: &'a str,
    pub cert_serial: &'a str,
    pub cert_thumbprint: &'a str,
    pub cert_not_before: &'a str,
    pub cert_not_after: &'a str,
}

/// What the DPS enrollment of a row needs, borrowed from the database row.
pub struct AttestationRow<'a> {
    pub registration_id: &'a str,
    pub attestation_type: AttestationKind,
    pub primary_key: Option<&'a str>,
    pub secondary_key: Option<&'a str>,
    pub group_key_id: Option<&'a str>,
    /// X.509: the device certificate; TPM: the EK (base64 TPM2B_PUBLIC).
    pub certificate: Option<&'a str>,
    pub storage_root_key: Option<&'a str>,
}

/// A row's columns: borrowed from SQLite, or owned (superseded versions, which are rare).
enum Cols<'r, 's> {
    Row { row: &'r Row<'r>, store: &'s Store },
    Owned(Vec<Option<String>>),
}

/// An attestation type column, parsed (an unknown spelling is a database error).
pub(crate) fn kind_column<I: rusqlite::RowIndex>(
    r: &Row<'_>,
    column: I,
) -> rusqlite::Result<AttestationKind> {
    let t: String = r.get(column)?;
    parse_kind(&t)
}

fn parse_kind(t: &str) -> rusqlite::Result<AttestationKind> {
    AttestationKind::parse(t).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown attestation type `{t}`").into(),
        )
    })
}

impl Cols<'_, '_> {
    fn kind(&self, i: usize) -> Result<AttestationKind> {
        let t = self.text(i)?;
        parse_kind(t).map_err(|e| Error::Database {
            path: match self {
                Cols::Row { store, .. } => store.path().to_string(),
                Cols::Owned(_) => String::new(),
            },
            message: e.to_string(),
        })
    }

    fn opt(&self, i: usize) -> Result<Option<&str>> {
        match self {
            Cols::Row { row, store } => row
                .get_ref(i)
                .and_then(|v| v.as_str_or_null().map_err(Into::into))
                .map_err(|e| store.err(e)),
            Cols::Owned(v) => Ok(v.get(i).and_then(|s| s.as_deref())),
        }
    }

    fn text(&self, i: usize) -> Result<&str> {
        self.opt(i).map(|v| v.unwrap_or(""))
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

fn batch_from_row(r: &Row<'_>) -> rusqlite::Result<Batch> {
    Ok(Batch {
        id: r.get(0)?,
        first_seq: r.get(1)?,
        last_seq: r.get(2)?,
        count: r.get(3)?,
        created_at: r.get(4)?,
        station: r.get(5)?,
        dps_options: r.get(6)?,
    })
}

fn insert_attempt(tx: &rusqlite::Transaction<'_>, a: &Attempt<'_>) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO attempts (registration_id, device_serial, outcome, error_code, message, \
            station, operator, port, started_at, duration_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
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
        ],
    )
}
