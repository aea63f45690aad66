-- Mute here and breakthrough: a mute of one issue in one channel until a time, holding the
-- occurrences that arrive meanwhile (counted, not posted); and, per issue and channel, the
-- occurrences since its last message, which breakthrough thresholds are compared with.

CREATE TABLE mutes (
    issue_key   TEXT    NOT NULL,
    channel     TEXT    NOT NULL,
    -- Occurrences arriving before this instant (ms) are held, not posted.
    until_at    INTEGER NOT NULL,
    -- Who set it (a Slack user, `sluice mute`'s user) and when (ms).
    muted_by    TEXT,
    muted_at    INTEGER NOT NULL,
    -- Occurrences held and not yet posted: the message at the mute's end carries them.
    held        INTEGER NOT NULL DEFAULT 0,
    -- When the first of those arrived (ms).
    held_since  INTEGER,
    PRIMARY KEY (issue_key, channel)
) WITHOUT ROWID;
CREATE INDEX mutes_until ON mutes (until_at);

-- Occurrences since the message that started the pair's window (folded, held, or carried by
-- a spike), and the highest breakthrough threshold a spike went out for in it (0: none).
ALTER TABLE issue_channels ADD COLUMN window_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE issue_channels ADD COLUMN spiked INTEGER NOT NULL DEFAULT 0;
-- The occurrences folded in a running cooldown are its window's so far.
UPDATE issue_channels SET window_count = folded;
