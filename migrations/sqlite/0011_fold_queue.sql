-- Ingest that touches no shared row (docs/scaling.md): the request path appends a new,
-- counted-or-notice delivery here with where routing sent it; the leader's fold loop
-- (src/fold.rs) folds the queue in batches into issues, day counts, cooldowns, mutes, the
-- outbox and the channel counters, and deletes the rows it folded in the same transaction, so
-- each delivery is folded exactly once. `id` is the order of folding.
-- counted: 1 for a new occurrence (a new event id), 0 for a notice.
-- payload: JSON {"alert": …, "targets": […]}, the parsed alert and its routed targets.
CREATE TABLE fold_queue (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    body_sha256  BLOB    NOT NULL,
    received_at  INTEGER NOT NULL,
    counted      INTEGER NOT NULL,
    payload      TEXT    NOT NULL
);
-- The status page tells a delivery that waits for the fold by its body.
CREATE INDEX fold_queue_body ON fold_queue (body_sha256);
