-- Embedded store, version 3: per-kfId indexes that a delivery outcome does not
-- have to move. The old index had the status in its key, so every outcome
-- deleted an entry in one place and wrote it in another (two more pages per
-- callback in the group commit). Now the history index never changes after
-- the insert, and a small partial index holds only the waiting events that
-- wake-ups and coalescing look for.

DROP INDEX IF EXISTS events_by_kf;
CREATE INDEX events_by_kf_seq ON events (corp_id, kf_id, seq);
CREATE INDEX events_waiting ON events (corp_id, kf_id, seq)
    WHERE status IN ('pending','parked');
