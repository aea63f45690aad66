-- Core schema: deliveries and events seen (deduplication), issues and their day counts,
-- the outbox of Slack messages still to send, what was sent, and dead letters.
-- All times are Unix milliseconds (UTC); `day` is whole days since 1970-01-01 UTC.

CREATE TABLE deliveries (
    body_sha256  BLOB    PRIMARY KEY,
    resource     TEXT    NOT NULL,
    request_id   TEXT,
    received_at  INTEGER NOT NULL,
    outcome      TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX deliveries_received_at ON deliveries (received_at);

CREATE TABLE events (
    event_id    TEXT    PRIMARY KEY,
    issue_key   TEXT    NOT NULL,
    seen_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX events_seen_at ON events (seen_at);

CREATE TABLE issues (
    issue_key         TEXT    PRIMARY KEY,
    project           TEXT    NOT NULL,
    title             TEXT    NOT NULL,
    culprit           TEXT,
    level             TEXT    NOT NULL,
    short_id          TEXT,
    issue_url         TEXT,
    first_seen        INTEGER NOT NULL,
    last_seen         INTEGER NOT NULL,
    sentry_count      INTEGER,
    sentry_first_seen INTEGER,
    resolved_at       INTEGER
) WITHOUT ROWID;

CREATE TABLE day_counts (
    issue_key    TEXT    NOT NULL,
    day          INTEGER NOT NULL,
    environment  TEXT    NOT NULL,
    count        INTEGER NOT NULL,
    PRIMARY KEY (issue_key, day, environment)
) WITHOUT ROWID;
CREATE INDEX day_counts_day ON day_counts (day);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    channel          TEXT    NOT NULL,
    issue_key        TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    occurrences      INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id);

CREATE TABLE sent (
    id           INTEGER PRIMARY KEY,
    channel      TEXT    NOT NULL,
    issue_key    TEXT    NOT NULL,
    occurrences  INTEGER NOT NULL,
    attempts     INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    sent_at      INTEGER NOT NULL,
    slack_ts     TEXT
);
CREATE INDEX sent_channel_sent_at ON sent (channel, sent_at);

CREATE TABLE dead_letters (
    id           INTEGER PRIMARY KEY,
    channel      TEXT    NOT NULL,
    issue_key    TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    occurrences  INTEGER NOT NULL,
    attempts     INTEGER NOT NULL,
    error        TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    dead_at      INTEGER NOT NULL
);
CREATE INDEX dead_letters_channel ON dead_letters (channel, dead_at);
