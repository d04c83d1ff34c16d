//! The fleet outbox: what this station has to tell the fleet database, in local commit order.
//!
//! Entries are appended by triggers (migration 8) in the transaction that made the change they
//! describe, once the station has joined a fleet ([`Store::fleet_join`]); the sync thread reads
//! them in order, sends them, and only then marks them sent. The outbox is not audited: it is a
//! copy, in transit, of rows the audit trail already covers.

use super::{Store, now};
use crate::error::{Error, Result};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

/// Whether an enrollment's secondary key is one only the station holds (a random secondary
/// beside a group-derived primary): it leaves as this flag, the key never does.
const SECONDARY_HELD: &str = "key_source = 'group-derived' AND secondary_key IS NOT NULL";

/// The enrollment columns that leave the station (never `primary_key` / `secondary_key`).
const ENROLLMENT_COLUMNS: &[&str] = &[
    "registration_id",
    "device_serial",
    "firmware",
    "model",
    "attestation_type",
    "key_source",
    "group_key_id",
    "public_material",
    "device_digest",
    "station",
    "line",
    "operator",
    "created_at",
    "provisioned_at",
    "export_seq",
    "cert_serial",
    "cert_thumbprint",
    "cert_not_before",
    "cert_not_after",
    "storage_root_key",
    "ek_hash",
    "ek_certificate",
    "ek_cert_issuer",
    "ek_cert_status",
];
const ATTEMPT_COLUMNS: &[&str] = &[
    "id",
    "registration_id",
    "device_serial",
    "outcome",
    "error_code",
    "station",
    "operator",
    "port",
    "started_at",
    "duration_ms",
];
const BATCH_COLUMNS: &[&str] = &[
    "id",
    "first_seq",
    "last_seq",
    "count",
    "created_at",
    "station",
    "dps_options",
];
const UPLOAD_COLUMNS: &[&str] = &[
    "export_seq",
    "registration_id",
    "status",
    "mode",
    "error_code",
    "updated_at",
];

/// One outbox entry.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub seq: i64,
    /// `enrollment`, `attempt`, `batch` or `upload`.
    pub kind: String,
    /// The row as a JSON object.
    pub payload: String,
}

/// The station's side of the sync, for `station fleet status` and the window's header.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxState {
    /// The station joined a fleet (its changes are queued).
    pub joined: bool,
    /// The last entry the fleet database confirmed.
    pub sent_seq: i64,
    /// Entries not yet confirmed.
    pub pending: i64,
    /// When the oldest unconfirmed entry was queued (RFC 3339), if any.
    pub oldest_pending_at: Option<String>,
    pub last_sync_at: Option<String>,
    pub last_error: Option<String>,
}

fn json_object(columns: &[&str]) -> String {
    let pairs: Vec<String> = columns.iter().map(|c| format!("'{c}', {c}")).collect();
    format!("json_object({})", pairs.join(", "))
}

/// Queue every enrollment version, attempt, batch and upload result the database holds.
fn queue_history(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let enrollments = json_object(ENROLLMENT_COLUMNS).replace(
        ", 'ek_cert_status', ek_cert_status)",
        &format!(", 'ek_cert_status', ek_cert_status, 'secondary_held', {SECONDARY_HELD})"),
    );
    let cols = format!("{}, secondary_key", ENROLLMENT_COLUMNS.join(", "));
    tx.execute_batch(&format!(
        "INSERT INTO fleet_outbox (kind, payload) SELECT 'enrollment', {enrollments} FROM \
           (SELECT {cols} FROM superseded_enrollments \
            UNION ALL SELECT {cols} FROM enrollments WHERE export_seq IS NOT NULL) \
         ORDER BY export_seq;
         INSERT INTO fleet_outbox (kind, payload) SELECT 'attempt', {} FROM attempts ORDER BY id;
         INSERT INTO fleet_outbox (kind, payload) SELECT 'batch', {} FROM batches ORDER BY first_seq;
         INSERT INTO fleet_outbox (kind, payload) SELECT 'upload', {} FROM uploads ORDER BY export_seq;",
        json_object(ATTEMPT_COLUMNS),
        json_object(BATCH_COLUMNS),
        json_object(UPLOAD_COLUMNS),
    ))
}

impl Store {
    /// Join a fleet: from now on every change is queued for the fleet database, and everything
    /// recorded before is queued first (enrollment versions, attempts, batches, uploads), in
    /// one transaction. Joining again changes nothing. True when this call joined.
    pub fn fleet_join(&mut self) -> Result<bool> {
        let path = self.path().to_string();
        let e = |e: rusqlite::Error| Error::database(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        let joined: bool = tx
            .query_row("SELECT count(*) > 0 FROM fleet_state", [], |r| r.get(0))
            .map_err(e)?;
        if joined {
            return Ok(false);
        }
        queue_history(&tx).map_err(e)?;
        tx.execute(
            "INSERT INTO fleet_state (id, enabled_at) VALUES (1, ?1)",
            [now()],
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(true)
    }

    /// The fleet database holds less than it confirmed (restored from an older backup, or
    /// another database): queue everything the station holds again, after what was queued.
    /// Sending it again is harmless (every row is keyed).
    pub fn fleet_requeue(&mut self) -> Result<()> {
        let path = self.path().to_string();
        let e = |e: rusqlite::Error| Error::database(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        tx.execute("DELETE FROM fleet_outbox", []).map_err(e)?;
        queue_history(&tx).map_err(e)?;
        tx.commit().map_err(e)
    }

    /// Up to `limit` unconfirmed entries after `after`, oldest first.
    pub fn outbox_after(&self, after: i64, limit: u32) -> Result<Vec<OutboxEntry>> {
        let e = |e: rusqlite::Error| Error::database(self.path(), e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, kind, payload FROM fleet_outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(e)?;
        let rows = stmt
            .query_map(params![after, limit], |r| {
                Ok(OutboxEntry {
                    seq: r.get(0)?,
                    kind: r.get(1)?,
                    payload: r.get(2)?,
                })
            })
            .map_err(e)?;
        rows.collect::<rusqlite::Result<_>>().map_err(e)
    }

    /// The fleet database confirmed every entry up to `seq`: drop them from the outbox.
    pub fn outbox_confirmed(&mut self, seq: i64) -> Result<()> {
        let path = self.path().to_string();
        let e = |e: rusqlite::Error| Error::database(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(e)?;
        tx.execute("DELETE FROM fleet_outbox WHERE seq <= ?1", [seq])
            .map_err(e)?;
        tx.execute(
            "UPDATE fleet_state SET sent_seq = max(sent_seq, ?1), last_sync_at = ?2, last_error = NULL",
            params![seq, now()],
        )
        .map_err(e)?;
        tx.commit().map_err(e)
    }

    /// Note why the last sync failed (shown by `station fleet status`).
    pub fn outbox_failed(&mut self, message: &str) -> Result<()> {
        self.conn
            .execute("UPDATE fleet_state SET last_error = ?1", [message])
            .map(|_| ())
            .map_err(|e| Error::database(self.path(), e))
    }

    /// When this station provisioned `registration_id` (any version: the current one, or one
    /// a re-key superseded), if it ever did.
    pub fn provisioned_at(&self, registration_id: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT coalesce(max(provisioned_at), 'an unknown time') FROM (
                     SELECT provisioned_at FROM enrollments
                     WHERE registration_id = ?1 AND status = 'provisioned'
                     UNION ALL
                     SELECT provisioned_at FROM superseded_enrollments WHERE registration_id = ?1)
                 HAVING count(*) > 0",
                [registration_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| Error::database(self.path(), e))
    }

    /// The station's side of the sync.
    pub fn outbox_state(&self) -> Result<OutboxState> {
        let e = |e: rusqlite::Error| Error::database(self.path(), e);
        let state = self
            .conn
            .query_row(
                "SELECT sent_seq, last_sync_at, last_error FROM fleet_state",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(e)?;
        let Some((sent_seq, last_sync_at, last_error)) = state else {
            return Ok(OutboxState::default());
        };
        let (pending, oldest_pending_at) = self
            .conn
            .query_row(
                "SELECT count(*), min(at) FROM fleet_outbox WHERE seq > ?1",
                [sent_seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(e)?;
        Ok(OutboxState {
            joined: true,
            sent_seq,
            pending,
            oldest_pending_at,
            last_sync_at,
            last_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Credential, Secret};
    use crate::store::{Attempt, NewEnrollment};

    fn provision(s: &mut Store, id: &str, individual: bool) {
        provision_with(s, id, (!individual).then(|| "g1".to_string()), false);
    }

    fn provision_with(s: &mut Store, id: &str, group: Option<String>, secondary_derived: bool) {
        let credential = Credential::SymmetricKey {
            primary: Secret("a2V5LXByaW1hcnk=".into()),
            secondary: Some(Secret("a2V5LXNlY29uZGFyeQ==".into())),
            group_key_id: group,
            secondary_derived,
        };
        s.record_pending(&NewEnrollment {
            registration_id: id,
            device_serial: id,
            firmware: "1.0",
            model: "m",
            credential: &credential,
            station: "s1",
            line: "l1",
            operator: "op",
            expected_digest: "abcd",
            supersede: false,
        })
        .unwrap();
        let attempt = Attempt {
            registration_id: Some(id),
            device_serial: Some(id),
            passed: true,
            error_code: None,
            message: None,
            station: "s1",
            operator: "op",
            port: "/dev/null",
            started_at: "2026-01-01T00:00:00Z",
            duration_ms: 1,
        };
        s.mark_provisioned(id, "abcd", &attempt).unwrap();
    }

    #[test]
    fn joining_queues_the_history_once_then_each_change_in_commit_order_without_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        provision(&mut s, "before", true);
        assert!(
            s.outbox_after(0, 100).unwrap().is_empty(),
            "a standalone station queues nothing"
        );
        assert_eq!(s.outbox_state().unwrap(), OutboxState::default());
        assert!(s.fleet_join().unwrap());
        assert!(!s.fleet_join().unwrap(), "joining again changes nothing");
        provision(&mut s, "after", true);
        let q = s.outbox_after(0, 100).unwrap();
        let kinds: Vec<(&str, String)> = q
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
                (
                    e.kind.as_str(),
                    v["registration_id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("enrollment", "before".to_string()),
                ("attempt", "before".into()),
                ("enrollment", "after".into()),
                ("attempt", "after".into()),
            ]
        );
        for e in &q {
            assert!(
                !e.payload.contains("a2V5"),
                "a key left the station: {}",
                e.payload
            );
        }
        let state = s.outbox_state().unwrap();
        assert!(state.joined && state.pending == 4 && state.oldest_pending_at.is_some());
        s.outbox_confirmed(q[1].seq).unwrap();
        let state = s.outbox_state().unwrap();
        assert_eq!((state.sent_seq, state.pending), (q[1].seq, 2));
        assert_eq!(
            s.outbox_after(state.sent_seq, 100).unwrap(),
            q[2..].to_vec()
        );
    }

    /// A random secondary beside a derived primary is held only by the station: it leaves as
    /// `secondary_held`, from the history queued at joining and from the trigger alike.
    #[test]
    fn a_secondary_key_only_the_station_holds_leaves_as_a_flag_never_as_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        provision_with(&mut s, "random-before", Some("g1".into()), false);
        provision_with(&mut s, "derived-before", Some("g1".into()), true);
        s.fleet_join().unwrap();
        provision_with(&mut s, "random-after", Some("g1".into()), false);
        provision_with(&mut s, "derived-after", Some("g1".into()), true);
        provision(&mut s, "individual", true);
        let held: Vec<(String, serde_json::Value)> = s
            .outbox_after(0, 100)
            .unwrap()
            .iter()
            .filter(|e| e.kind == "enrollment")
            .map(|e| {
                assert!(!e.payload.contains("a2V5"), "a key left: {}", e.payload);
                let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
                (
                    v["registration_id"].as_str().unwrap().to_string(),
                    v["secondary_held"].clone(),
                )
            })
            .collect();
        let flag = |id: &str| held.iter().find(|(r, _)| r == id).unwrap().1.clone();
        assert_eq!(flag("random-before"), 1);
        assert_eq!(flag("derived-before"), 0);
        assert_eq!(flag("random-after"), 1);
        assert_eq!(flag("derived-after"), 0);
        assert_eq!(
            flag("individual"),
            0,
            "individual keys are refused on their own"
        );
    }
}
