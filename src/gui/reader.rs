//! The database reader: a thread with its own read connection that answers the UI's queries
//! (history pages, counts, shift statistics, attempt details), so the UI never blocks on SQLite
//! even with a million enrollments.

use crate::store::{AttemptRow, Counts, Enrollment, ShiftStats, Status, Store};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};

/// Rows per history page.
pub const PAGE: usize = 100;

/// What the UI asks.
#[derive(Debug, Clone)]
pub enum Query {
    /// Total rows for a search, and the page at `offset`.
    Page {
        search: String,
        offset: usize,
        generation: u64,
    },
    Count {
        search: String,
        generation: u64,
    },
    Details {
        registration_id: String,
    },
    Summary {
        shift_since: String,
        day_since: String,
    },
    Pending,
}

/// What the reader answers.
#[derive(Debug, Clone)]
pub enum Answer {
    Page {
        generation: u64,
        offset: usize,
        rows: Vec<Enrollment>,
    },
    Count {
        generation: u64,
        total: usize,
    },
    Details {
        registration_id: String,
        enrollment: Option<Box<Enrollment>>,
        attempts: Vec<AttemptRow>,
    },
    Summary {
        counts: Counts,
        shift: ShiftStats,
        day: ShiftStats,
    },
    Pending(Vec<Enrollment>),
    Error(String),
}

pub struct Reader {
    pub tx: Sender<Query>,
    pub rx: Receiver<Answer>,
}

/// Start the reader on the database at `path`.
pub fn spawn(path: PathBuf, repaint: impl Fn() + Send + 'static) -> Reader {
    let (tx, queries) = channel::<Query>();
    let (answers, rx) = channel();
    std::thread::Builder::new()
        .name("db-reader".into())
        .spawn(move || {
            let store = match Store::open(&path) {
                Ok(s) => s,
                Err(e) => {
                    let _ = answers.send(Answer::Error(e.to_string()));
                    repaint();
                    return;
                }
            };
            while let Ok(q) = queries.recv() {
                let answer = match q {
                    Query::Page {
                        search,
                        offset,
                        generation,
                    } => store
                        .list(None, Some(&search), PAGE as u32, offset as u64)
                        .map(|rows| Answer::Page {
                            generation,
                            offset,
                            rows,
                        }),
                    Query::Count { search, generation } => {
                        store.count_matching(Some(&search)).map(|n| Answer::Count {
                            generation,
                            total: n as usize,
                        })
                    }
                    Query::Details { registration_id } => (|| {
                        Ok(Answer::Details {
                            enrollment: store.find(&registration_id)?.map(Box::new),
                            attempts: store.attempts(&registration_id, 50)?,
                            registration_id,
                        })
                    })(),
                    Query::Summary {
                        shift_since,
                        day_since,
                    } => (|| {
                        Ok(Answer::Summary {
                            counts: store.counts()?,
                            shift: store.shift_stats(&shift_since)?,
                            day: store.shift_stats(&day_since)?,
                        })
                    })(),
                    Query::Pending => store
                        .list(Some(Status::Pending), None, 20, 0)
                        .map(Answer::Pending),
                };
                let _ = answers.send(answer.unwrap_or_else(|e| Answer::Error(e.to_string())));
                repaint();
            }
        })
        .expect("spawn reader thread");
    Reader { tx, rx }
}
