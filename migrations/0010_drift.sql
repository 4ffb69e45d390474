-- Drift gates compare a period with the loaded periods before it from what
-- their verdicts counted: each verdict keeps, per declared column, how many of
-- the file's rows had no value (`{"rows": n, "columns": {"c": missing}}`).
-- Verdicts before this migration have none: the gate leaves them out.
ALTER TABLE meta.validation_log ADD COLUMN IF NOT EXISTS missing jsonb;
