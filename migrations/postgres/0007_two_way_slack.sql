-- The PostgreSQL twin of migrations/sqlite/0007_two_way_slack.sql.
-- Two-way Slack: an issue's state in Sentry, every message Sluice posted about an issue in a
-- Web API channel (to update them all in place), and the clicks waiting to be carried out.

-- The issue's state as the last issue notice or click left it (NULL: never told).
-- status: JSON of `issue::Status` ({"status":"resolved","in_next_release":false}, …).
-- state_by: who made the change (a person), state_at: when (Unix ms).
-- previous_status: the status before the last change, so that the delivery worker can tell a
-- regression (unresolved after resolved) from another reopening.
ALTER TABLE issues ADD COLUMN status TEXT;
ALTER TABLE issues ADD COLUMN previous_status TEXT;
ALTER TABLE issues ADD COLUMN assignee TEXT;
ALTER TABLE issues ADD COLUMN state_by TEXT;
ALTER TABLE issues ADD COLUMN state_at BIGINT;

-- Every full message about an issue that Slack accepted in a Web API channel, with what it
-- showed (the outbox row's JSON: the alert and its route decision), so that a change of the
-- issue's state rewrites each of them with `chat.update`, after restarts and on any replica.
CREATE TABLE issue_messages (
    slack_channel_id  TEXT    NOT NULL,
    ts                TEXT    NOT NULL,
    channel           TEXT    NOT NULL,
    issue_key         TEXT    NOT NULL,
    payload           TEXT    NOT NULL,
    posted_at         BIGINT NOT NULL,
    PRIMARY KEY (slack_channel_id, ts)
);
CREATE INDEX issue_messages_issue ON issue_messages (issue_key, channel, posted_at);

-- Clicks on Sluice's buttons, committed before `POST /slack/interactions` answers 200 and
-- carried out by the leader's interactions worker.
-- trigger_id: Slack's id of the click; a repeat of it acts once.
-- pending_key: the same action by the same person on the same issue, while one is pending
--   (NULL once it is done): a double click acts once.
-- step: 0 = the action is to be carried out, 1 = done in Sentry, the comment is to be added.
-- state: pending | done | failed.
CREATE TABLE clicks (
    id               BIGSERIAL PRIMARY KEY,
    trigger_id       TEXT    NOT NULL UNIQUE,
    pending_key      TEXT    UNIQUE,
    payload          TEXT    NOT NULL,
    received_at      BIGINT NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'pending',
    step             BIGINT NOT NULL DEFAULT 0,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_error       TEXT,
    outcome          TEXT,
    done_at          BIGINT
);
CREATE INDEX clicks_due ON clicks (state, next_attempt_at);
