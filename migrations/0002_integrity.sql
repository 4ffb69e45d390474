-- Round 2: the validation log row is the commit point of a validation, and the
-- load gate records what --force overrode.

-- `running`: a validation has started; it becomes passed/failed (a verdict on the
-- data, with its Delta versions) or error (the run failed; no verdict, no score).
-- A `running` row left behind means the process died mid-way: the previous
-- verdict stays in force and the next `run` validates again.
ALTER TABLE meta.validation_log DROP CONSTRAINT validation_log_status_check;
ALTER TABLE meta.validation_log
    ADD CONSTRAINT validation_log_status_check
    CHECK (status IN ('running', 'passed', 'failed', 'error'));
-- sha256 of the bytes validate actually read (equal to the ingested file version's).
ALTER TABLE meta.validation_log ADD COLUMN sha256 text;

-- The gates `load-stage --force` overrode: quality, zero_rows, shrink, rejected_ratio, schema.
ALTER TABLE meta.load_log ADD COLUMN overrides text[] NOT NULL DEFAULT '{}';
