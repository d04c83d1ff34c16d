//! Central upload (`station upload --fleet`): every station's exported enrollment versions
//! that DPS has not accepted, uploaded from one host under one rate limit (the DPS quota is per
//! instance), exactly once, resumable.
//!
//! A PostgreSQL session advisory lock keeps two runs from uploading at once (it dies with a
//! crashed run's connection). The versions the fleet does not hold as uploaded are mirrored
//! into a local station database ([`crate::store::MirrorBatch`]) and uploaded by the station's
//! own uploader; its results are written back to `fleet.uploads` by (station, export_seq),
//! idempotently, after the run and at the start of the next one. A run killed midway resumes:
//! what DPS accepted but was not recorded is found by the uploader's look-up of a 409, never
//! doubled. Keys: a symmetric enrollment uploads centrally only when this host re-derives both
//! of its keys (its group key and a secondary group key); keys only a station holds never
//! leave it, and such versions are reported, not sent.

use super::{connect, schema, server};
use crate::attestation::symmetric::SymmetricKeySource;
use crate::config::Config;
use crate::dps::upload::{self, Dps, UploadOptions, UploadSummary};
use crate::error::{Error, ErrorCode, Result};
use crate::store::{MirrorBatch, MirrorVersion, Store};
use postgres::Client;
use serde::Serialize;

/// The advisory lock's two keys (`pg_locks.classid`, `objid`).
const LOCK: (i32, i32) = (0x666c_7570, 1);

/// The versions DPS has not accepted: each station's current version of each registration ID,
/// exported (in a batch), not uploaded, and not in a conflict between stations.
const TO_MIRROR: &str = "
    SELECT v.station, v.export_seq, v.registration_id, v.device_serial, v.attestation_type,
        v.record->>'key_source', v.record->>'group_key_id', v.record->>'public_material',
        v.record->>'cert_thumbprint', v.record->>'storage_root_key', v.line, v.provisioned_at,
        b.id, b.dps_options,
        EXISTS (SELECT 1 FROM fleet.conflicts c
                WHERE lower(c.registration_id) = lower(v.registration_id)),
        (v.record->'secondary_held')::text
    FROM (SELECT DISTINCT ON (e.station, lower(e.registration_id)) e.*
          FROM fleet.enrollments e
          ORDER BY e.station, lower(e.registration_id), e.export_seq DESC) v
    JOIN fleet.batches b ON b.station = v.station
        AND v.export_seq BETWEEN b.first_seq AND b.last_seq
    WHERE NOT EXISTS (SELECT 1 FROM fleet.uploads u WHERE u.station = v.station
        AND u.export_seq = v.export_seq AND u.status = 'uploaded')
    ORDER BY v.station, b.first_seq, v.export_seq";

const WRITE_BACK: &str = "
    INSERT INTO fleet.uploads (station, export_seq, registration_id, status, mode, error_code,
        updated_at, uploaded_by)
    SELECT x->>'station', (x->>'export_seq')::bigint, x->>'registration_id', x->>'status',
        x->>'mode', (x->>'error_code')::bigint, x->>'updated_at', $2
    FROM jsonb_array_elements($1::text::jsonb) x
    ON CONFLICT (station, export_seq) DO UPDATE SET status = excluded.status,
        mode = excluded.mode, error_code = excluded.error_code,
        updated_at = excluded.updated_at, uploaded_by = excluded.uploaded_by
    WHERE (fleet.uploads.status, fleet.uploads.updated_at)
        IS DISTINCT FROM (excluded.status, excluded.updated_at)";

/// A version the central upload does not send, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub station: String,
    pub export_seq: i64,
    pub registration_id: String,
    pub reason: String,
}

/// What one `station upload --fleet` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FleetUploadSummary {
    /// Versions added to the mirror in this run.
    pub mirrored: usize,
    /// Upload results written to `fleet.uploads` (new or changed).
    pub written_back: u64,
    pub skipped: Vec<Skipped>,
    pub upload: UploadSummary,
}

/// The mirror database for `config`'s station database.
pub fn mirror_path(config: &Config) -> std::path::PathBuf {
    let mut p = config.database_path().into_os_string();
    p.push(".fleet-upload.db");
    p.into()
}

/// Take the fleet's upload lock for this session, or say who holds it.
fn lock(client: &mut Client) -> Result<()> {
    let (a, b) = LOCK;
    let got: bool = client
        .query_one(&format!("SELECT pg_try_advisory_lock({a}, {b})"), &[])
        .map_err(server)?
        .get(0);
    if got {
        return Ok(());
    }
    let holder: Option<String> = client
        .query_opt(
            &format!(
                "SELECT a.application_name || coalesce(' at ' || host(a.client_addr), '')
                     || ', since ' || to_char(a.backend_start AT TIME ZONE 'UTC',
                        'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND l.classid = {a}
                   AND l.objid = {b} AND l.objsubid = 2 LIMIT 1"
            ),
            &[],
        )
        .map_err(server)?
        .map(|r| r.get(0));
    Err(Error::Fleet {
        code: ErrorCode::FleetUploadBusy,
        message: format!(
            "another `station upload --fleet` is running ({}); nothing was sent",
            holder
                .as_deref()
                .unwrap_or("its session just ended; run again")
        ),
    })
}

/// Why this host cannot send `v` as its station would, if it cannot.
fn unsendable(v: &MirrorVersion, keys: Option<&SymmetricKeySource>) -> Option<String> {
    if v.attestation_type != crate::domain::AttestationKind::SymmetricKey.as_str() {
        return None;
    }
    if v.key_source.as_deref() != Some("group-derived") {
        return Some("individual symmetric keys never leave their station: upload them there with [fleet] uploads = \"station\"".into());
    }
    let Some(k) = keys.filter(|k| k.primary.is_some()) else {
        return Some("this host has no group key ([attestation.symmetric] group_key_file or _env) to re-derive the keys".into());
    };
    if v.group_key_id.as_deref() != k.primary.as_ref().map(|g| g.id()) {
        return Some(format!(
            "derived under group key {} which this host does not hold",
            v.group_key_id.as_deref().unwrap_or("?")
        ));
    }
    if k.secondary.is_none() {
        return Some("this host has no secondary group key: the enrollment's secondary key is held only by its station".into());
    }
    match v.secondary_held {
        Some(false) => None,
        Some(true) => Some("its secondary key was made at random on its station (no secondary group key there then) and only the station holds it: upload it from that station with [fleet] uploads = \"station\"".into()),
        None => Some("it reached the fleet before stations said where a secondary key came from: upload it from its station".into()),
    }
}

/// Mirror every version the fleet does not hold as uploaded; report those this host cannot send.
fn mirror(
    client: &mut Client,
    store: &mut Store,
    keys: Option<&SymmetricKeySource>,
    summary: &mut FleetUploadSummary,
) -> Result<()> {
    let rows = client.query(TO_MIRROR, &[]).map_err(server)?;
    let mut batch: Option<MirrorBatch> = None;
    for r in rows {
        let v = MirrorVersion {
            station: r.get(0),
            export_seq: r.get(1),
            registration_id: r.get(2),
            device_serial: r.get(3),
            attestation_type: r.get(4),
            key_source: r.get(5),
            group_key_id: r.get(6),
            public_material: r.get(7),
            cert_thumbprint: r.get(8),
            storage_root_key: r.get(9),
            line: r.get(10),
            provisioned_at: r.get(11),
            secondary_held: r
                .get::<_, Option<String>>(15)
                .map(|t| t != "0" && t != "false"),
        };
        let (id, options, conflict): (String, Option<String>, bool) =
            (r.get(12), r.get(13), r.get(14));
        let reason = if conflict {
            Some("the registration ID is in a fleet conflict (`station fleet status`): settle it first".into())
        } else if options.is_none() {
            Some(format!(
                "batch {id} reached the fleet before batches carried their DPS options: upload it from its station"
            ))
        } else {
            unsendable(&v, keys)
        };
        if let Some(reason) = reason {
            summary.skipped.push(Skipped {
                station: v.station,
                export_seq: v.export_seq,
                registration_id: v.registration_id,
                reason,
            });
            continue;
        }
        if store.mirrored(&v.station, v.export_seq)? {
            continue;
        }
        if batch
            .as_ref()
            .is_some_and(|b| b.station != v.station || b.batch != id)
        {
            summary.mirrored += store.mirror_batch(&batch.take().expect("checked"))?;
        }
        batch
            .get_or_insert_with(|| MirrorBatch {
                station: v.station.clone(),
                batch: id,
                dps_options: options.unwrap_or_default(),
                versions: Vec::new(),
            })
            .versions
            .push(v);
    }
    if let Some(b) = batch {
        summary.mirrored += store.mirror_batch(&b)?;
    }
    Ok(())
}

/// Write the mirror's upload results to `fleet.uploads`; the rows that changed.
fn write_back(client: &mut Client, store: &Store, by: &str) -> Result<u64> {
    let results = store.mirror_results()?;
    let mut written = 0;
    for chunk in results.chunks(1000) {
        let json = serde_json::to_string(
            &chunk
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "station": r.station, "export_seq": r.export_seq,
                        "registration_id": r.registration_id, "status": r.status,
                        "mode": r.mode, "error_code": r.error_code, "updated_at": r.updated_at,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .expect("plain JSON");
        written += client.execute(WRITE_BACK, &[&json, &by]).map_err(server)?;
    }
    Ok(written)
}

/// Upload every station's exported enrollments that DPS has not accepted, from this host.
pub fn upload_fleet(
    config: &Config,
    dps: &mut Dps,
    keys: Option<&SymmetricKeySource>,
    opts: &UploadOptions,
    page_size: u32,
    emit: &mut dyn FnMut(crate::domain::Event),
) -> Result<FleetUploadSummary> {
    let mut client = connect(config)?;
    schema::check(&mut client)?;
    lock(&mut client)?;
    let result = upload_locked(&mut client, config, dps, keys, opts, page_size, emit);
    // The session's end releases the lock too, but the server may not have ended the session
    // yet when the next upload asks for it: give it back now (on failure as well). If the
    // connection is gone the lock went with it.
    let (a, b) = LOCK;
    let _ = client.batch_execute(&format!("SELECT pg_advisory_unlock({a}, {b})"));
    result
}

fn upload_locked(
    client: &mut Client,
    config: &Config,
    dps: &mut Dps,
    keys: Option<&SymmetricKeySource>,
    opts: &UploadOptions,
    page_size: u32,
    emit: &mut dyn FnMut(crate::domain::Event),
) -> Result<FleetUploadSummary> {
    let mut store = Store::open_mirror(&mirror_path(config))?;
    let by = config.station.id.as_str();
    // A dry run writes nothing to the fleet database either (it still fills this host's
    // mirror, under the lock, to say what a real run would send).
    let dry = opts.dry_run;
    let mut summary = FleetUploadSummary {
        written_back: if dry {
            0
        } else {
            write_back(client, &store, by)?
        },
        ..FleetUploadSummary::default()
    };
    mirror(client, &mut store, keys, &mut summary)?;
    let opts = UploadOptions {
        manifests: None,
        ..opts.clone()
    };
    summary.upload = upload::upload(&mut store, dps, keys, &opts, page_size, emit)?;
    if !dry {
        summary.written_back += write_back(client, &store, by)?;
    }
    Ok(summary)
}
