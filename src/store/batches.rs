//! Export batches: recording them, and scanning the enrollment versions they cover.

use super::{NEXT_SEQ, Store, parse_kind};
use crate::domain::AttestationKind;
use crate::error::{Error, Result};
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;

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

/// One file of an export batch as it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    Row {
        row: &'r Row<'r>,
        store: &'s Store,
    },
    Owned {
        vals: Vec<Option<String>>,
        store: &'s Store,
    },
}

impl Cols<'_, '_> {
    fn kind(&self, i: usize) -> Result<AttestationKind> {
        let t = self.text(i)?;
        let (Cols::Row { store, .. } | Cols::Owned { store, .. }) = self;
        parse_kind(t).map_err(|e| store.err(e))
    }

    fn opt(&self, i: usize) -> Result<Option<&str>> {
        match self {
            Cols::Row { row, store } => row
                .get_ref(i)
                .and_then(|v| v.as_str_or_null().map_err(Into::into))
                .map_err(|e| store.err(e)),
            Cols::Owned { vals, .. } => Ok(vals.get(i).and_then(|s| s.as_deref())),
        }
    }

    fn text(&self, i: usize) -> Result<&str> {
        self.opt(i).map(|v| v.unwrap_or(""))
    }
}

impl Store {
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
        // Both tables from one snapshot: a re-key committed between the two reads would move
        // a version out of the range the second read sees (the count check would then fail
        // the export for nothing). A read transaction does not hold up the fixtures' writes.
        let snapshot = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
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
                f(&Cols::Owned { vals, store: self })?;
                n += 1;
            }
            f(&Cols::Row { row, store: self })?;
            n += 1;
        }
        while let Some((_, vals)) = old.pop() {
            f(&Cols::Owned { vals, store: self })?;
            n += 1;
        }
        drop(rows);
        drop(stmt);
        snapshot.commit().map_err(|e| self.err(e))?;
        Ok(n)
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
