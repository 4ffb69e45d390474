-- Round 4: a re-delivery diffed by key (src/diff.rs). When a period that
-- stage holds is validated again, the new cleaned rows are compared by
-- primary key with the rows its load in force copied: counts only (keys
-- added, removed, changed, unchanged; per column how many keys changed it),
-- never a key or a value. `pipeline diff` shows the keys on demand.
ALTER TABLE meta.validation_log ADD COLUMN IF NOT EXISTS redelivery jsonb;
