-- Round 4: a rule edit that changes no row of a period. The period's verdict
-- is judged again on the rows it kept; when no row moves and no row's errors
-- change, a new verdict is recorded under the new rules that keeps the
-- previous one's rows (its Delta versions, counts and score): `kept_from`
-- names it. The load that copied those rows holds this verdict too, so the
-- period is not validated, loaded or transformed again.
ALTER TABLE meta.validation_log
    ADD COLUMN IF NOT EXISTS kept_from bigint REFERENCES meta.validation_log (id);
