//! Export batches: `<batch>.csv` (traceability) and `<batch>.dps.json` (DPS bulk operations,
//! at most [`MAX_BULK`] enrollments each).
//!
//! A new batch takes every provisioned enrollment not yet covered by a batch. Files are written
//! to temporary names and synced, then the batch is committed to the database, then the files
//! are renamed into place: a crash before the commit exports nothing; a crash after it leaves a
//! batch that `--batch ID` re-creates byte for byte (the DPS options are stored with the batch).

use super::MAX_BULK;
use super::enrollment::{Attestation, DpsOptions, write_enrollment};
use crate::attestation::symmetric::SymmetricKeySource;
use crate::domain::event::{Phase, Progress};
use crate::domain::{AttestationKind, Event};
use crate::error::{Error, Result};
use crate::store::{AttestationRow, Batch, BatchFile, Store, now};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Enrollments written between two progress reports.
const PROGRESS_EVERY: u64 = 10_000;

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub batch: String,
    pub count: i64,
    pub csv: PathBuf,
    pub json: PathBuf,
    /// The signed manifest (`<batch>.manifest.json`).
    pub manifest: PathBuf,
    pub bulk_operations: usize,
}

/// The CSV header, in column order.
pub const CSV_HEADER: [&str; 16] = [
    "registration_id",
    "device_serial",
    "firmware",
    "model",
    "attestation_type",
    "key_source",
    "station",
    "line",
    "operator",
    "provisioned_at",
    "batch",
    "device_digest",
    "cert_serial",
    "cert_thumbprint",
    "cert_not_before",
    "cert_not_after",
];

/// Export every provisioned enrollment not yet in a batch. `None` when there is nothing new.
pub fn export_new(
    store: &mut Store,
    station: &str,
    options: &DpsOptions,
    keys: Option<&SymmetricKeySource>,
    out_dir: &Path,
    progress: &mut dyn FnMut(Event),
) -> Result<Option<ExportSummary>> {
    let (covered, assigned) = store.export_watermarks()?;
    if assigned <= covered {
        return Ok(None);
    }
    let created_at = now();
    let stamp: String = created_at
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let batch = Batch {
        id: format!("{station}-{stamp}-{:06}", covered + 1),
        first_seq: covered + 1,
        last_seq: assigned,
        count: assigned - covered,
        created_at,
        station: station.to_string(),
        dps_options: serde_json::to_string(options).expect("options serialise"),
    };
    let _lock = lock_exports(out_dir)?;
    let files = write_batch(store, &batch, keys, out_dir, progress)?;
    store
        .insert_batch(&batch, &files.files)
        .inspect_err(|_| files.discard())?;
    // Recorded: from here a crash leaves a batch `publish::repair` re-creates (manifest too).
    store.sign_audit_head("export")?;
    super::manifest::write(store, &batch, &files.files, out_dir)?;
    files.publish().map(Some)
}

/// Write an existing batch again (identical bytes).
pub fn export_again(
    store: &Store,
    batch_id: &str,
    keys: Option<&SymmetricKeySource>,
    out_dir: &Path,
    progress: &mut dyn FnMut(Event),
) -> Result<ExportSummary> {
    let batch = store.batch(batch_id)?;
    let _lock = lock_exports(out_dir)?;
    let files = write_batch(store, &batch, keys, out_dir, progress)?;
    let recorded = store.batch_files(batch_id)?;
    if !recorded.is_empty() && recorded != files.files {
        files.discard();
        return Err(Error::Database {
            path: store.path().to_string(),
            message: format!(
                "batch {batch_id} re-created from the database differs from the files recorded when it was exported; nothing was replaced"
            ),
        });
    }
    // A batch recorded before manifests existed has no audit entry of its own: it gets none.
    if store.batch_audit_entry(batch_id)?.is_some() {
        super::manifest::write(store, &batch, &files.files, out_dir)?;
    }
    files.publish()
}

/// Serialise exports (and the clean-up of their temporary files) between processes: an
/// advisory lock on the export directory itself, held while a batch is written and renamed.
pub(crate) fn lock_exports(out_dir: &Path) -> Result<File> {
    std::fs::create_dir_all(out_dir).map_err(|source| Error::File {
        what: "cannot create export directory",
        path: out_dir.to_path_buf(),
        source,
    })?;
    let lock = |source| Error::File {
        what: "cannot lock the export directory",
        path: out_dir.to_path_buf(),
        source,
    };
    let dir = File::open(out_dir).map_err(lock)?;
    dir.lock().map_err(lock)?;
    Ok(dir)
}

/// Batch files written under temporary names.
struct Pending {
    tmp_csv: PathBuf,
    tmp_json: PathBuf,
    summary: ExportSummary,
    /// What the two files hold, recorded with the batch.
    files: Vec<BatchFile>,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Hashing<File> {
    /// Sync the file; what it holds.
    fn finish(self, name: String) -> std::io::Result<BatchFile> {
        self.inner.sync_all()?;
        Ok(BatchFile {
            name,
            bytes: self.bytes,
            sha256: crate::domain::hex(&self.hash.finalize()),
        })
    }
}

impl Pending {
    fn discard(&self) {
        let _ = std::fs::remove_file(&self.tmp_csv);
        let _ = std::fs::remove_file(&self.tmp_json);
    }

    fn publish(self) -> Result<ExportSummary> {
        for (from, to) in [
            (&self.tmp_csv, &self.summary.csv),
            (&self.tmp_json, &self.summary.json),
        ] {
            std::fs::rename(from, to).map_err(|source| Error::File {
                what: "cannot rename export file to",
                path: to.clone(),
                source,
            })?;
        }
        if let Some(dir) = self.summary.csv.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(self.summary)
    }
}

fn create(path: &Path, mode: u32) -> Result<BufWriter<Hashing<File>>> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map(|f| {
            BufWriter::with_capacity(
                1 << 20,
                Hashing {
                    inner: f,
                    hash: Sha256::new(),
                    bytes: 0,
                },
            )
        })
        .map_err(|source| Error::File {
            what: "cannot create export file",
            path: path.to_path_buf(),
            source,
        })
}

fn file_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::File {
        what: "cannot write export file",
        path: path.to_path_buf(),
        source,
    }
}

fn count_mismatch(store: &Store, batch: &Batch, seen: i64) -> Error {
    Error::Database {
        path: store.path().to_string(),
        message: format!(
            "batch {} should hold {} enrollments but {seen} were found",
            batch.id, batch.count
        ),
    }
}

fn write_batch(
    store: &Store,
    batch: &Batch,
    keys: Option<&SymmetricKeySource>,
    out_dir: &Path,
    progress: &mut dyn FnMut(Event),
) -> Result<Pending> {
    std::fs::create_dir_all(out_dir).map_err(|source| Error::File {
        what: "cannot create export directory",
        path: out_dir.to_path_buf(),
        source,
    })?;
    let options: DpsOptions =
        serde_json::from_str(&batch.dps_options).map_err(|e| Error::Database {
            path: store.path().to_string(),
            message: format!("batch {} has unreadable DPS options: {e}", batch.id),
        })?;
    let mut pending = Pending {
        tmp_csv: out_dir.join(format!(".{}.csv.tmp", batch.id)),
        tmp_json: out_dir.join(format!(".{}.dps.json.tmp", batch.id)),
        summary: ExportSummary {
            batch: batch.id.clone(),
            count: batch.count,
            csv: out_dir.join(format!("{}.csv", batch.id)),
            json: out_dir.join(format!("{}.dps.json", batch.id)),
            manifest: super::manifest::path(out_dir, &batch.id),
            bulk_operations: (batch.count as usize).div_ceil(MAX_BULK),
        },
        files: Vec::new(),
    };
    // The two files are independent: write them on two threads, each with its own reader of
    // the (immutable) rows of the batch.
    let csv_reader = store.reopen()?;
    let result = std::thread::scope(|s| {
        let tmp_csv = &pending.tmp_csv;
        let csv = s.spawn(move || write_csv(&csv_reader, batch, tmp_csv));
        let json = write_json(
            store,
            batch,
            keys,
            &options.fragment(),
            &pending.tmp_json,
            progress,
        );
        let csv = csv.join().unwrap_or_else(|_| {
            Err(Error::Internal {
                message: "the CSV export thread panicked".into(),
            })
        });
        json.and_then(|j| csv.map(|c| vec![c, j]))
    });
    match result {
        Ok(mut hashed) => {
            hashed[0].name = file_name(&pending.summary.csv);
            hashed[1].name = file_name(&pending.summary.json);
            pending.files = hashed;
            Ok(pending)
        }
        Err(e) => {
            pending.discard();
            Err(e)
        }
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write_csv(store: &Store, batch: &Batch, path: &Path) -> Result<BatchFile> {
    let io = file_error(path);
    let mut csv = csv::Writer::from_writer(create(path, 0o644)?);
    let csv_err = |e: csv::Error| io(e.into());
    csv.write_record(CSV_HEADER).map_err(csv_err)?;
    let seen = store.for_each_trace_row(batch.first_seq, batch.last_seq, |e| {
        csv.write_record([
            e.registration_id,
            e.device_serial,
            e.firmware,
            e.model,
            e.attestation_type,
            e.key_source,
            e.station,
            e.line,
            e.operator,
            e.provisioned_at,
            &batch.id,
            e.device_digest,
            e.cert_serial,
            e.cert_thumbprint,
            e.cert_not_before,
            e.cert_not_after,
        ])
        .map_err(csv_err)
    })?;
    if seen != batch.count {
        return Err(count_mismatch(store, batch, seen));
    }
    let w = csv
        .into_inner()
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let f = w.into_inner().map_err(|e| io(e.into_error()))?;
    f.finish(String::new()).map_err(&io)
}

fn write_json(
    store: &Store,
    batch: &Batch,
    keys: Option<&SymmetricKeySource>,
    fragment: &str,
    path: &Path,
    progress: &mut dyn FnMut(Event),
) -> Result<BatchFile> {
    let io = file_error(path);
    let started = std::time::Instant::now();
    let mut shown = Progress::new(Phase::Export, batch.count as u64);
    // The bulk-operation file holds keys: owner-only.
    let mut json = create(path, 0o600)?;
    json.write_all(b"[").map_err(&io)?;
    let mut body = Vec::with_capacity(8192);
    let mut in_body = 0usize;
    let mut bodies = 0usize;
    let (mut derived, mut derived2) = (String::new(), String::new());
    let seen = store.for_each_attestation_row(batch.first_seq, batch.last_seq, |e| {
        if in_body == 0 {
            body.clear();
            if bodies > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"\n{\"mode\":\"create\",\"enrollments\":[");
        } else {
            body.push(b',');
        }
        let att = attestation(e, keys, &mut derived, &mut derived2)?;
        write_enrollment(&mut body, e.registration_id, &att, fragment);
        in_body += 1;
        shown.done += 1;
        if shown.done.is_multiple_of(PROGRESS_EVERY) {
            shown.ok = shown.done;
            shown.estimate(started);
            progress(Event::Progress(shown));
        }
        if in_body == MAX_BULK {
            body.extend_from_slice(b"]}");
            json.write_all(&body).map_err(&io)?;
            in_body = 0;
            bodies += 1;
        }
        Ok(())
    })?;
    if in_body > 0 {
        body.extend_from_slice(b"]}");
        json.write_all(&body).map_err(&io)?;
    }
    json.write_all(b"\n]\n").map_err(&io)?;
    if seen != batch.count {
        return Err(count_mismatch(store, batch, seen));
    }
    shown.ok = shown.done;
    shown.eta_s = None;
    progress(Event::Progress(shown));
    let f = json.into_inner().map_err(|e| io(e.into_error()))?;
    f.finish(String::new()).map_err(&io)
}

/// The enrollment's attestation: its certificate, its stored individual keys, or keys
/// re-derived from the group key the enrollment was provisioned with.
pub(crate) fn attestation<'a>(
    e: &AttestationRow<'a>,
    keys: Option<&SymmetricKeySource>,
    derived: &'a mut String,
    derived2: &'a mut String,
) -> Result<Attestation<'a>> {
    match e.attestation_type {
        AttestationKind::Tpm => e
            .certificate
            .map(|endorsement_key| Attestation::Tpm {
                endorsement_key,
                storage_root_key: e.storage_root_key,
            })
            .ok_or_else(|| Error::Database {
                path: String::new(),
                message: format!(
                    "tpm enrollment `{}` has no endorsement key",
                    e.registration_id
                ),
            }),
        AttestationKind::X509 => e
            .certificate
            .map(|certificate| Attestation::X509 { certificate })
            .ok_or_else(|| Error::Database {
                path: String::new(),
                message: format!("x509 enrollment `{}` has no certificate", e.registration_id),
            }),
        AttestationKind::SymmetricKey => symmetric(e, keys, derived, derived2),
    }
}

/// A symmetric enrollment's keys: stored (individual) or re-derived from the group key.
fn symmetric<'a>(
    e: &AttestationRow<'a>,
    keys: Option<&SymmetricKeySource>,
    derived: &'a mut String,
    derived2: &'a mut String,
) -> Result<Attestation<'a>> {
    if let Some(p) = e.primary_key {
        return Ok(Attestation::SymmetricKey {
            primary: p,
            secondary: e.secondary_key,
        });
    }
    let group = keys.and_then(|k| k.primary.as_ref());
    let enrolled = e.group_key_id.unwrap_or("(none)");
    match group {
        Some(g) if g.id() == enrolled => {
            *derived = g.derive(e.registration_id);
            // The random secondary recorded with the enrollment, else one derived from the
            // secondary group key.
            let secondary = match (e.secondary_key, keys.and_then(|k| k.secondary.as_ref())) {
                (Some(stored), _) => Some(stored),
                (None, Some(s)) => {
                    *derived2 = s.derive(e.registration_id);
                    Some(derived2.as_str())
                }
                (None, None) => None,
            };
            Ok(Attestation::SymmetricKey {
                primary: derived.as_str(),
                secondary,
            })
        }
        other => Err(Error::GroupKeyChanged {
            registration_id: e.registration_id.to_string(),
            enrolled: enrolled.to_string(),
            configured: other.map_or("(no group key configured)".to_string(), |g| {
                g.id().to_string()
            }),
        }),
    }
}
