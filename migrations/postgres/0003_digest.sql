-- The PostgreSQL twin of migrations/sqlite/0003_digest.sql: the same tables, in PostgreSQL types.
-- The weekly digest: what each channel received per issue and UTC day (only routes with
-- `digest = true`), and the digests queued, one per channel and period.

CREATE TABLE channel_day_counts (
    channel      TEXT    NOT NULL,
    issue_key    TEXT    NOT NULL,
    day          BIGINT NOT NULL,
    project      TEXT    NOT NULL,
    environment  TEXT    NOT NULL,
    -- Occurrences routed here that day.
    occurrences  BIGINT NOT NULL DEFAULT 0,
    -- Of those, folded by the issue's cooldown.
    folded       BIGINT NOT NULL DEFAULT 0,
    -- Issue notices (resolved, assigned, metric alerts, comments) routed here that day.
    notices      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (channel, day, issue_key, environment)
);

CREATE TABLE digest_runs (
    channel      TEXT    NOT NULL,
    -- The scheduled time the digest is for (Unix ms): the period's identity.
    period_end   BIGINT NOT NULL,
    queued_at    BIGINT NOT NULL,
    PRIMARY KEY (channel, period_end)
);
