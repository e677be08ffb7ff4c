-- Claims take due deliveries lane by lane (each subscription, and the
-- puppets together), so that one subscriber's backlog cannot fill the
-- claims of the others: the due index leads with the lane. It replaces the
-- old one (no extra index for each accepted callback to write).
DROP INDEX IF EXISTS deliveries_due;
CREATE INDEX deliveries_due ON deliveries (status, subscription_id, next_attempt_at);
