-- dead_letters.reason: the stable code of why a message was dead-lettered (Slack's error
-- token, `http_<status>`, `max_retry_age`, `channel_not_configured`), stored beside Slack's
-- words in `error`, so that metrics and tools group by the code instead of matching text.
ALTER TABLE dead_letters ADD COLUMN reason TEXT NOT NULL DEFAULT 'other';

-- Rows dead-lettered before: the code their text stands for.
UPDATE dead_letters SET reason = CASE
    WHEN error LIKE 'gave up after %' THEN 'max_retry_age'
    WHEN error LIKE 'channel `%` is no longer configured' THEN 'channel_not_configured'
    WHEN error <> '' AND length(error) <= 64 AND error NOT GLOB '*[^a-z0-9_]*' THEN error
    ELSE 'other'
END;
