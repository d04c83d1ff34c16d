//! Are the exported batches where the database says they are?
//!
//! A batch is committed to the database before its files are renamed into place, so a crash in
//! between leaves a batch recorded (its enrollments count as exported) whose files exist only
//! under hidden temporary names, or not at all. Every batch's files are recorded with their
//! size and SHA-256: [`check`] finds a batch whose files are missing or differ, [`repair`]
//! re-creates them from the database (byte for byte) and removes orphan temporary files (they
//! may hold keys). Front ends run it at start; `doctor` runs the deep check (hashes).

use super::export;
use crate::attestation::symmetric::SymmetricKeySource;
use crate::error::Result;
use crate::store::Store;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A recorded batch whose files are not as exported.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Unpublished {
    pub batch: String,
    /// The file that is missing or differs, and how.
    pub file: PathBuf,
    pub problem: String,
}

impl Unpublished {
    /// The command that re-creates the batch.
    pub fn fix(&self) -> String {
        format!("station export --batch {}", self.batch)
    }
}

/// What [`repair`] did and could not do.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Repair {
    /// Batches whose files were re-created.
    pub recreated: Vec<String>,
    /// Temporary files removed.
    pub removed: Vec<PathBuf>,
    /// Batches still not published, and why (e.g. the group key is not configured).
    pub failed: Vec<(Unpublished, String)>,
}

/// Batches whose files in `out_dir` are missing or differ in size (and, with `deep`, in
/// SHA-256) from what was recorded at export.
pub fn check(store: &Store, out_dir: &Path, deep: bool) -> Result<Vec<Unpublished>> {
    let mut found = Vec::new();
    for batch in store.batches()? {
        for f in store.batch_files(&batch.id)? {
            let path = out_dir.join(&f.name);
            let problem = match std::fs::metadata(&path) {
                Err(_) => Some("missing".to_string()),
                Ok(m) if m.len() != f.bytes => {
                    Some(format!("{} bytes, {} were exported", m.len(), f.bytes))
                }
                Ok(_) if deep => match sha256_file(&path) {
                    Ok(d) if d == f.sha256 => None,
                    Ok(_) => Some("content differs from what was exported (SHA-256)".into()),
                    Err(e) => Some(format!("unreadable: {e}")),
                },
                Ok(_) => None,
            };
            if let Some(problem) = problem {
                found.push(Unpublished {
                    batch: batch.id.clone(),
                    file: path,
                    problem,
                });
            }
        }
        // A batch the audit trail recorded has a signed manifest beside its files.
        let manifest = super::manifest::path(out_dir, &batch.id);
        if !manifest.exists() && store.batch_audit_entry(&batch.id)?.is_some() {
            found.push(Unpublished {
                batch: batch.id.clone(),
                file: manifest,
                problem: "missing".into(),
            });
        }
    }
    Ok(found)
}

/// Temporary export files left in `out_dir` by an export that did not finish.
pub fn orphans(out_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(out_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with('.')
                    && (n.ends_with(".csv.tmp")
                        || n.ends_with(".dps.json.tmp")
                        || n.ends_with(".manifest.json.tmp"))
            })
        })
        .collect()
}

/// Remove orphan temporary files and re-create the files of every batch [`check`] finds.
/// Skipped while another process exports (it holds the export lock). The group keys (to
/// re-derive symmetric keys) are loaded only when a batch must be re-created; when they cannot
/// be, each such batch is reported with why.
pub fn repair(
    store: &Store,
    keys: impl FnOnce() -> Result<Option<SymmetricKeySource>>,
    out_dir: &Path,
) -> Result<Repair> {
    let mut done = Repair::default();
    if !out_dir.exists() && store.batches()?.is_empty() {
        return Ok(done);
    }
    let problems = check(store, out_dir, false)?;
    {
        let Some(_lock) = try_lock(out_dir) else {
            return Ok(done);
        };
        for p in orphans(out_dir) {
            if std::fs::remove_file(&p).is_ok() {
                done.removed.push(p);
            }
        }
    }
    let mut batches: Vec<&Unpublished> = problems.iter().collect();
    batches.dedup_by(|a, b| a.batch == b.batch);
    if batches.is_empty() {
        return Ok(done);
    }
    let keys = match keys() {
        Ok(k) => k,
        Err(e) => {
            let why = e.to_string();
            done.failed = batches
                .into_iter()
                .map(|p| (p.clone(), why.clone()))
                .collect();
            return Ok(done);
        }
    };
    for p in batches {
        match export::export_again(store, &p.batch, keys.as_ref(), out_dir, &mut |_| {}) {
            Ok(_) => done.recreated.push(p.batch.clone()),
            Err(e) => done.failed.push((p.clone(), e.to_string())),
        }
    }
    Ok(done)
}

fn try_lock(out_dir: &Path) -> Option<std::fs::File> {
    let dir = std::fs::File::open(out_dir).ok()?;
    dir.try_lock().ok()?;
    Some(dir)
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::domain::hex(&h.finalize()))
}
