-- Round 3: what the ledger keeps of a period.
--
-- Quarantine replay (validate/replay.rs): a period whose landed file is gone can be validated again from what the pipeline kept: the rows of the
-- verdict in force (cleaned ones as text, quarantined ones as their original
-- text). Such a verdict names the verdict whose rows it read.
ALTER TABLE meta.validation_log
    ADD COLUMN replayed_from bigint REFERENCES meta.validation_log (id);

-- The Delta tables' ids (metaData.id) the verdict's versions are in: a table
-- lost and recreated at the same place restarts its versions under another
-- id, so a version number alone could name rows the verdict never saw.
ALTER TABLE meta.validation_log
    ADD COLUMN cleaned_table_id text,
    ADD COLUMN quarantine_table_id text;

-- A load a gate refused is kept too (status 'refused', the refusal in `error`):
-- the period's history then says why stage still holds its earlier rows.
ALTER TABLE meta.load_log DROP CONSTRAINT load_log_status_check;
ALTER TABLE meta.load_log ADD CONSTRAINT load_log_status_check
    CHECK (status IN ('loaded', 'failed', 'refused'));

-- Ballista executors started by `pipeline cluster executor` say they are alive
-- here every few seconds: a command on `--engine ballista://…` fails fast when
-- none has (Ballista itself would queue the job forever).
CREATE TABLE meta.cluster_executors (
    executor      text        PRIMARY KEY,   -- the host:port it serves Flight on
    scheduler     text        NOT NULL,      -- the scheduler it registered with
    started_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);
