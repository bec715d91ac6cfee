-- The restore drills (db_restore_drill): which backup was recovered to which target, the outcome, the RTO by
-- phase and the sizes. Here, not in trading_db, so a restore never rewinds the proof that backups restore.
CREATE TABLE IF NOT EXISTS ops.restore_drills (
    drill_id        text PRIMARY KEY,
    backup_id       text,
    recovery_target text NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('passed', 'failed')),
    -- The phase that failed and the sentence saying why (NULL when the drill passed).
    failed_phase    text,
    problems        jsonb NOT NULL DEFAULT '[]',
    -- Seconds per phase (fetch, extract, replay, transfer, verify) and their sum, the drill's RTO.
    phases          jsonb NOT NULL DEFAULT '{}',
    rto_seconds     double precision,
    -- Bytes: base backup stored and extracted, WAL replayed, the recovered database.
    sizes           jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS restore_drills_backup_idx ON ops.restore_drills (backup_id, finished_at);
