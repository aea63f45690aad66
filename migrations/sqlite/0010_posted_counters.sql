-- What Slack accepted per channel, kept as counters by the transaction that records each
-- accepted message (mark_posted), so that the accounting (/metrics, the status page) reads one
-- row per channel instead of summing `sent`, which grows with every message ever posted.
ALTER TABLE channel_counters ADD COLUMN messages_posted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE channel_counters ADD COLUMN occurrences_posted INTEGER NOT NULL DEFAULT 0;
-- When Slack last accepted a message, and a digest, for the channel (Unix ms).
ALTER TABLE channel_counters ADD COLUMN last_sent_at INTEGER;
ALTER TABLE channel_counters ADD COLUMN last_digest_at INTEGER;

INSERT INTO channel_counters (channel)
SELECT DISTINCT channel FROM sent
WHERE channel NOT IN (SELECT channel FROM channel_counters);

UPDATE channel_counters SET
    messages_posted = (SELECT COUNT(*) FROM sent WHERE sent.channel = channel_counters.channel),
    occurrences_posted = (SELECT COALESCE(SUM(occurrences), 0) FROM sent
                          WHERE sent.channel = channel_counters.channel),
    last_sent_at = (SELECT MAX(sent_at) FROM sent WHERE sent.channel = channel_counters.channel),
    last_digest_at = (SELECT MAX(sent_at) FROM sent
                      WHERE sent.channel = channel_counters.channel AND kind = 'digest');

-- `sent` is pruned past the retention like the deliveries it records (the totals above keep
-- what it held); by this index.
CREATE INDEX sent_sent_at ON sent (sent_at);
