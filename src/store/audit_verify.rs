//! Walking the audit trail: every entry's hash and link, no gap in the sequence, every signed
//! head, and every row of the audited tables against the last hash logged for it.

use super::Store;
use super::audit::{AUDITED, TRIGGERS_RESTORED, columns, hash_hex};
use super::audit_key::{AuditKey, head_message, verify};
use crate::error::Result;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rusqlite::types::ValueRef;
use serde::Serialize;
use std::collections::HashMap;

/// The first broken link found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditBreak {
    /// The entry where the chain breaks, when it is one.
    pub seq: Option<i64>,
    pub problem: String,
}

/// What a verification of the trail found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    pub entries: u64,
    pub signatures: u32,
    /// Rows of the audited tables checked against the trail (none with `--from`).
    pub rows_checked: u64,
    pub head: Option<(i64, String)>,
    pub first_break: Option<AuditBreak>,
}

fn broke(seq: Option<i64>, problem: String) -> Option<AuditBreak> {
    Some(AuditBreak { seq, problem })
}

/// A signed head as stored: (head_seq, head_hash, public key, signature).
type Signed = (i64, String, Vec<u8>, Vec<u8>);

/// The chain walk's state.
#[derive(Default)]
struct Walk {
    expected_seq: Option<i64>,
    prev: Option<String>,
    /// The last row hash logged per (audited table's index, rowid); `None` after a delete.
    last: HashMap<(u8, i64), Option<[u8; 64]>>,
    /// Hashes at the seqs a signature names.
    signed: HashMap<i64, String>,
}

/// A text column as bytes (empty when NULL or not text).
fn text<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'a [u8]> {
    Ok(row.get_ref(i)?.as_bytes_or_null()?.unwrap_or_default())
}

impl Walk {
    /// One entry; the problem, if it breaks the chain.
    fn entry(&mut self, row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<String>> {
        let seq: i64 = row.get(0)?;
        let (prev, hash, kind) = (text(row, 6)?, text(row, 7)?, text(row, 2)?);
        if let Some(want) = self.expected_seq
            && seq != want
        {
            return Ok(Some(format!(
                "entry {want} is missing (the next one is {seq}): entries were deleted or inserted outside the station"
            )));
        }
        if let Some(p) = &self.prev
            && p.as_bytes() != prev
        {
            return Ok(Some(
                "entry does not follow the one before it: entries were inserted, deleted or reordered outside the station".into(),
            ));
        }
        let mut values = [ValueRef::Text(b"chain"); 8];
        for (i, v) in values.iter_mut().skip(1).enumerate() {
            *v = row.get_ref(i)?;
        }
        if hash_hex(values).as_slice() != hash {
            return Ok(Some(
                "entry was edited outside the station (its hash does not match its contents)"
                    .into(),
            ));
        }
        if kind == TRIGGERS_RESTORED.as_bytes() {
            return Ok(Some(
                "the audit triggers were removed or altered outside the station (the station restored them here): changes made meanwhile were not logged".into(),
            ));
        }
        self.log_row(row, kind)?;
        let hash = std::str::from_utf8(hash).unwrap_or_default();
        if let Some(h) = self.signed.get_mut(&seq) {
            *h = hash.to_string();
        }
        self.expected_seq = Some(seq + 1);
        match &mut self.prev {
            Some(p) => {
                p.clear();
                p.push_str(hash);
            }
            None => self.prev = Some(hash.to_string()),
        }
        Ok(None)
    }

    /// Remember the row hash an entry of an audited table logged.
    fn log_row(&mut self, row: &rusqlite::Row<'_>, kind: &[u8]) -> rusqlite::Result<()> {
        let kind = std::str::from_utf8(kind).unwrap_or_default();
        let Some((table, op)) = kind.split_once('.') else {
            return Ok(());
        };
        let Some(t) = AUDITED.iter().position(|a| *a == table) else {
            return Ok(());
        };
        let rowid: i64 = std::str::from_utf8(text(row, 3)?)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(i64::MIN);
        let value = match (op, text(row, 4)?) {
            ("delete", _) => None,
            (_, h) => h.try_into().ok(),
        };
        self.last.insert((t as u8, rowid), value);
        Ok(())
    }
}

impl Store {
    /// Verify the audit trail (from the first entry at or after `from`, an RFC 3339 time; the
    /// rows of the audited tables are checked only for a whole walk). Signatures are checked
    /// against `public_key`, else the station's own audit key.
    pub fn verify_audit(
        &self,
        from: Option<&str>,
        public_key: Option<&[u8]>,
    ) -> Result<AuditReport> {
        let e = |e: rusqlite::Error| self.err(e);
        let mut report = AuditReport::default();
        let mut walk = Walk::default();
        let sigs = self.signatures()?;
        for (seq, ..) in &sigs {
            walk.signed.insert(*seq, String::new());
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, at, kind, subject, row_hash, detail, prev, hash FROM audit_log \
                 WHERE at >= ?1 ORDER BY seq",
            )
            .map_err(e)?;
        let mut rows = stmt.query([from.unwrap_or("")]).map_err(e)?;
        let mut first = true;
        let mut first_seq = 1;
        while let Some(row) = rows.next().map_err(e)? {
            let seq: i64 = row.get(0).map_err(e)?;
            if first {
                first_seq = seq;
                // A whole walk starts at entry 1 with nothing before it.
                walk.expected_seq = Some(if from.is_some() { seq } else { 1 });
                if from.is_none() {
                    walk.prev = Some(String::new());
                }
                first = false;
            }
            report.entries += 1;
            if let Some(problem) = walk.entry(row).map_err(e)? {
                report.first_break = broke(Some(seq), problem);
                return Ok(report);
            }
        }
        report.head = walk
            .prev
            .clone()
            .zip(walk.expected_seq)
            .map(|(h, s)| (s - 1, h));
        // Signatures of entries before `from` are not this walk's to judge.
        let in_walk: Vec<_> = sigs.iter().filter(|s| s.0 >= first_seq).cloned().collect();
        report.first_break = self.check_signatures(&in_walk, &walk, public_key)?;
        report.signatures = sigs.len() as u32;
        if report.first_break.is_none() && from.is_none() {
            report.first_break = self.check_rows(&mut walk, &mut report.rows_checked)?;
        }
        Ok(report)
    }

    /// Every signature: (head_seq, head_hash, public key, signature), oldest first.
    fn signatures(&self) -> Result<Vec<Signed>> {
        let mut stmt = self
            .conn
            .prepare("SELECT head_seq, head_hash, public_key, signature FROM audit_signatures ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let b = |s: String| B64.decode(s).unwrap_or_default();
                Ok((r.get(0)?, r.get(1)?, b(r.get(2)?), b(r.get(3)?)))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))
    }

    fn check_signatures(
        &self,
        sigs: &[Signed],
        walk: &Walk,
        public_key: Option<&[u8]>,
    ) -> Result<Option<AuditBreak>> {
        let own;
        let key: &[u8] = match public_key {
            Some(k) => k,
            None => {
                own = AuditKey::load_or_create(std::path::Path::new(self.path()))?.public();
                &own
            }
        };
        for (seq, hash, public, signature) in sigs {
            let at = walk.signed.get(seq).filter(|h| !h.is_empty());
            let problem = if public.as_slice() != key {
                Some("it was made with another key than the station's audit key".to_string())
            } else if !verify(key, &head_message(*seq, hash), signature) {
                Some("the signature does not verify".to_string())
            } else if at.is_some_and(|h| h != hash) {
                Some("the entry it signed has changed since".to_string())
            } else if at.is_none() && walk.expected_seq.is_some_and(|n| *seq < n) {
                Some("the entry it signed is gone".to_string())
            } else {
                None
            };
            if let Some(p) = problem {
                return Ok(broke(
                    Some(*seq),
                    format!("signed head at entry {seq}: {p}"),
                ));
            }
        }
        Ok(None)
    }

    /// Every row of the audited tables against the last hash the trail logged for it.
    fn check_rows(&self, walk: &mut Walk, checked: &mut u64) -> Result<Option<AuditBreak>> {
        let e = |e: rusqlite::Error| self.err(e);
        for (t, table) in AUDITED.iter().enumerate() {
            let n = columns(&self.conn, table).map_err(e)?.len();
            let mut stmt = self
                .conn
                .prepare(&format!("SELECT rowid, * FROM {table} ORDER BY rowid"))
                .map_err(e)?;
            let mut rows = stmt.query([]).map_err(e)?;
            while let Some(row) = rows.next().map_err(e)? {
                *checked += 1;
                let rowid: i64 = row.get(0).map_err(e)?;
                let mut values = Vec::with_capacity(n + 1);
                values.push(ValueRef::Text(table.as_bytes()));
                for i in 1..=n {
                    values.push(row.get_ref(i).map_err(e)?);
                }
                let hash = hash_hex(values);
                let problem = match walk.last.remove(&(t as u8, rowid)) {
                    None | Some(None) => {
                        "was inserted outside the station (the trail never logged it)"
                    }
                    Some(Some(h)) if h != hash => {
                        "was changed outside the station (it differs from what the trail last logged)"
                    }
                    Some(Some(_)) => continue,
                };
                return Ok(broke(None, format!("{table} row {rowid} {problem}")));
            }
        }
        let mut gone: Vec<_> = walk
            .last
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|((t, r), _)| (AUDITED[usize::from(*t)], *r))
            .collect();
        gone.sort();
        Ok(gone.first().and_then(|(t, r)| {
            broke(
                None,
                format!("{t} row {r} was deleted outside the station (the trail logged no delete)"),
            )
        }))
    }

    /// Sign the trail's head with the station's audit key (at every batch and at shutdown).
    pub fn sign_audit_head(&self, reason: &str) -> Result<Option<(i64, String)>> {
        let Some((seq, hash)) = self.audit_head()? else {
            return Ok(None);
        };
        let key = AuditKey::load_or_create(std::path::Path::new(self.path()))?;
        let signature = key.sign(&head_message(seq, &hash));
        self.conn
            .execute(
                "INSERT INTO audit_signatures (head_seq, head_hash, reason, public_key, signature, at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![
                    seq,
                    hash,
                    reason,
                    key.public_base64(),
                    B64.encode(signature),
                    super::now()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(Some((seq, hash)))
    }
}
