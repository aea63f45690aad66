-- The PostgreSQL twin of migrations/sqlite/0001_core.sql: the same tables, in PostgreSQL types.
-- Core schema: deliveries and events seen (deduplication), issues and their day counts,
-- the outbox of Slack messages still to send, what was sent, and dead letters.
-- All times are Unix milliseconds (UTC); `day` is whole days since 1970-01-01 UTC.

CREATE TABLE deliveries (
    body_sha256  BYTEA    PRIMARY KEY,
    resource     TEXT    NOT NULL,
    request_id   TEXT,
    received_at  BIGINT NOT NULL,
    outcome      TEXT    NOT NULL
);
CREATE INDEX deliveries_received_at ON deliveries (received_at);

CREATE TABLE events (
    event_id    TEXT    PRIMARY KEY,
    issue_key   TEXT    NOT NULL,
    seen_at     BIGINT NOT NULL
);
CREATE INDEX events_seen_at ON events (seen_at);

CREATE TABLE issues (
    issue_key         TEXT    PRIMARY KEY,
    project           TEXT    NOT NULL,
    title             TEXT    NOT NULL,
    culprit           TEXT,
    level             TEXT    NOT NULL,
    short_id          TEXT,
    issue_url         TEXT,
    first_seen        BIGINT NOT NULL,
    last_seen         BIGINT NOT NULL,
    sentry_count      BIGINT,
    sentry_first_seen BIGINT,
    resolved_at       BIGINT
);

CREATE TABLE day_counts (
    issue_key    TEXT    NOT NULL,
    day          BIGINT NOT NULL,
    environment  TEXT    NOT NULL,
    count        BIGINT NOT NULL,
    PRIMARY KEY (issue_key, day, environment)
);
CREATE INDEX day_counts_day ON day_counts (day);

CREATE TABLE outbox (
    id               BIGSERIAL PRIMARY KEY,
    channel          TEXT    NOT NULL,
    issue_key        TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    occurrences      BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_error       TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id);

CREATE TABLE sent (
    id           BIGINT PRIMARY KEY,
    channel      TEXT    NOT NULL,
    issue_key    TEXT    NOT NULL,
    occurrences  BIGINT NOT NULL,
    attempts     BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    sent_at      BIGINT NOT NULL,
    slack_ts     TEXT
);
CREATE INDEX sent_channel_sent_at ON sent (channel, sent_at);

CREATE TABLE dead_letters (
    id           BIGINT PRIMARY KEY,
    channel      TEXT    NOT NULL,
    issue_key    TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    occurrences  BIGINT NOT NULL,
    attempts     BIGINT NOT NULL,
    error        TEXT    NOT NULL,
    created_at   BIGINT NOT NULL,
    dead_at      BIGINT NOT NULL
);
CREATE INDEX dead_letters_channel ON dead_letters (channel, dead_at);
