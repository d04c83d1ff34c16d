//! The fleet schema: append-only migrations, like the station's SQLite ones. The version
//! lives in `fleet.schema_version`; a schema newer than this binary is refused, and only
//! `station fleet init` creates or migrates it (a station only checks it).

use super::{SCHEMA, server, unreachable};
use crate::error::{Error, ErrorCode, Result};
use postgres::Client;

/// Migration `i` takes the schema from version `i` to `i + 1`. Never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    r#"
    CREATE TABLE fleet.stations (
        station      text PRIMARY KEY,
        line         text NOT NULL,
        sent_seq     bigint NOT NULL DEFAULT 0,
        last_sync_at timestamptz,
        pending      bigint NOT NULL DEFAULT 0,
        lag_s        double precision NOT NULL DEFAULT 0
    );
    -- Who holds each registration ID (lowercase), and each EK / certificate thumbprint.
    CREATE TABLE fleet.claims (
        registration_id text PRIMARY KEY,
        station         text NOT NULL,
        line            text NOT NULL,
        claimed_at      timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE fleet.key_claims (
        key             text PRIMARY KEY,
        registration_id text NOT NULL,
        station         text NOT NULL,
        line            text NOT NULL,
        claimed_at      timestamptz NOT NULL DEFAULT now()
    );
    -- Every enrollment version a station provisioned: (station, export_seq) is the version.
    CREATE TABLE fleet.enrollments (
        station          text NOT NULL,
        export_seq       bigint NOT NULL,
        registration_id  text NOT NULL,
        line             text NOT NULL,
        device_serial    text NOT NULL,
        attestation_type text NOT NULL,
        provisioned_at   text,
        record           jsonb NOT NULL,
        synced_at        timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (station, export_seq)
    );
    CREATE INDEX enrollments_registration ON fleet.enrollments (lower(registration_id));
    CREATE TABLE fleet.attempts (
        station         text NOT NULL,
        local_id        bigint NOT NULL,
        line            text NOT NULL,
        registration_id text,
        device_serial   text,
        outcome         text NOT NULL,
        error_code      text,
        started_at      text NOT NULL,
        duration_ms     bigint NOT NULL,
        PRIMARY KEY (station, local_id)
    );
    CREATE INDEX attempts_day ON fleet.attempts (line, left(started_at, 10));
    CREATE TABLE fleet.batches (
        station    text NOT NULL,
        id         text NOT NULL,
        first_seq  bigint NOT NULL,
        last_seq   bigint NOT NULL,
        count      bigint NOT NULL,
        created_at text NOT NULL,
        PRIMARY KEY (station, id)
    );
    CREATE TABLE fleet.uploads (
        station         text NOT NULL,
        export_seq      bigint NOT NULL,
        registration_id text NOT NULL,
        status          text NOT NULL,
        mode            text NOT NULL,
        error_code      bigint,
        updated_at      text NOT NULL,
        PRIMARY KEY (station, export_seq)
    );
    -- The same registration ID (or key) provisioned on two stations: found when an offline
    -- station's enrollments arrive; flagged, never merged.
    CREATE TABLE fleet.conflicts (
        registration_id text NOT NULL,
        what            text NOT NULL,
        station         text NOT NULL,
        line            text NOT NULL,
        holder          text NOT NULL,
        holder_line     text NOT NULL,
        detected_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (registration_id, station, holder)
    );
    -- One round trip: claim the ID (and the key) for a station, or raise PS001 naming the
    -- holder (DETAIL = station, HINT = line, MESSAGE = what is held). A claim the caller
    -- already holds is fine; a refused key claim leaves no ID claim behind (one statement).
    CREATE FUNCTION fleet.claim(p_id text, p_key text, p_station text, p_line text)
    RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        h_station text;
        h_line text;
        h_id text;
    BEGIN
        INSERT INTO fleet.claims (registration_id, station, line)
            VALUES (lower(p_id), p_station, p_line) ON CONFLICT DO NOTHING;
        SELECT station, line INTO h_station, h_line FROM fleet.claims
            WHERE registration_id = lower(p_id);
        IF h_station <> p_station THEN
            RAISE EXCEPTION USING ERRCODE = 'PS001', MESSAGE = 'the registration ID',
                DETAIL = h_station, HINT = h_line;
        END IF;
        IF p_key IS NOT NULL THEN
            INSERT INTO fleet.key_claims (key, registration_id, station, line)
                VALUES (p_key, lower(p_id), p_station, p_line) ON CONFLICT DO NOTHING;
            SELECT station, line, registration_id INTO h_station, h_line, h_id
                FROM fleet.key_claims WHERE key = p_key;
            IF h_id <> lower(p_id) THEN
                RAISE EXCEPTION USING ERRCODE = 'PS001',
                    MESSAGE = 'its key ' || p_key || ' (enrolled as ' || h_id || ')',
                    DETAIL = h_station, HINT = h_line;
            END IF;
        END IF;
    END $$;
    "#,
    // 1 -> 2: central upload (`station upload --fleet`): each batch's DPS options (the JSON
    // the station exported it with; NULL for batches synced before), and when and by whom each
    // upload result was written centrally.
    r#"
    ALTER TABLE fleet.batches ADD COLUMN dps_options text;
    ALTER TABLE fleet.uploads ADD COLUMN uploaded_by text;
    "#,
    // 2 -> 3: a claim given back by the station holding it (`station fleet release`), for a
    // device that never passed there and goes to another station; refused (PS002, the reason
    // in MESSAGE) when another station holds it or any station has provisioned the ID. The
    // function runs as its owner: stations get EXECUTE, not DELETE on the claims.
    r#"
    CREATE TABLE fleet.releases (
        registration_id text NOT NULL,
        station         text NOT NULL,
        line            text NOT NULL,
        keys            text[] NOT NULL,
        reason          text NOT NULL,
        released_at     timestamptz NOT NULL DEFAULT now()
    );
    CREATE FUNCTION fleet.release(p_id text, p_station text, p_reason text)
    RETURNS text[] LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DECLARE
        h_station text;
        h_line text;
        p_by text;
        released text[];
    BEGIN
        SELECT station, line INTO h_station, h_line FROM fleet.claims
            WHERE registration_id = lower(p_id) FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'PS002',
                MESSAGE = 'no station holds a claim on it';
        END IF;
        IF h_station <> p_station THEN
            RAISE EXCEPTION USING ERRCODE = 'PS002',
                MESSAGE = 'station ' || h_station || ' (line ' || h_line
                    || ') holds it: only that station can release it';
        END IF;
        SELECT station INTO p_by FROM fleet.enrollments
            WHERE lower(registration_id) = lower(p_id) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'PS002',
                MESSAGE = 'station ' || p_by || ' provisioned it: a provisioned identity stays claimed';
        END IF;
        SELECT coalesce(array_agg(key ORDER BY key), '{}') INTO released FROM fleet.key_claims
            WHERE registration_id = lower(p_id) AND station = p_station;
        DELETE FROM fleet.key_claims WHERE registration_id = lower(p_id) AND station = p_station;
        DELETE FROM fleet.claims WHERE registration_id = lower(p_id);
        INSERT INTO fleet.releases (registration_id, station, line, keys, reason)
            VALUES (lower(p_id), p_station, h_line, released, p_reason);
        RETURN released;
    END $$;
    REVOKE ALL ON FUNCTION fleet.release(text, text, text) FROM PUBLIC;
    "#,
];

/// The schema version this binary writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// The version the database holds (0: no fleet schema yet).
fn found(client: &mut impl postgres::GenericClient) -> Result<i32> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('fleet.schema_version') IS NOT NULL",
            &[],
        )
        .map_err(server)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one("SELECT version FROM fleet.schema_version", &[])
        .map_err(server)?;
    Ok(row.get(0))
}

fn too_new(found: i32) -> Error {
    Error::Fleet {
        code: ErrorCode::FleetSchemaTooNew,
        message: format!(
            "the fleet schema is at version {found}; this station understands up to {VERSION}"
        ),
    }
}

/// Create or migrate the schema (`station fleet init`). Concurrent runs take turns (an
/// advisory lock); each migration commits with its version. The version reached.
pub fn init(client: &mut Client) -> Result<i32> {
    let mut tx = client.transaction().map_err(server)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('fleet.schema'))",
        &[],
    )
    .map_err(server)?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        .map_err(server)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS fleet.schema_version (
             id int PRIMARY KEY CHECK (id = 1), version int NOT NULL);
         INSERT INTO fleet.schema_version VALUES (1, 0) ON CONFLICT DO NOTHING;",
    )
    .map_err(server)?;
    let mut version = found(&mut tx)?;
    if version > VERSION {
        return Err(too_new(version));
    }
    while version < VERSION {
        tx.batch_execute(MIGRATIONS[version as usize])
            .map_err(server)?;
        version += 1;
        tx.execute("UPDATE fleet.schema_version SET version = $1", &[&version])
            .map_err(server)?;
    }
    tx.commit().map_err(unreachable)?;
    Ok(version)
}

/// A station's check before it uses the fleet: the schema exists and is not newer than this
/// binary (an older one is fine only once `station fleet init` has migrated it).
pub fn check(client: &mut Client) -> Result<()> {
    match found(client)? {
        v if v > VERSION => Err(too_new(v)),
        v if v < VERSION => Err(Error::Fleet {
            code: ErrorCode::FleetSchemaMissing,
            message: format!(
                "the fleet schema is at version {v}; this station needs {VERSION}: run `station fleet init`"
            ),
        }),
        _ => Ok(()),
    }
}
