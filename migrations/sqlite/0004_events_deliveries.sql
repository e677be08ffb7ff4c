-- Embedded store, version 4: one event, many deliveries. An accepted
-- callback is stored once (`events`: payload, source, dedup identity, time
-- received); each of its targets is a row of `deliveries` with its own
-- status, attempts, lease and errors. Every row of version 3 becomes an
-- event with one delivery whose id is the old event id, so a retry that
-- spans the upgrade carries the same X-Wxkf-Delivery-Id. Leases are
-- dropped: the manager that starts on the upgraded store takes everything
-- waiting.

ALTER TABLE events RENAME TO events_v3;
DROP INDEX IF EXISTS events_due;
DROP INDEX IF EXISTS events_by_kf;
DROP INDEX IF EXISTS events_by_kf_seq;
DROP INDEX IF EXISTS events_waiting;

CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL,
    source      TEXT NOT NULL,
    dedup_key   TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    body        BLOB NOT NULL,
    query       TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    -- Deliveries not yet removed: the event goes with its last one (it
    -- holds the dedup key until then). A count, not an index on
    -- deliveries.event_seq, which every accepted callback would pay for.
    deliveries_left INTEGER NOT NULL
);

CREATE TABLE deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    event_seq       INTEGER NOT NULL,
    corp_id         TEXT NOT NULL,
    kf_id           TEXT,
    coalesce        INTEGER NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- The retry window runs from here: acceptance, or the last re-drive.
    window_start    INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    claim_id        TEXT,
    last_error      TEXT,
    delivered_at    INTEGER,
    superseded_by   TEXT,
    updated_at      INTEGER NOT NULL
);

INSERT INTO events (seq, id, source, dedup_key, kind, body, query, received_at, deliveries_left)
    SELECT seq, id, corp_id, dedup_key, kind, body, query, received_at, 1 FROM events_v3;
INSERT INTO deliveries (seq, id, event_seq, corp_id, kf_id, coalesce, status, attempts,
                        window_start, next_attempt_at, lease_owner, lease_until, claim_id,
                        last_error, delivered_at, superseded_by, updated_at)
    SELECT seq, id, seq, corp_id, kf_id, coalesce, status, attempts,
           window_start, next_attempt_at, NULL, 0, NULL,
           last_error, delivered_at, superseded_by, updated_at FROM events_v3;
DROP TABLE events_v3;

-- The dispatcher's scan: due pending deliveries.
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
-- A kfId's history (never moves after the insert), and the small partial
-- index of its waiting deliveries that wake-ups and coalescing look for.
CREATE INDEX deliveries_by_kf ON deliveries (corp_id, kf_id, seq);
CREATE INDEX deliveries_waiting ON deliveries (corp_id, kf_id, seq)
    WHERE status IN ('pending','parked');
