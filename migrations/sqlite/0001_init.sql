-- Embedded store, version 1: registrations and the delivery queue.

CREATE TABLE puppets (
    kf_id            TEXT PRIMARY KEY,
    kf_name          TEXT NOT NULL,
    endpoint         TEXT NOT NULL,
    corp_id          TEXT NOT NULL,
    corp_secret      TEXT NOT NULL,
    token            TEXT NOT NULL,
    encoding_aes_key TEXT NOT NULL,
    online           INTEGER NOT NULL,
    last_online_at   INTEGER,
    offline_since    INTEGER,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX puppets_by_corp ON puppets (corp_id);

CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    corp_id         TEXT NOT NULL,
    kf_id           TEXT,
    dedup_key       TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    body            BLOB NOT NULL,
    query           TEXT NOT NULL,
    coalesce        INTEGER NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    received_at     INTEGER NOT NULL,
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
-- The dispatcher's scan: due pending events.
CREATE INDEX events_due ON events (status, next_attempt_at);
-- Wake-ups and coalescing: a kfId's waiting events, newest first.
CREATE INDEX events_by_kf ON events (corp_id, kf_id, status, seq);
