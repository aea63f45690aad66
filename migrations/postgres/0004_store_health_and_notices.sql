-- The PostgreSQL twin of migrations/sqlite/0004_store_health_and_notices.sql.
--
-- store_probe: a scratch row that /readyz writes (and deletes again, in one transaction) while
-- commits are failing, to find out whether a commit can succeed again.
CREATE TABLE store_probe (
    id   BIGINT PRIMARY KEY,
    pad  BYTEA  NOT NULL
);

-- ops_notices: when each notice subject was last reported to ops_channel, so that the rate
-- limits of Sluice's notices about itself hold across restarts and failovers. A
-- `sentry-silence` row means a silence was reported and no recovery notice followed yet.
CREATE TABLE ops_notices (
    subject      TEXT   PRIMARY KEY,
    reported_at  BIGINT NOT NULL
);

-- issues.described: 1 once a delivery that describes the issue set its title, level and
-- project; 0 while it is known only from comments. A comment never renames a described issue.
ALTER TABLE issues ADD COLUMN described BIGINT NOT NULL DEFAULT 1;
