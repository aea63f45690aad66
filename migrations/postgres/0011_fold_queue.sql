-- The PostgreSQL twin of migrations/sqlite/0011_fold_queue.sql.
-- Ingest that touches no shared row (docs/scaling.md): the request path appends a new,
-- counted-or-notice delivery here with where routing sent it; the leader's fold loop
-- (src/fold.rs) folds the queue in batches into issues, day counts, cooldowns, mutes, the
-- outbox and the channel counters, and deletes the rows it folded in the same transaction, so
-- each delivery is folded exactly once. `id` is the order of folding (a sequence: replicas
-- append without waiting for one another; a row committed late is folded in a later batch).
-- counted: 1 for a new occurrence (a new event id), 0 for a notice.
-- payload: JSON {"alert": …, "targets": […]}, the parsed alert and its routed targets.
CREATE TABLE fold_queue (
    id           BIGSERIAL PRIMARY KEY,
    body_sha256  BYTEA  NOT NULL,
    received_at  BIGINT NOT NULL,
    counted      BIGINT NOT NULL,
    payload      TEXT   NOT NULL
);
-- The status page tells a delivery that waits for the fold by its body.
CREATE INDEX fold_queue_body ON fold_queue (body_sha256);
