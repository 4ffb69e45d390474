-- One engine computes every model (DataFusion, in process or on a Ballista
-- cluster); each run records which, with its version, so a change of engine is
-- visible and makes the model's periods stale. Runs before this migration were
-- computed by PostgreSQL or DataFusion, unrecorded: their engine is NULL.
ALTER TABLE meta.transform_log ADD COLUMN IF NOT EXISTS engine text;
