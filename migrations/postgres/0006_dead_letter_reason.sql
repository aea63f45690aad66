-- The PostgreSQL twin of migrations/sqlite/0006_dead_letter_reason.sql.
ALTER TABLE dead_letters ADD COLUMN reason TEXT NOT NULL DEFAULT 'other';

UPDATE dead_letters SET reason = CASE
    WHEN error LIKE 'gave up after %' THEN 'max_retry_age'
    WHEN error LIKE 'channel `%` is no longer configured' THEN 'channel_not_configured'
    WHEN error ~ '^[a-z0-9_]{1,64}$' THEN error
    ELSE 'other'
END;
