//! The audit trail: an append-only, hash-chained log of every change to the station's records
//! and of the station's own acts (configuration loaded, keys in use, permissions used,
//! exports, doctor runs), with the chain head signed by the station's audit key.
//!
//! Triggers write an entry for every insert, update and delete on the audited tables, in the
//! same transaction as the change: the entry holds the SHA-256 of the whole row, the previous
//! entry's hash, and its own hash over all of it. The hash is a SQL function the station
//! registers on its connections, so a change made with another SQLite client fails ("no such
//! function: audit_sha256") unless the triggers are dropped first — and then verification
//! finds rows whose hash is not the last one logged for them. Triggers found missing or
//! altered when the station opens the database are restored, and that is logged as a break.

use super::Store;
use crate::error::{Error, Result};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, functions::FunctionFlags, params};
use sha2::{Digest, Sha256};

/// Every table whose rows the trail covers.
pub const AUDITED: &[&str] = &[
    "enrollments",
    "superseded_enrollments",
    "attempts",
    "batches",
    "batch_files",
    "uploads",
    "dps_secondary_keys",
];

/// An entry's kind when the station found the triggers missing or altered (a break).
pub const TRIGGERS_RESTORED: &str = "audit.triggers_restored";

/// Feed one SQL value to the hash, typed and length-prefixed (no two rows collide by
/// shifting bytes between columns).
fn feed(h: &mut Sha256, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => h.update([0]),
        ValueRef::Integer(i) => {
            h.update([1]);
            h.update(i.to_be_bytes());
        }
        ValueRef::Real(f) => {
            h.update([2]);
            h.update(f.to_bits().to_be_bytes());
        }
        ValueRef::Text(t) => {
            h.update([3]);
            h.update((t.len() as u64).to_be_bytes());
            h.update(t);
        }
        ValueRef::Blob(b) => {
            h.update([4]);
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        }
    }
}

/// Lowercase hex SHA-256 over `values` as [`feed`] encodes them.
pub fn hash_values<'a>(values: impl IntoIterator<Item = ValueRef<'a>>) -> String {
    String::from_utf8(hash_hex(values).to_vec()).expect("hex is ASCII")
}

/// [`hash_values`] into a buffer (verification compares a million of them).
pub(crate) fn hash_hex<'a>(values: impl IntoIterator<Item = ValueRef<'a>>) -> [u8; 64] {
    let mut h = Sha256::new();
    for v in values {
        feed(&mut h, v);
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in h.finalize().iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

/// Register `audit_sha256(…)` on a connection. The station does it on every connection it
/// opens; a tool that must write to the database outside the station (a migration script, a
/// test) does the same, and its changes are then logged like the station's.
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "audit_sha256",
        -1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(hash_values((0..ctx.len()).map(|i| ctx.get_raw(i)))),
    )
}

/// The statement appending one entry; `{kind}`, `{subject}`, `{row_hash}` and `{detail}` are
/// SQL expressions.
fn append_sql(kind: &str, subject: &str, row_hash: &str, detail: &str) -> String {
    format!(
        "INSERT INTO audit_log (seq, at, kind, subject, row_hash, detail, prev, hash) \
         SELECT n, t, k, s, r, d, p, audit_sha256('chain', n, t, k, s, r, d, p) FROM \
         (SELECT COALESCE(last.seq, 0) + 1 AS n, COALESCE(last.hash, '') AS p, \
                 strftime('%Y-%m-%dT%H:%M:%fZ', 'now') AS t, {kind} AS k, CAST({subject} AS TEXT) AS s, \
                 {row_hash} AS r, {detail} AS d \
          FROM (SELECT 1) LEFT JOIN (SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1) AS last)"
    )
}

/// A table's columns, in `SELECT *` order.
pub(crate) fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let cols = stmt.query_map([], |r| r.get::<_, String>(1))?;
    cols.collect()
}

/// The three triggers of `table` (name, SQL), over its current columns.
fn triggers(conn: &Connection, table: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let cols = columns(conn, table)?;
    let row = |alias: &str| {
        let list: Vec<String> = cols.iter().map(|c| format!("{alias}.\"{c}\"")).collect();
        format!("audit_sha256('{table}', {})", list.join(", "))
    };
    let one = |op: &str, alias: &str, hash: String| {
        let name = format!("audit_{table}_{op}");
        let sql = format!(
            "CREATE TRIGGER {name} AFTER {} ON {table} BEGIN {}; END",
            op.to_ascii_uppercase(),
            append_sql(
                &format!("'{table}.{op}'"),
                &format!("{alias}.rowid"),
                &hash,
                "NULL"
            )
        );
        (name, sql)
    };
    Ok(vec![
        one("insert", "NEW", row("NEW")),
        one("update", "NEW", row("NEW")),
        one("delete", "OLD", "NULL".into()),
    ])
}

/// Make sure every audited table has its triggers, as the station wrote them. On a database
/// that never had them (new, or written by an older station) every existing row is logged
/// first; triggers found missing or altered on a database that had them are restored and the
/// restoration is logged (verification reports it).
pub(super) fn install(conn: &mut Connection, path: &str) -> Result<()> {
    let err = |e: rusqlite::Error| Error::database(path, e);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    let entries: i64 = tx
        .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
        .map_err(err)?;
    let mut restored = Vec::new();
    for table in AUDITED {
        for (name, sql) in triggers(&tx, table).map_err(err)? {
            let found: Option<String> = tx
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(err)?;
            if found.as_deref() == Some(sql.as_str()) {
                continue;
            }
            if found.is_some() {
                tx.execute_batch(&format!("DROP TRIGGER {name}"))
                    .map_err(err)?;
            }
            if entries == 0 && found.is_none() {
                genesis(&tx, table).map_err(err)?;
            } else {
                restored.push(name.clone());
            }
            tx.execute_batch(&sql).map_err(err)?;
        }
    }
    if !restored.is_empty() {
        append(
            &tx,
            TRIGGERS_RESTORED,
            "",
            &serde_json::json!({ "triggers": restored }),
        )
        .map_err(err)?;
    }
    tx.commit().map_err(err)
}

/// After migration `version`: re-create the triggers of audited tables whose columns changed,
/// and log it (`audit.schema_migrated`). Nothing to do before the trail exists.
pub(super) fn refresh(conn: &Connection, version: i64) -> rusqlite::Result<()> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(());
    }
    let mut changed = Vec::new();
    for table in AUDITED {
        for (name, sql) in triggers(conn, table)? {
            let found: Option<String> = conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(old) = found
                && old != sql
            {
                conn.execute_batch(&format!("DROP TRIGGER {name}; {sql}"))?;
                changed.push(name);
            }
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    append(
        conn,
        "audit.schema_migrated",
        &version.to_string(),
        &serde_json::json!({ "triggers": changed }),
    )
}

/// Log every existing row of `table` (a database the trail starts on).
fn genesis(conn: &Connection, table: &str) -> rusqlite::Result<()> {
    let cols = columns(conn, table)?.join("\", \"");
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS audit_genesis (rid INTEGER, h TEXT); \
         DELETE FROM audit_genesis; \
         INSERT INTO audit_genesis SELECT rowid, audit_sha256('{table}', \"{cols}\") \
         FROM {table} ORDER BY rowid;"
    ))?;
    let mut rows = conn.prepare("SELECT rid, h FROM audit_genesis ORDER BY rid")?;
    let all: Vec<(i64, String)> = rows
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare(&append_sql("?1", "?2", "?3", "NULL"))?;
    for (rid, h) in all {
        stmt.execute(params![format!("{table}.existing"), rid, h])?;
    }
    conn.execute_batch("DROP TABLE audit_genesis")
}

/// Append one entry for an act of the station (`kind`, what it is about, details as JSON).
pub(super) fn append(
    conn: &Connection,
    kind: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> rusqlite::Result<()> {
    conn.prepare_cached(&append_sql("?1", "?2", "NULL", "?3"))?
        .execute(params![kind, subject, detail.to_string()])
        .map(|_| ())
}

/// The last entry: (seq, hash); `None` on an empty trail.
pub(super) fn head(conn: &Connection) -> rusqlite::Result<Option<(i64, String)>> {
    conn.query_row(
        "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

impl Store {
    /// Log an act of the station (not a row change: those log themselves).
    pub fn audit(&self, kind: &str, subject: &str, detail: &serde_json::Value) -> Result<()> {
        append(&self.conn, kind, subject, detail).map_err(|e| self.err(e))
    }

    /// The trail's head: (seq, hash).
    pub fn audit_head(&self) -> Result<Option<(i64, String)>> {
        head(&self.conn).map_err(|e| self.err(e))
    }

    /// The entry that logged the insert of batch `id`: (seq, hash).
    pub fn batch_audit_entry(&self, id: &str) -> Result<Option<(i64, String)>> {
        let rowid: Option<i64> = self
            .conn
            .query_row(
                "SELECT rowid FROM batches WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(rowid) = rowid else { return Ok(None) };
        self.conn
            .query_row(
                "SELECT seq, hash FROM audit_log WHERE kind IN ('batches.insert', 'batches.existing') \
                 AND subject = ?1 ORDER BY seq LIMIT 1",
                params![rowid.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}
