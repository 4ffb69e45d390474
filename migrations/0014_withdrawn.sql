-- Round 4: a tightened rule judged on the rows it can move. When the rules
-- changed since a verdict of the same file only as value rules, the file is
-- not read again: the verdict's quarantined rows and the cleaned rows a
-- changed rule now rejects are judged under the new rules, the cleaned
-- period is rewritten from the kept cleaned rows without those (no text
-- parsed) and the rows that now pass. `rows_withdrawn` counts the cleaned
-- rows of the amended verdict the new rules moved to quarantine (0 or null:
-- none; its load may then append, else it swaps the period).
ALTER TABLE meta.validation_log
    ADD COLUMN IF NOT EXISTS rows_withdrawn bigint;
