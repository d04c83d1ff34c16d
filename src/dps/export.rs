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
use crate::error::{Error, Result};
use crate::store::{Batch, Enrollment, Store, now};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub batch: String,
    pub count: i64,
    pub csv: PathBuf,
    pub json: PathBuf,
    pub bulk_operations: usize,
}

/// The CSV header, in column order.
pub const CSV_HEADER: [&str; 12] = [
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
];

/// Export every provisioned enrollment not yet in a batch. `None` when there is nothing new.
pub fn export_new(
    store: &mut Store,
    station: &str,
    options: &DpsOptions,
    keys: Option<&SymmetricKeySource>,
    out_dir: &Path,
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
    let files = write_batch(store, &batch, keys, out_dir)?;
    store
        .insert_batch(&batch)
        .inspect_err(|_| files.discard())?;
    files.publish().map(Some)
}

/// Write an existing batch again (identical bytes).
pub fn export_again(
    store: &Store,
    batch_id: &str,
    keys: Option<&SymmetricKeySource>,
    out_dir: &Path,
) -> Result<ExportSummary> {
    let batch = store.batch(batch_id)?;
    write_batch(store, &batch, keys, out_dir)?.publish()
}

/// Batch files written under temporary names.
struct Pending {
    tmp_csv: PathBuf,
    tmp_json: PathBuf,
    summary: ExportSummary,
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

fn create(path: &Path, mode: u32) -> Result<BufWriter<File>> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .map_err(|source| Error::File {
            what: "cannot create export file",
            path: path.to_path_buf(),
            source,
        })
}

fn write_batch(
    store: &Store,
    batch: &Batch,
    keys: Option<&SymmetricKeySource>,
    out_dir: &Path,
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
    let fragment = options.fragment();
    let csv_path = out_dir.join(format!("{}.csv", batch.id));
    let json_path = out_dir.join(format!("{}.dps.json", batch.id));
    let tmp_csv = out_dir.join(format!(".{}.csv.tmp", batch.id));
    let tmp_json = out_dir.join(format!(".{}.dps.json.tmp", batch.id));
    let pending = Pending {
        tmp_csv: tmp_csv.clone(),
        tmp_json: tmp_json.clone(),
        summary: ExportSummary {
            batch: batch.id.clone(),
            count: batch.count,
            csv: csv_path,
            json: json_path,
            bulk_operations: (batch.count as usize).div_ceil(MAX_BULK),
        },
    };
    let result = (|| {
        let mut csv = csv::Writer::from_writer(create(&tmp_csv, 0o644)?);
        // The bulk-operation file holds keys: owner-only.
        let mut json = create(&tmp_json, 0o600)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source: std::io::Error| Error::File {
                what: "cannot write export file",
                path: path.clone(),
                source,
            }
        };
        csv.write_record(CSV_HEADER)
            .map_err(|e| io(&tmp_csv)(e.into()))?;
        json.write_all(b"[").map_err(io(&tmp_json))?;
        let mut body = Vec::with_capacity(8192);
        let mut in_body = 0usize;
        let mut bodies = 0usize;
        let mut seen = 0i64;
        let mut derived = String::new();
        let mut derived2 = String::new();
        store.for_each_in_range(batch.first_seq, batch.last_seq, |e| {
            seen += 1;
            csv.write_record([
                e.registration_id.as_str(),
                &e.device_serial,
                &e.firmware,
                &e.model,
                &e.attestation_type,
                e.key_source.as_deref().unwrap_or(""),
                &e.station,
                &e.line,
                &e.operator,
                e.provisioned_at.as_deref().unwrap_or(""),
                &batch.id,
                e.device_digest.as_deref().unwrap_or(""),
            ])
            .map_err(|err| io(&tmp_csv)(err.into()))?;
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
            write_enrollment(&mut body, &e.registration_id, &att, &fragment);
            in_body += 1;
            if in_body == MAX_BULK {
                body.extend_from_slice(b"]}");
                json.write_all(&body).map_err(io(&tmp_json))?;
                in_body = 0;
                bodies += 1;
            }
            Ok(())
        })?;
        if in_body > 0 {
            body.extend_from_slice(b"]}");
            json.write_all(&body).map_err(io(&tmp_json))?;
        }
        json.write_all(b"\n]\n").map_err(io(&tmp_json))?;
        if seen != batch.count {
            return Err(Error::Database {
                path: store.path().to_string(),
                message: format!(
                    "batch {} should hold {} enrollments but {seen} were found",
                    batch.id, batch.count
                ),
            });
        }
        let csv_file = csv
            .into_inner()
            .map_err(|e| io(&tmp_csv)(std::io::Error::other(e.to_string())))?;
        for (w, p) in [(csv_file, &tmp_csv), (json, &tmp_json)] {
            let f = w.into_inner().map_err(|e| io(p)(e.into_error()))?;
            f.sync_all().map_err(io(p))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(pending),
        Err(e) => {
            pending.discard();
            Err(e)
        }
    }
}

/// The enrollment's attestation: stored individual keys, or keys re-derived from the group key
/// the enrollment was provisioned with.
fn attestation<'a>(
    e: &'a Enrollment,
    keys: Option<&SymmetricKeySource>,
    derived: &'a mut String,
    derived2: &'a mut String,
) -> Result<Attestation<'a>> {
    if let Some(p) = &e.primary_key {
        return Ok(Attestation::SymmetricKey {
            primary: &p.0,
            secondary: e.secondary_key.as_ref().map(|s| s.0.as_str()),
        });
    }
    let group = keys.and_then(|k| k.primary.as_ref());
    let enrolled = e.group_key_id.as_deref().unwrap_or("(none)");
    match group {
        Some(g) if g.id() == enrolled => {
            *derived = g.derive(&e.registration_id);
            let secondary = match keys.and_then(|k| k.secondary.as_ref()) {
                Some(s) => {
                    *derived2 = s.derive(&e.registration_id);
                    Some(derived2.as_str())
                }
                None => None,
            };
            Ok(Attestation::SymmetricKey {
                primary: derived.as_str(),
                secondary,
            })
        }
        other => Err(Error::GroupKeyChanged {
            registration_id: e.registration_id.clone(),
            enrolled: enrolled.to_string(),
            configured: other.map_or("(no group key configured)".to_string(), |g| {
                g.id().to_string()
            }),
        }),
    }
}
