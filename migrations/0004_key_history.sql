-- How each validation found duplicated keys, and how many rows they held: the
-- next validation of the dataset reads a keyed file once only when the last one
-- found no repeated key (validate/uniqueness.rs).
ALTER TABLE meta.validation_log
    ADD COLUMN duplicate_check text CHECK (duplicate_check IN ('none', 'in_pass', 'pre_pass')),
    ADD COLUMN duplicated_rows bigint;
