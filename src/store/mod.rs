//! The station's SQLite database: one opener, append-only migrations, enrollments, attempts
//! and export batches.
//!
//! Every connection is opened through [`Store::open`]: WAL, foreign keys, a busy timeout and
//! `synchronous = FULL` (the commits that decide PASS must survive power loss), set outside any
//! transaction. Migrations are append-only and keyed on `user_version`; a database newer than
//! this binary is refused, and nothing is ever deleted automatically. Private keys never enter
//! the database; derived symmetric keys neither (they can be re-derived).

mod enrollments;
mod schema;

pub use enrollments::*;

use crate::error::{Error, Result};
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// How long a writer waits for another connection's write to finish.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// An open station database.
pub struct Store {
    pub(crate) conn: Connection,
    path: String,
}

impl Store {
    /// Open (creating if needed) and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        let display = path.display().to_string();
        let db_err = |e: rusqlite::Error| Error::from(e).in_database(&display);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Database {
                path: display.clone(),
                message: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        let conn = Connection::open(path).map_err(db_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db_err)?;
        let mut store = Store {
            conn,
            path: display,
        };
        schema::migrate(&mut store.conn, &store.path)?;
        Ok(store)
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
        Error::from(e).in_database(&self.path)
    }
}

/// Now, as RFC 3339 UTC with seconds.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
