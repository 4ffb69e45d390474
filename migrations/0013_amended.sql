-- Round 4: a relaxed rule judged on the quarantined rows alone. When the
-- rules changed since a verdict of the same file only by letting more values
-- pass, no cleaned row can fail them: the file is not read again, the
-- verdict's quarantined rows are judged under the new rules, the ones that
-- now pass are appended to the cleaned table (one Delta commit) and the
-- period's quarantine is replaced by the rest. `amended_from` names the
-- verdict whose cleaned rows the new one keeps.
ALTER TABLE meta.validation_log
    ADD COLUMN IF NOT EXISTS amended_from bigint REFERENCES meta.validation_log (id);

-- Its load, when stage holds exactly the rows of the verdict it amends:
-- the newly valid rows are added to the period's partition (no swap);
-- `rows_appended` counts them, `rows_inserted` stays what the period holds.
ALTER TABLE meta.load_log
    ADD COLUMN IF NOT EXISTS rows_appended bigint;
