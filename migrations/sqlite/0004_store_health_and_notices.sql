-- What the store needs to know about itself, and which issue titles a comment may not change.
--
-- store_probe: a scratch row (256 KiB) that /readyz writes (and deletes again, in one transaction) while
-- commits are failing, to find out whether a commit can succeed again. It allocates a page, so
-- a full disk fails it like a real delivery.
CREATE TABLE store_probe (
    id   INTEGER PRIMARY KEY,
    pad  BLOB    NOT NULL
);

-- ops_notices: when each notice subject was last reported to ops_channel, so that the rate
-- limits of Sluice's notices about itself (one dead-letter notice per channel per hour, the
-- Sentry silence notice at most daily and its recovery) hold across restarts and failovers.
-- A `sentry-silence` row means a silence was reported and no recovery notice followed yet.
CREATE TABLE ops_notices (
    subject      TEXT    PRIMARY KEY,
    reported_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- issues.described: 1 once a delivery that describes the issue (an event, an issue notice)
-- set its title, level and project; 0 while it is known only from comments, whose title is
-- "Comment on …". A comment never renames a described issue.
ALTER TABLE issues ADD COLUMN described INTEGER NOT NULL DEFAULT 1;
