-- Round 3: row-level incremental datasets (`incremental:` in the config).

-- Every primary key an incremental dataset validated: the seed's
-- validation_status manifest. One row per (dataset, night, key), written in the
-- transaction that records the validation's verdict, so a key is marked processed
-- only once its row is stored (cleaned or quarantine Delta version in force).
-- `pk` is the key's typed values as text, joined by U+001F; `row_hash` the md5 of
-- the row's delivered values (a changed row has another hash).
CREATE TABLE meta.processed_keys (
    dataset        text        NOT NULL,
    period         text        NOT NULL,
    pk             text        NOT NULL,
    row_hash       text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('valid', 'rejected')),
    errors         text,
    line           bigint,
    ingestion_id   bigint      NOT NULL REFERENCES meta.ingestion_log (id),
    validation_id  bigint      NOT NULL REFERENCES meta.validation_log (id),
    validated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, period, pk)
);
CREATE INDEX processed_keys_key_idx ON meta.processed_keys (dataset, pk, period);

-- Rows of an incremental snapshot skipped because their key was processed before.
ALTER TABLE meta.validation_log ADD COLUMN rows_skipped bigint;
