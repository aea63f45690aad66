-- The PostgreSQL twin of migrations/sqlite/0005_slack_channel_id.sql.
-- The id of the Slack channel (`C0123456789`) that `chat.postMessage` answered for the issue's
-- last full message, beside its `slack_ts`: `chat.update` accepts only a channel id, while a
-- channel may be configured by name (`slack_channel = "alerts"`). NULL for messages posted
-- before this column existed (the configured channel is used then).
ALTER TABLE issue_channels ADD COLUMN slack_channel_id TEXT;
