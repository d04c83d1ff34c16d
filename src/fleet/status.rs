//! What the fleet database says about the fleet: per station (last sync, lag, queued entries,
//! conflicts), per line and day (passed, failed, yield), and the conflicts themselves.

use super::server;
use crate::error::Result;
use postgres::Client;
use serde::Serialize;

/// One station as the fleet database last heard from it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StationRow {
    pub station: String,
    pub line: String,
    /// RFC 3339, UTC; none before the first sync.
    pub last_sync_at: Option<String>,
    /// Seconds since its last sync.
    pub since_sync_s: Option<f64>,
    /// What it reported queued, and how long the oldest entry had waited, at its last sync.
    pub pending: i64,
    pub lag_s: f64,
    /// Enrollment versions it synced, and those of them DPS has not accepted (no upload result
    /// `uploaded` synced yet).
    pub enrollments: i64,
    pub not_uploaded: i64,
    /// Of those versions: DPS accepted (`uploaded`), and DPS refused or holds differently
    /// (`failed` or `conflict`, the last result synced or written by `station upload --fleet`).
    pub uploaded: i64,
    pub upload_failed: i64,
    /// Conflicts it is party to (either side).
    pub conflicts: i64,
}

/// Attempts on one line on one day (UTC).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineDay {
    pub line: String,
    pub day: String,
    pub passed: i64,
    pub failed: i64,
    /// Percent of attempts that passed.
    pub yield_percent: f64,
}

/// One registration ID (or key) provisioned on two stations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConflictRow {
    pub registration_id: String,
    pub what: String,
    /// The station whose enrollment arrived second, and its line.
    pub station: String,
    pub line: String,
    /// The station that held the claim, and its line.
    pub holder: String,
    pub holder_line: String,
    pub detected_at: String,
}

/// The whole fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetStatus {
    pub stations: Vec<StationRow>,
    pub lines: Vec<LineDay>,
    pub conflicts: Vec<ConflictRow>,
}

/// Every station's row.
fn stations(client: &mut Client) -> Result<Vec<StationRow>> {
    Ok(client
        .query(
            "SELECT s.station, s.line,
                 to_char(s.last_sync_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                 extract(epoch FROM now() - s.last_sync_at)::float8,
                 s.pending, s.lag_s,
                 (SELECT count(*) FROM fleet.enrollments e WHERE e.station = s.station),
                 (SELECT count(*) FROM fleet.enrollments e WHERE e.station = s.station
                   AND NOT EXISTS (SELECT 1 FROM fleet.uploads u WHERE u.station = e.station
                       AND u.export_seq = e.export_seq AND u.status = 'uploaded')),
                 (SELECT count(*) FROM fleet.conflicts c
                   WHERE c.station = s.station OR c.holder = s.station),
                 (SELECT count(*) FROM fleet.uploads u WHERE u.station = s.station
                   AND u.status = 'uploaded'),
                 (SELECT count(*) FROM fleet.uploads u WHERE u.station = s.station
                   AND u.status IN ('failed', 'conflict'))
             FROM fleet.stations s ORDER BY s.line, s.station",
            &[],
        )
        .map_err(server)?
        .iter()
        .map(|r| StationRow {
            station: r.get(0),
            line: r.get(1),
            last_sync_at: r.get(2),
            since_sync_s: r.get(3),
            pending: r.get(4),
            lag_s: r.get(5),
            enrollments: r.get(6),
            not_uploaded: r.get(7),
            conflicts: r.get(8),
            uploaded: r.get(9),
            upload_failed: r.get(10),
        })
        .collect())
}

/// Read the fleet's status; `days` limits the per-line table to the last days.
pub fn read(client: &mut Client, days: i32) -> Result<FleetStatus> {
    let stations = stations(client)?;
    let lines = client
        .query(
            "SELECT line, left(started_at, 10) AS day,
                 count(*) FILTER (WHERE outcome = 'passed'),
                 count(*) FILTER (WHERE outcome <> 'passed')
             FROM fleet.attempts
             WHERE left(started_at, 10) >= to_char(now() - make_interval(days => $1), 'YYYY-MM-DD')
             GROUP BY 1, 2 ORDER BY 2 DESC, 1",
            &[&days],
        )
        .map_err(server)?
        .iter()
        .map(|r| {
            let (passed, failed): (i64, i64) = (r.get(2), r.get(3));
            LineDay {
                line: r.get(0),
                day: r.get(1),
                passed,
                failed,
                yield_percent: 100.0 * passed as f64 / (passed + failed).max(1) as f64,
            }
        })
        .collect();
    let conflicts = client
        .query(
            "SELECT registration_id, what, station, line, holder, holder_line,
                 to_char(detected_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM fleet.conflicts ORDER BY detected_at, registration_id",
            &[],
        )
        .map_err(server)?
        .iter()
        .map(|r| ConflictRow {
            registration_id: r.get(0),
            what: r.get(1),
            station: r.get(2),
            line: r.get(3),
            holder: r.get(4),
            holder_line: r.get(5),
            detected_at: r.get(6),
        })
        .collect();
    Ok(FleetStatus {
        stations,
        lines,
        conflicts,
    })
}

/// Conflicts `station` is party to (either side).
pub fn conflict_count(client: &mut Client, station: &str) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM fleet.conflicts WHERE station = $1 OR holder = $1",
            &[&station],
        )
        .map_err(server)?
        .get(0))
}
