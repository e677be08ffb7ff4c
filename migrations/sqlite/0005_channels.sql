-- Embedded store, version 5: channels (API.md §6). Operator configuration
-- beyond puppets (apps, subscriptions, corp credentials set by an operator)
-- is one table of records, each a JSON body whose secret fields are sealed;
-- the shape of each kind lives in the service (src/store/channels.rs), once
-- for both stores. A delivery may go to a subscription instead of a puppet,
-- and an event keeps the JSON a subscriber receives (§6.3).

CREATE TABLE records (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    source     TEXT NOT NULL,
    body       TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX records_by_source ON records (kind, source, id);

ALTER TABLE events ADD COLUMN message BLOB;
ALTER TABLE deliveries ADD COLUMN subscription_id TEXT;
