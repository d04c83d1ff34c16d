//! Walking the audit trail: every entry's hash and link, no gap in the sequence, every signed
//! head, and every row of the audited tables against the last hash logged for it.

use super::Store;
use super::audit::{AUDITED, TRIGGERS_RESTORED, columns, hash_values};
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
    /// The last row hash logged per (table, rowid); `None` after a delete.
    last: HashMap<(String, String), Option<String>>,
    /// Hashes at the seqs a signature names.
    signed: HashMap<i64, String>,
}

impl Walk {
    /// One entry; the problem, if it breaks the chain.
    fn entry(&mut self, row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<String>> {
        let seq: i64 = row.get(0)?;
        let raw = |i: usize| row.get_ref(i);
        let values = [
            ValueRef::Text(b"chain"),
            raw(0)?,
            raw(1)?,
            raw(2)?,
            raw(3)?,
            raw(4)?,
            raw(5)?,
            raw(6)?,
        ];
        let hash: String = row.get(7)?;
        let prev: String = row.get(6)?;
        let kind: String = row.get(2)?;
        if let Some(want) = self.expected_seq
            && seq != want
        {
            return Ok(Some(format!(
                "entry {want} is missing (the next one is {seq}): entries were deleted or inserted outside the station"
            )));
        }
        if let Some(p) = &self.prev
            && *p != prev
        {
            return Ok(Some(
                "entry does not follow the one before it: entries were inserted, deleted or reordered outside the station".into(),
            ));
        }
        if hash_values(values) != hash {
            return Ok(Some(
                "entry was edited outside the station (its hash does not match its contents)"
                    .into(),
            ));
        }
        if kind == TRIGGERS_RESTORED {
            return Ok(Some(
                "the audit triggers were removed or altered outside the station (the station restored them here): changes made meanwhile were not logged".into(),
            ));
        }
        if let Some((table, op)) = kind.split_once('.')
            && AUDITED.contains(&table)
        {
            let subject: String = row.get(3)?;
            let row_hash: Option<String> = row.get(4)?;
            let value = (op != "delete").then_some(row_hash).flatten();
            self.last.insert((table.to_string(), subject), value);
        }
        if let Some(h) = self.signed.get_mut(&seq) {
            *h = hash.clone();
        }
        self.expected_seq = Some(seq + 1);
        self.prev = Some(hash);
        Ok(None)
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
        for table in AUDITED {
            let n = columns(&self.conn, table).map_err(e)?.len();
            let mut stmt = self
                .conn
                .prepare(&format!("SELECT rowid, * FROM {table} ORDER BY rowid"))
                .map_err(e)?;
            let mut rows = stmt.query([]).map_err(e)?;
            while let Some(row) = rows.next().map_err(e)? {
                *checked += 1;
                let rowid: i64 = row.get(0).map_err(e)?;
                let mut values = vec![ValueRef::Text(table.as_bytes())];
                for i in 1..=n {
                    values.push(row.get_ref(i).map_err(e)?);
                }
                let hash = hash_values(values);
                let problem = match walk.last.remove(&(table.to_string(), rowid.to_string())) {
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
            .map(|((t, r), _)| format!("{t} row {r}"))
            .collect();
        gone.sort();
        Ok(gone.first().and_then(|g| {
            broke(
                None,
                format!("{g} was deleted outside the station (the trail logged no delete)"),
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
