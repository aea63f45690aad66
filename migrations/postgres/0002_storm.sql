-- The PostgreSQL twin of migrations/sqlite/0002_storm.sql: the same tables, in PostgreSQL types.
-- Storm control: per issue and channel cooldown state, per-channel counters for the
-- accounting invariant, and the kind of each message (alert, follow-up, roll-up).

CREATE TABLE issue_channels (
    issue_key        TEXT    NOT NULL,
    channel          TEXT    NOT NULL,
    -- The route's cooldown, seconds; 0 posts every occurrence.
    cooldown_secs    BIGINT NOT NULL,
    -- Occurrences arriving before this instant (ms) are folded, not posted.
    cooldown_until   BIGINT NOT NULL,
    -- Occurrences folded since the last message, waiting for the follow-up.
    folded           BIGINT NOT NULL DEFAULT 0,
    -- When the first of those arrived (ms).
    folded_since     BIGINT,
    -- The newest alert and route decision (JSON), for the follow-up.
    payload          TEXT    NOT NULL,
    -- Slack's ts of the last full message in this channel (Web API), the thread root.
    slack_ts         TEXT,
    PRIMARY KEY (issue_key, channel)
);
CREATE INDEX issue_channels_release ON issue_channels (cooldown_until) WHERE folded > 0;

CREATE TABLE channel_counters (
    channel             TEXT    PRIMARY KEY,
    -- Occurrences routed to the channel, ever.
    occurrences_routed  BIGINT NOT NULL DEFAULT 0,
    -- Occurrences that arrived within a cooldown (posted later in a follow-up).
    occurrences_folded  BIGINT NOT NULL DEFAULT 0,
    -- Messages folded into roll-ups.
    messages_rolled_up  BIGINT NOT NULL DEFAULT 0,
    -- The channel waits for a retry until this instant (ms): Retry-After or backoff. Rows
    -- queued meanwhile wait too, so order is kept and Slack's wait is honoured.
    held_until          BIGINT NOT NULL DEFAULT 0
);

ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'alert';
ALTER TABLE sent ADD COLUMN kind TEXT NOT NULL DEFAULT 'alert';
ALTER TABLE dead_letters ADD COLUMN kind TEXT NOT NULL DEFAULT 'alert';
