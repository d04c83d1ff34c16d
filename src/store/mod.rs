//! The station's SQLite database: one opener, append-only migrations, enrollments, attempts
//! and export batches.
//!
//! Every connection is opened through [`Store::open`]: WAL, foreign keys, a busy timeout and
//! `synchronous = FULL` (the commits that decide PASS must survive power loss), set outside any
//! transaction. Migrations are append-only and keyed on `user_version`; a database newer than
//! this binary is refused, and nothing is ever deleted automatically. Private keys never enter
//! the database; derived symmetric keys neither (they can be re-derived).

pub mod audit;
pub mod audit_key;
mod audit_verify;
mod batches;
mod enrollments;
mod mirror;
mod outbox;
mod schema;
mod uploads;

pub use crate::domain::{Enrollment, Status};
pub use audit_verify::{AuditBreak, AuditReport};
pub use batches::*;
pub use enrollments::*;
pub use mirror::{MirrorBatch, MirrorResult, MirrorVersion};
pub use outbox::{OutboxEntry, OutboxState};
pub use uploads::*;

use crate::domain::AttestationKind;
use crate::error::{Error, Result};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a writer waits for another connection's write to finish.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The first sleep between two tries to get the write lock another connection holds; it
/// doubles each try up to [`BUSY_POLL_MAX`].
const BUSY_POLL: Duration = Duration::from_micros(50);
const BUSY_POLL_MAX: Duration = Duration::from_millis(2);

/// SQLite's own busy timeout sleeps 1, 2, 5, 10 … 100 ms between tries: with several fixtures
/// writing (each write a short transaction), a writer would often sleep far longer than the
/// lock is held. Sleep 50 µs, doubling up to 2 ms, instead, until [`BUSY_TIMEOUT`] has passed.
fn busy(tries: i32) -> bool {
    let sleep = |i: u32| (BUSY_POLL * (1 << i.min(10))).min(BUSY_POLL_MAX);
    let tries = tries.max(0) as u32;
    let waited: Duration =
        (0..tries.min(16)).map(sleep).sum::<Duration>() + BUSY_POLL_MAX * tries.saturating_sub(16);
    if waited >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(sleep(tries));
    true
}

/// Switch the database to WAL. Two connections opening a new database at once (the window's
/// worker and reader, two fixtures' threads) race for the switch, and SQLite answers the loser
/// `SQLITE_BUSY` at once, without calling the busy handler: try again with the same back-off
/// until [`BUSY_TIMEOUT`]. A file system that cannot hold a WAL database (the mode stays
/// another) is refused at once, with what to do.
fn enter_wal(conn: &Connection) -> std::result::Result<(), String> {
    let mut tries = 0;
    loop {
        let found =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0));
        let why = match found {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(format!(
                    "cannot switch it to write-ahead logging (journal mode stays {mode}); put station.database on a local file system"
                ));
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                format!(
                    "another program held it for more than {} s while it was being opened; close the other program and try again",
                    BUSY_TIMEOUT.as_secs()
                )
            }
            Err(e) => return Err(e.to_string()),
        };
        if !busy(tries) {
            return Err(why);
        }
        tries += 1;
    }
}

/// An open station database.
pub struct Store {
    pub(crate) conn: Connection,
    path: String,
}

impl Store {
    /// Open (creating if needed) and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let display = path.display().to_string();
        let db_err = |e: rusqlite::Error| Error::database(&display, e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Database {
                path: display.clone(),
                message: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        restrict_permissions(path).map_err(|e| Error::Database {
            path: display.clone(),
            message: format!("cannot create or restrict the database file: {e}"),
        })?;
        let conn = Connection::open(path).map_err(db_err)?;
        audit::register_functions(&conn).map_err(db_err)?;
        conn.busy_handler(Some(busy)).map_err(db_err)?;
        enter_wal(&conn).map_err(|e| Error::Database {
            path: display.clone(),
            message: e,
        })?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err)?;
        let mut store = Store {
            conn,
            path: display,
        };
        schema::migrate(&mut store.conn, &store.path)?;
        audit::install(&mut store.conn, &store.path)?;
        Ok(store)
    }

    /// Another connection to the same database (for a second reader thread).
    pub fn reopen(&self) -> Result<Store> {
        Store::open(Path::new(&self.path))
    }

    /// Prove the database can be written (file and directory permissions, read-only
    /// mounts, a full disk) with one real write, before a device is touched.
    pub fn check_writable(&mut self) -> Result<()> {
        let version = self.schema_version()?;
        let probe = |conn: &Connection| -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            let r = conn.pragma_update(None, "user_version", version);
            conn.execute_batch(if r.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
            r
        };
        probe(&self.conn).map_err(|e| Error::Database {
            path: self.path.clone(),
            message: format!(
                "cannot write to it ({e}); give the station's account write access to the file and its directory, or point station.database elsewhere"
            ),
        })
    }

    /// The database path, for messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Schema version of the open database.
    pub fn schema_version(&self) -> Result<i64> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    pub(crate) fn err(&self, e: rusqlite::Error) -> Error {
        Error::database(&self.path, e)
    }
}

/// Create the database file readable by its owner only (it holds individual device keys), or
/// owner and group where the directory is set-group-ID (the installer's shared data directory);
/// take world access away from an existing database and its WAL and shared-memory files.
fn restrict_permissions(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let shared = std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o2000 != 0);
    let mode = if shared { 0o660 } else { 0o600 };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        if let Ok(m) = std::fs::metadata(&p)
            && m.permissions().mode() & 0o007 != 0
        {
            // Best effort: a database owned by another account keeps its mode (doctor says so).
            let restricted = m.permissions().mode() & !0o007;
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(restricted));
        }
    }
    Ok(())
}

/// The next `export_seq`: one past the highest ever assigned (current or superseded).
const NEXT_SEQ: &str = "(SELECT MAX(m) + 1 FROM (SELECT COALESCE(MAX(export_seq), 0) AS m FROM enrollments \
    UNION ALL SELECT COALESCE(MAX(export_seq), 0) FROM superseded_enrollments))";

/// An attestation type column, parsed (an unknown spelling is a database error).
pub(crate) fn kind_column<I: rusqlite::RowIndex>(
    r: &rusqlite::Row<'_>,
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

/// Now, as RFC 3339 UTC with seconds.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_writer_polls_briefly_and_gives_up_after_the_timeout() {
        assert!(busy(0) && busy(3));
        // 10,000 tries: more than BUSY_TIMEOUT of sleeps behind.
        assert!(!busy(10_000));
        // 16 + 4,000 tries is about 8 s: still waiting.
        assert!(busy(4_016));
    }
    use crate::domain::{Credential, Secret};

    /// Individual keys (kept by the database) with `key`, else a key derived from group `g1`.
    fn cred(key: Option<&Secret>) -> Credential {
        Credential::SymmetricKey {
            primary: key.cloned().unwrap_or(Secret("ZGVyaXZlZA==".into())),
            secondary: None,
            group_key_id: key.is_none().then(|| "g1".to_string()),
            secondary_derived: false,
        }
    }

    fn new<'a>(id: &'a str, serial: &'a str, credential: &'a Credential) -> NewEnrollment<'a> {
        NewEnrollment {
            registration_id: id,
            device_serial: serial,
            firmware: "1.0",
            model: "m",
            credential,
            station: "s1",
            line: "l1",
            operator: "op",
            expected_digest: "abcd",
            supersede: false,
        }
    }

    fn attempt<'a>(id: &'a str, serial: &'a str, passed: bool) -> Attempt<'a> {
        Attempt {
            registration_id: Some(id),
            device_serial: Some(serial),
            passed,
            error_code: (!passed).then_some("device.timeout"),
            message: None,
            station: "s1",
            operator: "op",
            port: "/dev/null",
            started_at: "2026-01-01T00:00:00Z",
            duration_ms: 1,
        }
    }

    #[test]
    fn opener_migrates_once_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db/station.db");
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), schema::SCHEMA_VERSION);
        let mode: String = s
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(s);
        Store::open(&path).unwrap();
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let e = Store::open(&path).err().unwrap();
        assert_eq!(e.code(), "store.schema_too_new");
    }

    #[test]
    fn concurrent_openers_of_a_new_database_migrate_it_once() {
        // SQLite refuses the loser of the race to switch a new database to WAL at once, without
        // the busy handler; 20 new databases opened by 6 threads released together lost that
        // race most runs before the open retried it.
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let path = dir.path().join(format!("race-{round}.db"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let threads: Vec<_> = (0..6)
                .map(|_| {
                    let (p, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        Store::open(&p).map(|s| s.schema_version().unwrap())
                    })
                })
                .collect();
            for t in threads {
                assert_eq!(t.join().unwrap().unwrap(), schema::SCHEMA_VERSION);
            }
        }
    }

    #[test]
    fn lifecycle_pending_failed_provisioned_exported() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        let key = Secret("a2V5".into());
        s.record_pending(&new("dev-1", "SN1", &cred(Some(&key))))
            .unwrap();
        assert_eq!(
            s.find("DEV-1").unwrap().unwrap().status,
            Status::Pending,
            "IDs are case-insensitive"
        );
        s.mark_failed(&attempt("dev-1", "SN1", false)).unwrap();
        let e = s.find("dev-1").unwrap().unwrap();
        assert_eq!(
            (e.status, e.error_code.as_deref()),
            (Status::Failed, Some("device.timeout"))
        );
        s.record_pending(&new("dev-1", "SN1", &cred(Some(&key))))
            .unwrap();
        s.mark_provisioned("dev-1", "abcd", &attempt("dev-1", "SN1", true))
            .unwrap();
        let e = s.find("dev-1").unwrap().unwrap();
        assert_eq!((e.status, e.export_seq), (Status::Provisioned, Some(1)));
        assert_eq!(e.primary_key, Some(key.clone()));
        // A later failure of the same device never downgrades it.
        s.mark_failed(&attempt("dev-1", "SN1", false)).unwrap();
        s.record_pending(&new("dev-1", "SN1", &cred(Some(&key))))
            .unwrap();
        assert_eq!(
            s.find("dev-1").unwrap().unwrap().status,
            Status::Provisioned
        );
        // Another serial under the same ID is a duplicate.
        let dup = s
            .record_pending(&new("dev-1", "SN2", &cred(None)))
            .unwrap_err();
        assert_eq!(dup.code(), "store.duplicate_registration");
        assert_eq!(
            s.counts().unwrap(),
            Counts {
                pending: 0,
                provisioned: 1,
                failed: 0,
                exported: 0
            }
        );
        s.insert_batch(
            &Batch {
                id: "b1".into(),
                first_seq: 1,
                last_seq: 1,
                count: 1,
                created_at: now(),
                station: "s1".into(),
                dps_options: "{}".into(),
            },
            &[],
        )
        .unwrap();
        let e = s.find("dev-1").unwrap().unwrap();
        assert_eq!(
            (e.status, e.batch.as_deref()),
            (Status::Exported, Some("b1"))
        );
        assert_eq!(s.counts().unwrap().exported, 1);
        assert_eq!(s.attempts("SN1", 10).unwrap().len(), 3);
    }

    #[test]
    fn provisioned_rows_cannot_be_changed_or_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        s.record_pending(&new("dev-1", "SN1", &cred(None))).unwrap();
        s.mark_provisioned("dev-1", "abcd", &attempt("dev-1", "SN1", true))
            .unwrap();
        assert!(
            s.conn
                .execute("UPDATE enrollments SET device_digest = 'x'", [])
                .is_err()
        );
        assert!(s.conn.execute("DELETE FROM enrollments", []).is_err());
    }

    #[test]
    fn overlapping_batches_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        let b = |id: &str, first, last| Batch {
            id: id.into(),
            first_seq: first,
            last_seq: last,
            count: last - first + 1,
            created_at: now(),
            station: "s".into(),
            dps_options: "{}".into(),
        };
        s.insert_batch(&b("a", 1, 5), &[]).unwrap();
        assert!(s.insert_batch(&b("b", 3, 8), &[]).is_err());
        s.insert_batch(&b("c", 6, 8), &[]).unwrap();
    }
}
