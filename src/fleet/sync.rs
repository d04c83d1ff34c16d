//! The outbox sync: the station's queued changes go to the fleet database in local commit
//! order, in batches, on their own thread.
//!
//! Each batch is one PostgreSQL transaction that upserts the rows (keyed by station and local
//! sequence, so re-sending never duplicates) and moves the station's `sent_seq`; only after
//! it commits are the entries dropped from the local outbox. A station killed between the two
//! re-reads `sent_seq` from the server and skips what the server already holds. Enrollments
//! that arrive are claimed for their station; one claimed by another station (provisioned
//! while offline) is recorded in `fleet.conflicts`, never merged.

use super::{connect, schema, server, status};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::{OutboxEntry, Store};
use postgres::{Client, Transaction};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The pause between two looks at an empty outbox (or after a failure).
pub const IDLE: Duration = Duration::from_millis(500);

const ENROLLMENTS: &str = "
    INSERT INTO fleet.enrollments (station, export_seq, registration_id, line, device_serial,
        attestation_type, provisioned_at, record)
    SELECT $2, (x->>'export_seq')::bigint, x->>'registration_id', $3, x->>'device_serial',
        x->>'attestation_type', x->>'provisioned_at', x
    FROM jsonb_array_elements($1::text::jsonb) x
    ON CONFLICT DO NOTHING";
/// What each arriving enrollment claims: its ID, and its EK hash or certificate thumbprint.
const CLAIMS: &str = "
    WITH x AS (SELECT x FROM jsonb_array_elements($1::text::jsonb) x),
    ids AS (
        INSERT INTO fleet.claims (registration_id, station, line)
        SELECT DISTINCT lower(x->>'registration_id'), $2, $3 FROM x
        ON CONFLICT DO NOTHING)
    INSERT INTO fleet.key_claims (key, registration_id, station, line)
    SELECT DISTINCT ON (k) k, lower(x->>'registration_id'), $2, $3 FROM x,
        LATERAL (VALUES ('ek:' || (x->>'ek_hash')), ('x509:' || (x->>'cert_thumbprint'))) v(k)
    WHERE k IS NOT NULL
    ON CONFLICT DO NOTHING";
/// Run after [`CLAIMS`] commits its statement, so that it sees claims made meanwhile.
const CONFLICTS: &str = "
    WITH x AS (SELECT x FROM jsonb_array_elements($1::text::jsonb) x)
    INSERT INTO fleet.conflicts (registration_id, what, station, line, holder, holder_line)
    SELECT x->>'registration_id', 'registration ID', $2, $3, c.station, c.line
    FROM x JOIN fleet.claims c ON c.registration_id = lower(x->>'registration_id')
    WHERE c.station <> $2
    UNION ALL
    SELECT x->>'registration_id', 'key ' || k.key, $2, $3, k.station, k.line
    FROM x JOIN fleet.key_claims k
        ON k.key IN ('ek:' || (x->>'ek_hash'), 'x509:' || (x->>'cert_thumbprint'))
    WHERE k.registration_id <> lower(x->>'registration_id')
    ON CONFLICT DO NOTHING";
const ATTEMPTS: &str = "
    INSERT INTO fleet.attempts (station, local_id, line, registration_id, device_serial, outcome,
        error_code, started_at, duration_ms)
    SELECT $2, (x->>'id')::bigint, $3, x->>'registration_id', x->>'device_serial',
        x->>'outcome', x->>'error_code', x->>'started_at', (x->>'duration_ms')::bigint
    FROM jsonb_array_elements($1::text::jsonb) x
    ON CONFLICT DO NOTHING";
const BATCHES: &str = "
    INSERT INTO fleet.batches (station, id, first_seq, last_seq, count, created_at, dps_options)
    SELECT $2, x->>'id', (x->>'first_seq')::bigint, (x->>'last_seq')::bigint,
        (x->>'count')::bigint, x->>'created_at', x->>'dps_options'
    FROM jsonb_array_elements($1::text::jsonb) x
    WHERE $3::text IS NOT NULL
    ON CONFLICT (station, id) DO UPDATE
        SET dps_options = COALESCE(fleet.batches.dps_options, excluded.dps_options)";
/// The last state of each upload in the batch wins.
const UPLOADS: &str = "
    INSERT INTO fleet.uploads (station, export_seq, registration_id, status, mode, error_code,
        updated_at)
    SELECT DISTINCT ON ((x->>'export_seq')::bigint) $2, (x->>'export_seq')::bigint,
        x->>'registration_id', x->>'status', x->>'mode', (x->>'error_code')::bigint,
        x->>'updated_at'
    FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS t(x, n)
    WHERE $3::text IS NOT NULL
    ORDER BY (x->>'export_seq')::bigint, n DESC
    ON CONFLICT (station, export_seq) DO UPDATE SET status = excluded.status,
        mode = excluded.mode, error_code = excluded.error_code, updated_at = excluded.updated_at";

/// What one [`push`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    /// Entries the server confirmed.
    pub sent: u64,
    /// Entries still queued.
    pub pending: i64,
}

/// Send everything queued, `batch` entries per transaction.
pub fn push(
    client: &mut Client,
    store: &mut Store,
    config: &Config,
    batch: u32,
) -> Result<SyncReport> {
    let station = config.station.id.as_str();
    let line = config.station.line.as_str();
    let mut report = SyncReport::default();
    let mut requeued = false;
    loop {
        let mut tx = client.transaction().map_err(server)?;
        let sent_seq: i64 = tx
            .query_one(
                "INSERT INTO fleet.stations (station, line) VALUES ($1, $2)
                 ON CONFLICT (station) DO UPDATE SET line = excluded.line
                 RETURNING sent_seq",
                &[&station, &line],
            )
            .map_err(server)?
            .get(0);
        let local = store.outbox_state()?;
        if sent_seq > local.sent_seq {
            // Sent and committed before the station could mark it (a crash): not again.
            store.outbox_confirmed(sent_seq)?;
        } else if sent_seq < local.sent_seq && !requeued {
            // The server lost what it confirmed (a restored backup, another database).
            store.fleet_requeue()?;
            requeued = true;
        }
        let entries = store.outbox_after(sent_seq.max(local.sent_seq), batch)?;
        let Some(last) = entries.last().map(|e| e.seq) else {
            tx.commit().map_err(server)?;
            report.pending = 0;
            return Ok(report);
        };
        send(&mut tx, &entries, station, line)?;
        let state = store.outbox_state()?;
        let pending = (state.pending - entries.len() as i64).max(0);
        tx.execute(
            "UPDATE fleet.stations SET sent_seq = $2, last_sync_at = now(), pending = $3,
                 lag_s = $4 WHERE station = $1",
            &[&station, &last, &pending, &lag_seconds(&state)],
        )
        .map_err(server)?;
        tx.commit().map_err(server)?;
        store.outbox_confirmed(last)?;
        report.sent += entries.len() as u64;
        report.pending = pending;
    }
}

/// Seconds since the oldest queued entry was made (0 with nothing queued).
pub fn lag_seconds(state: &crate::store::OutboxState) -> f64 {
    let Some(at) = state.oldest_pending_at.as_deref() else {
        return 0.0;
    };
    humantime::parse_rfc3339_weak(at.trim_end_matches('Z'))
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

fn send(
    tx: &mut Transaction<'_>,
    entries: &[OutboxEntry],
    station: &str,
    line: &str,
) -> Result<()> {
    let array = |kind: &str| {
        let items: Vec<&str> = entries
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.payload.as_str())
            .collect();
        (!items.is_empty()).then(|| format!("[{}]", items.join(",")))
    };
    let statements: [(&str, &[&str]); 4] = [
        ("enrollment", &[ENROLLMENTS, CLAIMS, CONFLICTS]),
        ("attempt", &[ATTEMPTS]),
        ("batch", &[BATCHES]),
        ("upload", &[UPLOADS]),
    ];
    for (kind, sqls) in statements {
        let Some(json) = array(kind) else { continue };
        for sql in sqls {
            tx.execute(*sql, &[&json, &station, &line])
                .map_err(server)?;
        }
    }
    Ok(())
}

/// What the sync thread last saw, for the window's header and `station fleet status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncState {
    /// The last round reached the server.
    pub online: bool,
    /// Entries queued on this station.
    pub pending: i64,
    /// Seconds the oldest queued entry has waited.
    pub lag_s: f64,
    /// Conflicts the fleet database records against this station.
    pub conflicts: i64,
    /// Why the last round failed.
    pub last_error: Option<String>,
    /// Rounds finished.
    pub rounds: u64,
}

/// The sync thread; dropping the handle stops it after its current round.
pub struct SyncHandle {
    state: Arc<Mutex<SyncState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SyncHandle {
    /// Join the fleet (queue what the database holds, once) and start syncing.
    pub fn start(config: &Config) -> Result<SyncHandle> {
        let section = super::section(config)?.clone();
        let mut store = Store::open(&config.database_path())?;
        store.fleet_join()?;
        let state = Arc::new(Mutex::new(SyncState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (config, s, st) = (config.clone(), state.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("fleet-sync".into())
            .spawn(move || run(&config, section.sync_batch, store, &s, &st))
            .map_err(|e| Error::Internal {
                message: format!("cannot start the fleet sync thread: {e}"),
            })?;
        Ok(SyncHandle {
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// What the thread last saw.
    pub fn state(&self) -> SyncState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stop once everything queued is sent, the server is found away, or `within` passed.
    pub fn finish(mut self, within: Duration) -> SyncState {
        let until = Instant::now() + within;
        // A round that began after this call has seen everything queued before it.
        let first = self.state().rounds + 2;
        while Instant::now() < until {
            let s = self.state();
            if s.rounds >= first && ((s.online && s.pending == 0) || s.last_error.is_some()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.halt();
        self.state()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run(config: &Config, batch: u32, mut store: Store, state: &Mutex<SyncState>, stop: &AtomicBool) {
    let mut client: Option<Client> = None;
    while !stop.load(Ordering::SeqCst) {
        let round = round(config, batch, &mut store, &mut client);
        let local = store.outbox_state().unwrap_or_default();
        {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.pending = local.pending;
            s.lag_s = lag_seconds(&local);
            s.rounds += 1;
            match round {
                Ok(conflicts) => {
                    s.online = true;
                    s.conflicts = conflicts;
                    s.last_error = None;
                }
                Err(e) => {
                    s.online = false;
                    s.last_error = Some(e.to_string());
                    client = None;
                    let _ = store.outbox_failed(&e.to_string());
                }
            }
        }
        let until = Instant::now() + IDLE;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) && local.pending == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        if local.pending > 0 && client.is_none() {
            std::thread::sleep(IDLE);
        }
    }
}

/// One round: connect if needed, send everything, count this station's conflicts.
fn round(
    config: &Config,
    batch: u32,
    store: &mut Store,
    client: &mut Option<Client>,
) -> Result<i64> {
    if client.is_none() {
        let mut c = connect(config)?;
        schema::check(&mut c)?;
        *client = Some(c);
    }
    let c = client.as_mut().expect("connected above");
    push(c, store, config, batch)?;
    status::conflict_count(c, &config.station.id)
}
