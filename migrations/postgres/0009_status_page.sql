-- The PostgreSQL twin of migrations/sqlite/0009_status_page.sql.
-- The status page and dead-letter replay: the trail of every delivery, from what arrived to
-- what became of it in each channel.

-- What a delivery was about, for an alert (NULL for an ignored delivery, and for deliveries
-- stored before this column existed). `outcome` gains `duplicate`: an event seen before in
-- another delivery, not counted or posted again.
ALTER TABLE deliveries ADD COLUMN event_id TEXT;
ALTER TABLE deliveries ADD COLUMN issue_key TEXT;
ALTER TABLE deliveries ADD COLUMN project TEXT;
ALTER TABLE deliveries ADD COLUMN environment TEXT;
-- The status page pages deliveries by (received_at, body_sha256): the index on received_at
-- alone becomes one on both (it still serves pruning and the first and last delivery).
DROP INDEX deliveries_received_at;
CREATE INDEX deliveries_received_at ON deliveries (received_at, body_sha256);

-- Where each delivery was routed: one row per (delivery, channel), written by ingest, pruned
-- with its delivery. decision: queued (an outbox row carries it: its `delivery`), folded
-- (within the issue's cooldown there) or muted (a mute of the issue there held it).
-- route: the route that chose the channel (NULL: the default channel, or an issue notice that
-- followed the issue's channels).
CREATE TABLE delivery_routes (
    body_sha256  BYTEA  NOT NULL,
    channel      TEXT   NOT NULL,
    route        TEXT,
    decision     TEXT   NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (body_sha256, channel)
);

-- The delivery (body_sha256) a message was queued for, carried from the outbox to `sent` or
-- `dead_letters` (and back to the outbox by a replay); NULL for messages that stand for no one
-- delivery (follow-ups at a cooldown's or mute's end, roll-ups, digests, notices, refreshes).
-- A roll-up deletes the rows it replaces: their deliveries are then in none of the three.
ALTER TABLE outbox ADD COLUMN delivery BYTEA;
ALTER TABLE sent ADD COLUMN delivery BYTEA;
ALTER TABLE dead_letters ADD COLUMN delivery BYTEA;
CREATE INDEX outbox_delivery ON outbox (delivery) WHERE delivery IS NOT NULL;
CREATE INDEX sent_delivery ON sent (delivery) WHERE delivery IS NOT NULL;
CREATE INDEX dead_letters_delivery ON dead_letters (delivery) WHERE delivery IS NOT NULL;
