-- Embedded store, version 7: no per-kfId history index. Nothing reads
-- `deliveries_by_kf` (the waiting deliveries of a kfId are found through the
-- partial `deliveries_waiting`; the operator's listing filters as it scans
-- newest first), yet every accepted callback wrote one entry into it, on a
-- page chosen by its kfId: about one 4 KiB WAL page of the 14.4 KiB the
-- group commit wrote per callback (issue 16).
DROP INDEX IF EXISTS deliveries_by_kf;
