-- Round 3: change-aware runs. Every input that decided a result is recorded
-- beside it, so the ledger can say what is stale and why (ledger.rs).

-- The rules a validation judged by: the dataset's rules in canonical form
-- (config/rules.rs, `column.rule → value`) and their sha256. Verdicts recorded
-- before this migration have neither and are taken as judged by the rules in
-- force.
ALTER TABLE meta.validation_log
    ADD COLUMN rules jsonb,
    ADD COLUMN rules_fingerprint text;

-- What a model run was made of: the sha256 of its normalised SQL, and what it
-- read, `{"stage.flights": <meta.load_log id>, "core.x": <meta.transform_log id>}`
-- (null where nothing was in force). Runs before this migration have neither
-- and are taken as current.
ALTER TABLE meta.transform_log
    ADD COLUMN fingerprint text,
    ADD COLUMN inputs jsonb;
