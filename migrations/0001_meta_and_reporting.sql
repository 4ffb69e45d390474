-- Schemas of the pipeline's layers and its own bookkeeping.
-- Applied by `pipeline migrate` in one transaction; never edit once applied:
-- add a new NNNN_name.sql instead.

CREATE SCHEMA IF NOT EXISTS meta;
CREATE SCHEMA IF NOT EXISTS stage;
CREATE SCHEMA IF NOT EXISTS core;
CREATE SCHEMA IF NOT EXISTS mart;
CREATE SCHEMA IF NOT EXISTS reporting;

-- One row per distinct version of a landed file (accepted or rejected).
CREATE TABLE meta.ingestion_log (
    id             bigserial PRIMARY KEY,
    dataset        text,                      -- NULL when no dataset matched the name
    period         text,                      -- NULL for period-less datasets and rejects
    source_uri     text        NOT NULL,      -- file:///... or s3://bucket/key
    file_name      text        NOT NULL,
    size_bytes     bigint,                    -- NULL when the file was refused unread
    modified_at    timestamptz,
    sha256         text,                      -- (a symlink leaving the landed dir)
    status         text        NOT NULL CHECK (status IN ('accepted', 'rejected')),
    reason         text,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (source_uri, sha256, size_bytes)
);
CREATE INDEX ingestion_log_dataset_period_idx ON meta.ingestion_log (dataset, period, status, last_seen_at);

-- One row per validation of a landed file.
CREATE TABLE meta.validation_log (
    id                  bigserial PRIMARY KEY,
    ingestion_id        bigint      NOT NULL REFERENCES meta.ingestion_log (id),
    dataset             text        NOT NULL,
    period              text,
    status              text        NOT NULL CHECK (status IN ('passed', 'failed', 'error')),
    rows_in             bigint,
    rows_valid          bigint,
    rows_rejected       bigint,
    score               integer     CHECK (score BETWEEN 0 AND 100),
    passed              boolean,
    min_quality_score   integer,
    cleaned_version     bigint,                 -- Delta version written to cleaned/<dataset>
    quarantine_version  bigint,                 -- Delta version written to quarantine/<dataset>
    error               text,
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    duration_ms         bigint
);
CREATE INDEX validation_log_dataset_period_idx ON meta.validation_log (dataset, period, started_at);

-- One row per load of a period into stage.<dataset>.
CREATE TABLE meta.load_log (
    id                    bigserial PRIMARY KEY,
    dataset               text        NOT NULL,
    period                text,
    ingestion_id          bigint      REFERENCES meta.ingestion_log (id),
    validation_id         bigint      REFERENCES meta.validation_log (id),
    status                text        NOT NULL CHECK (status IN ('loaded', 'failed')),
    rows_deleted          bigint,
    rows_inserted         bigint,
    source_delta_version  bigint,
    source_path           text,
    forced                boolean     NOT NULL DEFAULT false,
    error                 text,
    started_at            timestamptz NOT NULL DEFAULT now(),
    finished_at           timestamptz,
    duration_ms           bigint
);
CREATE INDEX load_log_dataset_period_idx ON meta.load_log (dataset, period, started_at);

-- One row per model run of `transform`.
CREATE TABLE meta.transform_log (
    id             bigserial PRIMARY KEY,
    model          text        NOT NULL,        -- <schema>.<model>
    source_file    text        NOT NULL,        -- sql/<schema>/<model>.sql
    period         text,
    status         text        NOT NULL CHECK (status IN ('done', 'failed', 'skipped')),
    rows_deleted   bigint,
    rows_inserted  bigint,
    error          text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    duration_ms    bigint
);
CREATE INDEX transform_log_model_period_idx ON meta.transform_log (model, period, started_at);

-- The reporting.monitoring_file* tables mirror the data-quality contract that the
-- monitoring UI reads (seeds/data-quality-scoring.md): names and types as given.

CREATE TABLE reporting.monitoring_file_schema_definition (
    id           serial PRIMARY KEY,
    name         varchar     NOT NULL UNIQUE,
    description  text,
    definition   jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reporting.monitoring_file (
    id                         serial PRIMARY KEY,
    file_name                  varchar NOT NULL,
    agency_slug                varchar NOT NULL,
    latest_data_quality_score  integer,
    schema_definition_id       integer REFERENCES reporting.monitoring_file_schema_definition (id),
    UNIQUE (agency_slug, file_name)
);

CREATE TABLE reporting.monitoring_file_run (
    id                     serial PRIMARY KEY,
    monitoring_file_id     integer     NOT NULL REFERENCES reporting.monitoring_file (id),
    agency_id              integer,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    file_last_modified     timestamp   NOT NULL,
    file_range_lower_limit timestamp,
    file_size              bigint      NOT NULL,
    run_date               date        NOT NULL,
    run_hour               integer     NOT NULL,
    UNIQUE (monitoring_file_id, run_date, run_hour)
);

CREATE TABLE reporting.monitoring_file_data_quality (
    id                         serial PRIMARY KEY,
    monitoring_file_run_id     integer     NOT NULL UNIQUE REFERENCES reporting.monitoring_file_run (id),
    score                      integer     NOT NULL,
    passed                     boolean     NOT NULL,
    metrics                    jsonb       NOT NULL,
    deductions                 jsonb       NOT NULL,
    failed_validation_message  text,
    failed_validation_rules    jsonb,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reporting.monitoring_file_failed_validation (
    id                      serial PRIMARY KEY,
    monitoring_file_run_id  integer     NOT NULL REFERENCES reporting.monitoring_file_run (id),
    column_name             varchar     NOT NULL,
    rule                    varchar     NOT NULL,
    failed_count            bigint      NOT NULL,
    example_values          jsonb       NOT NULL,   -- up to 10 offending values
    message                 text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (monitoring_file_run_id, column_name, rule)
);

CREATE TABLE reporting.monitoring_file_data_profile (
    id                      serial PRIMARY KEY,
    monitoring_file_run_id  integer     NOT NULL UNIQUE REFERENCES reporting.monitoring_file_run (id),
    profile_payload         jsonb       NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
