-- Round 3: model audits (transform/audits.rs). An `error` audit that fails
-- rolls its model's replace transaction back; the run is kept as `rejected`.
ALTER TABLE meta.transform_log DROP CONSTRAINT transform_log_status_check;
ALTER TABLE meta.transform_log ADD CONSTRAINT transform_log_status_check
    CHECK (status IN ('done', 'failed', 'skipped', 'rejected'));

-- Every audit result, kept: written in the model's replace transaction when
-- its rows commit, after the rollback when a failing `error` audit blocked
-- them (`blocked`). `failing` counts failing rows (`unique`: duplicated keys;
-- `row_count`: bounds crossed); `sample` holds a few of them as JSON objects.
CREATE TABLE reporting.audit_results (
    id                bigserial   PRIMARY KEY,
    model             text        NOT NULL,   -- <schema>.<model>
    period            text,                   -- null for a model replaced whole
    audit             text        NOT NULL,
    kind              text        NOT NULL,   -- not_null, unique, accepted_values, ...
    severity          text        NOT NULL CHECK (severity IN ('error', 'warn')),
    passed            boolean     NOT NULL,
    failing           bigint      NOT NULL,
    sample            jsonb       NOT NULL,
    duration_ms       bigint      NOT NULL,
    blocked           boolean     NOT NULL,   -- its model's rows were rolled back
    transform_log_id  bigint      REFERENCES meta.transform_log (id),
    checked_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX audit_results_model_period_idx ON reporting.audit_results (model, period, id);
