//! Append-only migrations keyed on `PRAGMA user_version`. Never edit a shipped migration; add
//! the next one.

use crate::error::{Error, Result};
use rusqlite::Connection;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    r#"
    CREATE TABLE enrollments (
        id               INTEGER PRIMARY KEY,
        registration_id  TEXT NOT NULL UNIQUE COLLATE NOCASE,
        device_serial    TEXT NOT NULL,
        firmware         TEXT NOT NULL,
        model            TEXT NOT NULL DEFAULT '',
        attestation_type TEXT NOT NULL,
        key_source       TEXT,
        primary_key      TEXT,
        secondary_key    TEXT,
        group_key_id     TEXT,
        public_material  TEXT,
        device_digest    TEXT,
        status           TEXT NOT NULL CHECK (status IN ('pending', 'provisioned', 'failed')),
        error_code       TEXT,
        station          TEXT NOT NULL,
        line             TEXT NOT NULL DEFAULT '',
        operator         TEXT NOT NULL DEFAULT '',
        created_at       TEXT NOT NULL,
        updated_at       TEXT NOT NULL,
        provisioned_at   TEXT,
        export_seq       INTEGER UNIQUE,
        CHECK ((status = 'provisioned') = (export_seq IS NOT NULL))
    );
    CREATE INDEX enrollments_serial ON enrollments(device_serial);
    CREATE INDEX enrollments_unfinished ON enrollments(status) WHERE status <> 'provisioned';
    CREATE TRIGGER enrollments_provisioned_are_immutable
        BEFORE UPDATE ON enrollments WHEN OLD.status = 'provisioned'
        BEGIN SELECT RAISE(ABORT, 'a provisioned enrollment is never modified'); END;
    CREATE TRIGGER enrollments_provisioned_are_kept
        BEFORE DELETE ON enrollments WHEN OLD.status = 'provisioned'
        BEGIN SELECT RAISE(ABORT, 'a provisioned enrollment is never deleted'); END;

    CREATE TABLE batches (
        id          TEXT PRIMARY KEY,
        first_seq   INTEGER NOT NULL,
        last_seq    INTEGER NOT NULL,
        count       INTEGER NOT NULL,
        created_at  TEXT NOT NULL,
        station     TEXT NOT NULL,
        dps_options TEXT NOT NULL,
        CHECK (first_seq <= last_seq)
    );
    CREATE UNIQUE INDEX batches_range ON batches(first_seq);

    CREATE TABLE attempts (
        id              INTEGER PRIMARY KEY,
        registration_id TEXT COLLATE NOCASE,
        device_serial   TEXT,
        outcome         TEXT NOT NULL CHECK (outcome IN ('passed', 'failed')),
        error_code      TEXT,
        message         TEXT,
        station         TEXT NOT NULL,
        operator        TEXT NOT NULL DEFAULT '',
        port            TEXT NOT NULL DEFAULT '',
        started_at      TEXT NOT NULL,
        duration_ms     INTEGER NOT NULL
    );
    CREATE INDEX attempts_registration ON attempts(registration_id);
    CREATE INDEX attempts_serial ON attempts(device_serial);
    "#,
    // 1 -> 2: X.509 certificate details, and re-issue. A re-issued enrollment's previous
    // version moves to `superseded_enrollments` (keeping its export_seq, so old batches
    // re-export identically); only then may the provisioned row change. Columns added to
    // `enrollments` later must be added here too.
    r#"
    ALTER TABLE enrollments ADD COLUMN cert_serial TEXT;
    ALTER TABLE enrollments ADD COLUMN cert_thumbprint TEXT;
    ALTER TABLE enrollments ADD COLUMN cert_not_before TEXT;
    ALTER TABLE enrollments ADD COLUMN cert_not_after TEXT;
    CREATE TABLE superseded_enrollments (
        registration_id  TEXT NOT NULL COLLATE NOCASE,
        device_serial    TEXT NOT NULL,
        firmware         TEXT NOT NULL,
        model            TEXT NOT NULL,
        attestation_type TEXT NOT NULL,
        key_source       TEXT,
        primary_key      TEXT,
        secondary_key    TEXT,
        group_key_id     TEXT,
        public_material  TEXT,
        device_digest    TEXT,
        station          TEXT NOT NULL,
        line             TEXT NOT NULL,
        operator         TEXT NOT NULL,
        created_at       TEXT NOT NULL,
        provisioned_at   TEXT,
        export_seq       INTEGER NOT NULL UNIQUE,
        cert_serial      TEXT,
        cert_thumbprint  TEXT,
        cert_not_before  TEXT,
        cert_not_after   TEXT,
        superseded_at    TEXT NOT NULL
    );
    DROP TRIGGER enrollments_provisioned_are_immutable;
    CREATE TRIGGER enrollments_provisioned_are_immutable
        BEFORE UPDATE ON enrollments
        WHEN OLD.status = 'provisioned'
         AND NOT EXISTS (SELECT 1 FROM superseded_enrollments s WHERE s.export_seq = OLD.export_seq)
        BEGIN SELECT RAISE(ABORT, 'a provisioned enrollment is never modified'); END;
    "#,
    // 2 -> 3: what DPS accepted, per enrollment version (export_seq).
    r#"
    CREATE TABLE uploads (
        export_seq      INTEGER PRIMARY KEY,
        registration_id TEXT NOT NULL COLLATE NOCASE,
        status          TEXT NOT NULL CHECK (status IN ('uploaded', 'conflict', 'failed')),
        mode            TEXT NOT NULL,
        error_code      INTEGER,
        error_status    TEXT,
        attempts        INTEGER NOT NULL DEFAULT 1,
        updated_at      TEXT NOT NULL,
        verified_at     TEXT,
        verify_result   TEXT
    );
    CREATE INDEX uploads_status ON uploads(status);
    "#,
    // 3 -> 4: TPM endorsement keys (the EK itself is `public_material`, base64 TPM2B_PUBLIC).
    r#"
    ALTER TABLE enrollments ADD COLUMN storage_root_key TEXT;
    ALTER TABLE enrollments ADD COLUMN ek_hash TEXT;
    ALTER TABLE enrollments ADD COLUMN ek_certificate TEXT;
    ALTER TABLE enrollments ADD COLUMN ek_cert_issuer TEXT;
    ALTER TABLE enrollments ADD COLUMN ek_cert_status TEXT;
    CREATE INDEX enrollments_ek ON enrollments(ek_hash) WHERE ek_hash IS NOT NULL;
    ALTER TABLE superseded_enrollments ADD COLUMN storage_root_key TEXT;
    ALTER TABLE superseded_enrollments ADD COLUMN ek_hash TEXT;
    ALTER TABLE superseded_enrollments ADD COLUMN ek_certificate TEXT;
    ALTER TABLE superseded_enrollments ADD COLUMN ek_cert_issuer TEXT;
    ALTER TABLE superseded_enrollments ADD COLUMN ek_cert_status TEXT;
    "#,
    // 4 -> 5: the digest the device holds once it committed the recorded credential, kept
    // from the moment the credential is recorded (pending), so that a re-run can ask the
    // device whether it already holds it; and what each batch file must contain, so that a
    // batch committed but never published (a crash before the rename) is found and re-made.
    r#"
    ALTER TABLE enrollments ADD COLUMN expected_digest TEXT;
    CREATE TABLE batch_files (
        batch_id TEXT NOT NULL REFERENCES batches(id),
        name     TEXT NOT NULL,
        bytes    INTEGER NOT NULL,
        sha256   TEXT NOT NULL,
        PRIMARY KEY (batch_id, name)
    );
    "#,
    // 5 -> 6: reconciliation with DPS. `etag` is the etag at which DPS was last seen holding
    // exactly what was sent (a changed etag means the enrollment changed and its attestation is
    // read again); `verify_run` marks the rows a verification saw, so the rest are the ones DPS
    // does not hold; the device's registration state as last read. `dps_secondary_keys` holds
    // the secondary key made at upload for an enrollment recorded before both keys were always
    // sent (its row is immutable).
    r#"
    ALTER TABLE uploads ADD COLUMN etag TEXT;
    ALTER TABLE uploads ADD COLUMN verify_run TEXT;
    ALTER TABLE uploads ADD COLUMN registration_status TEXT;
    ALTER TABLE uploads ADD COLUMN assigned_hub TEXT;
    ALTER TABLE uploads ADD COLUMN device_id TEXT;
    ALTER TABLE uploads ADD COLUMN registration_error TEXT;
    ALTER TABLE uploads ADD COLUMN registration_updated TEXT;
    ALTER TABLE uploads ADD COLUMN registration_checked_at TEXT;
    CREATE TABLE dps_secondary_keys (
        export_seq    INTEGER PRIMARY KEY,
        secondary_key TEXT NOT NULL,
        created_at    TEXT NOT NULL
    );
    "#,
    // 6 -> 7: the audit trail (store/audit.rs). Entries are appended by triggers the station
    // installs over the audited tables' columns, and by the station for its own acts; the
    // chain head is signed with the station's audit key (`audit_signatures`).
    r#"
    CREATE TABLE audit_log (
        seq      INTEGER PRIMARY KEY,
        at       TEXT NOT NULL,
        kind     TEXT NOT NULL,
        subject  TEXT,
        row_hash TEXT,
        detail   TEXT,
        prev     TEXT NOT NULL,
        hash     TEXT NOT NULL
    );
    CREATE INDEX audit_log_batches ON audit_log(subject)
        WHERE kind IN ('batches.insert', 'batches.existing');
    CREATE TABLE audit_signatures (
        id         INTEGER PRIMARY KEY,
        head_seq   INTEGER NOT NULL,
        head_hash  TEXT NOT NULL,
        reason     TEXT NOT NULL,
        public_key TEXT NOT NULL,
        signature  TEXT NOT NULL,
        at         TEXT NOT NULL
    );
    "#,
    // 7 -> 8: the fleet outbox (docs/fleet.md). While `fleet_state` holds its row (the
    // station joined a fleet), triggers append every new enrollment version, attempt, batch
    // and upload result to `fleet_outbox` in the transaction that made it, so the sync thread
    // reads them in local commit order and nothing is lost or reordered. Individual symmetric
    // keys (`primary_key`, `secondary_key`) are left out: they never leave the station.
    r#"
    CREATE TABLE fleet_outbox (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        kind    TEXT NOT NULL CHECK (kind IN ('enrollment', 'attempt', 'batch', 'upload')),
        payload TEXT NOT NULL,
        at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE TABLE fleet_state (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        enabled_at   TEXT NOT NULL,
        sent_seq     INTEGER NOT NULL DEFAULT 0,
        last_sync_at TEXT,
        last_error   TEXT
    );
    CREATE TRIGGER fleet_outbox_enrollment AFTER UPDATE OF export_seq ON enrollments
        WHEN NEW.export_seq IS NOT NULL AND NEW.export_seq IS NOT OLD.export_seq
         AND EXISTS (SELECT 1 FROM fleet_state)
        BEGIN INSERT INTO fleet_outbox (kind, payload) VALUES ('enrollment', json_object('registration_id', NEW.registration_id, 'device_serial',
            NEW.device_serial, 'firmware', NEW.firmware, 'model', NEW.model,
            'attestation_type', NEW.attestation_type, 'key_source', NEW.key_source,
            'group_key_id', NEW.group_key_id, 'public_material', NEW.public_material,
            'device_digest', NEW.device_digest, 'station', NEW.station, 'line', NEW.line,
            'operator', NEW.operator, 'created_at', NEW.created_at, 'provisioned_at',
            NEW.provisioned_at, 'export_seq', NEW.export_seq, 'cert_serial', NEW.cert_serial,
            'cert_thumbprint', NEW.cert_thumbprint, 'cert_not_before', NEW.cert_not_before,
            'cert_not_after', NEW.cert_not_after, 'storage_root_key', NEW.storage_root_key,
            'ek_hash', NEW.ek_hash, 'ek_certificate', NEW.ek_certificate, 'ek_cert_issuer',
            NEW.ek_cert_issuer, 'ek_cert_status', NEW.ek_cert_status)); END;
    CREATE TRIGGER fleet_outbox_attempt AFTER INSERT ON attempts
        WHEN EXISTS (SELECT 1 FROM fleet_state)
        BEGIN INSERT INTO fleet_outbox (kind, payload) VALUES ('attempt', json_object('id', NEW.id, 'registration_id', NEW.registration_id,
            'device_serial', NEW.device_serial, 'outcome', NEW.outcome, 'error_code',
            NEW.error_code, 'station', NEW.station, 'operator', NEW.operator, 'port',
            NEW.port, 'started_at', NEW.started_at, 'duration_ms', NEW.duration_ms)); END;
    CREATE TRIGGER fleet_outbox_batch AFTER INSERT ON batches
        WHEN EXISTS (SELECT 1 FROM fleet_state)
        BEGIN INSERT INTO fleet_outbox (kind, payload) VALUES ('batch', json_object('id', NEW.id, 'first_seq', NEW.first_seq, 'last_seq', NEW.last_seq,
            'count', NEW.count, 'created_at', NEW.created_at, 'station', NEW.station)); END;
    CREATE TRIGGER fleet_outbox_upload_insert AFTER INSERT ON uploads
        WHEN EXISTS (SELECT 1 FROM fleet_state)
        BEGIN INSERT INTO fleet_outbox (kind, payload) VALUES ('upload', json_object('export_seq', NEW.export_seq, 'registration_id', NEW.registration_id,
            'status', NEW.status, 'mode', NEW.mode, 'error_code', NEW.error_code,
            'updated_at', NEW.updated_at)); END;
    CREATE TRIGGER fleet_outbox_upload_update AFTER UPDATE OF status, updated_at ON uploads
        WHEN EXISTS (SELECT 1 FROM fleet_state)
        BEGIN INSERT INTO fleet_outbox (kind, payload) VALUES ('upload', json_object('export_seq', NEW.export_seq, 'registration_id', NEW.registration_id,
            'status', NEW.status, 'mode', NEW.mode, 'error_code', NEW.error_code,
            'updated_at', NEW.updated_at)); END;
    "#,
    // 8 -> 9: a batch leaves the station with its DPS options, so that `station upload --fleet`
    // on another host sends its enrollments exactly as this station would.
    r#"
    DROP TRIGGER fleet_outbox_batch;
    CREATE TRIGGER fleet_outbox_batch AFTER INSERT ON batches
        WHEN EXISTS (SELECT 1 FROM fleet_state)
        BEGIN INSERT INTO fleet_outbox (kind, payload) VALUES ('batch', json_object('id', NEW.id, 'first_seq', NEW.first_seq, 'last_seq', NEW.last_seq,
            'count', NEW.count, 'created_at', NEW.created_at, 'station', NEW.station,
            'dps_options', NEW.dps_options)); END;
    "#,
    // 9 -> 10: an enrollment leaves the station saying whether its secondary key is one only
    // the station holds (a random secondary beside a group-derived primary, made when no
    // secondary group key was configured), never the key itself: `station upload --fleet`
    // cannot re-derive such a key and must not send another one.
    r#"
    DROP TRIGGER fleet_outbox_enrollment;
    CREATE TRIGGER fleet_outbox_enrollment AFTER UPDATE OF export_seq ON enrollments
        WHEN NEW.export_seq IS NOT NULL AND NEW.export_seq IS NOT OLD.export_seq
         AND EXISTS (SELECT 1 FROM fleet_state)
        BEGIN INSERT INTO fleet_outbox (kind, payload) VALUES ('enrollment', json_object('registration_id', NEW.registration_id, 'device_serial',
            NEW.device_serial, 'firmware', NEW.firmware, 'model', NEW.model,
            'attestation_type', NEW.attestation_type, 'key_source', NEW.key_source,
            'group_key_id', NEW.group_key_id, 'public_material', NEW.public_material,
            'device_digest', NEW.device_digest, 'station', NEW.station, 'line', NEW.line,
            'operator', NEW.operator, 'created_at', NEW.created_at, 'provisioned_at',
            NEW.provisioned_at, 'export_seq', NEW.export_seq, 'cert_serial', NEW.cert_serial,
            'cert_thumbprint', NEW.cert_thumbprint, 'cert_not_before', NEW.cert_not_before,
            'cert_not_after', NEW.cert_not_after, 'storage_root_key', NEW.storage_root_key,
            'ek_hash', NEW.ek_hash, 'ek_certificate', NEW.ek_certificate, 'ek_cert_issuer',
            NEW.ek_cert_issuer, 'ek_cert_status', NEW.ek_cert_status,
            'secondary_held', NEW.key_source = 'group-derived' AND NEW.secondary_key IS NOT NULL)); END;
    "#,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) fn migrate(conn: &mut Connection, path: &str) -> Result<()> {
    let err = |e: rusqlite::Error| Error::database(path, e);
    // Read the version inside the write transaction: two connections opening a new database
    // at once (the GUI's worker and reader) must not both run the same migration.
    loop {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if found > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                path: path.to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            return tx.commit().map_err(err);
        }
        tx.execute_batch(MIGRATIONS[found as usize]).map_err(err)?;
        // A migration that changed an audited table's columns changes its audit triggers, in
        // the same transaction (logged, not a break).
        super::audit::refresh(&tx, found + 1).map_err(err)?;
        tx.pragma_update(None, "user_version", found + 1)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
}
